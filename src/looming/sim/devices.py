"""The devices of a simulated node: virtual time and clock, seeded random,
a console that writes to the trace, and an in-memory read-write store.

Every value here is a function of the run's one seed and of virtual time,
never of the host.
"""

from __future__ import annotations

import asyncio
import hashlib
import random as _random
from collections.abc import Callable

from looming.devices.kv import EntryKind
from looming.errors import KeyNotFound, NotAValue

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


def _split(key: str) -> tuple[str, ...]:
    parts = tuple(p for p in key.split("/") if p)
    for part in parts:
        if part in (".", ".."):
            raise KeyNotFound(key)
    return parts


class MemoryKvRw:
    """:class:`looming.devices.KvRw` held in memory by the simulation.

    The values belong to the node, not to one run of its code: whether they
    survive a crash is the scenario's choice (``restart(keep_state=...)``).
    """

    def __init__(self, last_modified: Callable[[], float]) -> None:
        self.values: dict[tuple[str, ...], tuple[bytes, float]] = {}
        self._now = last_modified

    def _prefix_of(self, parts: tuple[str, ...]) -> bool:
        n = len(parts)
        return any(len(k) > n and k[:n] == parts for k in self.values)

    async def exists(self, key: str) -> EntryKind | None:
        parts = _split(key)
        if parts in self.values:
            return EntryKind.VALUE
        if not parts or self._prefix_of(parts):
            return EntryKind.DICTIONARY
        return None

    async def get(self, key: str) -> bytes:
        parts = _split(key)
        if parts in self.values:
            return self.values[parts][0]
        if not parts or self._prefix_of(parts):
            raise NotAValue(f"{key!r} is a dictionary, not a value")
        raise KeyNotFound(key)

    async def get_partial(self, key: str, offset: int, length: int) -> bytes:
        value = await self.get(key)
        return value[max(0, offset) : max(0, offset) + max(0, length)]

    async def size(self, key: str) -> int:
        return len(await self.get(key))

    async def list(self, prefix: str = "") -> list[tuple[str, EntryKind]]:
        parts = _split(prefix)
        n = len(parts)
        children: dict[str, EntryKind] = {}
        for k in self.values:
            if len(k) > n and k[:n] == parts:
                kind = EntryKind.VALUE if len(k) == n + 1 else EntryKind.DICTIONARY
                if children.get(k[n]) is not EntryKind.DICTIONARY:
                    children[k[n]] = kind
        if not children and parts and parts not in self.values:
            raise KeyNotFound(prefix)
        return sorted(children.items())

    async def digest(self, key: str) -> str:
        parts = _split(key)
        if parts in self.values:
            return hashlib.sha256(self.values[parts][0]).hexdigest()
        listing = await self.list(key)
        text = "\n".join(f"{name} {kind.value}" for name, kind in listing)
        return hashlib.sha256(text.encode()).hexdigest()

    async def last_modified(self, key: str) -> float:
        parts = _split(key)
        if parts in self.values:
            return self.values[parts][1]
        if not parts or self._prefix_of(parts):
            return max(
                (v[1] for k, v in self.values.items() if k[: len(parts)] == parts), default=0.0
            )
        raise KeyNotFound(key)

    async def set(self, key: str, value: bytes) -> None:
        parts = _split(key)
        if not parts:
            raise NotAValue("cannot store a value at the root")
        for i in range(1, len(parts)):
            if parts[:i] in self.values:
                raise NotAValue(f"{'/'.join(parts[:i])!r} is a value, not a dictionary")
        if self._prefix_of(parts):
            raise NotAValue(f"{key!r} is a dictionary, not a value")
        self.values[parts] = (bytes(value), self._now())

    async def remove(self, key: str) -> None:
        parts = _split(key)
        n = len(parts)
        for k in [k for k in self.values if k[:n] == parts]:
            del self.values[k]

    async def rename(self, source: str, dest: str) -> None:
        src, dst = _split(source), _split(dest)
        n = len(src)
        moved = {k: v for k, v in self.values.items() if k[:n] == src}
        if not moved:
            raise KeyNotFound(source)
        await self.remove(dest)
        for k, v in moved.items():
            del self.values[k]
            self.values[dst + k[n:]] = v
