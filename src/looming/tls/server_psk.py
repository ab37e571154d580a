"""TLS 1.3 resumption on the server: tickets in, PSK binders, 0-RTT acceptance, tickets out.

A ticket is accepted at most once (see :class:`looming.tls.session.TicketKeys`),
which is what makes 0-RTT replay-safe across connections to this server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from looming.errors import Malformed

from . import messages as m
from .certs import parse_chain
from .constants import (
    TLS13,
    AlertDescription,
    ExtensionType,
    HandshakeType,
    PskKeyExchangeMode,
    plain_values,
)
from .errors import TlsProtocolError
from .keyschedule import resumption_psk
from .messages import ClientHello
from .session import TicketState
from .suites import SUITES
from .wire import Reader, u8, u32

# Plain-int views of the code points (see plain_values).
X = plain_values(ExtensionType)
H = plain_values(HandshakeType)

if TYPE_CHECKING:
    from .config import TlsConfig
    from .keyschedule import KeySchedule13
    from .link import HandshakeConnection, Negotiated


class ResumingServer(Protocol):
    """What tickets and resumption read and set of the server handshake
    (``server.ServerHandshake``)."""

    config: TlsConfig
    conn: HandshakeConnection
    negotiated: Negotiated
    schedule: KeySchedule13 | None
    ticket_state: TicketState | None
    opened_ticket: tuple[bytes, TicketState | None] | None
    psk_mode: int | None
    ticket_age_skew_ms: int
    tickets_sent: int
    client_chain: list[bytes]


# How far the client's idea of a ticket's age may differ from ours for 0-RTT.
EARLY_DATA_AGE_WINDOW_MS = 10_000


def _open_ticket(hs: ResumingServer, ticket: bytes) -> TicketState | None:
    """Decrypt ``ticket`` once per handshake (choosing the suite needs it too)."""
    if hs.opened_ticket is not None and hs.opened_ticket[0] == ticket:
        return hs.opened_ticket[1]
    assert hs.config.ticket_keys is not None
    state = hs.config.ticket_keys.open(ticket)
    hs.opened_ticket = (ticket, state)
    return state


def ticket_suite(hs: ResumingServer, hello: ClientHello) -> int | None:
    """The suite of the first offered ticket, if it is ours and both sides still allow it."""
    data = hello.extensions.get(X.PRE_SHARED_KEY)
    if data is None or hs.config.ticket_keys is None:
        return None
    try:
        identities = Reader(data).sub(2, minimum=7)
        ticket = identities.vector(2, minimum=1)
    except Malformed:
        return None  # _try_psk reports the malformed extension
    state = _open_ticket(hs, ticket)
    if state is None or state.version != TLS13:
        return None
    suite = state.cipher_suite
    if suite in hello.cipher_suites and suite in hs.config.cipher_suites:
        return suite
    return None


def offers_mode(hs: ResumingServer, hello: ClientHello, mode: int) -> bool:
    """Whether both the client and our configuration allow resumption by ``mode``."""
    data = hello.extensions.get(X.PSK_KEY_EXCHANGE_MODES)
    if data is None or mode not in hs.config.psk_key_exchange_modes:
        return False
    try:
        return mode in Reader(data).vector(1, minimum=1)
    except Malformed:
        return False  # try_psk reports the malformed extension


def try_psk(
    hs: ResumingServer, hello: ClientHello, alpn: bytes | None, have_share: bool = True
) -> int | None:
    """Accept the first PSK identity if it is a valid, unused ticket of ours; check its binder.

    The resumption mode is our first preference the client also offers
    (psk_dhe_ke only when the client sent a usable key share).
    """
    exts = hello.extensions
    if X.PRE_SHARED_KEY not in exts:
        return None
    if X.PSK_KEY_EXCHANGE_MODES not in exts:
        raise TlsProtocolError(
            AlertDescription.MISSING_EXTENSION, "pre_shared_key without psk_key_exchange_modes"
        )
    modes = Reader(exts[X.PSK_KEY_EXCHANGE_MODES]).vector(1, minimum=1)
    r = Reader(exts[X.PRE_SHARED_KEY])
    identities = r.sub(2, minimum=7)
    binders_block = r.vector(2, minimum=33)
    r.expect_end("pre_shared_key")
    entries = []
    while not identities.at_end():
        entries.append((identities.vector(2, minimum=1), identities.u32()))
    br = Reader(binders_block)
    binders = []
    while not br.at_end():
        binders.append(br.vector(1, minimum=32))
    if len(binders) != len(entries):
        raise TlsProtocolError(
            AlertDescription.ILLEGAL_PARAMETER, "binder count differs from identity count"
        )
    mode = next(
        (
            mode
            for mode in hs.config.psk_key_exchange_modes
            if mode in modes and (have_share or mode == PskKeyExchangeMode.PSK_KE)
        ),
        None,
    )
    if mode is None:
        return None
    conn = hs.conn
    neg = hs.negotiated
    assert neg.suite is not None and hs.config.ticket_keys is not None
    ticket, obfuscated_age = entries[0]
    state = _open_ticket(hs, ticket)
    now_ms = hs.config.clock.now_ns() // 1_000_000
    if (
        state is None
        or state.version != TLS13
        or SUITES[state.cipher_suite].hash_name != neg.suite.hash_name
    ):
        return None
    if now_ms - state.issued_ms > state.lifetime_s * 1000:
        return None
    truncated = hello.raw[: len(hello.raw) - 2 - len(binders_block)]
    schedule = conn.key_schedule(neg.suite.hash_name, state.secret)
    expected = schedule.finished_mac(
        schedule.binder_key(), conn.transcript.digest_with(neg.suite.hash_name, truncated)
    )
    m.check_finished(expected, binders[0])
    if not hs.config.ticket_keys.redeem(state, now_ms):
        return None  # single use: a replayed ticket gets a full handshake
    hs.schedule = schedule
    hs.ticket_state = state
    hs.psk_mode = mode
    neg.resumption_mode = mode
    state_age = (obfuscated_age - state.ticket_age_add) % (1 << 32)
    hs.ticket_age_skew_ms = abs(state_age - (now_ms - state.issued_ms))
    neg.resumed = True
    if state.client_chain_der:
        neg.peer_certificates = parse_chain(state.client_chain_der)
    return 0


def accept_early_data(
    hs: ResumingServer, retry: bool, psk_selected: int | None, alpn: bytes | None
) -> bool:
    state = hs.ticket_state
    conn = hs.conn
    neg = hs.negotiated
    if retry or psk_selected != 0 or state is None or hs.schedule is None or neg.suite is None:
        return False
    if hs.config.max_early_data <= 0 or state.max_early_data <= 0:
        return False
    if state.cipher_suite != neg.suite.suite or state.alpn_protocol != (alpn or b""):
        return False
    if hs.ticket_age_skew_ms > EARLY_DATA_AGE_WINDOW_MS:
        return False
    early_secret = hs.schedule.derive(
        hs.schedule.early_secret, b"c e traffic", conn.transcript.digest()
    )
    conn.set_read_secret13(early_secret)
    neg.receiving_early_data = True
    neg.early_data_accepted = True
    return True


# --- the client's second flight ---------------------------------------------


def send_ticket13(hs: ResumingServer, resumption_master: bytes) -> None:
    conn = hs.conn
    neg = hs.negotiated
    config = hs.config
    assert neg.suite is not None and config.ticket_keys is not None
    nonce = u8(hs.tickets_sent)
    hs.tickets_sent += 1
    age_add = int.from_bytes(config.random.bytes(4), "big")
    max_early = config.max_early_data
    chain = hs.client_chain or (hs.ticket_state.client_chain_der if hs.ticket_state else [])
    state = TicketState(
        version=TLS13,
        cipher_suite=neg.suite.suite,
        secret=resumption_psk(neg.suite.hash_name, resumption_master, nonce),
        ticket_age_add=age_add,
        issued_ms=config.clock.now_ns() // 1_000_000,
        lifetime_s=config.ticket_lifetime_s,
        max_early_data=max_early,
        alpn_protocol=neg.alpn_protocol or b"",
        server_name=neg.server_name or "",
        ticket_id=config.random.bytes(16),
        client_chain_der=list(chain),
    )
    exts: dict[int, bytes] = {X.EARLY_DATA: u32(max_early)} if max_early > 0 else {}
    ticket = m.NewSessionTicket13(
        config.ticket_lifetime_s, age_add, nonce, config.ticket_keys.seal(state), exts
    )
    conn.send_handshake(H.NEW_SESSION_TICKET, ticket.emit(), add_to_transcript=False)
