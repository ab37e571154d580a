"""Receive memory is charged by its true size: tiny segments cannot make a
connection hold more than a few times its window (checked with tracemalloc
as well as the stack's own accounting)."""

from __future__ import annotations

import gc
import tracemalloc
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.net.tcp.receive_buffer import MemoryPool, ReceiveBuffer
from tests.tcp.script import IRS, ISS, PLAIN, Script, established, seg

WINDOW = 16384
HEADERS = 54  # Ethernet, IPv4 and TCP headers in front of each payload byte


def tiny(script: Script, seq: int) -> None:
    """One byte at ``seq`` (relative to the peer's ISN), as a view into its
    whole received frame, which is how the stack hands payloads over."""
    frame = bytes(HEADERS) + b"x"
    script.recv(seg("A", IRS + 1 + seq, ISS + 1), memoryview(frame)[HEADERS:])
    script.take()
    script.take_events()


def traced(action: object) -> int:
    """Bytes still allocated after ``action()`` that were not before."""
    assert callable(action)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_one_byte_segments_in_order_hold_about_their_bytes() -> None:
    script = established(replace(PLAIN, receive_buffer=WINDOW))
    pool = MemoryPool()
    script.conn.receive_buffer.pool = pool

    def flood() -> None:
        for seq in range(2 * WINDOW):  # two windows' worth: the rest is refused
            tiny(script, seq)

    grown = traced(flood)
    buffer = script.conn.receive_buffer
    assert len(buffer.ready) == WINDOW  # the window filled, no more
    assert buffer.charged <= 1.3 * WINDOW
    assert grown <= 4 * WINDOW
    # The accounting follows what Python really allocated.
    assert 0.7 * grown <= buffer.charged <= 1.5 * grown + 4096
    assert pool.held == buffer.charged
    assert script.conn.receive(script.now) == b"x" * WINDOW
    assert buffer.charged == 0 and pool.held == 0


def test_one_byte_segments_out_of_order_are_bounded_by_the_memory_limit() -> None:
    window = 8192
    script = established(replace(PLAIN, receive_buffer=window))

    def flood() -> None:
        # Every other byte above a hole: each its own out-of-order range.
        for seq in range(1, window, 2):
            tiny(script, seq)

    grown = traced(flood)
    buffer = script.conn.receive_buffer
    assert buffer.refused > 0  # the limit bit
    assert buffer.charged <= 3 * window
    assert grown <= 4 * window
    assert 0.5 * grown <= buffer.charged <= 2 * grown
    # The hole filled: what was held is delivered in order.
    script.recv(seg("A", IRS + 1, ISS + 1), b"x")
    assert buffer.pruned > 0  # the furthest ranges made room for it
    delivered = script.conn.receive(script.now)
    assert delivered.startswith(b"xx") and set(delivered) == {ord("x")}


def test_the_window_shrinks_as_the_charge_grows() -> None:
    buffer = ReceiveBuffer(0, 64)
    frame = bytes(2000)
    for seq in range(0, 20 * 1400, 1400):
        # Large segments, each a view pinning a 2000-byte frame.
        assert buffer.insert(seq, memoryview(frame)[:1400])
    space = buffer.window_space(32 * 1024)
    assert space == min(32 * 1024 - 28000, 64 * 1024 - buffer.charged)
    assert buffer.charged > 20 * 2000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3 * 4096), st.integers(1, 1500), st.booleans()),
        max_size=300,
    )
)
def test_no_sequence_of_segments_exceeds_the_bound(steps: list[tuple[int, int, bool]]) -> None:
    window = 4096
    pool = MemoryPool(limit=None)
    buffer = ReceiveBuffer(0, 256, memory_limit=3 * window, pool=pool)
    for offset, length, read in steps:
        seq = buffer.rcv_nxt + offset
        right = buffer.rcv_nxt + max(buffer.window_space(window), 0)
        data = memoryview(bytes(HEADERS + length))[HEADERS:]
        if seq < right:
            buffer.insert(seq, data[: right - seq])
        if read:
            buffer.read(length)
        assert buffer.charged <= 4 * window
        assert pool.held == buffer.charged
    buffer.release()
    assert pool.held == 0
