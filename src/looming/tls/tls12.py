"""Pieces of TLS 1.2 (RFC 5246, RFC 7627) shared by client and server."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .constants import AlertDescription, NamedGroup
from .errors import TlsProtocolError
from .record import Protection
from .suites import SuiteInfo, prf12
from .wire import Reader, u8, u16, u16_list, u32, vec8, vec16

if TYPE_CHECKING:
    from .config import TlsConfig
    from .link import HandshakeConnection as TlsConnection
    from .link import Negotiated

log = logging.getLogger("looming.tls")

# ECDHE for 1.2 uses the classical groups only.
GROUPS12 = (NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1)
_NAMED_CURVE = 3


def extended_master_secret(suite: SuiteInfo, premaster: bytes, session_hash: bytes) -> bytes:
    return prf12(suite.hash_name, premaster, b"extended master secret", session_hash, 48)


def master_secret(
    suite: SuiteInfo,
    premaster: bytes,
    ems: bool,
    session_hash: bytes,
    client_random: bytes,
    server_random: bytes,
) -> bytes:
    """RFC 7627's extended master secret, or RFC 5246 section 8.1's when not negotiated."""
    if ems:
        return extended_master_secret(suite, premaster, session_hash)
    return prf12(suite.hash_name, premaster, b"master secret", client_random + server_random, 48)


def install_keys(
    conn: TlsConnection,
    neg: Negotiated,
    master_secret: bytes,
    client_random: bytes,
    server_random: bytes,
) -> tuple[Protection, Protection]:
    """Derive the key block; returns (client write, server write) protections."""
    suite = neg.suite
    assert suite is not None
    iv_length = 12 if suite.is_chacha else 4
    block = prf12(
        suite.hash_name,
        master_secret,
        b"key expansion",
        server_random + client_random,
        2 * suite.key_length + 2 * iv_length,
    )
    k = suite.key_length
    client_key, server_key = block[:k], block[k : 2 * k]
    client_iv, server_iv = block[2 * k : 2 * k + iv_length], block[2 * k + iv_length :]
    neg.master_secret12 = master_secret
    neg.exporter_randoms = client_random + server_random
    conn.log_master_secret12(client_random, master_secret)
    return Protection(suite, client_key, client_iv, tls13=False), Protection(
        suite, server_key, server_iv, tls13=False
    )


def finished_data(conn: TlsConnection, neg: Negotiated, label: bytes) -> bytes:
    assert neg.suite is not None
    return prf12(neg.suite.hash_name, neg.master_secret12, label, conn.transcript.digest(), 12)


@dataclass
class ServerKeyExchange12:
    """ECDHE ServerKeyExchange (RFC 8422 section 5.4): named-curve parameters, signed."""

    group: int
    public: bytes
    scheme: int
    signature: bytes

    @staticmethod
    def params(group: int, public: bytes) -> bytes:
        """The ServerECDHParams the signature covers (after the two randoms)."""
        return u8(_NAMED_CURVE) + u16(group) + vec8(public)

    @classmethod
    def parse(cls, body: bytes) -> ServerKeyExchange12:
        r = Reader(body)
        curve_type = r.u8()
        if curve_type != _NAMED_CURVE:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "ServerKeyExchange is not for a named curve"
            )
        group = r.u16()
        public = r.vector(1, minimum=1)
        scheme = r.u16()
        signature = r.vector(2)
        r.expect_end("ServerKeyExchange")
        return cls(group, public, scheme, signature)

    def emit(self) -> bytes:
        return self.params(self.group, self.public) + u16(self.scheme) + vec16(self.signature)


@dataclass
class CertificateRequest12:
    """CertificateRequest (RFC 5246 section 7.4.4, with RFC 8422's certificate types)."""

    schemes: list[int]
    certificate_types: bytes = bytes((1, 64))  # rsa_sign, ecdsa_sign

    @classmethod
    def parse(cls, body: bytes) -> CertificateRequest12:
        r = Reader(body)
        types = r.vector(1, minimum=1)  # the schemes list says the same
        schemes = r.u16_list(2, minimum=2)
        r.vector(2)  # acceptable CAs: we send our one configured chain regardless
        r.expect_end("CertificateRequest")
        return cls(schemes, types)

    def emit(self) -> bytes:
        return vec8(self.certificate_types) + u16_list(self.schemes) + vec16(b"")


@dataclass
class NewSessionTicket12:
    """NewSessionTicket (RFC 5077 section 3.3)."""

    lifetime_hint_s: int
    ticket: bytes

    @classmethod
    def parse(cls, body: bytes) -> NewSessionTicket12:
        r = Reader(body)
        lifetime = r.u32()
        ticket = r.vector(2)
        r.expect_end("NewSessionTicket")
        return cls(lifetime, ticket)

    def emit(self) -> bytes:
        return u32(self.lifetime_hint_s) + vec16(self.ticket)


def check_extended_master_secret(config: TlsConfig, offered: bool, peer: str) -> None:
    """Refuse a TLS 1.2 peer without RFC 7627's extended master secret, unless
    configured not to; then go on, with a warning in the log."""
    if offered:
        return
    if config.require_extended_master_secret:
        raise TlsProtocolError(
            AlertDescription.HANDSHAKE_FAILURE,
            f"{peer} does not support the extended master secret (RFC 7627); "
            "require_extended_master_secret=False (--no-require-ems) allows it, insecurely",
        )
    log.warning(
        "TLS 1.2 %s without the extended master secret (RFC 7627): accepted because "
        "require_extended_master_secret is off; the session is open to the triple "
        "handshake attack",
        peer,
    )
