"""The devices of a simulated node: virtual time and clock, seeded random,
and a console that writes to the trace (its storage is in
:mod:`looming.sim.storage` and :mod:`looming.sim.diskstore`, on its disk).

Every value here is a function of the run's one seed and of virtual time,
never of the host.
"""

from __future__ import annotations

import asyncio
import hashlib
import random as _random
from collections.abc import Callable

# Virtual wall-clock time 0 of every run: 2024-01-01T00:00:00Z.
EPOCH_NS = 1_704_067_200 * 1_000_000_000


def derive_seed(seed: int, *labels: object) -> int:
    """A 64-bit seed for one stream, from the run's seed and the stream's labels.

    Hashing (not Python's ``hash``) keeps it the same in every process.
    """
    text = "\x1f".join([str(seed), *(str(label) for label in labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


NowNs = Callable[[], int]


class SimTime:
    """:class:`looming.devices.Time` in virtual time.

    Each node's monotonic clock starts at its own origin (like a host that
    booted at a different moment), and sleeping is the loop's virtual sleep.
    It runs at the virtual rate: drift belongs to the wall clock
    (:class:`SimClock`), so the timers a stack sets through the event loop and
    the durations it measures through this clock always agree.
    """

    def __init__(self, now_ns: NowNs, origin_ns: int) -> None:
        self._now_ns = now_ns
        self._origin_ns = origin_ns

    def now_ns(self) -> int:
        return self._origin_ns + self._now_ns()

    async def sleep_ns(self, duration_ns: int) -> None:
        await asyncio.sleep(max(0, duration_ns) / 1e9)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimClock:
    """:class:`looming.devices.Clock` with a fixed skew and a drift rate.

    ``skew_s`` is the node's error at virtual time 0; ``drift_ppm`` how many
    microseconds per second the node's clock gains (negative: loses).
    """

    def __init__(self, now_ns: NowNs, *, skew_s: float = 0.0, drift_ppm: float = 0.0) -> None:
        self._now_ns = now_ns
        self.skew_ns = round(skew_s * 1e9)
        self.drift_ppm = drift_ppm

    def now_ns(self) -> int:
        elapsed = self._now_ns()
        return EPOCH_NS + self.skew_ns + elapsed + round(elapsed * self.drift_ppm / 1e6)

    def now(self) -> float:
        return self.now_ns() / 1e9

    def utc_offset_s(self) -> int:
        return 0


class SimRandom:
    """:class:`looming.devices.Random`: a seeded stream, the same on every host."""

    def __init__(self, seed: int) -> None:
        self._numbers = _random.Random(seed)

    @property
    def seeded(self) -> bool:
        return True

    @property
    def simulated(self) -> bool:
        """Every choice a node makes must come from here (``looming.tls.signing.simulated``)."""
        return True

    def bytes(self, n: int) -> bytes:
        if n < 0:
            raise ValueError(f"cannot produce {n} bytes: n must be >= 0")
        return self._numbers.randbytes(n)

    def randint(self, low: int, high: int) -> int:
        if high < low:
            raise ValueError(f"empty range: low={low} > high={high}")
        return self._numbers.randint(low, high)

    def random(self) -> float:
        return self._numbers.random()

    def uniform(self, low: float, high: float) -> float:
        return self._numbers.uniform(low, high)

    def expovariate(self, rate: float) -> float:
        return self._numbers.expovariate(rate)


ConsoleSink = Callable[[str], None]


class SimConsole:
    """:class:`looming.devices.Console` whose output goes to the trace."""

    def __init__(self, sink: ConsoleSink) -> None:
        self._sink = sink
        self.lines: list[str] = []
        self._partial = b""

    async def log(self, message: str) -> None:
        self.lines.append(message)
        self._sink(message)

    async def write(self, data: bytes) -> None:
        text = (self._partial + bytes(data)).split(b"\n")
        self._partial = text.pop()
        for line in text:
            await self.log(line.decode("utf-8", "replace"))

    async def read(self) -> bytes:
        return b""
