"""The bulk record paths (TLS 1.3 application data sealed and opened in one
pass) against the general record path, against the engine's own checks,
against Python's ssl with every TLS 1.3 suite and against `openssl s_server`."""

from __future__ import annotations

import asyncio
import itertools
import random
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.tls import (
    TLS13,
    AlertDescription,
    ApplicationData,
    CipherSuite,
    KeyUpdated,
    NewSession,
    TlsAlertReceived,
    TlsConfig,
    TlsConnection,
    TlsProtocolError,
)
from looming.tls.constants import MAX_PLAINTEXT, ContentType
from looming.tls.flow import open_connection
from looming.tls.record import Protection, RecordLayer
from looming.tls.suites import SUITES, TLS13_SUITES
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .memory import Pair, connect
from .peers import free_port, server_process
from .pki import Pki

CHACHA = CipherSuite.TLS_CHACHA20_POLY1305_SHA256
SUITES13 = [CHACHA, CipherSuite.TLS_AES_128_GCM_SHA256, CipherSuite.TLS_AES_256_GCM_SHA384]
APP = ContentType.APPLICATION_DATA


def _layers(suite_id: int) -> tuple[RecordLayer, RecordLayer, RecordLayer]:
    """A sender and two receivers under the same TLS 1.3 keys."""
    suite = SUITES[suite_id]
    key, iv = bytes(range(suite.key_length)), bytes(range(12))
    sender, general, bulk = RecordLayer(), RecordLayer(), RecordLayer()
    sender.write = Protection(suite, key, iv, True)
    general.read = Protection(suite, key, iv, True)
    bulk.read = Protection(suite, key, iv, True)
    return sender, general, bulk


def _general_take(layer: RecordLayer, piece: bytes | bytearray) -> list[tuple[int, bytes]]:
    """Records as next_record alone gives them (empty application data dropped,
    as the engine drops it)."""
    layer.feed(piece)
    out = []
    while (record := layer.next_record()) is not None:
        if record != (APP, b""):
            out.append(record)
    return out


