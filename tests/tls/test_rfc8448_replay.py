"""Byte-exact replay of RFC 8448 sections 3 ("Simple 1-RTT Handshake") and 4 ("Resumed 0-RTT").

The engine runs as the trace's client and, separately, as its server, with
the trace's randomness and X25519 keys injected through a scripted Random
device. Every record it writes is compared with the trace's, byte for byte,
and every record of the other side is fed to it from the trace.

Where the trace fixes something the engine chooses otherwise, a test-only
rewriter (``TlsConfig.handshake_rewriter``) edits the outgoing message before
it is hashed and encrypted, and the tests assert exactly which parts that
was; everything else (randoms, key shares, suites, the key schedule, record
protection, Finished MACs, ticket age and lifetime, alerts) is the engine's.
The rewritten parts are: extensions the trace sends that the engine does not
(renegotiation_info and session_ticket without TLS 1.2, groups and signature
schemes it does not implement, supported_groups in EncryptedExtensions), the
order of ServerHello and EncryptedExtensions extensions, the RSA-PSS
signature (its salt is drawn inside OpenSSL), and the ticket's opaque
contents and two-byte nonce.

Section 4 ("Resumed 0-RTT Handshake") resumes the section 3 session with 0-RTT
data. The client's ClientHello carries a PSK binder computed over the hello
itself, so the rewriter sees that hello before the binder is computed (with
an all-zero binder) and the binder in the replayed record is the engine's. The
rewritten parts there are: renegotiation_info, the groups and signature
schemes the engine does not implement, and the padding extension in the
ClientHello; the order of ServerHello and EncryptedExtensions extensions, and
supported_groups and the server_name acknowledgement (which the engine omits
when resuming) in EncryptedExtensions. The trace's ticket is opaque (sealed
under a key only the trace's server held), so the server replay opens it with
a stand-in for that key (:class:`TraceTicketKeys`), which also gives the PSK
of the trace's two-byte ticket nonce. The server sends no ticket after
resuming, as in the trace (``session_tickets=0``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.hashes import SHA256

from looming.errors import UsageError
from looming.tls import (
    TLS13,
    ApplicationData,
    CertifiedKey,
    CipherSuite,
    ConnectionClosed,
    EarlyData,
    HandshakeComplete,
    NamedGroup,
    NewSession,
    TlsConfig,
    TlsConnection,
)
from looming.tls.constants import ExtensionType as X
from looming.tls.constants import HandshakeType as H
from looming.tls.errors import TlsProtocolError
from looming.tls.keyschedule import KeySchedule13, resumption_psk
from looming.tls.session import Session, TicketKeys, TicketState
from looming.tls.wire import Reader, extension, parse_extensions, vec16
from looming.unix.random import UnixRandom

DATA = Path(__file__).parent / "data"
APPLICATION_DATA = bytes(range(0x32))
EARLY_DATA = b"ABCDEF"
PADDING = 21  # RFC 7685 ClientHello padding; the engine never sends it
# RFC 8448 section 3: the resumption master secret the ticket's PSK is derived from.
RESUMPTION_MASTER = bytes.fromhex(
    "7df235f2031d2a051287d02b0241b0bfdaf86cc856231f2d5aba46c434ec196c"
)
TRACE_PSK = bytes.fromhex("4ecd0eb6ec3b4d87f5d6028f922ca4c5851a277fd41311c9e62d2c9492e1c4f3")
# The trace's ticket age: obfuscated_ticket_age (fad6aacb) minus ticket_age_add (fad6aac5).
TICKET_AGE_MS = 6
SIMPLE_HANDSHAKE_MS = 1_700_000_000_000  # when the section 3 handshake runs (any time will do)


def load_trace(file_name: str) -> dict[str, bytes]:
    entries: dict[str, str] = {}
    name = ""
    for line in (DATA / file_name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith(" "):
            entries[name] += line.strip()
        else:
            name = line.strip()
            entries[name] = ""
    return {key: bytes.fromhex(value) for key, value in entries.items()}


T = load_trace("rfc8448_simple_1rtt.txt")  # section 3
R = load_trace("rfc8448_resumed_0rtt.txt")  # section 4


class ScriptedRandom:
    """A Random device handing out the trace's values, in the order the engine asks."""

    seeded = True

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def bytes(self, n: int) -> bytes:
        assert self.chunks, f"the engine asked for {n} more random bytes than scripted"
        chunk = self.chunks.pop(0)
        assert len(chunk) == n, f"scripted {len(chunk)} bytes, engine asked for {n}"
        return chunk

    def randint(self, low: int, high: int) -> int:
        raise AssertionError("not used by the TLS engine")

    def random(self) -> float:
        raise AssertionError("not used by the TLS engine")


