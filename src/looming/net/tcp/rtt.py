"""The retransmission timeout (RFC 6298)."""

from __future__ import annotations


class RttEstimator:
    """Smoothed RTT, its variation and the RTO derived from them, with backoff."""

    __slots__ = ("_backoff", "_max", "_min", "rto", "rttvar", "srtt")

    def __init__(self, initial_ns: int, min_ns: int, max_ns: int) -> None:
        self._min = min_ns
        self._max = max_ns
        self.srtt: int | None = None
        self.rttvar = 0
        self.rto = min(max(initial_ns, min_ns), max_ns)
        self._backoff = 0

    def sample(self, rtt_ns: int) -> None:
        """Fold in one measurement (RFC 6298 2.2 and 2.3); clears any backoff."""
        # (Comparisons, not min() and max() calls: a sample comes with most ACKs.)
        if rtt_ns < 1:
            rtt_ns = 1
        srtt = self.srtt
        if srtt is None:
            srtt = rtt_ns
            rttvar = rtt_ns // 2
        else:
            rttvar = (3 * self.rttvar + abs(srtt - rtt_ns)) // 4
            srtt = (7 * srtt + rtt_ns) // 8
        self.srtt = srtt
        self.rttvar = rttvar
        # The clock granularity G is one nanosecond here, so K*RTTVAR dominates.
        variation = 4 * rttvar
        rto = srtt + (variation if variation > 1 else 1)
        if rto < self._min:
            rto = self._min
        if rto > self._max:
            rto = self._max
        self.rto = rto
        self._backoff = 0

    def back_off(self) -> None:
        """Double the RTO after a timeout (RFC 6298 5.5), up to the maximum."""
        self._backoff += 1
        self.rto = min(self.rto * 2, self._max)

    @property
    def backed_off(self) -> bool:
        return self._backoff > 0
