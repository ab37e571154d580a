"""Wall-clock time from the host."""

from __future__ import annotations

import time as _time


class UnixClock:
    """:class:`looming.devices.Clock` from the host's real-time clock."""

    def now_ns(self) -> int:
        return _time.time_ns()

    def now(self) -> float:
        return _time.time()

    def utc_offset_s(self) -> int:
        local = _time.localtime()
        return int(local.tm_gmtoff or 0)
