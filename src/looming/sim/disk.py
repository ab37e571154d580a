"""A simulated node's disk: files with a durable image and a volatile write
cache, and the storage faults FoundationDB's and TigerBeetle's simulators
inject, each drawn from the seed and each put in the trace.

Every node of a run has one :class:`SimDisk`, created empty. A write lands
in the cache at once (reads see it) and on the medium only when a ``sync``
of its file completes. I/O takes virtual time: the disk works through one
queue, each operation starting when the one before it completes and taking
a latency drawn from the seed, so a sync issued at ``t`` makes the file's
writes durable when it completes, not before, and a write queued behind it
does not start before then (code that need not wait, such as the store's
backend, queues ahead and has the caller wait for the disk to be idle). A
crash keeps what is durable by then and drops what had not started; each
other write still in the cache reaches the medium whole, torn (a prefix of
it) or not at all, as :class:`DiskFaults` says. ``Restart(keep_state=False)``
wipes the disk.

The faults (rates are probabilities, 0 to 1):

- ``lost_writes``: at a crash, each write not yet durable is lost;
- ``torn_writes``: at a crash, each write not yet durable is torn: the
  medium gets its first bytes, cut at a seed-drawn byte (mid-sector);
- ``read_errors``: each read fails (EIO: :class:`DiskReadError`);
- ``corruption``: each sector a write makes durable gets one flipped bit
  (latent: every later read returns it; checksums must notice);
- ``slow_io``: each operation takes ``slow`` seconds more than ``latency``.

Without faults a crash keeps every write made (as when only the process
dies and the host's cache reaches the disk).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, fields

from looming.errors import DeviceError
from looming.sim.devices import SimRandom
from looming.sim.network import Exponential, Fixed, Latency, Uniform

SECTOR = 512


class DiskReadError(DeviceError):
    """A read of the simulated disk failed (EIO); the data may read on a retry."""


class DiskCorruption(DeviceError):
    """Data read back from the simulated disk fails its checksum."""


NO_LATENCY = Fixed(0.0)
SLOW_IO = Uniform(0.05, 0.5)
RATES = ("lost_writes", "torn_writes", "read_errors", "corruption", "slow_io")


@dataclass(frozen=True)
class DiskFaults:
    """How a node's disk misbehaves (see the module's documentation)."""

    lost_writes: float = 0.0
    torn_writes: float = 0.0
    read_errors: float = 0.0
    corruption: float = 0.0
    slow_io: float = 0.0
    latency: Latency = NO_LATENCY
    slow: Latency = SLOW_IO

    def problems(self) -> list[str]:
        found = []
        for name in RATES:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                found.append(f"{name} is a probability: give 0 to 1, not {value!r}")
        for name in ("latency", "slow"):
            value = getattr(self, name)
            if not isinstance(value, Fixed | Uniform | Exponential):
                found.append(f"{name} must be sim.Fixed, sim.Uniform or sim.Exponential")
            elif problem := value.check():
                found.append(f"{name}: {problem}")
        return found

    def describe(self) -> str:
        parts = [f"{name} {getattr(self, name):g}" for name in RATES if getattr(self, name)]
        if self.latency != NO_LATENCY:
            parts.append(f"latency {self.latency}")
        if self.slow_io:
            parts.append(f"slow {self.slow}")
        return ", ".join(parts) or "no faults"

    def replace(self, **changes: object) -> DiskFaults:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return DiskFaults(**values)


@dataclass
class _Write:
    file: str
    offset: int
    data: bytes
    start: float  # when the disk starts on it (after what was queued before)
    durable_at: float | None = None  # completion time of the sync covering it


class SimFile:
    """A file of the disk: what is on the medium, and what reads see."""

    __slots__ = ("image", "view")

    def __init__(self, size: int = 0) -> None:
        self.image = bytearray(size)
        self.view = bytearray(size)


def _put(buffer: bytearray, offset: int, data: bytes) -> None:
    end = offset + len(data)
    if end > len(buffer):
        buffer.extend(bytes(end - len(buffer)))
    buffer[offset:end] = data


class SimDisk:
    """One node's disk: named files, a write cache, a queue of operations."""

    def __init__(
        self,
        node: str,
        now: Callable[[], float],
        random: SimRandom,
        record: Callable[[str, str], None],
        faults: DiskFaults | None = None,
    ) -> None:
        self.node = node
        self.faults = faults or DiskFaults()
        self.files: dict[str, SimFile] = {}
        self._now = now
        self._random = random
        self._record = record
        self._cache: list[_Write] = []
        self.busy_until = 0.0
        self.counts = dict.fromkeys(("lost", "torn", "read_error", "corrupt", "slow"), 0)

    def note(self, text: str) -> None:
        """Put a line about this disk in the trace."""
        self._record("disk", f"{self.node} {text}")

    def unique_id(self) -> int:
        """A 64-bit number drawn from the disk's stream (a writer's boot id)."""
        return self._random.randint(0, (1 << 64) - 1)

    def _fault(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        self._record("disk", f"{self.node} {text}")

    def _draw(self, rate: float) -> bool:
        return rate > 0.0 and self._random.random() < rate

    def _operation(self, verb: str, name: str, where: str = "") -> float:
        """Queue one operation; the virtual time at which it completes."""
        start = self._next_start()
        faults = self.faults
        took = faults.latency.sample(self._random)
        if faults.slow_io > 0.0 and self._draw(faults.slow_io):
            extra = faults.slow.sample(self._random)
            took += extra
            self._fault("slow", f"slow {verb} {name}{where}: {extra * 1000:.3f} ms more")
        self.busy_until = start + took
        return self.busy_until

    def _next_start(self) -> float:
        return max(self._now(), self.busy_until)

    # -- files ------------------------------------------------------------

    def file(self, name: str, size: int = 0) -> SimFile:
        """The file ``name``, created (durably, zero-filled) with ``size`` bytes if missing."""
        found = self.files.get(name)
        if found is None:
            found = self.files[name] = SimFile(size)
        return found

    def size(self, name: str) -> int:
        found = self.files.get(name)
        return len(found.view) if found is not None else 0

    def write(self, name: str, offset: int, data: bytes) -> float:
        """Put ``data`` in the cache at ``offset``; when the write completes."""
        _put(self.file(name).view, offset, bytes(data))
        self._cache.append(_Write(name, offset, bytes(data), self._next_start()))
        return self._operation("write", name, f"@{offset}+{len(data)}")

    def sync(self, name: str) -> float:
        """Make the file's cached writes durable; when that happens."""
        done = self._operation("sync", name)
        self.settle()  # keeps the cache to what is in flight
        for write in self._cache:
            if write.file == name and write.durable_at is None:
                write.durable_at = done
        return done

    def read(self, name: str, offset: int, length: int) -> tuple[bytes | DiskReadError, float]:
        """What a read returns (or the error it fails with), and when."""
        done = self._operation("read", name, f"@{offset}+{length}")
        self.settle()
        if self._draw(self.faults.read_errors):
            self._fault("read_error", f"read error {name}@{offset}+{length}")
            return DiskReadError(f"disk of {self.node}: read of {name} failed (EIO)"), done
        found = self.files.get(name)
        data = bytes(found.view[offset : offset + length]) if found is not None else b""
        return data, done

    def read_now(self, name: str, offset: int, length: int) -> bytes:
        """:meth:`read` for code that cannot wait: the time is owed (see :meth:`idle`)."""
        data, _done = self.read(name, offset, length)
        if isinstance(data, DiskReadError):
            raise data
        return data

    async def wait(self, done: float) -> None:
        """Sleep (virtually) until ``done``."""
        delay = done - self._now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def idle(self) -> None:
        """Wait for every operation queued so far to complete."""
        await self.wait(self.busy_until)

    # -- durability ---------------------------------------------------------

    def settle(self) -> None:
        """Move the writes durable by now from the cache to the medium."""
        now = self._now()
        kept: list[_Write] = []
        for write in self._cache:
            if write.durable_at is not None and write.durable_at <= now:
                self._to_medium(write.file, write.offset, write.data)
            else:
                kept.append(write)
        self._cache = kept

    def _to_medium(self, name: str, offset: int, data: bytes) -> None:
        found = self.file(name)
        _put(found.image, offset, data)
        if self.faults.corruption <= 0.0 or not data:
            return
        first, last = offset // SECTOR, (offset + len(data) - 1) // SECTOR
        for sector in range(first, last + 1):
            if not self._draw(self.faults.corruption):
                continue
            low = max(offset, sector * SECTOR)
            high = min(offset + len(data), (sector + 1) * SECTOR)
            at = self._random.randint(low, high - 1)
            bit = 1 << self._random.randint(0, 7)
            before = found.image[at]
            found.image[at] ^= bit
            if at < len(found.view) and found.view[at] == before:
                found.view[at] ^= bit
            self._fault("corrupt", f"corrupt sector {sector} of {name}: bit flipped at {at}")

    def crash(self) -> None:
        """The node lost power: what was not durable reaches the medium
        whole, torn or not at all; the cache is gone."""
        self.settle()
        faults = self.faults
        now = self._now()
        for write in self._cache:
            where = f"{write.file}@{write.offset}+{len(write.data)}"
            if write.start > now:
                # Queued behind what had not completed: it never reached the disk.
                self.note(f"write {where} never started")
            elif len(write.data) > 1 and self._draw(faults.torn_writes):
                cut = self._random.randint(1, len(write.data) - 1)
                self._fault("torn", f"torn write {where}: {cut} bytes reached the disk")
                self._to_medium(write.file, write.offset, write.data[:cut])
            elif self._draw(faults.lost_writes):
                self._fault("lost", f"lost write {where}")
            else:
                self._to_medium(write.file, write.offset, write.data)
        self._cache = []
        for found in self.files.values():
            found.view = bytearray(found.image)
        self.busy_until = self._now()

    def wipe(self) -> None:
        """A new, empty disk."""
        self.files.clear()
        self._cache = []
        self.busy_until = self._now()

    def unsynced(self) -> int:
        """How many writes are not yet durable."""
        self.settle()
        return len(self._cache)
