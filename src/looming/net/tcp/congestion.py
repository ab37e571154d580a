"""Congestion control: the window and the slow-start threshold.

These objects only keep the numbers (RFC 5681); the sender decides when a
loss, a timeout or an ECN echo has happened and what to retransmit, and
Proportional Rate Reduction (:mod:`looming.net.tcp.prr`) paces the
reduction. :class:`NewReno` grows the window as RFC 5681 does;
:class:`~looming.net.tcp.cubic.Cubic` (RFC 9438) is the default.
Amounts are bytes, times nanoseconds.
"""

from __future__ import annotations

from typing import Protocol

DUPACK_THRESHOLD = 3


def initial_window(mss: int) -> int:
    """RFC 5681 3.1: up to 4 segments for this MSS range."""
    if mss > 2190:
        return 2 * mss
    if mss > 1095:
        return 3 * mss
    return 4 * mss


class CongestionControl(Protocol):
    """What the sender asks of a congestion control algorithm."""

    mss: int
    cwnd: int
    ssthresh: int

    def on_ack(self, acked: int, now: int, srtt: int | None, cwnd_limited: bool) -> None:
        """Grow the window: ``acked`` bytes newly delivered outside recovery."""

    def on_congestion(self, now: int, flight: int) -> None:
        """A loss or an ECN echo: set ssthresh (PRR then brings cwnd down)."""

    def on_timeout(self, now: int, flight: int) -> None:
        """A retransmission timeout: set ssthresh, back to one segment."""

    def save(self) -> tuple[int, ...]:
        """State to restore if the congestion turns out to be spurious."""

    def undo(self, saved: tuple[int, ...]) -> None:
        """Restore :meth:`save`'s state (RFC 4015 / RFC 2883 undo)."""

    def after_idle(self, rto_ns: int, idle_ns: int) -> None:
        """RFC 5681 4.1: restart from the initial window after an idle RTO."""


class NewReno:
    """RFC 5681 slow start and congestion avoidance, halving on congestion."""

    __slots__ = ("cwnd", "mss", "ssthresh")

    name = "newreno"

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = initial_window(mss)
        self.ssthresh = 1 << 62  # "arbitrarily high"

    def on_ack(self, acked: int, now: int, srtt: int | None, cwnd_limited: bool) -> None:
        if not cwnd_limited:
            return  # RFC 7661: an application-limited window does not grow
        if self.cwnd < self.ssthresh:
            # Slow start with appropriate byte counting, L = 2 * SMSS (RFC 3465).
            self.cwnd += min(acked, 2 * self.mss)
        else:
            self.cwnd += max(1, self.mss * self.mss // self.cwnd)

    def on_congestion(self, now: int, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)

    def on_timeout(self, now: int, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss

    def save(self) -> tuple[int, ...]:
        return (self.cwnd, self.ssthresh)

    def undo(self, saved: tuple[int, ...]) -> None:
        self.cwnd = max(self.cwnd, saved[0])
        self.ssthresh = max(self.ssthresh, saved[1])

    def after_idle(self, rto_ns: int, idle_ns: int) -> None:
        if idle_ns > rto_ns:
            self.cwnd = min(self.cwnd, initial_window(self.mss))
