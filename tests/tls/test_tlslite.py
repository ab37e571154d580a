"""Interoperability with tlslite-ng (pure Python), both directions, in threads,
beyond the handshake matrix of ``test_interop.py`` (peers from ``interop.py``)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from tlslite.api import HandshakeSettings, TLSConnection
from tlslite.constants import KeyUpdateMessageType

from looming.tls import TLS12, TLS13, ClientSessionCache, NamedGroup, TlsConfig
from looming.tls.flow import TlsFlow, open_connection
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .interop import (
    TLSLITE_GROUP,
    TlsliteServer,
    looming_client,
    settings,
    tlslite_clients,
)
from .peers import EchoServer
from .pki import Pki


async def tlslite_clients_against_looming(
    config: TlsConfig, hs_settings: HandshakeSettings, count: int = 1, **args: Any
) -> tuple[list[dict[str, Any]], EchoServer]:
    async with EchoServer(config) as server:
        results = await tlslite_clients(server.port, hs_settings, count, **args)
    return results, server


# --- looming client, tlslite-ng server --------------------------------------------------


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
    (result,), server = asyncio.run(tlslite_clients_against_looming(config, hs))
    assert "error" not in result, result.get("error")
    assert server.flows[0].connection.hello_retried == (group == NamedGroup.SECP384R1)


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
        tlslite_clients_against_looming(
            config, settings(version, record_size_limit=300), count=2, alpn=[b"h2"]
        )
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
    (result,), server = asyncio.run(tlslite_clients_against_looming(config, hs))
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
    (result,), server = asyncio.run(tlslite_clients_against_looming(config, hs))
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
