"""CUBIC congestion control (RFC 9438), without I/O.

The window grows as a cubic function of the time since the last
congestion event, centred on the window at which that event happened
(W_max): fast while far below it, flat near it, probing beyond it. A
Reno-friendly estimate (section 4.3) keeps it no slower than NewReno on
short, low-bandwidth paths: it grows by ALPHA segments a round trip until it
is back at the window the last congestion event cut (cwnd_prior), then by
one, as Reno does. Amounts are bytes, times nanoseconds.
"""

from __future__ import annotations

from looming.net.tcp.congestion import initial_window

C = 0.4  # RFC 9438 4.1: segments per second cubed
BETA = 0.7  # multiplicative decrease factor
ALPHA = 3 * (1 - BETA) / (1 + BETA)  # 4.3: Reno-friendly additive increase
SECOND = 1e9


class Cubic:
    """The RFC 9438 state of one connection."""

    __slots__ = (
        "cwnd",
        "epoch_start",
        "k",
        "mss",
        "origin",
        "prior",
        "ssthresh",
        "w_est",
        "w_max",
    )

    name = "cubic"

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = initial_window(mss)
        self.ssthresh = 1 << 62
        self.w_max = 0.0  # segments
        self.epoch_start: int | None = None
        self.k = 0.0  # seconds
        self.origin = 0.0  # segments
        self.w_est = 0.0  # segments
        self.prior = 0.0  # segments: cwnd_prior, the window the last event cut

    def on_ack(self, acked: int, now: int, srtt: int | None, cwnd_limited: bool) -> None:
        if not cwnd_limited:
            return  # RFC 9438 4.1 / RFC 7661: an application-limited window does not grow
        if self.cwnd < self.ssthresh:
            self.cwnd += min(acked, 2 * self.mss)  # slow start (RFC 3465, L = 2)
            return
        mss = self.mss
        cwnd = self.cwnd / mss
        if self.epoch_start is None:
            self.epoch_start = now
            if cwnd < self.w_max:
                self.k = ((self.w_max - cwnd) / C) ** (1 / 3)
                self.origin = self.w_max
            else:
                self.k = 0.0
                self.origin = cwnd
            self.w_est = cwnd
        # (Comparisons below, not min() and max() calls: this runs for
        # every ACK in congestion avoidance.)
        rtt = (srtt or 0) / SECOND
        t = (now - self.epoch_start) / SECOND
        target = self.origin + C * (t + rtt - self.k) ** 3  # W_cubic(t + RTT), eq. 1
        if cwnd > target:
            target = cwnd
        if 1.5 * cwnd < target:
            target = 1.5 * cwnd
        segments = acked / mss
        # 4.3: alpha_cubic is 1 once W_est is back at cwnd_prior (a SHOULD).
        w_est = self.w_est
        w_est += (1.0 if w_est >= self.prior else ALPHA) * segments / cwnd
        self.w_est = w_est
        # The Reno-friendly region (4.3), else the concave or convex one (4.4, 4.5).
        cubic = cwnd + (target - cwnd) / cwnd * segments
        grown = int((cubic if cubic > w_est else w_est) * mss)
        if grown > self.cwnd:
            self.cwnd = grown

    def on_congestion(self, now: int, flight: int) -> None:
        """RFC 9438 4.6 and 4.7: multiplicative decrease with fast convergence."""
        cwnd = self.cwnd / self.mss
        self.prior = cwnd
        if cwnd < self.w_max:
            self.w_max = cwnd * (1 + BETA) / 2
        else:
            self.w_max = cwnd
        self.ssthresh = max(int(self.cwnd * BETA), 2 * self.mss)
        self.epoch_start = None

    def on_timeout(self, now: int, flight: int) -> None:
        """RFC 9438 4.8: as a congestion event, then one segment."""
        self.on_congestion(now, flight)
        self.cwnd = self.mss

    def save(self) -> tuple[int, ...]:
        return (self.cwnd, self.ssthresh, int(self.w_max * 1000), int(self.prior * 1000))

    def undo(self, saved: tuple[int, ...]) -> None:
        """RFC 9438 4.9: a spurious congestion event restores the state before it."""
        self.cwnd = max(self.cwnd, saved[0])
        self.ssthresh = max(self.ssthresh, saved[1])
        self.w_max = saved[2] / 1000
        self.prior = saved[3] / 1000
        self.epoch_start = None

    def after_idle(self, rto_ns: int, idle_ns: int) -> None:
        if idle_ns > rto_ns:
            self.cwnd = min(self.cwnd, initial_window(self.mss))
            self.epoch_start = None
