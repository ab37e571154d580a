"""Interoperability with tlslite-ng (pure Python), both directions, in threads."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest
from tlslite.api import HandshakeSettings, SessionCache, TLSConnection, X509CertChain, parsePEMKey
from tlslite.constants import KeyUpdateMessageType

from looming.tls import TLS12, TLS13, CipherSuite, ClientSessionCache, NamedGroup, TlsConfig
from looming.tls.flow import TlsFlow, open_connection
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .peers import EchoServer
from .pki import Pki

TLSLITE_CIPHER = {
    CipherSuite.TLS_AES_128_GCM_SHA256: "aes128gcm",
    CipherSuite.TLS_AES_256_GCM_SHA384: "aes256gcm",
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: "chacha20-poly1305",
    CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256: "aes128gcm",
    CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: "aes256gcm",
    CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "chacha20-poly1305",
}
TLSLITE_GROUP = {
    NamedGroup.X25519: "x25519",
    NamedGroup.SECP256R1: "secp256r1",
    NamedGroup.SECP384R1: "secp384r1",
}
SUITES13 = [
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
]
SUITES12 = {
    CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256: "rsa",
    CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: "p256",
    CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "rsa",
}


def settings(
    version: int | None = None,
    suite: CipherSuite | None = None,
    group: NamedGroup | None = None,
    **extra: Any,
) -> HandshakeSettings:
    s = HandshakeSettings()
    if version is not None:
        s.minVersion = s.maxVersion = (3, 4) if version == TLS13 else (3, 3)
    if suite is not None:
        s.cipherNames = [TLSLITE_CIPHER[suite]]
    if group is not None:
        s.eccCurves = [TLSLITE_GROUP[group]]
        s.keyShares = [TLSLITE_GROUP[group]]
    for key, value in extra.items():
        setattr(s, key, value)
    return s


def load(pki: Pki, leaf: str) -> tuple[X509CertChain, Any]:
    chain = X509CertChain()
    chain.parsePemList(pki.leaves[leaf].cert_path.read_text())
    return chain, parsePEMKey(pki.leaves[leaf].key_path.read_text(), private=True)


class TlsliteServer:
    def __init__(
        self,
        pki: Pki,
        leaf: str,
        hs_settings: HandshakeSettings,
        count: int = 1,
        **handshake_args: Any,
    ) -> None:
        self.chain, self.key = load(pki, leaf)
        self.settings = hs_settings
        self.count = count
        self.args = handshake_args
        self.cache = SessionCache()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.results: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.listener.settimeout(30)
        for _ in range(self.count):
            result: dict[str, Any] = {}
            self.results.append(result)
            try:
                raw, _ = self.listener.accept()
                raw.settimeout(30)
                conn = TLSConnection(raw)
                conn.handshakeServer(
                    certChain=self.chain,
                    privateKey=self.key,
                    settings=self.settings,
                    sessionCache=self.cache,
                    **self.args,
                )
                result["version"] = conn.version
                result["cipher"] = conn.getCipherName()
                result["resumed"] = conn.resumed
                result["alpn"] = conn.session.appProto
                result["client_cert"] = conn.session.clientCertChain
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.read()
                    if not chunk:
                        break
                    data += chunk
                conn.write(b"lite:" + data)
                conn.close()
            except Exception as exc:  # recorded and asserted by the test
                result["error"] = exc
        self.listener.close()

    def __enter__(self) -> TlsliteServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(60)


async def looming_client(port: int, config: TlsConfig) -> tuple[TlsFlow, bytes]:
    flow = await open_connection("127.0.0.1", port, config, server_name="localhost")
    await flow.write(b"hi\n")
    reply = b""
    while True:
        chunk = await flow.read()
        if not chunk:
            break
        reply += chunk
    await flow.close()
    return flow, reply


def tlslite_client(
    port: int, hs_settings: HandshakeSettings, session: Any = None, **args: Any
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            conn = TLSConnection(raw)
            conn.handshakeClientCert(
                settings=hs_settings, serverName="localhost", session=session, **args
            )
            result["version"] = conn.version
            result["cipher"] = conn.getCipherName()
            result["resumed"] = conn.resumed
            result["alpn"] = conn.session.appProto
            result["session"] = conn.session
            conn.write(b"hello\n")
            data = b""
            while True:
                chunk = conn.read()
                if not chunk:
                    break
                data += chunk
            result["received"] = data
            conn.close()
    except Exception as exc:  # recorded and asserted by the test
        result["error"] = exc
    return result


async def tlslite_clients(
    config: TlsConfig, hs_settings: HandshakeSettings, count: int = 1, **args: Any
) -> tuple[list[dict[str, Any]], EchoServer]:
    results: list[dict[str, Any]] = []
    async with EchoServer(config) as server:
        session = None
        for _ in range(count):
            result = await asyncio.to_thread(
                tlslite_client, server.port, hs_settings, session, **args
            )
            results.append(result)
            session = result.get("session")
    return results, server


# --- looming client, tlslite-ng server --------------------------------------------------


@pytest.mark.parametrize("leaf", ["rsa", "p256", "p384", "ed25519"])
@pytest.mark.parametrize("suite", SUITES13, ids=lambda s: s.name)
def test_client_tls13_against_tlslite(pki: Pki, leaf: str, suite: CipherSuite) -> None:
    with TlsliteServer(pki, leaf, settings(TLS13, suite)) as server:
        flow, reply = asyncio.run(
            looming_client(
                server.port, TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock())
            )
        )
    assert reply == b"lite:hi\n" and (flow.version, flow.cipher_suite) == (TLS13, suite)
    assert server.results[0]["version"] == (3, 4)


@pytest.mark.parametrize("group", list(TLSLITE_GROUP), ids=lambda g: g.name)
def test_client_groups_and_hrr_against_tlslite(pki: Pki, group: NamedGroup) -> None:
    with TlsliteServer(pki, "p256", settings(TLS13, group=group)) as server:
        flow, reply = asyncio.run(
            looming_client(
                server.port, TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock())
            )
        )
    assert reply == b"lite:hi\n"
    assert flow.connection.hello_retried == (group != NamedGroup.X25519)


@pytest.mark.parametrize("suite", list(SUITES12), ids=lambda s: s.name)
def test_client_tls12_against_tlslite(pki: Pki, suite: CipherSuite) -> None:
    with TlsliteServer(pki, SUITES12[suite], settings(TLS12, suite)) as server:
        flow, reply = asyncio.run(
            looming_client(
                server.port,
                TlsConfig(
                    trust=pki.trust, cipher_suites=[suite], random=UnixRandom(), clock=UnixClock()
                ),
            )
        )
    assert reply == b"lite:hi\n" and (flow.version, flow.cipher_suite) == (TLS12, suite)


def test_client_resumption_alpn_and_record_size_limit_against_tlslite(pki: Pki) -> None:
    config = TlsConfig(
        trust=pki.trust,
        session_cache=ClientSessionCache(),
        alpn_protocols=[b"http/1.1"],
        record_size_limit=1024,
        random=UnixRandom(),
        clock=UnixClock(),
    )

    async def main() -> list[TlsFlow]:
        flows = []
        for _ in range(2):
            flow, reply = await looming_client(server.port, config)
            assert reply == b"lite:hi\n"
            flows.append(flow)
        return flows

    hs = settings(TLS13, record_size_limit=256, ticketKeys=[bytes(range(32))])
    with TlsliteServer(pki, "p256", hs, count=2, alpn=[b"http/1.1"]) as server:
        flows = asyncio.run(main())
    assert [f.resumed for f in flows] == [False, True]
    assert flows[0].alpn_protocol == b"http/1.1"
    assert flows[0].connection.records.send_limit == 256


def test_client_certificate_to_tlslite(pki: Pki) -> None:
    config = TlsConfig(
        trust=pki.trust,
        certificates=[pki.leaves["client-p256"].certified],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    with TlsliteServer(pki, "rsa", settings(TLS13), reqCert=True) as server:
        _, reply = asyncio.run(looming_client(server.port, config))
    assert reply == b"lite:hi\n"
    assert server.results[0]["client_cert"] is not None


# --- tlslite-ng client, looming server ---------------------------------------------------


@pytest.mark.parametrize("leaf", ["rsa", "p256", "p384", "ed25519"])
@pytest.mark.parametrize("suite", SUITES13, ids=lambda s: s.name)
def test_tlslite_client_tls13_against_server(pki: Pki, leaf: str, suite: CipherSuite) -> None:
    (result,), server = asyncio.run(
        tlslite_clients(
            TlsConfig(
                certificates=[pki.leaves[leaf].certified], random=UnixRandom(), clock=UnixClock()
            ),
            settings(TLS13, suite),
        )
    )
    assert "error" not in result, result.get("error")
    assert result["received"] == b"echo:hello\n" and result["version"] == (3, 4)
    assert server.flows[0].cipher_suite == suite


@pytest.mark.parametrize("group", list(TLSLITE_GROUP), ids=lambda g: g.name)
def test_tlslite_client_groups_against_server(pki: Pki, group: NamedGroup) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        groups=[group],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    # tlslite sends a share for secp256r1 and x25519: P-384 takes a HelloRetryRequest.
    hs = settings(TLS13)
    hs.eccCurves = ["x25519", "secp256r1", "secp384r1"]
    hs.keyShares = ["secp256r1", "x25519"]
    (result,), server = asyncio.run(tlslite_clients(config, hs))
    assert "error" not in result, result.get("error")
    assert server.flows[0].connection.hello_retried == (group == NamedGroup.SECP384R1)


@pytest.mark.parametrize("suite", list(SUITES12), ids=lambda s: s.name)
def test_tlslite_client_tls12_against_server(pki: Pki, suite: CipherSuite) -> None:
    config = TlsConfig(
        certificates=[pki.leaves[SUITES12[suite]].certified], random=UnixRandom(), clock=UnixClock()
    )
    (result,), server = asyncio.run(tlslite_clients(config, settings(TLS12, suite)))
    assert "error" not in result, result.get("error")
    assert result["version"] == (3, 3) and server.flows[0].cipher_suite == suite


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_tlslite_client_resumes_with_server(pki: Pki, version: int) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        alpn_protocols=[b"h2"],
        record_size_limit=512,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    results, server = asyncio.run(
        tlslite_clients(config, settings(version, record_size_limit=300), count=2, alpn=[b"h2"])
    )
    assert [r.get("error") for r in results] == [None, None]
    assert [r["resumed"] for r in results] == [False, True]
    assert results[0]["alpn"] == b"h2"
    assert [f.resumed for f in server.flows] == [False, True]
    assert server.flows[0].connection.records.send_limit == 300


# --- the hybrid post-quantum group, against tlslite-ng's ML-KEM (kyber-py) -------------------


def test_client_x25519mlkem768_against_tlslite(pki: Pki) -> None:
    config = TlsConfig(
        trust=pki.trust,
        groups=[NamedGroup.X25519MLKEM768],
        key_share_groups=[NamedGroup.X25519MLKEM768],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    hs = settings(TLS13)
    hs.eccCurves = ["x25519mlkem768"]
    hs.keyShares = ["x25519mlkem768"]
    with TlsliteServer(pki, "p256", hs) as server:
        flow, reply = asyncio.run(looming_client(server.port, config))
    assert reply == b"lite:hi\n" and flow.version == TLS13
    assert "error" not in server.results[0]


def test_tlslite_client_x25519mlkem768_against_server(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        groups=[NamedGroup.X25519MLKEM768],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    hs = settings(TLS13)
    hs.eccCurves = ["x25519mlkem768", "x25519"]
    hs.keyShares = ["x25519mlkem768"]
    (result,), server = asyncio.run(tlslite_clients(config, hs))
    assert "error" not in result, result.get("error")
    assert result["received"] == b"echo:hello\n"
    assert not server.flows[0].connection.hello_retried


def test_tlslite_client_retries_into_x25519mlkem768(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        groups=[NamedGroup.X25519MLKEM768],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    hs = settings(TLS13)
    hs.eccCurves = ["x25519", "x25519mlkem768"]
    hs.keyShares = ["x25519"]
    (result,), server = asyncio.run(tlslite_clients(config, hs))
    assert "error" not in result, result.get("error")
    assert server.flows[0].connection.hello_retried


def test_tlslite_client_key_updates_with_server(pki: Pki) -> None:
    """tlslite asks for a KeyUpdate before each message; the server answers each."""
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
    )

    def client(port: int) -> dict[str, Any]:
        result: dict[str, Any] = {"echoes": []}
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
                conn = TLSConnection(raw)
                conn.handshakeClientCert(settings=settings(TLS13), serverName="localhost")
                for i in range(3):
                    for _ in conn.send_keyupdate_request(KeyUpdateMessageType.update_requested):
                        pass
                    message = b"message %d\n" % i
                    conn.write(message)
                    echoed = b""
                    while len(echoed) < len(message) + 5:
                        echoed += conn.read()
                    result["echoes"].append(echoed)
                conn.close()
        except Exception as exc:  # recorded and asserted below
            result["error"] = exc
        return result

    async def main() -> tuple[dict[str, Any], EchoServer]:
        async with EchoServer(config, until_eof=True) as server:
            result = await asyncio.to_thread(client, server.port)
        return result, server

    result, server = asyncio.run(main())
    assert "error" not in result, result
    assert result["echoes"] == [b"echo:message %d\n" % i for i in range(3)]
    assert server.errors == []
    # Counted as each request is read, before its echo is written.
    assert server.flows[0].key_updates_received == 3


def test_client_key_update_against_tlslite(pki: Pki) -> None:
    """Our KeyUpdate asks tlslite to update too; its reply comes under its new keys."""

    async def main() -> tuple[TlsFlow, bytes]:
        config = TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock())
        flow = await open_connection("127.0.0.1", server.port, config, server_name="localhost")
        await flow.key_update(request_peer_update=True)
        await flow.write(b"after the update\n")
        reply = b""
        while chunk := await flow.read():
            reply += chunk
        await flow.close()
        return flow, reply

    with TlsliteServer(pki, "p256", settings(TLS13)) as server:
        flow, reply = asyncio.run(main())
    assert server.results[0].get("error") is None, server.results
    assert reply == b"lite:after the update\n"
    assert flow.key_updates_received == 1
