"""Certificate compression (RFC 8879) against tlslite-ng, and what a hostile
CompressedCertificate gets. (Debian's GnuTLS 3.7.9 is built without any certificate
compression method, and OpenSSL has it from 3.2 only, so tlslite-ng is the peer.)"""

from __future__ import annotations

import asyncio
import socket
import zlib
from typing import Any

import pytest
from tlslite.api import HandshakeSettings, TLSConnection, X509CertChain, parsePEMKey

from looming.tls import AlertDescription, TlsConfig, TlsConnection
from looming.tls.client import ClientHandshake
from looming.tls.constants import HandshakeType
from looming.tls.states import ClientState
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .memory import seeded
from .peers import EchoServer
from .pki import Pki


def _recording(sent: list[int]) -> Any:
    def rewrite(msg_type: int, body: bytes) -> bytes:
        sent.append(msg_type)
        return body

    return rewrite


def _tlslite_client(port: int, pki: Pki, with_certificate: bool) -> dict[str, Any]:
    settings = HandshakeSettings()
    settings.minVersion = settings.maxVersion = (3, 4)
    settings.certificate_compression_receive = ["zlib"]
    settings.certificate_compression_send = ["zlib"]
    chain, key = None, None
    if with_certificate:
        chain = X509CertChain()
        chain.parsePemList(pki.leaves["client-p256"].cert_path.read_text())
        key = parsePEMKey(pki.leaves["client-p256"].key_path.read_text(), private=True)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        conn = TLSConnection(raw)
        conn.handshakeClientCert(chain, key, settings=settings, serverName="localhost")
        conn.write(b"squeeze\n")
        reply = conn.read()
        result = {
            "reply": reply,
            "server_algo": conn.server_cert_compression_algo,
            "client_algo": conn.client_cert_compression_algo,
        }
        conn.close()
    return result


@pytest.mark.parametrize("with_certificate", [False, True], ids=["server", "both"])
def test_tlslite_both_ways(pki: Pki, with_certificate: bool) -> None:
    sent: list[int] = []
    config = TlsConfig(
        certificates=[pki.leaves["rsa"].certified],
        client_trust=pki.trust if with_certificate else None,
        require_client_certificate=with_certificate,
        handshake_rewriter=_recording(sent),
        random=UnixRandom(),
        clock=UnixClock(),
    )

    async def scenario() -> tuple[dict[str, Any], EchoServer]:
        async with EchoServer(config) as server:
            result = await asyncio.to_thread(_tlslite_client, server.port, pki, with_certificate)
        return result, server

    result, server = asyncio.run(scenario())
    assert result["reply"] == b"echo:squeeze\n"
    assert HandshakeType.COMPRESSED_CERTIFICATE in sent
    assert HandshakeType.CERTIFICATE not in sent
    assert result["server_algo"] == "zlib"
    if with_certificate:
        assert result["client_algo"] == "zlib"
        assert server.flows[0].peer_certificates[0] == pki.leaves["client-p256"].certified.chain[0]


# --- hostile CompressedCertificate messages ---------------------------------------------


def _client_at_certificate(pki: Pki) -> tuple[TlsConnection, TlsConnection]:
    """A client that has received the server's flight up to the certificate, and the server."""
    client = TlsConnection(
        TlsConfig(trust=pki.trust, random=seeded(8), clock=UnixClock()),
        server_side=False,
        server_name="localhost",
    )
    server = TlsConnection(
        TlsConfig(certificates=[pki.leaves["p256"].certified], random=seeded(9),
                  certificate_compression=(), clock=UnixClock()),
        server_side=True,
    )  # fmt: skip
    return client, server


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x01\x00\x00\x10\x00\x00\x03abc",  # zlib: not a zlib stream
        b"\x00\x09\x00\x00\x10\x00\x00\x03abc",  # an algorithm we did not offer
        b"\x00\x01\x00\x00\x05" + len(zlib.compress(b"x" * 50)).to_bytes(3, "big")
        + zlib.compress(b"x" * 50),  # decompresses to more than announced
        b"\x00\x01\x10\x00\x00" + len(zlib.compress(bytes(1 << 20))).to_bytes(3, "big")
        + zlib.compress(bytes(1 << 20)),  # a bomb: 1 MiB announced and packed
    ],
    ids=["garbage", "unoffered", "longer", "bomb"],
)  # fmt: skip
def test_bad_compressed_certificate_is_bad_certificate(pki: Pki, body: bytes) -> None:
    from looming.tls.engine import TlsConnection as Engine
    from looming.tls.wire import handshake

    client, server = _client_at_certificate(pki)
    server.receive(client.bytes_to_send())
    # Replace the server's Certificate by a hostile CompressedCertificate, through the
    # client's own handler: feed it as if decrypted from the server's flight.
    client.receive(server.bytes_to_send())
    assert isinstance(client, Engine)
    message = handshake(HandshakeType.COMPRESSED_CERTIFICATE, body)
    handler = client._handshake
    assert isinstance(handler, ClientHandshake)
    handler.state = ClientState.WAIT_CERT
    with pytest.raises(Exception) as info:
        client._run(lambda: handler.handle(HandshakeType.COMPRESSED_CERTIFICATE, body, message))
    assert getattr(info.value, "description", None) == AlertDescription.BAD_CERTIFICATE