def _content(index: int, size: int) -> bytes:
    start = index % 251
    return (_PATTERN * (size // 251 + 2))[start : start + size]


_PATTERN = bytes(range(251))


def _bulk_take(layer: RecordLayer, piece: bytes | bytearray) -> list[tuple[int, bytes]]:
    """Records as the engine takes them: bulk passes, next_record in between."""
    payloads, more = layer.open_application_data13(piece)
    out = [(int(APP), payload) for payload in payloads]
    while more:
        record = layer.next_record()
        if record is None:
            break
        if record != (APP, b""):
            out.append(record)
        payloads, more = layer.open_application_data13()
        out += [(int(APP), payload) for payload in payloads]
    return out


def _run(layer: RecordLayer, take: object, pieces: list[bytes | bytearray]) -> tuple[object, ...]:
    """Everything ``layer`` gives for ``pieces``, up to the first error (and which)."""
    out: list[tuple[int, bytes]] = []
    for piece in pieces:
        try:
            out += take(layer, piece)  # type: ignore[operator]
        except TlsProtocolError as exc:
            return out, exc.description
    assert layer.read is not None
    return out, None, layer.read.seq, layer.buffered


# Records the bulk path takes (application data of any size up to a full
# record) and records it must leave to next_record in order: other inner types,
# padding, empty content.
record_specs = st.lists(
    st.one_of(
        st.tuples(st.just("app"), st.sampled_from([0, 1, 1000, MAX_PLAINTEXT - 1, MAX_PLAINTEXT])),
        st.tuples(st.just("app"), st.integers(min_value=0, max_value=MAX_PLAINTEXT)),
        st.tuples(st.just("big"), st.integers(min_value=MAX_PLAINTEXT + 1, max_value=50000)),
        st.tuples(st.just("handshake"), st.integers(min_value=1, max_value=300)),
        st.tuples(st.just("handshake"), st.just(MAX_PLAINTEXT)),  # a full record, not data
        st.tuples(st.just("alert"), st.just(2)),
        st.tuples(st.just("padded"), st.integers(min_value=0, max_value=2000)),
        st.tuples(st.just("padded"), st.just(MAX_PLAINTEXT - 7)),  # padded to a full record
    ),
    min_size=1,
    max_size=8,
)


def _wire(sender: RecordLayer, specs: list[tuple[str, int]]) -> bytes:
    protection = sender.write
    assert protection is not None
    for index, (kind, size) in enumerate(specs):
        content = _content(index, size)
        if kind in ("app", "big"):
            assert sender.write_application_data13(content) == size
        elif kind == "handshake":
            sender.write_records(ContentType.HANDSHAKE, content)
            # take_outgoing seals the pending handshake message after what came before.
            sender._outgoing.append(sender.take_outgoing())
        elif kind == "alert":
            sender._outgoing.append(protection.seal(ContentType.ALERT, b"\x01\x00"))
        else:
            sender._outgoing.append(protection.seal(APP, content, 7))
    return sender.take_outgoing()


def _cut(wire: bytes, cuts: list[int], as_bytearray: list[bool]) -> list[bytes | bytearray]:
    bounds = sorted({0, len(wire), *(cut % (len(wire) + 1) for cut in cuts)})
    pieces: list[bytes | bytearray] = []
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        piece = wire[start:end]
        pieces.append(bytearray(piece) if as_bytearray[index % len(as_bytearray)] else piece)
    return pieces


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    suite_id=st.sampled_from(TLS13_SUITES),
    specs=record_specs,
    cuts=st.lists(st.integers(min_value=0, max_value=200000), max_size=8),
    as_bytearray=st.lists(st.booleans(), min_size=1, max_size=4),
)
def test_bulk_path_gives_what_the_general_path_gives(
    suite_id: int, specs: list[tuple[str, int]], cuts: list[int], as_bytearray: list[bool]
) -> None:
    sender, general, bulk = _layers(suite_id)
    pieces = _cut(_wire(sender, specs), cuts, as_bytearray)
    expected = _run(general, _general_take, pieces)
    assert expected[1] is None  # a well-formed stream opens without error
    assert _run(bulk, _bulk_take, pieces) == expected
    records: list[tuple[int, bytes]] = expected[0]  # type: ignore[assignment]
    assert b"".join(p for t, p in records if t == APP) == b"".join(
        _content(i, size)
        for i, (kind, size) in enumerate(specs)
        if kind not in ("handshake", "alert")
    )


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    suite_id=st.sampled_from(TLS13_SUITES),
    specs=record_specs,
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
    cuts=st.lists(st.integers(min_value=0, max_value=200000), max_size=4),
)
def test_bulk_path_fails_where_the_general_path_fails(
    suite_id: int, specs: list[tuple[str, int]], position: int, flip: int, cuts: list[int]
) -> None:
    """One corrupted byte anywhere (header, body or tag): the same records come
    out before the same error, or both wait for bytes that never come."""
    sender, general, bulk = _layers(suite_id)
    wire = bytearray(_wire(sender, specs))
    wire[position % len(wire)] ^= flip
    pieces = _cut(bytes(wire), cuts, [False])
    assert _run(bulk, _bulk_take, pieces) == _run(general, _general_take, pieces)


@pytest.mark.parametrize("suite_id", TLS13_SUITES)
def test_last_sequence_number_is_refused_on_both_paths(suite_id: int) -> None:
    """A record under sequence number 2**64 - 1 would make the next one wrap:
    internal_error from next_record, and the bulk path leaves it to next_record."""
    sender, general, bulk = _layers(suite_id)
    assert sender.write is not None
    aead = sender.write._keyed()
    last = (1 << 64) - 1
    header = bytes((ContentType.APPLICATION_DATA, 3, 3, 0, 5 + 16))
    nonce = (int.from_bytes(bytes(range(12)), "big") ^ last).to_bytes(12, "big")
    record = header + aead.encrypt(nonce, b"data\x17", header)
    for layer in (general, bulk):
        assert layer.read is not None
        layer.read.seq = last
    assert _run(general, _general_take, [record]) == ([], AlertDescription.INTERNAL_ERROR)
    assert _run(bulk, _bulk_take, [record]) == ([], AlertDescription.INTERNAL_ERROR)


