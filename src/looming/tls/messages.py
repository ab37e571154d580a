"""Handshake message bodies and extension payloads shared by client and server."""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from looming.devices.random import Random
from looming.errors import Malformed

from .certs import CertifiedKey, check_pins, is_pss_certificate, parse_chain, validate_chain
from .config import TlsConfig
from .constants import TLS12, AlertDescription
from .errors import TlsProtocolError
from .signing import schemes_for_key, sign, verify
from .wire import Reader, extension, parse_extensions, u8, u16, u32, vec8, vec16, vec24

CV_SERVER = b"TLS 1.3, server CertificateVerify"
CV_CLIENT = b"TLS 1.3, client CertificateVerify"


@dataclass
class ClientHello:
    """ClientHello (RFC 8446 section 4.1.2, RFC 5246 section 7.4.1.2) as a server reads it."""

    raw: bytes  # the whole message, for the transcript
    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suites: list[int]
    compression: bytes
    extensions: dict[int, bytes]
    extension_order: list[int]

    @classmethod
    def parse(cls, body: bytes, raw: bytes) -> ClientHello:
        r = Reader(body)
        legacy_version = r.u16()
        random = r.take(32)
        session_id = r.vector(1, maximum=32)
        suites = r.u16_list(2, minimum=2)
        compression = r.vector(1, minimum=1)
        ext_list = parse_extensions(r)
        r.expect_end("ClientHello")
        return cls(
            raw,
            legacy_version,
            random,
            session_id,
            suites,
            compression,
            dict(ext_list),
            [t for t, _ in ext_list],
        )


@dataclass
class ServerHello:
    """ServerHello (RFC 8446 section 4.1.3, RFC 5246 section 7.4.1.3); a HelloRetryRequest
    is one with HELLO_RETRY_REQUEST_RANDOM as its random."""

    random: bytes
    session_id: bytes
    cipher_suite: int
    extensions: dict[int, bytes]  # type -> body, emitted in this order
    legacy_version: int = TLS12
    compression: int = 0

    @classmethod
    def parse(cls, body: bytes) -> ServerHello:
        r = Reader(body)
        legacy_version = r.u16()
        random = r.take(32)
        session_id = r.vector(1, maximum=32)
        suite = r.u16()
        compression = r.u8()
        extensions = dict(parse_extensions(r))
        r.expect_end("ServerHello")
        return cls(random, session_id, suite, extensions, legacy_version, compression)

    def emit(self) -> bytes:
        return (
            u16(self.legacy_version)
            + self.random
            + vec8(self.session_id)
            + u16(self.cipher_suite)
            + u8(self.compression)
            + _extensions(self.extensions)
        )


def encrypted_extensions(extensions: dict[int, bytes]) -> bytes:
    """The EncryptedExtensions body (RFC 8446 section 4.3.1), in the given order."""
    return _extensions(extensions)


def certificate13(
    context: bytes, chain_der: Sequence[bytes], leaf_extensions: bytes = b""
) -> bytes:
    entries = b"".join(
        vec24(der) + vec16(leaf_extensions if index == 0 else b"")
        for index, der in enumerate(chain_der)
    )
    return vec8(context) + vec24(entries)


def parse_certificate13(body: bytes) -> tuple[bytes, list[bytes]]:
    r = Reader(body)
    context = r.vector(1)
    entries = r.sub(3)
    r.expect_end("Certificate")
    chain: list[bytes] = []
    while not entries.at_end():
        chain.append(entries.vector(3, minimum=1))
        entries.vector(2)  # per-certificate extensions (OCSP, SCT): not used
    return context, chain


def certificate12(chain_der: Sequence[bytes]) -> bytes:
    return vec24(b"".join(vec24(der) for der in chain_der))


def parse_certificate12(body: bytes) -> list[bytes]:
    r = Reader(body)
    entries = r.sub(3)
    r.expect_end("Certificate")
    chain: list[bytes] = []
    while not entries.at_end():
        chain.append(entries.vector(3, minimum=1))
    return chain


def parse_alpn(body: bytes) -> list[bytes]:
    r = Reader(body)
    names = r.sub(2, minimum=2)
    r.expect_end("ALPN")
    out = []
    while not names.at_end():
        out.append(names.vector(1, minimum=1))
    return out


def alpn_body(protocols: Sequence[bytes]) -> bytes:
    return vec16(b"".join(vec8(p) for p in protocols))


def parse_server_name(body: bytes) -> str | None:
    r = Reader(body)
    names = r.sub(2, minimum=1)
    r.expect_end("server_name")
    while not names.at_end():
        name_type = names.u8()
        name = names.vector(2, minimum=1)
        if name_type == 0:
            try:
                text = name.decode("ascii")
            except UnicodeDecodeError as exc:
                raise Malformed("server name is not ASCII") from exc
            return text
    return None


