"""Resumption state: client sessions, and the server's encrypted, single-use tickets.

The server keeps no per-session state: a ticket is the session sealed with
AES-256-GCM under a key only the server holds. For 0-RTT replay protection
the server remembers the identifiers of tickets already redeemed until they
expire, so each ticket is accepted at most once (RFC 8446 section 8.1).
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from looming.devices.random import Random
from looming.errors import Malformed

from .wire import Reader, u8, u16, vec8, vec16


@dataclass
class Session:
    """What a client keeps to resume a session."""

    version: int
    cipher_suite: int
    server_name: str | None
    alpn_protocol: bytes | None
    ticket: bytes = field(repr=False)
    secret: bytes = field(repr=False)  # TLS 1.3: the PSK; TLS 1.2: the master secret
    ticket_age_add: int
    lifetime_s: int
    received_at_ms: int
    max_early_data: int = 0
    peer_chain_der: list[bytes] = field(default_factory=list)
    # peer_chain_der parsed, when the connection that got this session had it
    # parsed already: a resumed handshake then reports it without parsing again.
    peer_certificates: list[x509.Certificate] = field(
        default_factory=list, repr=False, compare=False
    )

    def expired(self, now_ms: int) -> bool:
        return now_ms - self.received_at_ms > self.lifetime_s * 1000


class ClientSessionCache:
    """The most recent resumable session per server name; a session is used once."""

    def __init__(self) -> None:
        self._sessions: dict[str | None, list[Session]] = {}

    def put(self, session: Session) -> None:
        self._sessions.setdefault(session.server_name, []).append(session)

    def take(self, server_name: str | None, now_ms: int) -> Session | None:
        queue = self._sessions.get(server_name, [])
        while queue:
            session = queue.pop()
            if not session.expired(now_ms):
                return session
        return None


@dataclass
class TicketState:
    """The session inside a server's ticket."""

    version: int
    cipher_suite: int
    secret: bytes = field(repr=False)
    ticket_age_add: int
    issued_ms: int
    lifetime_s: int
    max_early_data: int
    alpn_protocol: bytes
    server_name: str
    ticket_id: bytes
    client_chain_der: list[bytes] = field(default_factory=list)

    def encode(self) -> bytes:
        chain = b"".join(vec16(c) for c in self.client_chain_der)
        return (
            u16(self.version)
            + u16(self.cipher_suite)
            + vec8(self.secret)
            + _FIXED.pack(self.ticket_age_add, self.issued_ms, self.lifetime_s, self.max_early_data)
            + vec8(self.alpn_protocol)
            + vec16(self.server_name.encode())
            + vec8(self.ticket_id)
            + u8(len(self.client_chain_der))
            + chain
        )

    @classmethod
    def decode(cls, data: bytes) -> TicketState:
        r = Reader(data)
        version, cipher_suite = r.u16(), r.u16()
        secret = r.vector(1)
        # ticket_age_add, issued_ms, lifetime_s, max_early_data: one fixed block.
        age_add, issued_ms, lifetime_s, max_early = _FIXED.unpack(r.take(_FIXED.size))
        alpn_protocol = r.vector(1)
        server_name = r.vector(2).decode("utf-8", "replace")
        ticket_id = r.vector(1)
        chain_length = r.u8()
        chain = [r.vector(2) for _ in range(chain_length)] if chain_length else []
        state = cls(
            version,
            cipher_suite,
            secret,
            age_add,
            issued_ms,
            lifetime_s,
            max_early,
            alpn_protocol,
            server_name,
            ticket_id,
            chain,
        )
        r.expect_end("ticket")
        return state


_FIXED = struct.Struct(">IQII")


# A ticket key as shared between processes: 16 bytes of name, 32 of AES-256-GCM key.
TICKET_KEY_BYTES = 48


