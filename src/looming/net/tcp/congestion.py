"""NewReno congestion control (RFC 5681 with the RFC 6582 recovery changes).

This object only keeps the numbers; the connection decides what to
retransmit. Amounts are bytes.
"""

from __future__ import annotations

DUPACK_THRESHOLD = 3


class NewReno:
    """Congestion window, slow-start threshold and fast-recovery state."""

    __slots__ = ("cwnd", "dupacks", "in_recovery", "mss", "recover", "ssthresh")

    def __init__(self, mss: int, initial_sequence: int) -> None:
        self.mss = mss
        # RFC 5681 3.1: an initial window of up to 4 segments for this MSS range.
        self.cwnd = self.initial_window(mss)
        self.ssthresh = 1 << 62  # "arbitrarily high"
        self.dupacks = 0
        self.in_recovery = False
        # RFC 6582 3.2 step 1: recover starts at the initial send sequence.
        self.recover = initial_sequence

    @staticmethod
    def initial_window(mss: int) -> int:
        if mss > 2190:
            return 2 * mss
        if mss > 1095:
            return 3 * mss
        return 4 * mss

    def on_new_ack(self, acked: int, flight_before: int) -> None:
        """Cumulative ACK advanced by ``acked`` bytes outside recovery."""
        self.dupacks = 0
        if self.cwnd < self.ssthresh:
            # Slow start with appropriate byte counting, L = 2 * SMSS (RFC 3465).
            self.cwnd += min(acked, 2 * self.mss)
        elif flight_before + self.mss >= self.cwnd:
            # Congestion avoidance: about one SMSS per RTT, and only while
            # the window is actually being used.
            self.cwnd += max(1, self.mss * self.mss // self.cwnd)

    def enter_recovery(self, flight: int, highest_sent: int) -> None:
        """Three duplicate ACKs: halve and inflate (RFC 6582 3.2 step 2/3)."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + DUPACK_THRESHOLD * self.mss
        self.recover = highest_sent
        self.in_recovery = True

    def on_dupack_in_recovery(self) -> None:
        self.cwnd += self.mss

    def on_partial_ack(self, acked: int) -> None:
        """Deflate by the amount acknowledged, add back one SMSS (RFC 6582 3.2 step 5)."""
        self.cwnd = max(self.cwnd - acked, 0)
        if acked >= self.mss:
            self.cwnd += self.mss
        self.cwnd = max(self.cwnd, self.mss)

    def on_full_ack(self, flight_after: int) -> None:
        """Leave fast recovery (RFC 6582 3.2 step 6, option 1)."""
        self.cwnd = min(self.ssthresh, max(flight_after, self.mss) + self.mss)
        self.in_recovery = False
        self.dupacks = 0

    def on_timeout(self, flight: int, highest_sent: int, first: bool) -> None:
        """RTO expiry (RFC 5681 3.1 eq. 4): back to one segment."""
        if first:
            self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.in_recovery = False
        self.dupacks = 0
        self.recover = highest_sent  # RFC 6582 section 4: no fast retransmit of old data

    def after_idle(self, rto_ns: int, idle_ns: int) -> None:
        """RFC 5681 4.1: restart from the initial window after an idle RTO."""
        if idle_ns > rto_ns:
            self.cwnd = min(self.cwnd, self.initial_window(self.mss))
