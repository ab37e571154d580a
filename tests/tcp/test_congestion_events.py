"""ssthresh falls once per congestion event (RFC 5681 section 3.1, RFC 6675
section 5.1): a timeout during fast recovery, or a repeated timeout for the
same data, restarts the window from one segment without cutting ssthresh
again. Scripted, and as a property of generated ACK and timer sequences."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from looming.net.tcp.config import MS
from looming.net.tcp.tcb import Recovery
from tests.tcp.script import ISS, PLAIN, Script, established, seg

A = ISS + 1
B = 5001
MSS = 1000


def _sending(congestion_control: str = "cubic", segments: int = 20) -> Script:
    config = replace(PLAIN, sack=True, congestion_control=congestion_control)
    s = established(config, sack_permitted=True, window=1 << 16)
    conn = s.conn
    conn.cc.cwnd = segments * MSS
    conn.rtt.srtt, conn.rtt.rttvar, conn.rtt.rto = 10 * MS, 5 * MS, 200 * MS
    s.call("send", b"x" * (4 * segments * MSS))
    assert len(s.take()) == segments
    return s


def _sack(s: Script, ack: int, *blocks: tuple[int, int]) -> None:
    ranges = tuple((A + left * MSS, A + right * MSS) for left, right in blocks)
    s.recv(seg("A", B, A + ack * MSS, sack_blocks=ranges))


def test_a_timeout_during_fast_recovery_keeps_its_ssthresh() -> None:
    for cc in ("cubic", "newreno"):
        s = _sending(cc)
        s.advance(10)
        _sack(s, 0, (1, 6))  # segment 0 lost: RACK and five SACKed start recovery
        conn = s.conn
        assert conn.recovery is Recovery.RECOVERY and conn.stats.fast_retransmits == 1
        ssthresh = conn.cc.ssthresh
        assert ssthresh < 20 * MSS
        s.take()
        s.advance(250)  # the retransmission and what followed are lost: the RTO fires
        assert conn.stats.timeouts == 1 and conn.recovery is Recovery.LOSS
        assert conn.cc.ssthresh == ssthresh, cc  # one event, one reduction
        assert conn.cc.cwnd == MSS
        s.advance(500)  # and again, for the same data
        assert conn.stats.timeouts == 2 and conn.cc.ssthresh == ssthresh


def test_a_timeout_after_progress_in_the_loss_state_is_a_new_event() -> None:
    s = _sending("newreno")
    conn = s.conn
    s.advance(250)  # nothing comes back: the first timeout cuts ssthresh
    assert conn.stats.timeouts == 1
    first = conn.cc.ssthresh
    # NewReno: half the flight (RFC 5681 equation 4), the tail loss probe's segment included.
    assert first == (conn.snd_max - conn.snd_una) // 2 == 21 * MSS // 2
    s.take()
    _sack(s, 1)  # the resent first segment arrives
    assert conn.recovery is Recovery.LOSS and conn.cc.ssthresh == first
    s.take()
    flight = conn.snd_max - conn.snd_una  # F-RTO sent new data meanwhile
    s.advance(500)  # what was resent next is lost too: a new loss, ssthresh set anew
    assert conn.stats.timeouts == 2
    assert conn.cc.ssthresh == flight // 2 != first


class CongestionEvents(RuleBasedStateMachine):
    """The peer ACKs, SACKs and stays silent at random; ssthresh may fall
    only where a new congestion event begins: from the open state, or at a
    timeout in the loss state after an ACK made progress since the last."""

    def __init__(self) -> None:
        super().__init__()
        self.s = _sending("cubic")
        self.delivered: set[int] = set()
        self.ssthresh = self.s.conn.cc.ssthresh
        self.recovery = self.s.conn.recovery
        self.una = self.s.conn.snd_una
        self.timeouts = 0
        self.progress_since_timeout = False
        self.may_cut = True

    def _observe(self) -> None:
        conn = self.s.conn
        self.s.take()
        if conn.snd_una > self.una:
            self.progress_since_timeout = True
        if conn.stats.timeouts > self.timeouts:
            # A new event: from the open state, or a loss after progress.
            self.may_cut = self.recovery is Recovery.OPEN or (
                self.recovery is Recovery.LOSS and self.progress_since_timeout
            )
            self.timeouts = conn.stats.timeouts
            self.progress_since_timeout = False
        if conn.cc.ssthresh < self.ssthresh:
            assert self.may_cut, "ssthresh cut twice in one congestion event"
        if conn.recovery is Recovery.OPEN:
            self.may_cut = True
        elif conn.cc.ssthresh != self.ssthresh or conn.recovery is not self.recovery:
            self.may_cut = False
        self.ssthresh = conn.cc.ssthresh
        self.recovery = conn.recovery
        self.una = conn.snd_una

    @rule(
        arrived=st.lists(st.integers(0, 79), min_size=1, max_size=8),
        wait=st.integers(0, 30),
    )
    def acks(self, arrived: list[int], wait: int) -> None:
        conn = self.s.conn
        self.s.advance(wait)
        self._observe()
        for index in arrived:
            if A + index * MSS >= conn.snd_max:
                continue
            self.delivered.add(index)
            ack = (conn.snd_una - A) // MSS
            while ack in self.delivered:
                ack += 1
            blocks = []
            for i in sorted(i for i in self.delivered if i > ack):
                if blocks and blocks[-1][1] == i:
                    blocks[-1] = (blocks[-1][0], i + 1)
                else:
                    blocks.append((i, i + 1))
            _sack(self.s, ack, *blocks[-3:])
            self._observe()

    @rule(ms=st.sampled_from([20, 100, 250, 600]))
    def silence(self, ms: int) -> None:
        self.s.advance(ms)
        self._observe()

    @invariant()
    def window_at_least_one_segment(self) -> None:
        assert self.s.conn.cc.cwnd >= MSS
        assert self.s.conn.cc.ssthresh >= 2 * MSS


TestCongestionEvents = CongestionEvents.TestCase
TestCongestionEvents.settings = settings(max_examples=40, stateful_step_count=15, deadline=None)
