"""Monotonic time: the only source of "now" and of sleeping for a unikernel."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Time(Protocol):
    """A monotonic clock with sleeping.

    Values are nanoseconds since an arbitrary, fixed origin; they never go
    backwards. In the simulator this clock is virtual.
    """

    def now_ns(self) -> int:
        """Nanoseconds since this clock's origin."""
        ...

    async def sleep_ns(self, duration_ns: int) -> None:
        """Suspend the calling task for at least ``duration_ns`` nanoseconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for at least ``seconds`` seconds."""
        ...
