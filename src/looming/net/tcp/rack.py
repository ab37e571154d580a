"""RACK-TLP loss detection (RFC 8985), without I/O.

RACK deems a segment lost when a segment sent sufficiently later has been
delivered: "sufficiently" is the latest RTT plus a reordering window. It
reads time only from its arguments. The sender feeds it every segment that
is cumulatively acknowledged or newly SACKed (:meth:`Rack.delivered`), asks
which segments are lost (:meth:`Rack.detect_loss`), and arms a timer for
the answer's deadline. The tail loss probe timeout is :func:`probe_timeout`.
"""

from __future__ import annotations

from collections.abc import Iterable

from looming.net.tcp.scoreboard import Scoreboard, Segment

REO_WND_MULT_MAX = 8  # RFC 8985 6.2 step 4: at most 8 steps of min_RTT / 4
REO_WND_PERSIST = 16  # recoveries after which the window returns to one step


class Rack:
    """The per-connection RACK state of RFC 8985 section 6.1."""

    __slots__ = (
        "dsack_round",
        "end_seq",
        "fack",
        "min_rtt",
        "reo_wnd_mult",
        "reo_wnd_persist",
        "reordering_seen",
        "rtt",
        "xmit_ts",
    )

    def __init__(self) -> None:
        self.xmit_ts = -1  # send time of the most recently sent delivered segment
        self.end_seq = 0
        self.rtt = 0
        self.min_rtt: int | None = None
        self.fack = 0  # highest end of any delivered segment
        self.reordering_seen = False
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = REO_WND_PERSIST
        self.dsack_round: int | None = None

    def delivered(self, segment: Segment, now: int, *, ts_says_original: bool = False) -> None:
        """``segment`` was cumulatively acknowledged or SACKed at ``now``
        (RFC 8985 6.2 steps 1-3)."""
        rtt = now - segment.sent_at
        if segment.ever_retransmitted and (
            ts_says_original or (self.min_rtt is not None and rtt < self.min_rtt)
        ):
            # Step 2: the ACK is for the original (its timestamp echo is
            # older than the retransmission), or likely so (it came sooner
            # than min_RTT after the retransmission). Its time from the
            # retransmission tells nothing, and taken as the path's RTT it
            # would deem lost all sent before the resend and not yet acked.
            return
        # (Comparisons, not max() calls and tuples: this runs for every
        # segment delivered.)
        if rtt < 1:
            rtt = 1
        self.rtt = rtt
        min_rtt = self.min_rtt
        if min_rtt is None or rtt < min_rtt:
            self.min_rtt = rtt
        end = segment.end
        fack = self.fack
        if end < fack and not segment.ever_retransmitted:
            self.reordering_seen = True  # delivered below data delivered before it
        if end > fack:
            self.fack = end
        sent = segment.sent_at
        xmit_ts = self.xmit_ts
        if sent > xmit_ts or (sent == xmit_ts and end > self.end_seq):
            self.xmit_ts = sent
            self.end_seq = end

    def on_dsack(self, snd_max: int, round_end: int) -> None:
        """A D-SACK arrived: the network reorders more than we thought
        (RFC 8985 6.2 step 4); widen the window once per round trip."""
        self.reordering_seen = True
        if self.dsack_round is not None and round_end < self.dsack_round:
            return
        self.dsack_round = snd_max
        self.reo_wnd_mult = min(self.reo_wnd_mult + 1, REO_WND_MULT_MAX)
        self.reo_wnd_persist = REO_WND_PERSIST

    def on_recovery_end(self) -> None:
        """Step 4's decay: after 16 recoveries without D-SACK, one step again."""
        self.reo_wnd_persist -= 1
        if self.reo_wnd_persist <= 0:
            self.reo_wnd_mult = 1
            self.reo_wnd_persist = REO_WND_PERSIST

    def reordering_window(self, srtt: int, *, in_recovery: bool, dupthresh_met: bool) -> int:
        """RFC 8985 6.2 step 4 (RACK_update_reo_wnd)."""
        if not self.reordering_seen and (in_recovery or dupthresh_met):
            return 0
        if self.min_rtt is None:
            return 0
        return min(self.reo_wnd_mult * self.min_rtt // 4, srtt)

    def detect_loss(
        self, segments: Iterable[Segment], now: int, reo_wnd: int, in_order_from: int | None = None
    ) -> tuple[list[Segment], int | None]:
        """RFC 8985 6.2 step 5: the segments now deemed lost, and how long
        until the next one would be (for the reordering timer), or None.
        Segments that begin at ``in_order_from`` or above were sent once
        each, in sequence and time order: the first of them not sent before
        the most recently delivered one ends the walk, as Linux's walk of its
        time-sorted list ends (every later one was sent later still)."""
        if self.xmit_ts < 0:
            return [], None
        lost: list[Segment] = []
        wait: int | None = None
        deadline_base = self.rtt + reo_wnd
        xmit_ts, end_seq = self.xmit_ts, self.end_seq
        for segment in segments:
            if segment.sacked or (segment.lost and not segment.retransmitted):
                continue
            sent = segment.sent_at
            if sent > xmit_ts or (sent == xmit_ts and segment.end >= end_seq):
                # Not sent before the segment most recently delivered.
                if in_order_from is not None and segment.start >= in_order_from:
                    break
                continue
            remaining = sent + deadline_base - now
            if remaining <= 0:
                lost.append(segment)
            elif wait is None or remaining > wait:
                wait = remaining
        return lost, wait


def rack_detect(
    rack: Rack, board: Scoreboard, now: int, srtt: int, *, in_recovery: bool, dupthresh: int
) -> tuple[list[Segment], int | None]:
    """Detect losses on ``board`` (marking them) with RACK; the deadline
    in ns for the reordering timer when one is needed."""
    dupthresh_met = board.sacked_bytes >= dupthresh
    reo_wnd = rack.reordering_window(srtt, in_recovery=in_recovery, dupthresh_met=dupthresh_met)
    lost, wait = rack.detect_loss(board.segments, now, reo_wnd, board.in_order_from)
    newly = [segment for segment in lost if board.mark_lost(segment)]
    return newly, (now + wait if wait is not None else None)


# The probe timeout's floor. RFC 8985 7.2 has none, but a peer that delays
# its ACKs (Linux does, 40 ms, while an echo's reader is busy writing) makes
# a probe after 2 * SRTT of a sub-millisecond path mostly spurious, and a
# flight with a probe outstanding gets no second one: through the loss relay
# a 2 ms floor gave more timeouts than this (5 interleaved rounds: at 3% loss
# 6 against 0, at 5% 11 against 6) and no shorter echoes.
PTO_FLOOR_NS = 10_000_000


def probe_timeout(srtt: int | None, flight_segments: int, delayed_ack_ns: int, rto: int) -> int:
    """The tail loss probe's timeout (RFC 8985 7.2), at least
    :data:`PTO_FLOOR_NS` and capped by the RTO."""
    if srtt is None:
        return rto
    pto = 2 * srtt
    if flight_segments <= 1:
        pto += delayed_ack_ns  # the receiver may hold its ACK for a lone segment
    return min(max(pto, PTO_FLOOR_NS), rto)
