"""TlsConfig: everything a connection needs to know, shared by many connections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from looming.devices.clock import Clock
from looming.devices.random import Random
from looming.errors import UsageError

from .certs import CertifiedKey, TrustStore
from .constants import TLS12, TLS13, CipherSuite, NamedGroup, PskKeyExchangeMode
from .keyexchange import SUPPORTED_GROUPS
from .session import ClientSessionCache, TicketKeys
from .signing import DEFAULT_SCHEMES
from .suites import TLS12_SUITES, TLS13_SUITES


def _default_compression() -> tuple[int, ...]:
    from .certcompress import available

    return available()


@dataclass
class TlsConfig:
    """Settings for TLS clients and servers.

    A client verifies the server against ``trust`` (the system store when
    None) unless ``verify_peer`` is False; a server asks for a client
    certificate when ``client_trust`` is set and insists on one when
    ``require_client_certificate``.
    """

    certificates: list[CertifiedKey] = field(default_factory=list)
    trust: TrustStore | None = None
    verify_peer: bool = True
    pins: Sequence[bytes] = ()
    client_trust: TrustStore | None = None
    require_client_certificate: bool = False
    alpn_protocols: Sequence[bytes] = ()
    versions: Sequence[int] = (TLS13, TLS12)
    cipher_suites: Sequence[int] = (*TLS13_SUITES, *TLS12_SUITES)
    groups: Sequence[int] = SUPPORTED_GROUPS
    # Groups a client sends a key share for up front; others cost a HelloRetryRequest.
    key_share_groups: Sequence[int] = (NamedGroup.X25519,)
    signature_schemes: Sequence[int] = DEFAULT_SCHEMES
    # Sent as signature_algorithms_cert when set: the signatures acceptable on
    # certificates, if they differ from those acceptable in the handshake.
    certificate_signature_schemes: Sequence[int] | None = None
    # RFC 8879 algorithms (1 zlib, 2 brotli) we decompress and compress certificates
    # with, in preference order; () turns certificate compression off.
    certificate_compression: Sequence[int] = field(default_factory=_default_compression)
    # RFC 8449: the largest record plaintext we accept; None: do not send the extension.
    record_size_limit: int | None = None
    # TLS 1.3 records are padded to a multiple of this many bytes (0: no padding).
    padding_block: int = 0
    # Server: tickets sent after each handshake; ticket lifetime.
    session_tickets: int = 1
    ticket_lifetime_s: int = 7200
    ticket_keys: TicketKeys | None = None
    # 0-RTT is off unless asked for: a server accepting up to this many early bytes,
    # a client sending early data when a session allows it.
    max_early_data: int = 0
    enable_early_data: bool = False
    # Client: resumable sessions by server name (None: never resume automatically).
    session_cache: ClientSessionCache | None = None
    # TLS 1.3 resumption modes, in order of preference. psk_dhe_ke (the default)
    # runs a fresh (EC)DHE exchange, so a stolen ticket key does not reveal the
    # traffic of resumed sessions; psk_ke skips it (faster, no forward secrecy
    # for resumed connections) and is used only when listed here. A client that
    # lists psk_ke alone sends no key share when it resumes (an empty key_share:
    # a server that refuses the ticket asks for one with a HelloRetryRequest).
    psk_key_exchange_modes: Sequence[int] = (PskKeyExchangeMode.PSK_DHE_KE,)
    # Send a KeyUpdate after this many records under one key (None: the AEAD's limit).
    key_update_after_records: int | None = None
    # TLS 1.2 without RFC 7627's extended master secret is refused unless this is
    # False (a warning is logged for each such connection): without it a
    # man-in-the-middle can synchronise two sessions' keys (the triple handshake).
    require_extended_master_secret: bool = True
    # Opt-in key log (see looming.tls.keylog): given each NSS key log line.
    key_log: Callable[[str], None] | None = None
    # RFC 8446 appendix D.4: a client offering TLS 1.3 sends a random 32-byte
    # legacy_session_id, so the server answers with a change_cipher_spec and
    # middleboxes see what looks like a resumed TLS 1.2 session. False sends an
    # empty one (and no change_cipher_spec follows), as a TLS 1.3-only client may.
    middlebox_compatibility: bool = True
    # For tests only: called as (handshake type, body) -> body on every handshake
    # message we send, before it is framed, hashed into the transcript and
    # encrypted. The byte-exact replay of published traces (RFC 8448) uses it for
    # what a trace fixes but the engine chooses otherwise: extension order, code
    # points announced but not implemented, opaque ticket contents, and RSA-PSS
    # salts, which OpenSSL draws internally. A ClientHello offering a PSK is
    # passed with an all-zero binder, before the binder is computed over it; the
    # rewriter must keep pre_shared_key's binders last and the same length.
    handshake_rewriter: Callable[[int, bytes], bytes] | None = None
    # Where key shares, nonces, tickets and salts come from, and what expires
    # tickets and checks certificate dates: the unikernel's devices (on the
    # host, looming.unix.host_devices()). Required, keyword only.
    random: Random = field(kw_only=True)
    clock: Clock = field(kw_only=True)

    def __post_init__(self) -> None:
        self.alpn_protocols = [
            p.encode() if isinstance(p, str) else bytes(p) for p in self.alpn_protocols
        ]
        for proto in self.alpn_protocols:
            if not 1 <= len(proto) <= 255:
                raise UsageError(f"ALPN protocol {proto!r} must be 1 to 255 bytes")
        if not set(self.versions) <= {TLS12, TLS13} or not self.versions:
            raise UsageError(
                "versions must be a non-empty subset of TLS 1.2 (0x0303) and 1.3 (0x0304)"
            )
        unknown_suites = [s for s in self.cipher_suites if s not in CipherSuite._value2member_map_]
        if unknown_suites or not self.cipher_suites:
            names = ", ".join(s.name for s in CipherSuite)
            raise UsageError(
                f"cipher suites {unknown_suites} are not supported; choose from {names}"
            )
        unknown_groups = [g for g in self.groups if g not in NamedGroup._value2member_map_]
        if unknown_groups or not self.groups:
            names = ", ".join(g.name for g in NamedGroup)
            raise UsageError(f"groups {unknown_groups} are not supported; choose from {names}")
        modes = list(self.psk_key_exchange_modes)
        if not modes or len(set(modes)) != len(modes) or not set(modes) <= {0, 1}:
            raise UsageError(
                "psk_key_exchange_modes must list psk_dhe_ke (1) and/or psk_ke (0), each once"
            )
        if self.record_size_limit is not None and not 64 <= self.record_size_limit <= (1 << 14) + 1:
            raise UsageError("record_size_limit must be between 64 and 16385")
        if self.require_client_certificate and self.client_trust is None and not self.pins:
            raise UsageError(
                "require_client_certificate needs client_trust (CAs to validate against) or pins"
            )
        if self.ticket_keys is None:
            self.ticket_keys = TicketKeys(self.random)
