"""Interoperability with Python's ssl module (OpenSSL underneath), both directions.

The ssl side runs blocking sockets in a thread; looming runs on the event loop.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from dataclasses import dataclass, field

import pytest

from looming.tls import TLS12, TLS13, CipherSuite, ClientSessionCache, NamedGroup, TlsConfig
from looming.tls.flow import TlsFlow, open_connection
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .peers import EchoServer
from .pki import Pki

SUITES13 = [
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
]
SUITES12 = {
    CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256: ("rsa", "ECDHE-RSA-AES128-GCM-SHA256"),
    CipherSuite.ECDHE_RSA_WITH_AES_256_GCM_SHA384: ("rsa", "ECDHE-RSA-AES256-GCM-SHA384"),
    CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: ("rsa", "ECDHE-RSA-CHACHA20-POLY1305"),
    CipherSuite.ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: ("p256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: ("p256", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    CipherSuite.ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: (
        "p256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
}
GROUPS = [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1]
LEAVES = ["rsa", "p256", "p384", "ed25519"]
SSL_VERSION = {TLS13: ssl.TLSVersion.TLSv1_3, TLS12: ssl.TLSVersion.TLSv1_2}


@dataclass
class SslResult:
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    reused: bool = False
    peer_cert: dict[str, object] | None = None
    received: bytes = b""
    error: BaseException | None = None
    sessions: list[ssl.SSLSession] = field(default_factory=list)


class SslServer:
    """A Python ssl server thread that serves ``count`` connections, replying 'ssl:' + line."""

    def __init__(self, context: ssl.SSLContext, count: int = 1) -> None:
        self.context = context
        self.count = count
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.results: list[SslResult] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.listener.settimeout(20)
        for _ in range(self.count):
            result = SslResult()
            self.results.append(result)
            try:
                raw, _ = self.listener.accept()
                raw.settimeout(20)
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    result.version, result.cipher = conn.version(), conn.cipher()[0]  # type: ignore[index]
                    result.alpn = conn.selected_alpn_protocol()
                    result.reused = conn.session_reused
                    result.peer_cert = conn.getpeercert()  # type: ignore[assignment]
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    result.received = data
                    conn.sendall(b"ssl:" + data)
                    conn.unwrap()
            except (OSError, ssl.SSLError) as exc:
                result.error = exc
        self.listener.close()

    def __enter__(self) -> SslServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(30)


def server_context(pki: Pki, leaf: str, version: int | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.leaves[leaf].cert_path, pki.leaves[leaf].key_path)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = SSL_VERSION[version]
    return ctx


def client_context(pki: Pki, version: int | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca_path)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = SSL_VERSION[version]
    return ctx


async def looming_client(
    port: int, config: TlsConfig, line: bytes = b"hi\n"
) -> tuple[TlsFlow, bytes]:
    flow = await open_connection("127.0.0.1", port, config, server_name="localhost")
    await flow.write(line)
    reply = b""
    while True:
        chunk = await flow.read()
        if not chunk:
            break
        reply += chunk
    await flow.close()
    return flow, reply


def run_ssl_client(
    port: int, ctx: ssl.SSLContext, line: bytes, session: ssl.SSLSession | None = None
) -> SslResult:
    result = SslResult()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=20) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost", session=session) as conn,
        ):
            result.version, result.cipher = conn.version(), conn.cipher()[0]  # type: ignore[index]
            result.alpn = conn.selected_alpn_protocol()
            conn.sendall(line)
            data = b""
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            result.received = data
            result.reused = conn.session_reused
            if conn.session is not None:
                result.sessions.append(conn.session)
    except (OSError, ssl.SSLError) as exc:
        result.error = exc
    return result


async def ssl_clients_against_looming(
    config: TlsConfig, ctx: ssl.SSLContext, count: int = 1
) -> tuple[list[SslResult], EchoServer]:
    results: list[SslResult] = []
    async with EchoServer(config) as server:
        session = None
        for i in range(count):
            result = await asyncio.to_thread(
                run_ssl_client, server.port, ctx, b"line %d\n" % i, session
            )
            results.append(result)
            session = result.sessions[-1] if result.sessions else None
    return results, server


# --- looming client, Python ssl server ------------------------------------------------


@pytest.mark.parametrize("leaf", LEAVES)
@pytest.mark.parametrize("suite", SUITES13, ids=lambda s: s.name)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_client_tls13_against_ssl_server(
    pki: Pki, leaf: str, suite: CipherSuite, group: NamedGroup
) -> None:
    config = TlsConfig(
        trust=pki.trust,
        cipher_suites=[suite],
        groups=[group],
        key_share_groups=[group],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    with SslServer(server_context(pki, leaf)) as server:
        flow, reply = asyncio.run(looming_client(server.port, config))
    assert reply == b"ssl:hi\n"
    assert server.results[0].version == "TLSv1.3" and server.results[0].cipher == suite.name
    assert (flow.version, flow.cipher_suite) == (TLS13, suite)


@pytest.mark.parametrize("suite", list(SUITES12), ids=lambda s: s.name)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_client_tls12_against_ssl_server(pki: Pki, suite: CipherSuite, group: NamedGroup) -> None:
    leaf, name = SUITES12[suite]
    groups = (
        [group] if leaf == "rsa" or group == NamedGroup.SECP256R1 else [group, NamedGroup.SECP256R1]
    )
    config = TlsConfig(
        trust=pki.trust,
        cipher_suites=[suite],
        groups=groups,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    ctx = server_context(pki, leaf, TLS12)
    ctx.set_ciphers(name)
    with SslServer(ctx) as server:
        flow, reply = asyncio.run(looming_client(server.port, config))
    assert reply == b"ssl:hi\n"
    assert server.results[0].version == "TLSv1.2" and server.results[0].cipher == name
    assert (flow.version, flow.cipher_suite) == (TLS12, suite)


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_client_resumption_against_ssl_server(pki: Pki, version: int) -> None:
    config = TlsConfig(
        trust=pki.trust,
        versions=[version],
        session_cache=ClientSessionCache(),
        random=UnixRandom(),
        clock=UnixClock(),
    )

    async def main() -> list[TlsFlow]:
        flows = []
        for _ in range(2):
            flow, reply = await looming_client(server.port, config)
            assert reply == b"ssl:hi\n"
            flows.append(flow)
        return flows

    with SslServer(server_context(pki, "p256"), count=2) as server:
        flows = asyncio.run(main())
    assert [f.resumed for f in flows] == [False, True]
    assert [r.reused for r in server.results] == [False, True]


def test_client_certificate_alpn_sni_against_ssl_server(pki: Pki) -> None:
    ctx = server_context(pki, "p256")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki.ca_path)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    seen_names: list[str | None] = []
    ctx.sni_callback = lambda sock, name, context: seen_names.append(name)  # type: ignore[assignment,func-returns-value]
    config = TlsConfig(
        trust=pki.trust,
        certificates=[pki.leaves["client-rsa"].certified],
        alpn_protocols=[b"http/1.1"],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    with SslServer(ctx) as server:
        flow, reply = asyncio.run(looming_client(server.port, config))
    assert reply == b"ssl:hi\n" and flow.alpn_protocol == b"http/1.1"
    assert seen_names == ["localhost"] and server.results[0].alpn == "http/1.1"
    assert server.results[0].peer_cert is not None


# --- Python ssl client, looming server ---------------------------------------------------


@pytest.mark.parametrize("leaf", LEAVES)
@pytest.mark.parametrize("suite", SUITES13, ids=lambda s: s.name)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_ssl_client_tls13_against_server(
    pki: Pki, leaf: str, suite: CipherSuite, group: NamedGroup
) -> None:
    config = TlsConfig(
        certificates=[pki.leaves[leaf].certified],
        cipher_suites=[suite],
        groups=[group],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    (result,), server = asyncio.run(ssl_clients_against_looming(config, client_context(pki, TLS13)))
    assert result.error is None, result.error
    assert (
        result.received == b"echo:line 0\n"
        and result.version == "TLSv1.3"
        and result.cipher == suite.name
    )
    assert not server.errors


@pytest.mark.parametrize("suite", list(SUITES12), ids=lambda s: s.name)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_ssl_client_tls12_against_server(pki: Pki, suite: CipherSuite, group: NamedGroup) -> None:
    leaf, name = SUITES12[suite]
    config = TlsConfig(
        certificates=[pki.leaves[leaf].certified],
        groups=[group],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    ctx = client_context(pki, TLS12)
    ctx.set_ciphers(name)
    (result,), _ = asyncio.run(ssl_clients_against_looming(config, ctx))
    assert result.error is None, result.error
    assert (
        result.received == b"echo:line 0\n"
        and result.version == "TLSv1.2"
        and result.cipher == name
    )


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_ssl_client_resumes_with_server(pki: Pki, version: int) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
    )
    results, server = asyncio.run(
        ssl_clients_against_looming(config, client_context(pki, version), count=2)
    )
    assert [r.error for r in results] == [None, None]
    assert [r.reused for r in results] == [False, True]
    assert [f.resumed for f in server.flows] == [False, True]


def test_ssl_client_certificate_and_alpn_with_server(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["rsa"].certified],
        client_trust=pki.trust,
        require_client_certificate=True,
        alpn_protocols=[b"http/1.1"],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    ctx = client_context(pki)
    ctx.load_cert_chain(pki.leaves["client-p256"].cert_path, pki.leaves["client-p256"].key_path)
    ctx.set_alpn_protocols(["http/1.1"])
    (result,), server = asyncio.run(ssl_clients_against_looming(config, ctx))
    assert result.error is None and result.alpn == "http/1.1"
    assert server.flows[0].peer_certificates[0] == pki.leaves["client-p256"].certified.chain[0]


def test_ssl_client_rejects_wrong_host(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["other-name"].certified], random=UnixRandom(), clock=UnixClock()
    )
    (result,), server = asyncio.run(ssl_clients_against_looming(config, client_context(pki)))
    assert isinstance(result.error, ssl.SSLCertVerificationError)
    assert server.errors  # the ssl client's alert reached the looming server as an error


def test_client_key_update_with_ssl_server(pki: Pki) -> None:
    async def main(port: int) -> tuple[TlsFlow, bytes]:
        flow = await open_connection(
            "127.0.0.1",
            port,
            TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
            server_name="localhost",
        )
        await flow.key_update(request_peer_update=True)
        await flow.write(b"after update\n")
        reply = b""
        while chunk := await flow.read():
            reply += chunk
        await flow.close()
        return flow, reply

    with SslServer(server_context(pki, "p256")) as server:
        flow, reply = asyncio.run(main(server.port))
    assert reply == b"ssl:after update\n"
    assert server.results[0].received == b"after update\n"
    assert flow.key_updates_received == 1  # OpenSSL answered update_requested


def test_client_hello_retry_with_ssl_server(pki: Pki) -> None:
    ctx = server_context(pki, "p256")
    ctx.set_ecdh_curve("secp384r1")  # the only group: our X25519 share needs a retry
    with SslServer(ctx) as server:
        flow, reply = asyncio.run(
            looming_client(
                server.port, TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock())
            )
        )
    assert reply == b"ssl:hi\n"
    assert flow.connection.hello_retried and flow.version == TLS13


def test_ssl_client_gets_hello_retry_from_server(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        groups=[NamedGroup.SECP384R1],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    (result,), server = asyncio.run(ssl_clients_against_looming(config, client_context(pki, TLS13)))
    assert result.error is None and result.received == b"echo:line 0\n"
    assert server.flows[0].connection.hello_retried
