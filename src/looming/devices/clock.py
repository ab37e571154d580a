"""Wall-clock time (POSIX time), which may jump and may be skewed."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """The current wall-clock time.

    Use :class:`~looming.devices.time.Time` to measure durations; this clock
    may be set backwards or forwards, and in the simulator it has skew and
    drift per node.
    """

    def now_ns(self) -> int:
        """Nanoseconds since 1970-01-01T00:00:00Z, ignoring leap seconds."""
        ...

    def now(self) -> float:
        """Seconds since 1970-01-01T00:00:00Z as a float."""
        ...

    def utc_offset_s(self) -> int:
        """The local time zone's offset from UTC in seconds (0 when unknown)."""
        ...