def server_name_body(name: str) -> bytes:
    return vec16(b"\x00" + vec16(name.encode("ascii")))


def choose_scheme(
    certified: CertifiedKey, offered: Sequence[int], ours: Sequence[int], tls13: bool
) -> int | None:
    """Our most preferred scheme that the peer offered and the certified key can make."""
    possible = schemes_for_key(certified.key, tls13, certified.pss_only)
    for scheme in ours:
        if scheme in possible and scheme in offered:
            return scheme
    return None


def cv_content(context: bytes, transcript_hash: bytes) -> bytes:
    return b"\x20" * 64 + context + b"\x00" + transcript_hash


def make_certificate_verify(
    certified: CertifiedKey, scheme: int, content: bytes, random: Random | None = None
) -> bytes:
    return u16(scheme) + vec16(sign(certified.key, scheme, content, random))


def check_certificate_verify(
    body: bytes, leaf: x509.Certificate, content: bytes, allowed: Sequence[int], tls13: bool
) -> None:
    r = Reader(body)
    scheme = r.u16()
    signature = r.vector(2)
    r.expect_end("CertificateVerify")
    if scheme not in allowed:
        raise TlsProtocolError(
            AlertDescription.ILLEGAL_PARAMETER,
            f"peer signed with scheme {scheme:#06x}, which we did not offer",
        )
    pss_only = is_pss_certificate(leaf)
    if not verify(leaf.public_key(), scheme, content, signature, tls13, pss_only):
        raise TlsProtocolError(
            AlertDescription.DECRYPT_ERROR, "the peer's handshake signature does not verify"
        )


def check_finished(expected: bytes, received: bytes) -> None:
    if len(received) != len(expected):
        raise TlsProtocolError(
            AlertDescription.DECODE_ERROR,
            f"Finished is {len(received)} bytes, not {len(expected)}",
        )
    if not hmac.compare_digest(expected, received):
        raise TlsProtocolError(
            AlertDescription.DECRYPT_ERROR, "Finished does not match the handshake"
        )


def check_peer_chain(
    config: TlsConfig,
    chain_der: list[bytes],
    server_name: str | None,
    peer_is_server: bool,
) -> list[x509.Certificate]:
    """Parse and, as configured, validate and pin the peer's chain."""
    chain = parse_chain(chain_der)
    now = datetime.datetime.fromtimestamp(config.clock.now(), datetime.UTC).replace(tzinfo=None)
    if peer_is_server:
        if config.verify_peer:
            from .certs import TrustStore

            trust = config.trust if config.trust is not None else TrustStore.system()
            validate_chain(chain, trust, now, server_name, as_server_cert=True, chain_der=chain_der)
    elif config.client_trust is not None:
        validate_chain(
            chain, config.client_trust, now, None, as_server_cert=False, chain_der=chain_der
        )
    if config.pins:
        check_pins(chain, config.pins)
    return chain


@dataclass
class CertificateRequest13:
    """CertificateRequest (RFC 8446 section 4.3.2)."""

    context: bytes
    extensions: dict[int, bytes]  # type -> body, emitted in this order

    @classmethod
    def parse(cls, body: bytes) -> CertificateRequest13:
        r = Reader(body)
        context = r.vector(1)
        extensions = dict(parse_extensions(r))
        r.expect_end("CertificateRequest")
        return cls(context, extensions)

    def emit(self) -> bytes:
        return vec8(self.context) + _extensions(self.extensions)


@dataclass
class NewSessionTicket13:
    """NewSessionTicket (RFC 8446 section 4.6.1)."""

    lifetime_s: int
    age_add: int
    nonce: bytes
    ticket: bytes
    extensions: dict[int, bytes]  # type -> body, emitted in this order

    @classmethod
    def parse(cls, body: bytes) -> NewSessionTicket13:
        r = Reader(body)
        lifetime = r.u32()
        age_add = r.u32()
        nonce = r.vector(1)
        ticket = r.vector(2, minimum=1)
        extensions = dict(parse_extensions(r))
        r.expect_end("NewSessionTicket")
        return cls(lifetime, age_add, nonce, ticket, extensions)

    def emit(self) -> bytes:
        return (
            u32(self.lifetime_s)
            + u32(self.age_add)
            + vec8(self.nonce)
            + vec16(self.ticket)
            + _extensions(self.extensions)
        )


def _extensions(extensions: dict[int, bytes]) -> bytes:
    out = b""
    for ext_type, body in extensions.items():
        out += extension(ext_type, body)
    return vec16(out)
