"""Interoperability with Python's ssl module (OpenSSL underneath), both directions,
beyond the handshake matrix of ``test_interop.py`` (peers from ``interop.py``).

The ssl side runs blocking sockets in a thread; looming runs on the event loop.
"""

from __future__ import annotations

import asyncio
import ssl

from looming.tls import TLS13, NamedGroup, TlsConfig
from looming.tls.flow import TlsFlow, open_connection
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .interop import (
    SslResult,
    SslServer,
    client_context,
    looming_client,
    server_context,
    ssl_clients,
)
from .peers import EchoServer
from .pki import Pki


async def ssl_clients_against_looming(
    config: TlsConfig, ctx: ssl.SSLContext, count: int = 1
) -> tuple[list[SslResult], EchoServer]:
    async with EchoServer(config) as server:
        results = await ssl_clients(server.port, ctx, count)
    return results, server


# --- looming client, Python ssl server ------------------------------------------------


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