def _chacha_pair(pki: Pki, record_size_limit: int | None = None) -> Pair:
    devices = {"random": UnixRandom(), "clock": UnixClock()}
    client = TlsConfig(
        trust=pki.trust,
        cipher_suites=[CHACHA],
        record_size_limit=MAX_PLAINTEXT + 1 if record_size_limit else None,
        **devices,  # type: ignore[arg-type]
    )
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        record_size_limit=record_size_limit,
        **devices,  # type: ignore[arg-type]
    )
    pair = connect(client, server)
    assert pair.client.handshake_complete and pair.server.handshake_complete
    assert pair.client.suite is not None and pair.client.suite.suite == CHACHA
    pair.client.receive(pair.server.bytes_to_send())  # the ticket
    return pair


def test_no_keys_derived_for_a_direction_without_records(pki: Pki) -> None:
    """The server read nothing under the client's application key, the client
    sent nothing under it: neither derived it (the bulk pass derives the key
    only when there is a record to open); the first record derives it."""
    pair = _chacha_pair(pki)
    server_read, client_write = pair.server.records.read, pair.client.records.write
    assert server_read is not None and client_write is not None
    assert pair.server.receive(b"") == []
    assert server_read._aead is None and client_write._aead is None
    assert pair.client_sends(b"first") == [ApplicationData(b"first")]
    assert server_read._aead is not None and client_write._aead is not None


def _record_lengths(wire: bytes) -> list[int]:
    lengths, pos = [], 0
    while pos < len(wire):
        assert wire[pos] == ContentType.APPLICATION_DATA
        length = int.from_bytes(wire[pos + 3 : pos + 5], "big")
        lengths.append(length)
        pos += 5 + length
    assert pos == len(wire)
    return lengths


@pytest.mark.parametrize(
    ("size", "lengths"),
    [
        (1, [1 + 17]),
        (MAX_PLAINTEXT - 1, [MAX_PLAINTEXT + 16]),
        (MAX_PLAINTEXT, [MAX_PLAINTEXT + 17]),
        (MAX_PLAINTEXT + 1, [MAX_PLAINTEXT + 17, 1 + 17]),
        (3 * MAX_PLAINTEXT + 5, [MAX_PLAINTEXT + 17] * 3 + [5 + 17]),
    ],
)
def test_records_at_the_size_limit(pki: Pki, size: int, lengths: list[int]) -> None:
    pair = _chacha_pair(pki)
    data = random.Random(size).randbytes(size)
    for write in (data, bytearray(data), memoryview(data)):
        pair.client.send_application_data(write)  # type: ignore[arg-type]
        wire = pair.client.bytes_to_send()
        assert _record_lengths(wire) == lengths
        events = pair.server.receive(wire)
        assert all(isinstance(e, ApplicationData) for e in events)
        assert b"".join(e.data for e in events) == data  # type: ignore[attr-defined]


def test_oversized_inner_plaintext_is_record_overflow(pki: Pki) -> None:
    pair = _chacha_pair(pki)
    protection = pair.client.records.write
    assert protection is not None
    # One byte more than a record may carry, sealed by hand past the sender's checks.
    record = protection.seal(ContentType.APPLICATION_DATA, bytes(MAX_PLAINTEXT + 1))
    with pytest.raises(TlsProtocolError) as info:
        pair.server.receive(bytes(record))
    assert info.value.description == AlertDescription.RECORD_OVERFLOW
    with pytest.raises(TlsAlertReceived) as alert:
        pair.client.receive(pair.server.bytes_to_send())
    assert alert.value.description == AlertDescription.RECORD_OVERFLOW


@pytest.mark.parametrize("size", [101, MAX_PLAINTEXT])
def test_own_record_size_limit_is_enforced_on_bulk_records(pki: Pki, size: int) -> None:
    """With our record_size_limit of 101 (RFC 8449: 100 bytes of content in
    1.3), 100 bytes pass and more (up to a full record) is record_overflow."""
    pair = _chacha_pair(pki, record_size_limit=101)
    assert pair.server.records.receive_plaintext_limit == 100
    protection = pair.client.records.write
    assert protection is not None
    events = pair.server.receive(bytes(protection.seal(ContentType.APPLICATION_DATA, bytes(100))))
    assert events == [ApplicationData(bytes(100))]
    with pytest.raises(TlsProtocolError) as info:
        pair.server.receive(bytes(protection.seal(ContentType.APPLICATION_DATA, bytes(size))))
    assert info.value.description == AlertDescription.RECORD_OVERFLOW


