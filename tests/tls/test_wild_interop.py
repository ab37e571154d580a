"""The certificates of test_wild_certs against GnuTLS and tlslite-ng: CN-only and SAN
client certificates both ways, RSA-PSS and Ed25519 server keys."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from tlslite.api import HandshakeSettings, TLSConnection, X509CertChain, parsePEMKey

from looming.tls import TLS12, TLS13, TlsConfig
from looming.tls.flow import open_connection
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .interop import priority
from .peers import EchoServer, free_port, server_process
from .test_gnutls import echo
from .wild_pki import Issued, WildPki

VERSIONS = [TLS13, TLS12]


def _gnutls_cli(wild: WildPki, version: int, client: Issued | None) -> list[str]:
    args = ["--x509cafile", str(wild.ca_path), "--sni-hostname", "localhost",
            "--verify-hostname", "localhost", "--priority", priority(version)]  # fmt: skip
    if client is not None:
        args += ["--x509certfile", str(client.cert_path), "--x509keyfile", str(client.key_path)]
    return args


async def _gnutls_cli_to_looming(config: TlsConfig, args: list[str]) -> tuple[int, str, EchoServer]:
    from .peers import run

    async with EchoServer(config) as server:
        rc, out, err = await run(
            ["gnutls-cli", "-p", str(server.port), "127.0.0.1", *args], b"hi\n"
        )
    return rc, out + err, server


@pytest.mark.parametrize("version", VERSIONS, ids=["1.3", "1.2"])
@pytest.mark.parametrize("client", ["client-cn-only", "client-san", "client-pss-cn-only"])
def test_gnutls_client_certificates_to_looming(
    wild: WildPki, issued: dict[str, Issued], version: int, client: str
) -> None:
    config = TlsConfig(
        certificates=[issued["server-p256"].certified],
        client_trust=wild.trust,
        require_client_certificate=True,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    rc, out, server = asyncio.run(
        _gnutls_cli_to_looming(config, _gnutls_cli(wild, version, issued[client]))
    )
    assert rc == 0 and "echo:hi" in out, out
    assert server.flows[0].peer_certificates[0] == issued[client].cert


@pytest.mark.parametrize("version", VERSIONS, ids=["1.3", "1.2"])
@pytest.mark.parametrize("leaf", ["server-pss", "server-ed25519"])
def test_gnutls_client_to_looming_pss_and_ed25519(
    wild: WildPki, issued: dict[str, Issued], version: int, leaf: str
) -> None:
    config = TlsConfig(
        certificates=[issued[leaf].certified], random=UnixRandom(), clock=UnixClock()
    )
    rc, out, server = asyncio.run(_gnutls_cli_to_looming(config, _gnutls_cli(wild, version, None)))
    assert rc == 0 and "echo:hi" in out, out
    assert not server.errors


@pytest.mark.parametrize("version", VERSIONS, ids=["1.3", "1.2"])
@pytest.mark.parametrize(
    ("leaf", "client"),
    [("server-pss", "client-cn-only"), ("server-ed25519", "client-pss-cn-only"),
     ("server-p256", "client-san")],
)  # fmt: skip
def test_looming_client_to_gnutls_serv(
    wild: WildPki, issued: dict[str, Issued], version: int, leaf: str, client: str
) -> None:
    server_leaf = issued[leaf]
    config = TlsConfig(
        trust=wild.trust,
        versions=[version],
        certificates=[issued[client].certified],
        random=UnixRandom(),
        clock=UnixClock(),
    )

    async def scenario() -> tuple[bytes, list[object]]:
        port = free_port()
        args = ["gnutls-serv", "--echo", "-p", str(port), "--x509certfile",
                str(server_leaf.cert_path), "--x509keyfile", str(server_leaf.key_path),
                "--require-client-cert", "--x509cafile", str(wild.ca_path)]  # fmt: skip
        async with server_process(args, port, "IPv4"):
            flow = await open_connection("127.0.0.1", port, config, server_name="localhost")
            reply = await echo(flow)
            chain = list(flow.peer_certificates)
            await flow.close()
        return reply, chain

    reply, chain = asyncio.run(scenario())
    assert reply == b"hello gnutls\n" and chain[0] == server_leaf.cert


def _tlslite_client(port: int, client: Issued, version: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    chain = X509CertChain()
    chain.parsePemList(client.cert_path.read_text())
    key = parsePEMKey(client.key_path.read_text(), private=True)
    settings = HandshakeSettings()
    settings.minVersion = settings.maxVersion = (3, 4) if version == TLS13 else (3, 3)
    # tlslite-ng compresses a client certificate when its own ClientHello offered to
    # receive compressed ones, whether or not the server asked (RFC 8879 says the
    # server's CertificateRequest decides): keep it from compressing here.
    settings.certificate_compression_send = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            conn = TLSConnection(raw)
            conn.handshakeClientCert(chain, key, settings=settings, serverName="localhost")
            conn.write(b"lite\n")
            result["received"] = conn.read()
            conn.close()
    except Exception as exc:  # recorded and asserted by the test
        result["error"] = exc
    return result


@pytest.mark.parametrize("version", VERSIONS, ids=["1.3", "1.2"])
@pytest.mark.parametrize("client", ["client-cn-only", "client-san"])
def test_tlslite_client_certificates_to_looming(
    wild: WildPki, issued: dict[str, Issued], version: int, client: str
) -> None:
    config = TlsConfig(
        certificates=[issued["server-p256"].certified],
        client_trust=wild.trust,
        require_client_certificate=True,
        random=UnixRandom(),
        clock=UnixClock(),
    )

    async def scenario() -> tuple[dict[str, Any], EchoServer]:
        async with EchoServer(config) as server:
            result = await asyncio.to_thread(_tlslite_client, server.port, issued[client], version)
        return result, server

    result, server = asyncio.run(scenario())
    assert "error" not in result, (result.get("error"), server.errors)
    assert result["received"] == b"echo:lite\n"
    assert server.flows[0].peer_certificates[0] == issued[client].cert
