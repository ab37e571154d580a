"""What a running stack tells its log about its counters: a warning when a
limit starts turning traffic away (then at most every ``interval_s`` with
the count since), and every nonzero counter at shutdown or on request
(SIGUSR1 in a built unikernel). Sans-I/O: the caller gives the counters
and the time."""

from __future__ import annotations

from collections.abc import Mapping

# The counters that mean a configured limit bit, and what to tell the user.
LIMITS = {
    "tcp.connection_limit_dropped": (
        "TCP connection limit reached: SYNs or handshakes dropped",
        "raise --tcp-max-connections if these are real clients",
    ),
    "tcp.memory_limit_dropped": (
        "TCP receive memory limit reached: segments dropped",
        "raise --tcp-memory-limit if peers are not just slow readers",
    ),
}


class LimitWarnings:
    """Rate-limited warnings for :data:`LIMITS`: the first drop is reported
    at the first check that sees it, later ones summed once an interval."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self._reported: dict[str, int] = {}
        self._warned_at: dict[str, float] = {}

    def check(self, counters: Mapping[str, int], now_s: float) -> list[str]:
        """The warnings due now (each one line)."""
        warnings = []
        for name, (what, advice) in LIMITS.items():
            count = counters.get(name, 0)
            reported = self._reported.get(name, 0)
            if count <= reported:
                continue
            last = self._warned_at.get(name)
            if last is not None and now_s - last < self.interval_s:
                continue
            since = "since start" if last is None else f"in the last {now_s - last:.0f} s"
            warnings.append(f"{what}: {count - reported} {since} ({count} in all; {advice})")
            self._reported[name] = count
            self._warned_at[name] = now_s
        return warnings


def nonzero(counters: Mapping[str, int]) -> str:
    """``name=count`` for every nonzero counter, in name order, on one line."""
    shown = " ".join(f"{name}={count}" for name, count in sorted(counters.items()) if count)
    return shown or "all zero"
