"""TLS certificate compression (RFC 8879): zlib, and brotli when the module is installed.

A client offers the algorithms it can decompress in ``compress_certificate``
(ClientHello); a server may then send its Certificate as a
CompressedCertificate, and a server offering them in its CertificateRequest
lets the client do the same. Only TLS 1.3. The transcript takes the
CompressedCertificate message as sent; the decompressed Certificate is then
checked as any other. A message that does not decompress to exactly the
announced length, or would exceed the handshake size limit, is a
``bad_certificate``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .constants import AlertDescription, ExtensionType, HandshakeType
from .errors import TlsProtocolError
from .messages import certificate13
from .wire import Reader, extension, u16, vec8, vec24

if TYPE_CHECKING:
    from .certs import CertifiedKey
    from .link import HandshakeConnection as TlsConnection

ZLIB = 1
BROTLI = 2
MAX_UNCOMPRESSED = 1 << 18  # as the engine's handshake message limit

try:  # brotli is optional: offered and used only when importable
    import brotli as _brotli  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None


def available() -> tuple[int, ...]:
    """The algorithms this process can use, most preferred first."""
    return ((BROTLI,) if _brotli is not None else ()) + (ZLIB,)


def extension_body(algorithms: Sequence[int]) -> bytes:
    return vec8(b"".join(u16(a) for a in algorithms))


def offer_extension(algorithms: Sequence[int]) -> bytes:
    """compress_certificate for a ClientHello or CertificateRequest (b"" when none)."""
    if not algorithms:
        return b""
    return extension(ExtensionType.COMPRESS_CERTIFICATE, extension_body(algorithms))


def parse_offer(body: bytes) -> list[int]:
    r = Reader(body)
    algorithms = r.u16_list(1, minimum=2)
    r.expect_end("compress_certificate")
    return algorithms


def choose(offer: bytes | None, ours: Sequence[int]) -> int | None:
    """Our first algorithm the peer's compress_certificate body lists, or None."""
    if offer is None or not ours:
        return None
    offered = parse_offer(offer)
    return next((a for a in ours if a in offered and a in available()), None)


def _compress(algorithm: int, data: bytes) -> bytes:
    if algorithm == BROTLI and _brotli is not None:
        return bytes(_brotli.compress(data))
    return zlib.compress(data, 9)


def _decompress(algorithm: int, data: bytes, limit: int) -> bytes:
    if algorithm == ZLIB:
        inflater = zlib.decompressobj()
        out = inflater.decompress(data, limit + 1)
        if not inflater.eof or inflater.unused_data:
            raise ValueError("zlib stream is incomplete or has trailing data")
        return out
    if algorithm == BROTLI and _brotli is not None:
        return bytes(_brotli.decompress(data))
    raise ValueError(f"algorithm {algorithm} is not available")


def compressed_certificate(algorithm: int, certificate_body: bytes) -> bytes:
    """A CompressedCertificate body for a Certificate message body."""
    return (
        u16(algorithm)
        + len(certificate_body).to_bytes(3, "big")
        + vec24(_compress(algorithm, certificate_body))
    )


def decompress(body: bytes, ours: Sequence[int]) -> bytes:
    """The Certificate message body inside a CompressedCertificate we may receive."""
    r = Reader(body)
    algorithm = r.u16()
    length = int.from_bytes(r.take(3), "big")
    data = r.vector(3, minimum=1)
    r.expect_end("CompressedCertificate")
    if algorithm not in ours or algorithm not in available():
        raise TlsProtocolError(
            AlertDescription.BAD_CERTIFICATE,
            f"certificate compressed with algorithm {algorithm}, which we did not offer",
        )
    if length > MAX_UNCOMPRESSED:
        raise TlsProtocolError(
            AlertDescription.BAD_CERTIFICATE,
            f"compressed certificate of {length} bytes is too long",
        )
    try:
        plain = _decompress(algorithm, data, length)
    except (ValueError, zlib.error) as exc:
        raise TlsProtocolError(
            AlertDescription.BAD_CERTIFICATE, f"certificate does not decompress: {exc}"
        ) from exc
    if len(plain) != length:
        raise TlsProtocolError(
            AlertDescription.BAD_CERTIFICATE,
            f"certificate decompresses to {len(plain)} bytes, not the {length} announced",
        )
    return plain


def send_certificate13(
    conn: TlsConnection,
    context: bytes,
    certified: CertifiedKey | None,
    algorithm: int | None,
    leaf_extensions: bytes = b"",
) -> None:
    """Send our Certificate, compressed with ``algorithm`` when one was agreed."""
    chain = certified.chain_der if certified is not None else []
    body = certificate13(context, chain, leaf_extensions)
    if algorithm is None or not chain:
        conn.send_handshake(HandshakeType.CERTIFICATE, body)
        return
    if certified is not None and not context and not leaf_extensions:
        # A server's chain compresses the same way every time: once per algorithm.
        cached = certified.compressed.get(algorithm)
        if cached is None:
            cached = certified.compressed[algorithm] = compressed_certificate(algorithm, body)
        conn.send_handshake(HandshakeType.COMPRESSED_CERTIFICATE, cached)
        return
    conn.send_handshake(
        HandshakeType.COMPRESSED_CERTIFICATE, compressed_certificate(algorithm, body)
    )
