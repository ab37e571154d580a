"""The ring arithmetic as pure code: no processes, one buffer, two ends."""

from __future__ import annotations

import collections
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.vchan import layout
from looming.vchan.errors import VchanCorrupt
from looming.vchan.ring import RingEnd

SIZES = [1023, 1024, 2047, 2048, 4095, 4096]


def ring_pair(size: int, start: int = 0) -> tuple[RingEnd, RingEnd, memoryview]:
    """(server, client, segment) with both rings at least ``size`` bytes and
    every index starting at ``start``."""
    geometry = layout.plan(*layout.choose_orders(size, size))
    view = memoryview(bytearray(geometry.segment_size))
    layout.initialize(view, geometry)
    for offset in (layout.LEFT_CONS, layout.LEFT_PROD, layout.RIGHT_CONS, layout.RIGHT_PROD):
        layout.write_u32(view, offset, start)
    return RingEnd(view, geometry, is_server=True), RingEnd(view, geometry, is_server=False), view


def pattern(count: int, seed: int) -> bytes:
    return bytes((seed * 131 + i * 7) & 0xFF for i in range(count))


@pytest.mark.parametrize("size", SIZES)
def test_capacity_is_the_rounded_up_ring_size(size: int) -> None:
    server, client, _ = ring_pair(size)
    expected = 1 << layout.choose_orders(size, size)[0]
    assert client.write_size == server.read_size == expected >= size
    assert client.buffer_space() == expected
    written, _ = client.write(b"\x55" * (expected + 10))
    assert written == expected  # the whole ring is usable, no slot kept empty
    assert client.buffer_space() == 0
    assert server.data_ready() == expected


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("start", [0, 0xFFFFFFFF - 700, 0xFFFFFFFF])
def test_stream_wraps_around_the_ring_and_the_32_bit_indices(size: int, start: int) -> None:
    server, client, view = ring_pair(size, start)
    sent, received = bytearray(), bytearray()
    # Odd chunk sizes so the copy splits at every position of the ring.
    for step in range(60):
        chunk = pattern(97 + step * 53 % (size + 1), step)
        written, _ = client.write(chunk)
        sent += chunk[:written]
        data, _ = server.read(300 + step * 31)
        received += data
    while True:
        data, _ = server.read(1 << 20)
        if not data:
            break
        received += data
    assert bytes(received) == bytes(sent)
    assert len(sent) > 4 * client.write_size
    prod = layout.read_u32(view, layout.LEFT_PROD)
    assert prod == (start + len(sent)) & 0xFFFFFFFF
    assert layout.read_u32(view, layout.LEFT_CONS) == prod