class TraceClock:
    """A Clock device at a time the test sets, in whole milliseconds."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def now_ns(self) -> int:
        return self.now_ms * 1_000_000

    def now(self) -> float:
        return self.now_ms / 1000

    def utc_offset_s(self) -> int:
        return 0


def body(message: bytes) -> bytes:
    """A handshake message without its four-byte header."""
    assert len(message) == 4 + int.from_bytes(message[1:4], "big")
    return message[4:]


def split_hello(hello_body: bytes, server: bool) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(everything before the extensions, the extensions in order)."""
    r = Reader(hello_body)
    r.u16()
    r.take(32)
    r.vector(1)
    if server:
        r.u16()
        r.u8()
    else:
        r.vector(2)
        r.vector(1)
    head_length = len(hello_body) - r.remaining
    return hello_body[:head_length], parse_extensions(r)


def join_extensions(extensions: list[tuple[int, bytes]]) -> bytes:
    return vec16(b"".join(extension(t, data) for t, data in extensions))


class Rewrites:
    """Records which extensions came from the engine and which from the trace."""

    def __init__(self) -> None:
        self.engine_made: dict[int, set[int]] = {}
        self.from_trace: dict[int, set[int]] = {}

    def merge(
        self,
        msg_type: int,
        ours: list[tuple[int, bytes]],
        theirs: list[tuple[int, bytes]],
    ) -> bytes:
        """The trace's extensions in the trace's order, ours wherever they are equal."""
        mine = dict(ours)
        made, taken = (
            self.engine_made.setdefault(msg_type, set()),
            self.from_trace.setdefault(msg_type, set()),
        )
        for ext_type, data in theirs:
            (made if mine.get(ext_type) == data else taken).add(ext_type)
        assert set(mine) <= {t for t, _ in theirs}, "the engine sent an extension the trace lacks"
        return join_extensions(theirs)


# --- the client ---------------------------------------------------------------------


def client_config(rewrites: Rewrites, clock: TraceClock) -> TlsConfig:
    trace_head, trace_exts = split_hello(body(T["client_hello_record"][5:]), server=False)

    def rewrite(msg_type: int, message_body: bytes) -> bytes:
        if msg_type != H.CLIENT_HELLO:
            return message_body
        head, ours = split_hello(message_body, server=False)
        assert head == trace_head  # version, random, empty session id, suites, compression
        return head + rewrites.merge(msg_type, ours, trace_exts)

    return TlsConfig(
        certificate_compression=(),  # the traces predate RFC 8879
        versions=(TLS13,),
        cipher_suites=(
            CipherSuite.TLS_AES_128_GCM_SHA256,
            CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
            CipherSuite.TLS_AES_256_GCM_SHA384,
        ),
        groups=(NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1),
        key_share_groups=(NamedGroup.X25519,),
        record_size_limit=0x4001,
        middlebox_compatibility=False,
        # The trace's certificate is self-signed and expired in 2026; the
        # signature in CertificateVerify is still checked against it.
        verify_peer=False,
        random=ScriptedRandom(T["client_random"], T["client_x25519_private"]),
        ticket_keys=TicketKeys(UnixRandom(1)),
        handshake_rewriter=rewrite,
        clock=clock,
    )


