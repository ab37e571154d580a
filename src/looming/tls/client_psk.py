"""TLS 1.3 resumption on the client: offering a ticket with its binder, 0-RTT data, new tickets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from looming.errors import UsageError

from .constants import (
    TLS13,
    AlertDescription,
    ContentType,
    ExtensionType,
    HandshakeType,
    plain_values,
)
from .errors import TlsProtocolError
from .keyschedule import resumption_psk
from .messages import NewSessionTicket13
from .session import Session
from .suites import SUITES
from .wire import Reader, extension, u8, u32, vec8, vec16

# Plain-int views of the code points (see plain_values).
X = plain_values(ExtensionType)
H = plain_values(HandshakeType)

if TYPE_CHECKING:
    from .config import TlsConfig
    from .keyschedule import KeySchedule13
    from .link import HandshakeConnection, Negotiated


class ResumingClient(Protocol):
    """What resumption reads and sets of the client handshake (``client.ClientHandshake``)."""

    config: TlsConfig
    conn: HandshakeConnection
    negotiated: Negotiated
    offered_session: Session | None
    offered_psk: bool
    schedule: KeySchedule13 | None
    early_data: bytes
    early_data_sent: bytes
    resumption_master: bytes
    server_chain: list[bytes]

    def remember(self, session: Session) -> None: ...


def send_with_psk(hs: ResumingClient, head: bytes, exts: list[bytes], session: Session) -> None:
    """Append pre_shared_key (last) and fill in its binder over the truncated hello."""
    suite = SUITES[session.cipher_suite]
    hs.offered_psk = True
    now_ms = hs.config.clock.now_ns() // 1_000_000
    age = (max(0, now_ms - session.received_at_ms) + session.ticket_age_add) % (1 << 32)
    identities = vec16(vec16(session.ticket) + u32(age))
    binder_length = suite.hash_length
    binders = vec16(vec8(bytes(binder_length)))
    psk_ext = extension(X.PRE_SHARED_KEY, identities + binders)
    body = head + vec16(b"".join(exts) + psk_ext)
    rewriter = hs.config.handshake_rewriter
    if rewriter is not None:
        # The binder covers the hello, so a test rewriter must see it before the
        # binder is computed: it gets the hello with an all-zero binder and must
        # leave pre_shared_key last with binders of the same length.
        body = rewriter(H.CLIENT_HELLO, body)
        if not body.endswith(binders):
            raise UsageError("handshake_rewriter must keep the PSK binders last and unchanged")
    message = u8(H.CLIENT_HELLO) + len(body).to_bytes(3, "big") + body
    truncated = message[: len(message) - len(binders)]
    hs.schedule = hs.conn.key_schedule(suite.hash_name, session.secret)
    binder = hs.schedule.finished_mac(
        hs.schedule.binder_key(), hs.conn.transcript.digest_with(suite.hash_name, truncated)
    )
    hs.conn.send_handshake(
        H.CLIENT_HELLO, body[: len(body) - len(binders)] + vec16(vec8(binder)), rewrite=False
    )


def send_early_data(hs: ResumingClient, session: Session) -> None:
    assert hs.schedule is not None
    suite = SUITES[session.cipher_suite]
    conn = hs.conn
    early_secret = hs.schedule.derive(
        hs.schedule.early_secret,
        b"c e traffic",
        conn.transcript.digest_with(suite.hash_name, b""),
    )
    hs.negotiated.suite = suite
    conn.set_write_secret13(early_secret)
    hs.early_data_sent = hs.early_data[: session.max_early_data]
    conn.records.write_records(ContentType.APPLICATION_DATA, hs.early_data_sent)


def new_session_ticket13(hs: ResumingClient, body: bytes) -> None:
    neg = hs.negotiated
    assert neg.suite is not None
    message = NewSessionTicket13.parse(body)
    lifetime, age_add, nonce, ticket, exts = (
        message.lifetime_s,
        message.age_add,
        message.nonce,
        message.ticket,
        message.extensions,
    )
    if lifetime > 604800:
        raise TlsProtocolError(
            AlertDescription.ILLEGAL_PARAMETER, "ticket lifetime over seven days"
        )
    max_early = 0
    if X.EARLY_DATA in exts:
        er = Reader(exts[X.EARLY_DATA])
        max_early = er.u32()
        er.expect_end("early_data")
    session = Session(
        version=TLS13,
        cipher_suite=neg.suite.suite,
        server_name=neg.server_name,
        alpn_protocol=neg.alpn_protocol,
        ticket=ticket,
        secret=resumption_psk(neg.suite.hash_name, hs.resumption_master, nonce),
        ticket_age_add=age_add,
        lifetime_s=lifetime,
        # Rounded up, so the age we report never exceeds the true age: a
        # server's own view of the age (from issue time) must not be smaller.
        received_at_ms=-(-hs.config.clock.now_ns() // 1_000_000),
        max_early_data=max_early,
        peer_chain_der=list(hs.server_chain)
        or (hs.offered_session.peer_chain_der if hs.offered_session else []),
        peer_certificates=list(neg.peer_certificates),
    )
    hs.remember(session)