@pytest.mark.parametrize("size", SIZES)
def test_packets_are_all_or_nothing_across_the_wrap(size: int) -> None:
    server, client, _ = ring_pair(size, 0xFFFFFFFF - 5)
    ring = server.write_size
    packet = pattern(ring // 3 + 1, 1)
    for round_number in range(10):
        assert server.send(packet)[0]
        assert server.send(packet)[0]
        assert not server.send(packet * 2)[0] or ring >= 4 * len(packet)
        got, _ = client.recv(len(packet))
        assert got == packet, round_number
        got, _ = client.recv(len(packet))
        assert got == packet
        assert client.recv(1) == (None, False)
    with pytest.raises(ValueError, match="can never fit"):
        server.send(bytes(ring + 1))
    with pytest.raises(ValueError, match="can never fit"):
        client.recv(client.read_size + 1)


def test_read_into_splits_at_the_end_of_the_ring() -> None:
    server, client, _ = ring_pair(1024, 1000)
    client.write(pattern(1024, 3))
    buffer = bytearray(2000)
    count, _ = server.read_into(buffer)
    assert count == 1024
    assert bytes(buffer[:1024]) == pattern(1024, 3)


def test_notify_discipline() -> None:
    server, client, view = ring_pair(1024)
    # A fresh server asks the client to notify on writes, as libxenvchan's does.
    assert client.write(b"a") == (1, True)
    assert client.write(b"b") == (1, False)  # bit consumed: no second kick
    assert server.read(10) == (b"ab", False)  # client never asked about reads
    server.request_data_notify()
    assert view[layout.CLI_NOTIFY] & layout.NOTIFY_WRITE
    client.request_space_notify()
    assert view[layout.SRV_NOTIFY] & layout.NOTIFY_READ
    assert client.write(b"c") == (1, True)
    assert server.read(10) == (b"c", True)
    assert view[layout.CLI_NOTIFY] == 0 and view[layout.SRV_NOTIFY] == 0


def test_liveness_bytes() -> None:
    server, client, view = ring_pair(1024)
    assert server.peer_state() == layout.LIVE_WAITING
    client.set_state(layout.LIVE_CONNECTED)
    assert server.peer_state() == layout.LIVE_CONNECTED
    assert client.peer_state() == layout.LIVE_CONNECTED
    server.set_state(layout.LIVE_EXITED)
    assert view[layout.SRV_LIVE] == 0
    assert client.peer_state() == layout.LIVE_EXITED
    view[layout.CLI_LIVE] = 7
    with pytest.raises(VchanCorrupt, match="liveness byte holds 7"):
        server.peer_state()


@pytest.mark.parametrize("start", [0, 0xFFFFFFF0])
def test_producer_index_beyond_the_ring_is_corruption(start: int) -> None:
    server, client, view = ring_pair(1024, start)
    client.write(b"x" * 10)
    layout.write_u32(view, layout.LEFT_PROD, start + 1025)
    with pytest.raises(VchanCorrupt, match="more than the 1024-byte ring holds"):
        server.data_ready()
    with pytest.raises(VchanCorrupt):
        server.read(10)
    layout.write_u32(view, layout.LEFT_PROD, start - 1)  # behind the consumer
    with pytest.raises(VchanCorrupt):
        server.read(10)


def test_consumer_index_past_the_producer_is_corruption() -> None:
    _server, client, view = ring_pair(1024)
    client.write(b"y" * 100)
    layout.write_u32(view, layout.LEFT_CONS, 500)
    with pytest.raises(VchanCorrupt, match="past our producer index 100"):
        client.buffer_space()
    with pytest.raises(VchanCorrupt):
        client.write(b"z")


def test_a_peer_overwriting_our_own_index_is_ignored() -> None:
    server, client, view = ring_pair(1024)
    client.write(b"hello")
    layout.write_u32(view, layout.LEFT_CONS, 3)  # the client scribbles on the server's index
    assert server.read(100)[0] == b"hello"
    assert layout.read_u32(view, layout.LEFT_CONS) == 5


def test_corrupt_starting_indices_are_refused() -> None:
    geometry = layout.plan(10, 11)
    view = memoryview(bytearray(geometry.segment_size))
    layout.initialize(view, geometry)
    layout.write_u32(view, layout.RIGHT_PROD, 5000)
    with pytest.raises(VchanCorrupt):
        RingEnd(view, geometry, is_server=False)


operations = st.lists(
    st.tuples(
        st.sampled_from(["c_write", "s_read", "s_write", "c_read", "c_send", "s_recv"]),
        st.integers(min_value=0, max_value=5000),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    size=st.sampled_from(SIZES),
    start=st.sampled_from([0, 0xFFFFFFFF - 3000, 0xFFFFFFFF]),
    ops=operations,
)
def test_random_interleavings_match_a_reference_queue(
    size: int, start: int, ops: list[tuple[str, int]]
) -> None:
    server, client, _ = ring_pair(size, start)
    to_server: collections.deque[int] = collections.deque()
    to_client: collections.deque[int] = collections.deque()
    counter = 0
    for operation, amount in ops:
        if operation in ("c_write", "s_write", "c_send"):
            writer, queue = (server, to_client) if operation == "s_write" else (client, to_server)
            data = pattern(amount, counter)
            counter += 1
            free = writer.write_size - len(queue)
            assert writer.buffer_space() == free
            if operation == "c_send":
                if amount > writer.write_size:
                    with pytest.raises(ValueError):
                        writer.send(data)
                    continue
                sent, _ = writer.send(data)
                assert sent == (amount <= free)
                if sent:
                    queue.extend(data)
            else:
                written, _ = writer.write(data)
                assert written == min(amount, free)
                queue.extend(data[:written])
        else:
            reader, queue = (client, to_client) if operation == "c_read" else (server, to_server)
            assert reader.data_ready() == len(queue)
            if operation == "s_recv":
                if amount > reader.read_size:
                    continue
                got, _ = reader.recv(amount)
                if amount > len(queue):
                    assert got is None
                    continue
                expected = bytes(queue.popleft() for _ in range(amount))
                assert got == expected
            else:
                data, _ = reader.read(amount)
                expected = bytes(queue.popleft() for _ in range(min(amount, len(queue))))
                assert data == expected
    assert server.data_ready() == len(to_server)
    assert client.data_ready() == len(to_client)


def test_header_fields_are_native_words() -> None:
    _server, client, view = ring_pair(2048)
    client.write(b"12345")
    assert struct.unpack_from("=IIII", view, 0) == (0, 5, 0, 0)