def replay_simple_client(clock: TraceClock) -> Session:
    """Section 3 as the client; the session it ends with (the trace's ticket)."""
    rewrites = Rewrites()
    client = TlsConnection(client_config(rewrites, clock), server_side=False, server_name="server")
    assert client.bytes_to_send() == T["client_hello_record"]
    assert rewrites.engine_made[H.CLIENT_HELLO] == {
        X.SERVER_NAME,
        X.KEY_SHARE,
        X.SUPPORTED_VERSIONS,
        X.PSK_KEY_EXCHANGE_MODES,
        X.RECORD_SIZE_LIMIT,
    }
    assert rewrites.from_trace[H.CLIENT_HELLO] == {
        X.RENEGOTIATION_INFO,
        X.SUPPORTED_GROUPS,
        X.SESSION_TICKET,
        X.SIGNATURE_ALGORITHMS,
    }

    events = client.receive(T["server_hello_record"] + T["server_flight_record"])
    assert [type(e) for e in events] == [HandshakeComplete]
    assert client.version == TLS13 and client.suite is not None
    assert client.suite.suite == CipherSuite.TLS_AES_128_GCM_SHA256
    assert client.peer_certificates[0].subject.rfc4514_string() == "CN=rsa"
    assert client.bytes_to_send() == T["client_finished_record"]

    events = client.receive(T["new_session_ticket_record"])
    assert [type(e) for e in events] == [NewSession]
    session = events[0].session  # type: ignore[attr-defined]
    assert isinstance(session, Session)
    assert session.lifetime_s == 30 and session.max_early_data == 0x400
    # RFC 8448 section 3 gives this PSK ("resumption" from nonce 00 00).
    assert session.secret == TRACE_PSK

    client.send_application_data(APPLICATION_DATA)
    assert client.bytes_to_send() == T["client_application_data_record"]
    events = client.receive(T["server_application_data_record"])
    assert events == [ApplicationData(APPLICATION_DATA)]
    client.close()
    assert client.bytes_to_send() == T["client_close_notify_record"]
    events = client.receive(T["server_close_notify_record"])
    assert [type(e) for e in events] == [ConnectionClosed]
    assert client.closed
    return session


def test_client_replays_the_trace_record_by_record() -> None:
    session = replay_simple_client(TraceClock(SIMPLE_HANDSHAKE_MS))
    assert session.received_at_ms == SIMPLE_HANDSHAKE_MS


# --- the server ---------------------------------------------------------------------


def trace_certified_key() -> CertifiedKey:
    certificate_message = body(T["certificate"])
    r = Reader(certificate_message)
    r.vector(1)
    entries = Reader(r.vector(3))
    der = entries.vector(3)
    cert = x509.load_der_x509_certificate(der)
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    numbers = public.public_numbers()
    p = int.from_bytes(T["server_rsa_prime"], "big")
    q, remainder = divmod(numbers.n, p)
    assert remainder == 0
    d = pow(numbers.e, -1, (p - 1) * (q - 1))
    private = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), numbers
    ).private_key()
    return CertifiedKey([cert], private)


def server_config(
    rewrites: Rewrites, certified: CertifiedKey, ticket_keys: TicketKeys, clock: TraceClock
) -> TlsConfig:
    _, trace_sh_exts = split_hello(body(T["server_hello_record"][5:]), server=True)
    trace_ee_exts = parse_extensions(Reader(body(T["encrypted_extensions"])))
    trace_cv = Reader(body(T["certificate_verify"]))
    trace_scheme, trace_signature = trace_cv.u16(), trace_cv.vector(2)
    trace_ticket = Reader(body(T["new_session_ticket"]))
    trace_ticket_fields = (
        trace_ticket.u32(),
        trace_ticket.u32(),
        trace_ticket.vector(1),
        trace_ticket.vector(2),
        trace_ticket.vector(2),
    )
    own_signatures: list[bytes] = []

    def rewrite(msg_type: int, message_body: bytes) -> bytes:
        if msg_type == H.SERVER_HELLO:
            head, ours = split_hello(message_body, server=True)
            return head + rewrites.merge(msg_type, ours, trace_sh_exts)
        if msg_type == H.ENCRYPTED_EXTENSIONS:
            ours = parse_extensions(Reader(message_body))
            return rewrites.merge(msg_type, ours, trace_ee_exts)
        if msg_type == H.CERTIFICATE_VERIFY:
            r = Reader(message_body)
            scheme, signature = r.u16(), r.vector(2)
            assert scheme == trace_scheme and len(signature) == len(trace_signature)
            own_signatures.append(signature)
            return body(T["certificate_verify"])
        if msg_type == H.NEW_SESSION_TICKET:
            r = Reader(message_body)
            lifetime, age_add, nonce, _ticket, exts = (
                r.u32(),
                r.u32(),
                r.vector(1),
                r.vector(2),
                r.vector(2),
            )
            # Lifetime, age_add (injected randomness) and early_data are the engine's.
            assert (lifetime, age_add, exts) == (
                trace_ticket_fields[0],
                trace_ticket_fields[1],
                trace_ticket_fields[4],
            )
            assert nonce == b"\x00" and trace_ticket_fields[2] == b"\x00\x00"
            return body(T["new_session_ticket"])
        return message_body

    config = TlsConfig(
        certificates=[certified],
        certificate_compression=(),  # the traces predate RFC 8879
        versions=(TLS13,),
        cipher_suites=(CipherSuite.TLS_AES_128_GCM_SHA256,),
        groups=(NamedGroup.X25519,),
        record_size_limit=0x4001,
        ticket_lifetime_s=30,
        max_early_data=0x400,
        ticket_keys=ticket_keys,
        clock=clock,
        random=ScriptedRandom(
            T["server_x25519_private"],
            T["server_random"],
            bytes.fromhex("fad6aac5"),  # ticket_age_add, read off the trace's ticket
            bytes(16),  # the ticket's own identifier, inside the (replaced) ticket
        ),
        handshake_rewriter=rewrite,
    )
    config.own_signatures = own_signatures  # type: ignore[attr-defined]
    return config


