"""Bursts of the peer's data that carry SACK blocks for our own data, merged
(TcpEndpoint.input_burst) against the same segments one by one: the same
bytes delivered, the same final ACK, and the same sender state: the
scoreboard (SACKed, lost, resent), the cumulative ACK, the recovery state,
the window, the segments resent at the burst's end and every counter but
the merge's."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from looming.net.tcp.connection import TcpConnection
from looming.net.tcp.endpoint import Arrival, TcpEndpoint
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK, PSH, TcpHeader
from tests.tcp.test_merge import (
    MS,
    MSS,
    PEER_ISN,
    THEM,
    US,
    _accepted,
    _replies,
    assert_same_counters,
)

SENT = 10  # our segments in flight when the burst arrives

# One arriving segment: (skip, length, ACK step, SACK choice, TSval step).
# SACK choice: 0 the previous segment's blocks, 1 none, 2-5 a new set, 6 a D-SACK.
_segment = st.tuples(
    st.sampled_from([0, 0, 0, 0, 0, 1]),  # 1: a hole before it
    st.sampled_from([MSS, MSS, MSS, 400]),
    st.sampled_from([0, 0, 0, 0, 0, 1]),
    st.integers(0, 6),
    st.sampled_from([0, 0, 0, 1]),
)


def _blocks(choice: int, acked: int, mss: int, base: int) -> tuple[tuple[int, int], ...]:
    """SACK blocks over our ``SENT`` segments from ``base`` (``acked`` of them ACKed)."""
    at = [(base + i * mss) & 0xFFFFFFFF for i in range(SENT + 1)]
    if choice == 1:
        return ()
    if choice == 6:  # D-SACK: a segment already ACKed, then a block above
        return ((at[0], at[1]), (at[SENT - 1], at[SENT]))
    first = min(acked + choice - 1, SENT - 2)
    if choice == 2:
        return ((at[first + 1], at[first + 2]),)
    if choice == 3:
        return ((at[SENT - 2], at[SENT]), (at[first + 1], at[first + 2]))
    if choice == 4:
        return ((at[SENT - 3], at[SENT]),)
    return ((at[SENT - 1], at[SENT]), (at[SENT - 4], at[SENT - 2]))


def _burst(
    spec: list[tuple[int, int, int, int, int]], base: int, mss: int, ts_echo: int
) -> list[Arrival]:
    arrivals: list[Arrival] = []
    offset, ts, acked = 0, 200, 0
    blocks: tuple[tuple[int, int], ...] = ()
    for skip, length, ack_step, choice, ts_step in spec:
        offset += skip * MSS
        acked = min(acked + ack_step, SENT - 3)
        ts += ts_step
        if choice:
            blocks = _blocks(choice, acked, mss, base)
        header = TcpHeader(
            4000,
            80,
            (PEER_ISN + 1 + offset) & 0xFFFFFFFF,
            (base + acked * mss) & 0xFFFFFFFF,
            ACK | (PSH if length < MSS else 0),
            512,
            timestamps=(ts, ts_echo),
            sack_blocks=blocks,
        )
        data = bytes((offset + i) % 251 for i in range(length))
        arrivals.append((THEM, US, wire.emit(header, data, src=THEM, dst=US), False, False))
        offset += length
    return arrivals


def _sending() -> tuple[TcpEndpoint, TcpConnection, int]:
    """An accepted connection with ``SENT`` full segments of ours in flight."""
    endpoint, conn, our_seq = _accepted()
    conn.cc.cwnd = SENT * conn.send_mss  # (a window grown past the initial one)
    conn.send(bytes(SENT * conn.send_mss), MS)
    sent = _replies(endpoint, conn, MS)
    assert len(sent) == SENT
    return endpoint, conn, our_seq


def _sent(
    endpoint: TcpEndpoint, conn: TcpConnection, now: int
) -> tuple[list[tuple[int, int, bytes]], tuple[object, ...] | None]:
    """The data segments sent (seq, ack, payload) and the last pure ACK."""
    conn.flush_ack(now)
    (key,) = endpoint.connections
    endpoint.collect(key, conn)
    data: list[tuple[int, int, bytes]] = []
    last_ack: tuple[object, ...] | None = None
    for _, segment, _ in endpoint.take_outbox():
        h, payload = wire.parse(segment)
        if payload:
            data.append((h.seq, h.ack, bytes(payload)))
        else:
            last_ack = (h.seq, h.ack, h.window, h.sack_blocks, h.flags)
    return data, last_ack


def _sender_state(conn: TcpConnection) -> tuple[object, ...]:
    board = conn.board
    return (
        conn.snd_una,
        conn.snd_nxt,
        conn.snd_max,
        conn.dupacks,
        conn.recovery,
        conn.recover,
        conn.cc.cwnd,
        conn.cc.ssthresh,
        conn.prr_allowance,
        conn.undo_retransmitted,
        board.sacked_ranges(),
        [(s.start, s.end, s.lost, s.retransmitted, s.ever_retransmitted) for s in board.segments],
        [getattr(conn.rack, name) for name in type(conn.rack).__slots__],
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=20), st.integers(0, 400))
# Four segments with the same SACK blocks: one pass instead of four.
@example(spec=[(0, MSS, 0, 4, 0), (0, MSS, 0, 0, 0), (0, MSS, 0, 0, 0), (0, 400, 0, 0, 0)], ms=300)
# The same D-SACK on each: reported once per segment, so never merged.
@example(spec=[(0, MSS, 1, 6, 0), (0, MSS, 0, 0, 0), (0, MSS, 0, 0, 0)], ms=300)
# Two out-of-order segments with the same blocks: answered once, merged.
@example(spec=[(0, MSS, 0, 4, 0), (1, MSS, 0, 0, 0), (1, MSS, 0, 0, 0), (0, MSS, 0, 0, 0)], ms=0)
def test_a_merged_burst_with_sack_blocks_is_taken_as_one_by_one(
    spec: list[tuple[int, int, int, int, int]], ms: int
) -> None:
    merged, merged_conn, our_seq = _sending()
    single, single_conn, _ = _sending()
    ts_echo = merged_conn._ts_now(MS)
    arrivals = _burst(spec, our_seq, merged_conn.send_mss, ts_echo)
    now = (2 + ms) * MS  # later bursts find RACK's reordering window passed
    merged.input_burst(arrivals, now)
    for src, dst, segment, verified, ce in arrivals:
        single.input(src, dst, segment, now, checksum_verified=verified, ce=ce)
    assert _sender_state(merged_conn) == _sender_state(single_conn)
    assert merged_conn.reorder_at == single_conn.reorder_at
    assert merged_conn.rto_at == single_conn.rto_at
    # What goes out: the same data segments (the retransmissions chosen),
    # and the same last pure ACK. Where that ACK falls among the resent
    # segments may differ: a merged run of out-of-order segments is
    # answered once, as GRO's merged segment is.
    out_merged = _sent(merged, merged_conn, now)
    out_single = _sent(single, single_conn, now)
    assert sorted(out_merged[0]) == sorted(out_single[0])
    assert out_merged[1] == out_single[1]
    assert _sender_state(merged_conn) == _sender_state(single_conn)
    assert merged_conn.receive(now) == single_conn.receive(now)
    assert merged_conn.receive_buffer.sack_blocks(4) == single_conn.receive_buffer.sack_blocks(4)
    assert merged_conn.ts_recent == single_conn.ts_recent
    assert (merged_conn.snd_wnd, merged_conn.snd_wl1, merged_conn.snd_wl2) == (
        single_conn.snd_wnd,
        single_conn.snd_wl1,
        single_conn.snd_wl2,
    )
    assert_same_counters(merged.stats, single.stats)


def test_data_with_the_same_sack_blocks_is_merged_and_marks_the_scoreboard() -> None:
    endpoint, conn, our_seq = _sending()
    spec = [(0, MSS, 0, 4, 0)] + [(0, MSS, 0, 0, 0)] * 4
    arrivals = _burst(spec, our_seq, conn.send_mss, conn._ts_now(MS))
    endpoint.input_burst(arrivals, 2 * MS)
    assert endpoint.stats.segments_merged == 4
    assert conn.receive_buffer.rcv_nxt == PEER_ISN + 1 + 5 * MSS
    mss = conn.send_mss
    assert conn.board.sacked_ranges() == [(our_seq + 7 * mss, our_seq + 10 * mss)]


def test_a_dsack_or_changed_sack_blocks_stop_a_merge() -> None:
    endpoint, _, our_seq = _sending()
    mss = _accepted()[1].send_mss
    spec = [(0, MSS, 1, 6, 0), (0, MSS, 0, 0, 0), (0, MSS, 0, 2, 0), (0, MSS, 0, 4, 0)]
    endpoint.input_burst(_burst(spec, our_seq, mss, 1), 2 * MS)
    assert endpoint.stats.segments_merged == 0