class TicketKeys:
    """The server's ticket sealing keys and the record of redeemed tickets.

    The newest key seals; it and up to ``keep - 1`` older ones open. With
    ``rotate_after_s`` a new key replaces the sealing one that often (timed by
    the tickets' issue times, so no clock is read here); a ticket then stays
    resumable for ``keep - 1`` more periods. Keys may instead be given
    (:meth:`from_bytes`, from a file several servers share, as nginx's
    ``ssl_session_ticket_key``), so that each resumes the others' sessions;
    :meth:`load` replaces them when the file changes. Replay protection of
    0-RTT (each ticket redeemed once) holds within one process only.
    """

    def __init__(self, random: Random, rotate_after_s: int | None = None, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep at least the sealing key")
        self._random = random
        self.rotate_after_s = rotate_after_s
        self.keep = keep
        # Newest first: (name, aead); the first seals.
        self._keys: list[tuple[bytes, AESGCM]] = []
        self._sealing_since_ms: int | None = None
        self._add(random.bytes(TICKET_KEY_BYTES))
        self._redeemed: dict[bytes, int] = {}
        # The same entries ordered by expiry, so forgetting expired ones costs
        # O(log n) per redemption rather than a scan of every ticket ever used.
        self._expiries: list[tuple[int, bytes]] = []

    @classmethod
    def from_bytes(cls, data: bytes, random: Random) -> TicketKeys:
        """Keys from a shared file: 48 bytes each, the first sealing."""
        keys = cls(random)
        keys.load(data)
        return keys

    def load(self, data: bytes) -> None:
        """Replace the keys with those in ``data`` (48 bytes each, the first sealing)."""
        if not data or len(data) % TICKET_KEY_BYTES:
            raise ValueError(
                f"a ticket key file holds one or more {TICKET_KEY_BYTES}-byte keys, "
                f"not {len(data)} bytes (make one with: openssl rand {TICKET_KEY_BYTES})"
            )
        self._keys = []
        self.rotate_after_s = None  # keys shared with other processes change only together
        chunks = [data[i : i + TICKET_KEY_BYTES] for i in range(0, len(data), TICKET_KEY_BYTES)]
        self.keep = len(chunks)
        for chunk in reversed(chunks):
            self._add(chunk)

    def _add(self, material: bytes) -> None:
        self._keys.insert(0, (material[:16], AESGCM(material[16:])))
        del self._keys[self.keep :]

    def rotate(self) -> None:
        """A fresh sealing key; the oldest beyond ``keep`` is forgotten."""
        self._add(self._random.bytes(TICKET_KEY_BYTES))
        self._sealing_since_ms = None

    @property
    def names(self) -> list[bytes]:
        return [name for name, _ in self._keys]

    def seal(self, state: TicketState) -> bytes:
        if self.rotate_after_s is not None:
            if self._sealing_since_ms is None:
                self._sealing_since_ms = state.issued_ms
            elif state.issued_ms - self._sealing_since_ms >= self.rotate_after_s * 1000:
                self.rotate()
                self._sealing_since_ms = state.issued_ms
        name, aead = self._keys[0]
        nonce = self._random.bytes(12)
        return name + nonce + aead.encrypt(nonce, state.encode(), name)

    def open(self, ticket: bytes) -> TicketState | None:
        """The state inside ``ticket``, or None if it is not one of ours."""
        if len(ticket) < 16 + 12 + 16:
            return None
        name = ticket[:16]
        for key_name, aead in self._keys:
            if key_name == name:
                try:
                    plain = aead.decrypt(ticket[16:28], ticket[28:], name)
                    return TicketState.decode(plain)
                except (InvalidTag, Malformed, UnicodeDecodeError):
                    return None
        return None

    def redeem(self, state: TicketState, now_ms: int) -> bool:
        """Mark the ticket used; False if it was already used (a replay)."""
        expiries = self._expiries
        while expiries and expiries[0][0] < now_ms:
            _, ticket_id = heapq.heappop(expiries)
            del self._redeemed[ticket_id]
        if state.ticket_id in self._redeemed:
            return False
        expiry = state.issued_ms + state.lifetime_s * 1000
        self._redeemed[state.ticket_id] = expiry
        heapq.heappush(expiries, (expiry, state.ticket_id))
        return True
