"""The scoreboard's SACK marking, which skips ranges it SACKed recently,
against a model that looks at every segment: any sequence of sends, SACK
blocks, cumulative ACKs (whole or cutting a segment), losses, resends, a
FIN added and reneging leaves the same segments marked the same way."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from looming.net.tcp.rack import Rack
from looming.net.tcp.scoreboard import Scoreboard

MSS = 100

_op = st.one_of(
    st.tuples(st.just("send"), st.integers(1, 6), st.sampled_from([MSS, MSS, 40])),
    st.tuples(st.just("sack"), st.integers(0, 30), st.integers(0, 30)),
    st.tuples(st.just("sack_cut"), st.integers(0, 700), st.integers(1, 400)),
    st.tuples(st.just("ack"), st.integers(0, 30), st.sampled_from([0, 0, 30])),
    st.tuples(st.just("lost"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("resend"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("fin"), st.just(0), st.just(0)),
    st.tuples(st.just("forget"), st.just(0), st.just(0)),
)


def _model_sack(
    model: list[list[int | bool]], left: int, right: int
) -> list[tuple[int | bool, ...]]:
    newly = []
    for segment in model:
        if segment[0] >= left and segment[1] <= right and not segment[2]:
            segment[2], segment[3] = True, False
            newly.append((segment[0], segment[1]))
    return newly


def _state(board: Scoreboard) -> list[tuple[int, int, bool, bool]]:
    return [(s.start, s.end, s.sacked, s.lost) for s in board.segments]


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, max_size=40))
# A block ending inside a segment, then one holding that segment whole.
@example([("send", 3, MSS), ("sack_cut", 0, 150), ("sack", 0, 2)])
# A cumulative ACK cutting a segment that began before a block's left edge.
@example([("send", 3, MSS), ("sack_cut", 120, 180), ("ack", 1, 30), ("sack", 0, 2)])
# Reneging: what was SACKed is SACKed anew.
@example([("send", 3, MSS), ("sack", 0, 3), ("forget", 0, 0), ("sack", 0, 3)])
def test_sack_marks_what_a_full_walk_marks(ops: list[tuple[str, int, int]]) -> None:
    board = Scoreboard()
    model: list[list[int | bool]] = []  # [start, end, sacked, lost]
    top = 0
    for name, a, b in ops:
        edges = [s.start for s in board.segments] + [top]
        if name == "send":
            for _ in range(a):
                board.sent(top, top + b, 0)
                model.append([top, top + b, False, False])
                top += b
        elif name in ("sack", "sack_cut"):
            if name == "sack":
                left, right = edges[a % len(edges)], edges[b % len(edges)]
            else:
                left, right = a, a + b
            newly = [(s.start, s.end) for s in board.sack(left, right)]
            assert newly == _model_sack(model, left, right)
        elif name == "ack" and board.segments:
            ack = min(edges[a % len(edges)] + b, top)
            board.acknowledge(ack)
            model[:] = [s for s in model if s[1] > ack]
            if model and model[0][0] < ack:
                model[0][0] = ack
        elif name in ("lost", "resend") and board.segments:
            segment = board.segments[a % len(board.segments)]
            if name == "lost":
                board.mark_lost(segment)
            else:
                board.retransmitted(segment, 1)
            (mine,) = (s for s in model if s[0] == segment.start)
            mine[3] = segment.lost
        elif name == "fin" and board.segments and not (model[-1][2] or model[-1][3]):
            # (as the sender adds it: to the segment it has just sent)
            board.segments[-1].end += 1
            model[-1][1] = int(model[-1][1]) + 1
            top += 1
        elif name == "forget":
            board.forget_sacks()
            for segment in model:
                segment[2] = False
        assert _state(board) == [tuple(s) for s in model]
        assert board.sacked_bytes == sum(int(s[1]) - int(s[0]) for s in model if s[2])


_timeline = st.lists(
    st.tuples(
        st.sampled_from(["send", "send", "resend", "sack", "ack"]),
        st.integers(0, 30),
        st.integers(-2, 5),  # the clock's step (now and then backwards)
    ),
    max_size=50,
)


@settings(max_examples=300, deadline=None)
@given(_timeline, st.integers(0, 30), st.integers(0, 8), st.integers(0, 8))
def test_rack_stops_early_only_where_a_full_walk_finds_nothing_more(
    ops: list[tuple[str, int, int]], delivered: int, rtt: int, reo_wnd: int
) -> None:
    """RACK's walk ends at the first segment, of those sent once in order,
    sent after the one most recently delivered: the segments deemed lost
    and the reordering timer's wait are those of a walk over every one."""
    board, now, top = Scoreboard(), 10, 0
    for name, a, step in ops:
        now += step
        if name == "send":
            board.sent(top, top + MSS, now)
            top += MSS
        elif board.segments:
            segment = board.segments[a % len(board.segments)]
            if name == "resend":
                board.mark_lost(segment)
                board.retransmitted(segment, now)
            elif name == "sack":
                board.sack(segment.start, segment.end)
            elif a % 5 == 0:
                board.acknowledge(segment.start + a % 3 * 10)
    if not board.segments:
        return
    rack = Rack()
    rack.delivered(board.segments[delivered % len(board.segments)], now)
    rack.rtt = rtt
    for later in (now, now + 4, now + 20):
        assert rack.detect_loss(board.segments, later, reo_wnd, board.in_order_from) == (
            rack.detect_loss(board.segments, later, reo_wnd)
        )
