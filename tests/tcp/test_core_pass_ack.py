"""The ACK path's updates, written with comparisons instead of min() and
max() calls and tuples, against the formulas as first written, on
generated input: RACK's per-segment delivery, the RTT estimator (RFC
6298), CUBIC's window (RFC 9438), and the scoreboard's byte totals after a
cumulative ACK that skips segments with nothing marked."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from looming.net.tcp import cubic
from looming.net.tcp.cubic import Cubic
from looming.net.tcp.rack import Rack
from looming.net.tcp.rtt import RttEstimator
from looming.net.tcp.scoreboard import Scoreboard, Segment


def _reference_delivered(state: dict[str, object], segment: Segment, now: int) -> None:
    """Rack.delivered as first written, with max() and tuple comparison."""
    rtt = now - segment.sent_at
    min_rtt = state["min_rtt"]
    assert min_rtt is None or isinstance(min_rtt, int)
    if segment.ever_retransmitted and min_rtt is not None and rtt < min_rtt:
        return
    rtt = max(rtt, 1)
    state["rtt"] = rtt
    if min_rtt is None or rtt < min_rtt:
        state["min_rtt"] = rtt
    fack = state["fack"]
    assert isinstance(fack, int)
    if segment.end < fack and not segment.ever_retransmitted:
        state["reordering_seen"] = True
    state["fack"] = max(fack, segment.end)
    xmit = (state["xmit_ts"], state["end_seq"])
    if (segment.sent_at, segment.end) > xmit:  # type: ignore[operator]
        state["xmit_ts"], state["end_seq"] = segment.sent_at, segment.end


_delivery = st.tuples(
    st.integers(0, 50), st.integers(1, 30), st.integers(-5, 40), st.integers(0, 40), st.booleans()
)


@given(st.lists(_delivery, max_size=30))
def test_rack_deliveries_update_as_the_reference(deliveries: list[tuple[int, ...]]) -> None:
    rack = Rack()
    state: dict[str, object] = {
        "rtt": rack.rtt,
        "min_rtt": rack.min_rtt,
        "fack": rack.fack,
        "reordering_seen": rack.reordering_seen,
        "xmit_ts": rack.xmit_ts,
        "end_seq": rack.end_seq,
    }
    for start, length, sent_at, delay, resent in deliveries:
        segment = Segment(start, start + length, sent_at)
        segment.ever_retransmitted = bool(resent)
        now = sent_at + delay
        rack.delivered(segment, now)
        _reference_delivered(state, segment, now)
        assert {name: getattr(rack, name) for name in state} == state


@given(
    st.lists(st.integers(-10, 10**9), max_size=20),
    st.sampled_from([(1, 1, 10**9), (200_000_000, 200_000_000, 120 * 10**9), (5, 3, 2)]),
)
def test_rtt_samples_fold_in_as_rfc_6298(samples: list[int], bounds: tuple[int, int, int]) -> None:
    initial, low, high = bounds
    estimator = RttEstimator(initial, low, high)
    srtt: int | None = None
    rttvar = 0
    for sample in samples:
        estimator.sample(sample)
        sample = max(sample, 1)
        if srtt is None:
            srtt, rttvar = sample, sample // 2
        else:
            rttvar = (3 * rttvar + abs(srtt - sample)) // 4
            srtt = (7 * srtt + sample) // 8
        rto = min(max(srtt + max(4 * rttvar, 1), low), high)
        assert (estimator.srtt, estimator.rttvar, estimator.rto) == (srtt, rttvar, rto)
        assert not estimator.backed_off


_mark = st.sampled_from(["", "", "sacked", "lost", "resent", "lost resent"])


@given(st.lists(st.tuples(st.integers(1, 300), _mark), max_size=12), st.integers(0, 4000))
def test_cumulative_acks_keep_the_byte_totals(
    segments: list[tuple[int, str]], ack_offset: int
) -> None:
    """SACKed, lost and resent bytes after an ACK (whole segments and part
    of one) are what the segments left hold; fresh bytes are those the ACK
    covered that were not SACKed."""
    board = Scoreboard()
    top = 1000
    for length, mark in segments:
        segment = board.sent(top, top + length, 0)
        top += length
        if "lost" in mark:
            board.mark_lost(segment)
        if "resent" in mark:
            board.retransmitted(segment, 1)
        if mark == "sacked":
            board.sack(segment.start, segment.end)
    ack = min(1000 + ack_offset, top)
    unsacked_below = sum(
        min(s.end, ack) - s.start for s in board.segments if s.start < ack and not s.sacked
    )
    _, fresh = board.acknowledge(ack)
    assert fresh == unsacked_below
    left = board.segments
    assert board.sacked_bytes == sum(s.length for s in left if s.sacked)
    assert board.lost_bytes == sum(s.length for s in left if s.lost)
    assert board.retransmitted_bytes == sum(s.length for s in left if s.retransmitted)


class _ReferenceCubic(Cubic):
    """Cubic.on_ack as first written, with min() and max() calls."""

    def on_ack(self, acked: int, now: int, srtt: int | None, cwnd_limited: bool) -> None:
        if not cwnd_limited:
            return
        if self.cwnd < self.ssthresh:
            self.cwnd += min(acked, 2 * self.mss)
            return
        mss = self.mss
        cwnd = self.cwnd / mss
        if self.epoch_start is None:
            self.epoch_start = now
            if cwnd < self.w_max:
                self.k = ((self.w_max - cwnd) / cubic.C) ** (1 / 3)
                self.origin = self.w_max
            else:
                self.k = 0.0
                self.origin = cwnd
            self.w_est = cwnd
        rtt = (srtt or 0) / cubic.SECOND
        t = (now - self.epoch_start) / cubic.SECOND
        target = self.origin + cubic.C * (t + rtt - self.k) ** 3
        target = min(max(target, cwnd), 1.5 * cwnd)
        segments = acked / mss
        alpha = 1.0 if self.w_est >= self.prior else cubic.ALPHA
        self.w_est += alpha * segments / cwnd
        grown = max(self.w_est, cwnd + (target - cwnd) / cwnd * segments)
        self.cwnd = max(self.cwnd, int(grown * mss))


_cubic_event = st.one_of(
    st.tuples(st.just("ack"), st.integers(1, 20_000), st.integers(0, 3 * 10**8), st.booleans()),
    st.tuples(st.just("loss"), st.integers(0, 10**6), st.just(0), st.just(True)),
    st.tuples(st.just("timeout"), st.integers(0, 10**6), st.just(0), st.just(True)),
)


@given(
    st.lists(_cubic_event, max_size=60),
    st.sampled_from([None, 1_000, 5_000_000, 200_000_000]),
)
def test_cubic_grows_as_the_reference(
    events: list[tuple[str, int, int, bool]], srtt: int | None
) -> None:
    """Slow start, the concave, convex and Reno-friendly regions, after
    losses and timeouts: the same window and state, float for float."""
    ours, reference = Cubic(1448), _ReferenceCubic(1448)
    now = 10**9
    for name, amount, elapsed, limited in events:
        now += elapsed
        for cc in (ours, reference):
            if name == "ack":
                cc.on_ack(amount, now, srtt, limited)
            elif name == "loss":
                cc.on_congestion(now, amount)
            else:
                cc.on_timeout(now, amount)
        state = ("cwnd", "ssthresh", "w_max", "epoch_start", "k", "origin", "w_est", "prior")
        assert [getattr(ours, n) for n in state] == [getattr(reference, n) for n in state]
