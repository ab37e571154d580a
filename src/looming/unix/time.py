"""Monotonic time from the host, with sleeping on the running event loop."""

from __future__ import annotations

import asyncio
import time as _time


class UnixTime:
    """:class:`looming.devices.Time` from the host's monotonic clock."""

    def now_ns(self) -> int:
        return _time.monotonic_ns()

    async def sleep_ns(self, duration_ns: int) -> None:
        await asyncio.sleep(max(0, duration_ns) / 1e9)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
