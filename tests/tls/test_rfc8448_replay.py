"""Byte-exact replay of RFC 8448 section 3 ("Simple 1-RTT Handshake").

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
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256

from looming.tls import (
    TLS13,
    ApplicationData,
    CertifiedKey,
    CipherSuite,
    ConnectionClosed,
    HandshakeComplete,
    NamedGroup,
    NewSession,
    TlsConfig,
    TlsConnection,
)
from looming.tls.constants import ExtensionType as X
from looming.tls.constants import HandshakeType as H
from looming.tls.session import TicketKeys
from looming.tls.wire import Reader, extension, parse_extensions, vec16
from looming.unix.random import UnixRandom

DATA = Path(__file__).parent / "data" / "rfc8448_simple_1rtt.txt"
APPLICATION_DATA = bytes(range(0x32))


def load_trace() -> dict[str, bytes]:
    entries: dict[str, str] = {}
    name = ""
    for line in DATA.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith(" "):
            entries[name] += line.strip()
        else:
            name = line.strip()
            entries[name] = ""
    return {key: bytes.fromhex(value) for key, value in entries.items()}


T = load_trace()


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


def client_config(rewrites: Rewrites) -> TlsConfig:
    trace_head, trace_exts = split_hello(body(T["client_hello_record"][5:]), server=False)

    def rewrite(msg_type: int, message_body: bytes) -> bytes:
        if msg_type != H.CLIENT_HELLO:
            return message_body
        head, ours = split_hello(message_body, server=False)
        assert head == trace_head  # version, random, empty session id, suites, compression
        return head + rewrites.merge(msg_type, ours, trace_exts)

    return TlsConfig(
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
    )


def test_client_replays_the_trace_record_by_record() -> None:
    rewrites = Rewrites()
    client = TlsConnection(client_config(rewrites), server_side=False, server_name="server")
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
    assert session.lifetime_s == 30 and session.max_early_data == 0x400
    # RFC 8448 section 3 gives this PSK ("resumption" from nonce 00 00).
    assert session.secret == bytes.fromhex(
        "4ecd0eb6ec3b4d87f5d6028f922ca4c5851a277fd41311c9e62d2c9492e1c4f3"
    )

    client.send_application_data(APPLICATION_DATA)
    assert client.bytes_to_send() == T["client_application_data_record"]
    events = client.receive(T["server_application_data_record"])
    assert events == [ApplicationData(APPLICATION_DATA)]
    client.close()
    assert client.bytes_to_send() == T["client_close_notify_record"]
    events = client.receive(T["server_close_notify_record"])
    assert [type(e) for e in events] == [ConnectionClosed]
    assert client.closed


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


def server_config(rewrites: Rewrites, certified: CertifiedKey) -> TlsConfig:
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
        versions=(TLS13,),
        cipher_suites=(CipherSuite.TLS_AES_128_GCM_SHA256,),
        groups=(NamedGroup.X25519,),
        record_size_limit=0x4001,
        ticket_lifetime_s=30,
        max_early_data=0x400,
        ticket_keys=TicketKeys(UnixRandom(1)),
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


def test_server_replays_the_trace_record_by_record() -> None:
    rewrites = Rewrites()
    certified = trace_certified_key()
    config = server_config(rewrites, certified)
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


@pytest.mark.parametrize("name", ["server_flight_record", "client_finished_record"])
def test_trace_records_are_whole(name: str) -> None:
    record = T[name]
    assert record[:3] == b"\x17\x03\x03" and len(record) == 5 + int.from_bytes(record[3:5], "big")
