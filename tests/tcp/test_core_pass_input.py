"""The receive path's shortcuts against the general rules they stand in
for, on generated input: the in-order acceptability test (RFC 9293
3.10.7.4), the parse of a header without options, and the memory charged
for a run's joined bytes."""

from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from looming.net.tcp.receive_buffer import CHUNK_OVERHEAD, ReadyBytes, true_size
from looming.net.wire import tcp
from tests.tcp.test_merge import _accepted

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def _acceptable(seq: int, length: int, rcv_nxt: int, window: int) -> bool:
    """RFC 9293 3.10.7.4's table of the four cases."""
    if length == 0:
        if window == 0:
            return seq == rcv_nxt
        return rcv_nxt <= seq < rcv_nxt + window
    if window == 0:
        return False
    end = seq + length - 1
    return rcv_nxt <= seq < rcv_nxt + window or rcv_nxt <= end < rcv_nxt + window


@given(
    st.integers(-3000, 3000),
    st.sampled_from([0, 0, 1, 1000, 70_000]),
    st.integers(0, 200_000),
    st.booleans(),
)
def test_acceptability_is_the_rfc_table(offset: int, length: int, ready: int, shut: bool) -> None:
    """In order or not, with data or without, the window open, small or
    shut (by data waiting to be read, or by the edge once advertised)."""
    _, conn, _ = _accepted()
    if ready:
        conn.receive_buffer.insert(conn.receive_buffer.rcv_nxt, bytes(ready))
    if shut:
        conn.rcv_adv = conn.receive_buffer.rcv_nxt
    rcv_nxt = conn.receive_buffer.rcv_nxt
    seq = rcv_nxt + (0 if offset % 3 == 0 else offset)
    window = conn.receive_window
    assert conn._segment_acceptable(seq, length) is _acceptable(seq, length, rcv_nxt, window)


@given(u16, u16, u32, u32, st.integers(0, 0xFF), u16, u16, st.binary(max_size=64))
def test_a_header_without_options_parses_as_one_with_padding(
    src: int, dst: int, seq: int, ack: int, flags: int, window: int, urgent: int, payload: bytes
) -> None:
    """No options takes the short way; four NOPs (the general option walk)
    give the same header."""
    header = tcp.TcpHeader(src, dst, seq, ack, flags, window, urgent)
    segment = tcp.emit(header, payload)
    padded = bytearray(segment[:20] + b"\x01" * 4 + segment[20:])
    padded[12] = 6 << 4
    plain, rest = tcp.parse(segment)
    general, general_rest = tcp.parse(bytes(padded))
    assert plain == general == header
    assert bytes(rest) == bytes(general_rest) == payload


@given(st.integers(1024, 9000), st.integers(0, 3))
def test_merged_bytes_are_charged_their_true_size(size: int, before: int) -> None:
    """A run's joined payload (bytes) is charged as true_size says, which
    is what the interpreter holds for it."""
    data = bytes(size)
    assert true_size(data) == sys.getsizeof(data)
    ready = ReadyBytes()
    for _ in range(before):
        ready.append(memoryview(bytes(2000))[40:])
    charge = ready.charge
    ready.append(data)
    assert ready.charge - charge == true_size(data) + CHUNK_OVERHEAD