def replay_simple_server(
    certified: CertifiedKey, ticket_keys: TicketKeys, clock: TraceClock
) -> None:
    """Section 3 as the server."""
    rewrites = Rewrites()
    config = server_config(rewrites, certified, ticket_keys, clock)
    server = TlsConnection(config, server_side=True)
    assert server.bytes_to_send() == b""
    events = server.receive(T["client_hello_record"])
    assert events == []
    assert server.bytes_to_send() == T["server_hello_record"] + T["server_flight_record"]
    assert rewrites.engine_made[H.SERVER_HELLO] == {X.KEY_SHARE, X.SUPPORTED_VERSIONS}
    assert rewrites.from_trace[H.SERVER_HELLO] == set()  # only their order differs
    assert rewrites.engine_made[H.ENCRYPTED_EXTENSIONS] == {X.SERVER_NAME, X.RECORD_SIZE_LIMIT}
    assert rewrites.from_trace[H.ENCRYPTED_EXTENSIONS] == {X.SUPPORTED_GROUPS}
    # The engine's own RSA-PSS signature over the same content is valid too.
    transcript = hashlib.sha256(
        T["client_hello_record"][5:]
        + T["server_hello_record"][5:]
        + T["encrypted_extensions"]
        + T["certificate"]
    ).digest()
    content = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00" + transcript
    public = certified.chain[0].public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(
        config.own_signatures[0],  # type: ignore[attr-defined]
        content,
        padding.PSS(mgf=padding.MGF1(SHA256()), salt_length=32),
        SHA256(),
    )

    events = server.receive(T["client_finished_record"])
    assert [type(e) for e in events] == [HandshakeComplete]
    assert server.bytes_to_send() == T["new_session_ticket_record"]
    events = server.receive(T["client_application_data_record"])
    assert events == [ApplicationData(APPLICATION_DATA)]
    server.send_application_data(APPLICATION_DATA)
    assert server.bytes_to_send() == T["server_application_data_record"]
    events = server.receive(T["client_close_notify_record"])
    assert [type(e) for e in events] == [ConnectionClosed]
    server.close()
    assert server.bytes_to_send() == T["server_close_notify_record"]


def test_server_replays_the_trace_record_by_record() -> None:
    replay_simple_server(
        trace_certified_key(), TicketKeys(UnixRandom(1)), TraceClock(SIMPLE_HANDSHAKE_MS)
    )


@pytest.mark.parametrize("name", ["server_flight_record", "client_finished_record"])
def test_trace_records_are_whole(name: str) -> None:
    record = T[name]
    assert record[:3] == b"\x17\x03\x03" and len(record) == 5 + int.from_bytes(record[3:5], "big")


# --- section 4: the resumed 0-RTT handshake -----------------------------------------