@pytest.mark.parametrize("where", ["header", "body", "tag"])
@pytest.mark.parametrize("size", [1, MAX_PLAINTEXT])
def test_bad_tag_is_alerted_and_ends_the_connection(pki: Pki, where: str, size: int) -> None:
    pair = _chacha_pair(pki)
    pair.client.send_application_data(bytes(size))
    pair.client.send_application_data(b"after")
    wire = bytearray(pair.client.bytes_to_send())
    wire[{"header": 2, "body": 5 + size // 2, "tag": 5 + size + 1}[where]] ^= 0x40
    with pytest.raises(TlsProtocolError) as info:
        pair.server.receive(bytes(wire))
    assert info.value.description == AlertDescription.BAD_RECORD_MAC
    with pytest.raises(TlsProtocolError):  # failed for good: nothing more is opened
        pair.server.receive(b"")
    with pytest.raises(TlsAlertReceived) as alert:
        pair.client.receive(pair.server.bytes_to_send())
    assert alert.value.description == AlertDescription.BAD_RECORD_MAC


def test_post_handshake_messages_between_bulk_records(pki: Pki) -> None:
    """A KeyUpdate and a ticket in the middle of a run of records in one
    receive: the records after them open under the new key, in order."""
    pair = _chacha_pair(pki)
    pair.server.send_application_data(b"one" * 7000)
    pair.server.key_update(request_peer_update=True)
    pair.server.send_application_data(b"two")
    pair.server.send_application_data(bytes(MAX_PLAINTEXT))
    events = pair.client.receive(pair.server.bytes_to_send())
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ApplicationData"] * 2 + ["KeyUpdated", "ApplicationData", "ApplicationData"]
    assert isinstance(events[2], KeyUpdated) and events[2].peer_requested
    assert b"".join(e.data for e in events if isinstance(e, ApplicationData)) == (
        b"one" * 7000 + b"two" + bytes(MAX_PLAINTEXT)
    )
    # The client answered with its own KeyUpdate, which the server now takes.
    assert pair.client_sends(b"x") == [KeyUpdated(peer_requested=False), ApplicationData(b"x")]


# --- against Python's ssl (OpenSSL), in memory ---------------------------------------------


class SslPeer:
    """Python's ssl over memory BIOs: the other end of a looming connection."""

    def __init__(self, context: ssl.SSLContext, server_side: bool) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(
            self.incoming,
            self.outgoing,
            server_side=server_side,
            server_hostname=None if server_side else "localhost",
        )

    def step(self) -> None:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass

    def read_all(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = self.obj.read(1 << 20)
            except ssl.SSLWantReadError:
                return out
            if not chunk:
                return out
            out += chunk


def _ssl_pair(pki: Pki, suite: CipherSuite, looming_server: bool) -> tuple[TlsConnection, SslPeer]:
    devices = {"random": UnixRandom(), "clock": UnixClock()}
    if looming_server:
        config = TlsConfig(
            certificates=[pki.leaves["p256"].certified],
            cipher_suites=[suite],
            **devices,  # type: ignore[arg-type]
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(pki.ca_path)
    else:
        config = TlsConfig(trust=pki.trust, cipher_suites=[suite], **devices)  # type: ignore[arg-type]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.leaves["p256"].cert_path, pki.leaves["p256"].key_path)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    looming = TlsConnection(
        config, server_side=looming_server, server_name=None if looming_server else "localhost"
    )
    peer = SslPeer(context, server_side=not looming_server)
    for _ in range(8):
        peer.step()
        if out := peer.outgoing.read():
            looming.receive(out)
        if out := looming.bytes_to_send():
            peer.incoming.write(out)
    peer.step()
    assert looming.handshake_complete and looming.version == TLS13
    assert peer.obj.cipher()[0] == suite.name  # type: ignore[index]
    return looming, peer


@pytest.mark.parametrize("suite", SUITES13, ids=lambda s: s.name)
@pytest.mark.parametrize("looming_server", [False, True], ids=["looming-client", "looming-server"])
def test_bulk_both_ways_with_python_ssl(pki: Pki, suite: CipherSuite, looming_server: bool) -> None:
    """Writes of many sizes each way, ssl's records handed over cut anywhere
    (several records and partial ones per receive), a KeyUpdate on the way."""
    looming, peer = _ssl_pair(pki, suite, looming_server)
    rng = random.Random(int(suite) * 2 + looming_server)
    sizes = [1, 0, MAX_PLAINTEXT - 1, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 100000]
    sizes += [rng.randrange(1, 70000) for _ in range(12)]
    sent = b""
    for index, size in enumerate(sizes):
        data = rng.randbytes(size)
        sent += data
        looming.send_application_data(data)
        if index == len(sizes) // 2:
            looming.key_update(request_peer_update=True)
    peer.incoming.write(looming.bytes_to_send())
    assert peer.read_all() == sent
    # ssl answers the KeyUpdate; its records come back to looming in random cuts.
    received = b""
    expected = b""
    for size in sizes:
        data = rng.randbytes(size)
        expected += data
        if data:
            peer.obj.write(data)
    wire = peer.outgoing.read()
    pos = 0
    while pos < len(wire):
        step = rng.choice([1, 5, 100, 16400, 40000, 200000])
        for event in looming.receive(wire[pos : pos + step]):
            assert isinstance(event, ApplicationData | KeyUpdated | NewSession), event
            if isinstance(event, ApplicationData):
                received += event.data
        pos += step
    assert received == expected
    assert looming.records.buffered == 0


# --- against OpenSSL's s_server, over loopback TCP --------------------------------------------


async def _lines_through_s_server(pki: Pki, suite: CipherSuite, lines: list[bytes]) -> bytes:
    """Send ``lines`` to `openssl s_server -rev` in writes cut anywhere, while
    reading its reversed lines (one record each, coalesced by TCP) back."""
    port = free_port()
    cert = pki.leaves["p256"]
    args = ["openssl", "s_server", "-accept", str(port), "-naccept", "1", "-rev", "-tls1_3"]
    args += ["-cert", str(cert.cert_path), "-key", str(cert.key_path)]
    args += ["-ciphersuites", suite.name]
    config = TlsConfig(
        trust=pki.trust, cipher_suites=[suite], random=UnixRandom(), clock=UnixClock()
    )
    wire = b"".join(lines)
    expected_size = len(wire)
    async with server_process(args, port, "ACCEPT") as peer:
        flow = await open_connection("127.0.0.1", port, config, server_name="localhost")
        assert flow.cipher_suite == suite

        async def write() -> None:
            rng = random.Random(len(wire))
            pos = 0
            while pos < len(wire):
                step = rng.choice([1, 700, MAX_PLAINTEXT, MAX_PLAINTEXT + 3, 60000])
                await flow.write(wire[pos : pos + step])
                pos += step

        async def read() -> bytes:
            received = b""
            while len(received) < expected_size:
                chunk = await flow.read()
                assert chunk, "s_server closed before replying to every line"
                received += chunk
            return received

        _, received = await asyncio.gather(write(), read())
        await flow.close()
        await peer.finish()
    return received


@pytest.mark.parametrize(
    "suite", [CHACHA, CipherSuite.TLS_AES_128_GCM_SHA256], ids=lambda s: s.name
)
def test_bulk_lines_reversed_by_s_server(pki: Pki, suite: CipherSuite) -> None:
    rng = random.Random(int(suite))
    letters = b"abcdefghijklmnopqrstuvwxyz0123456789"
    lines = [
        bytes(rng.choices(letters, k=rng.choice([1, 80, 1000, 4000]))) + b"\n" for _ in range(300)
    ]
    received = asyncio.run(_lines_through_s_server(pki, suite, lines))
    assert received == b"".join(line[:-1][::-1] + b"\n" for line in lines)