def ticket_of_new_session_ticket(message: bytes) -> bytes:
    r = Reader(body(message))
    r.u32()
    r.u32()
    r.vector(1)
    return r.vector(2)


TRACE_TICKET = ticket_of_new_session_ticket(T["new_session_ticket"])


def trace_binders_zeroed(extensions: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The hello's extensions as the rewriter sees them: the binder not yet computed."""
    (last_type, psk), binder = extensions[-1], R["binder"]
    assert last_type == X.PRE_SHARED_KEY and psk.endswith(vec16(bytes((len(binder),)) + binder))
    return [*extensions[:-1], (last_type, psk[: -len(binder)] + bytes(len(binder)))]


def resumed_client_config(rewrites: Rewrites, clock: TraceClock) -> TlsConfig:
    trace_head, trace_exts = split_hello(body(R["client_hello_record"][5:]), server=False)
    expected_exts = trace_binders_zeroed(trace_exts)

    def rewrite(msg_type: int, message_body: bytes) -> bytes:
        if msg_type != H.CLIENT_HELLO:
            return message_body  # EndOfEarlyData and Finished are the engine's
        head, ours = split_hello(message_body, server=False)
        assert head == trace_head  # version, random, empty session id, suites, compression
        return head + rewrites.merge(msg_type, ours, expected_exts)

    return TlsConfig(
        certificate_compression=(),  # the traces predate RFC 8879
        versions=(TLS13,),
        cipher_suites=(
            CipherSuite.TLS_AES_128_GCM_SHA256,
            CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
            CipherSuite.TLS_AES_256_GCM_SHA384,
        ),
        groups=(NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1),
        key_share_groups=(NamedGroup.X25519,),
        record_size_limit=0x4001,
        middlebox_compatibility=False,
        verify_peer=False,
        enable_early_data=True,
        random=ScriptedRandom(R["client_random"], R["client_x25519_private"]),
        ticket_keys=TicketKeys(UnixRandom(1)),
        handshake_rewriter=rewrite,
        clock=clock,
    )


def test_client_resumes_with_0rtt_record_by_record() -> None:
    clock = TraceClock(SIMPLE_HANDSHAKE_MS)
    session = replay_simple_client(clock)
    assert session.ticket == TRACE_TICKET
    clock.now_ms += TICKET_AGE_MS
    rewrites = Rewrites()
    client = TlsConnection(
        resumed_client_config(rewrites, clock),
        server_side=False,
        server_name="server",
        session=session,
        early_data=EARLY_DATA,
    )
    # The ClientHello, PSK binder included, then the 0-RTT record.
    assert client.bytes_to_send() == R["client_hello_record"] + R["client_early_data_record"]
    assert rewrites.engine_made[H.CLIENT_HELLO] == {
        X.SERVER_NAME,
        X.KEY_SHARE,
        X.EARLY_DATA,
        X.SUPPORTED_VERSIONS,
        X.PSK_KEY_EXCHANGE_MODES,
        X.RECORD_SIZE_LIMIT,
        X.PRE_SHARED_KEY,  # the ticket, its obfuscated age and (filled in after) the binder
    }
    assert rewrites.from_trace[H.CLIENT_HELLO] == {
        X.RENEGOTIATION_INFO,
        X.SUPPORTED_GROUPS,
        X.SIGNATURE_ALGORITHMS,
        PADDING,
    }

    events = client.receive(R["server_hello_record"] + R["server_flight_record"])
    assert [type(e) for e in events] == [HandshakeComplete]
    complete = events[0]
    assert isinstance(complete, HandshakeComplete)
    assert complete.resumed and complete.early_data_accepted
    assert complete.cipher_suite == CipherSuite.TLS_AES_128_GCM_SHA256
    # EndOfEarlyData under the early traffic key, then Finished under the handshake key.
    assert client.bytes_to_send() == (
        R["client_end_of_early_data_record"] + R["client_finished_record"]
    )

    client.send_application_data(APPLICATION_DATA)
    assert client.bytes_to_send() == R["client_application_data_record"]
    events = client.receive(R["server_application_data_record"])
    assert events == [ApplicationData(APPLICATION_DATA)]
    client.close()
    assert client.bytes_to_send() == R["client_close_notify_record"]
    events = client.receive(R["server_close_notify_record"])
    assert [type(e) for e in events] == [ConnectionClosed]
    assert client.closed


class TraceTicketKeys(TicketKeys):
    """The server's ticket keys, plus a stand-in for the key that sealed the trace's ticket.

    The section 3 server replay sends the trace's opaque ticket in place of the
    one the engine sealed, and the trace's two-byte nonce in place of the
    engine's one-byte nonce. Opening the trace's ticket gives back the state the
    engine sealed, with the PSK the trace's nonce gives: what the trace's server
    found inside its own ticket. Every other ticket goes to the engine's code.
    """

    def __init__(self) -> None:
        super().__init__(UnixRandom(1))
        self.sealed: list[TicketState] = []
        self.trace_ticket_opened = 0

    def seal(self, state: TicketState) -> bytes:
        self.sealed.append(state)
        return super().seal(state)

    def open(self, ticket: bytes) -> TicketState | None:
        if ticket != TRACE_TICKET:
            return super().open(ticket)
        [state] = self.sealed
        assert state.secret == resumption_psk("sha256", RESUMPTION_MASTER, b"\x00")
        self.trace_ticket_opened += 1
        trace_psk = resumption_psk("sha256", RESUMPTION_MASTER, b"\x00\x00")
        assert trace_psk == TRACE_PSK
        return dataclasses.replace(state, secret=trace_psk)


def resumed_server_config(
    rewrites: Rewrites, certified: CertifiedKey, ticket_keys: TicketKeys, clock: TraceClock
) -> TlsConfig:
    _, trace_sh_exts = split_hello(body(R["server_hello_record"][5:]), server=True)
    trace_ee_exts = parse_extensions(Reader(body(R["encrypted_extensions"])))

    def rewrite(msg_type: int, message_body: bytes) -> bytes:
        if msg_type == H.SERVER_HELLO:
            head, ours = split_hello(message_body, server=True)
            return head + rewrites.merge(msg_type, ours, trace_sh_exts)
        if msg_type == H.ENCRYPTED_EXTENSIONS:
            ours = parse_extensions(Reader(message_body))
            return rewrites.merge(msg_type, ours, trace_ee_exts)
        return message_body  # Finished is the engine's

    return TlsConfig(
        certificates=[certified],
        certificate_compression=(),  # the traces predate RFC 8879
        versions=(TLS13,),
        cipher_suites=(CipherSuite.TLS_AES_128_GCM_SHA256,),
        groups=(NamedGroup.X25519,),
        record_size_limit=0x4001,
        ticket_lifetime_s=30,
        max_early_data=0x400,
        session_tickets=0,  # the trace's server sends no ticket after resuming
        ticket_keys=ticket_keys,
        clock=clock,
        random=ScriptedRandom(R["server_x25519_private"], R["server_random"]),
        handshake_rewriter=rewrite,
    )


def test_server_resumes_with_0rtt_record_by_record() -> None:
    certified = trace_certified_key()
    ticket_keys = TraceTicketKeys()
    clock = TraceClock(SIMPLE_HANDSHAKE_MS)
    replay_simple_server(certified, ticket_keys, clock)
    assert ticket_keys.sealed[0].issued_ms == SIMPLE_HANDSHAKE_MS
    clock.now_ms += TICKET_AGE_MS
    rewrites = Rewrites()
    server = TlsConnection(
        resumed_server_config(rewrites, certified, ticket_keys, clock), server_side=True
    )
    # The engine checks the trace's binder and takes the 0-RTT data.
    events = server.receive(R["client_hello_record"] + R["client_early_data_record"])
    assert events == [EarlyData(EARLY_DATA)]
    assert ticket_keys.trace_ticket_opened == 1
    assert server.bytes_to_send() == R["server_hello_record"] + R["server_flight_record"]
    assert rewrites.engine_made[H.SERVER_HELLO] == {
        X.PRE_SHARED_KEY,
        X.KEY_SHARE,
        X.SUPPORTED_VERSIONS,
    }
    assert rewrites.from_trace[H.SERVER_HELLO] == set()  # only their order differs
    assert rewrites.engine_made[H.ENCRYPTED_EXTENSIONS] == {X.RECORD_SIZE_LIMIT, X.EARLY_DATA}
    # The engine does not acknowledge server_name when resuming (RFC 6066 section 3
    # forbids it; RFC 8446 allows either); the trace's server does.
    assert rewrites.from_trace[H.ENCRYPTED_EXTENSIONS] == {X.SUPPORTED_GROUPS, X.SERVER_NAME}

    events = server.receive(R["client_end_of_early_data_record"] + R["client_finished_record"])
    assert [type(e) for e in events] == [HandshakeComplete]
    complete = events[0]
    assert isinstance(complete, HandshakeComplete)
    assert complete.resumed and complete.early_data_accepted
    assert server.bytes_to_send() == b""  # no ticket
    events = server.receive(R["client_application_data_record"])
    assert events == [ApplicationData(APPLICATION_DATA)]
    server.send_application_data(APPLICATION_DATA)
    assert server.bytes_to_send() == R["server_application_data_record"]
    events = server.receive(R["client_close_notify_record"])
    assert [type(e) for e in events] == [ConnectionClosed]
    server.close()
    assert server.bytes_to_send() == R["server_close_notify_record"]


def test_the_rewriter_sees_the_resumed_hello_before_its_binder() -> None:
    """Rewriting after the binder would break it: the engine refuses a moved binder."""
    clock = TraceClock(SIMPLE_HANDSHAKE_MS)
    session = replay_simple_client(clock)
    seen: list[bytes] = []

    def append_padding(msg_type: int, message_body: bytes) -> bytes:
        seen.append(message_body)
        head, ours = split_hello(message_body, server=False)
        return head + join_extensions([*ours, (PADDING, bytes(4))])

    config = resumed_client_config(Rewrites(), clock)
    config.handshake_rewriter = append_padding
    with pytest.raises(TlsProtocolError, match="binders last") as raised:
        TlsConnection(
            config, server_side=False, server_name="server", session=session, early_data=b"x"
        )
    assert isinstance(raised.value.__cause__, UsageError)
    assert seen and seen[0].endswith(vec16(bytes((32,)) + bytes(32)))


def test_resumed_trace_holds_together() -> None:
    """Cross-checks of the section 4 data against its own length fields and section 3."""
    for name, record in R.items():
        if name.endswith("_record"):
            assert len(record) == 5 + int.from_bytes(record[3:5], "big"), name
    hello = R["client_hello_record"][5:]
    assert len(hello) == 4 + int.from_bytes(hello[1:4], "big") == 512
    _, exts = split_hello(body(hello), server=False)
    r = Reader(dict(exts)[X.PRE_SHARED_KEY])
    identities = Reader(r.vector(2))
    assert identities.vector(2) == TRACE_TICKET
    assert identities.u32() == 0xFAD6AAC5 + TICKET_AGE_MS
    assert Reader(r.vector(2)).vector(1) == R["binder"]
    # The binder is HMAC over the hello up to the binders, keyed as RFC 8448 lists.
    truncated = hello[: len(hello) - 2 - 1 - 32]
    assert hashlib.sha256(truncated).digest() == R["binder_hash"]
    schedule = KeySchedule13("sha256", TRACE_PSK)
    assert schedule.early_secret == R["psk_early_secret"]
    assert schedule.finished_mac(schedule.binder_key(), R["binder_hash"]) == R["binder"]
    for private, share in (
        (R["client_x25519_private"], hello),
        (R["server_x25519_private"], R["server_hello_record"]),
    ):
        public = x25519.X25519PrivateKey.from_private_bytes(private).public_key()
        assert public.public_bytes_raw() in share
    # The server's flight is EncryptedExtensions and Finished, one record's worth.
    ee, finished = R["encrypted_extensions"], R["server_finished"]
    assert ee[0] == H.ENCRYPTED_EXTENSIONS and finished[0] == H.FINISHED
    assert len(body(finished)) == 32
    assert [t for t, _ in parse_extensions(Reader(body(ee)))] == [
        X.SUPPORTED_GROUPS,
        X.RECORD_SIZE_LIMIT,
        X.SERVER_NAME,
        X.EARLY_DATA,
    ]
    assert len(R["server_flight_record"]) == 5 + len(ee) + len(finished) + 1 + 16
