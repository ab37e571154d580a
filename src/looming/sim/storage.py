"""A sim node's block and kv_rw devices, kept on the node's :class:`SimDisk`.

- :class:`SimBlock` is :class:`looming.devices.Block` over one file of the
  disk: a write is durable after ``flush``, as the interface says.
- :class:`SimKvRw` is :class:`looming.devices.KvRw` as a log of changes
  (:class:`looming.sim.disklog.RecordLog`, the change in the record's tag,
  a value in its payload): each ``set``/``remove``/``rename`` is appended and
  synced before it returns, as ``looming.unix.kv.DirectoryKvRw`` fsyncs
  before it returns; a boot replays the log. Values are read from the disk
  and checked against their record's checksum, so a corrupted sector is an
  error (:class:`DiskCorruption`), never wrong data.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

from looming.devices.block import BlockInfo
from looming.devices.kv import EntryKind
from looming.errors import BlockOutOfRange, DeviceError, KeyNotFound, NotAValue
from looming.sim.disk import SimDisk
from looming.sim.disklog import Record, RecordLog

# -- block -----------------------------------------------------------------------


class SimBlock:
    """:class:`looming.devices.Block` over the file ``block/NAME`` of a disk."""

    def __init__(self, disk: SimDisk, name: str, info: BlockInfo) -> None:
        self._disk: SimDisk | None = disk
        self._file = f"block/{name}"
        self._info = info
        disk.file(self._file, info.size_bytes)

    def _check(self, sector: int, count: int) -> SimDisk:
        if self._disk is None:
            raise DeviceError(f"block {self._file} is disconnected")
        if sector < 0 or count < 0 or sector + count > self._info.sectors:
            raise BlockOutOfRange(
                f"sectors {sector}..{sector + count} outside 0..{self._info.sectors}"
            )
        return self._disk

    async def info(self) -> BlockInfo:
        return self._info

    async def read(self, sector: int, count: int) -> bytes:
        disk = self._check(sector, count)
        size = self._info.sector_size
        data, done = disk.read(self._file, sector * size, count * size)
        await disk.wait(done)
        if isinstance(data, DeviceError):
            raise data
        return data

    async def write(self, sector: int, data: bytes) -> None:
        size = self._info.sector_size
        if len(data) % size:
            raise BlockOutOfRange(f"write of {len(data)} bytes is not whole {size}-byte sectors")
        disk = self._check(sector, len(data) // size)
        await disk.wait(disk.write(self._file, sector * size, bytes(data)))

    async def flush(self) -> None:
        disk = self._check(0, 0)
        await disk.wait(disk.sync(self._file))

    async def disconnect(self) -> None:
        self._disk = None


# -- kv_rw -----------------------------------------------------------------------


def split_key(key: str) -> tuple[str, ...]:
    parts = tuple(p for p in key.split("/") if p)
    for part in parts:
        if part in (".", ".."):
            raise KeyNotFound(key)
    return parts


@dataclass(frozen=True, slots=True)
class _Value:
    record: Record  # its payload is the value
    modified: float


_SET, _REMOVE, _RENAME = b"S", b"D", b"M"


def _text(value: str) -> bytes:
    encoded = value.encode()
    return struct.pack(">H", len(encoded)) + encoded


def _take_text(payload: bytes, at: int) -> tuple[str, int]:
    (n,) = struct.unpack_from(">H", payload, at)
    return payload[at + 2 : at + 2 + n].decode(), at + 2 + n


class SimKvRw:
    """:class:`looming.devices.KvRw` as a log on the node's disk."""

    def __init__(self, disk: SimDisk, name: str, now: Callable[[], float]) -> None:
        self._disk = disk
        self._log = RecordLog(disk, f"kv_rw/{name}")
        self._now = now
        self._values: dict[tuple[str, ...], _Value] = {}
        self._changes = 0

    @classmethod
    async def open(cls, disk: SimDisk, name: str, now: Callable[[], float]) -> SimKvRw:
        """The store as the disk holds it (the log replayed)."""
        store = cls(disk, name, now)
        for record, _payload in store._log.replay():
            store._apply(record)
        await disk.idle()
        return store

    def _apply(self, record: Record) -> None:
        tag = record.tag
        op = tag[:1]
        key, at = _take_text(tag, 1)
        parts = split_key(key)
        if op == _SET:
            (modified,) = struct.unpack_from(">d", tag, at)
            self._values[parts] = _Value(record, modified)
        elif op == _REMOVE:
            self._drop(parts)
        elif op == _RENAME:
            dest, _ = _take_text(tag, at)
            self._move(parts, split_key(dest))

    def generation(self) -> object:
        """Changes with every change made, so a cache of what was read
        (:class:`looming.http.StaticSite`) knows when to drop."""
        return self._changes

    async def _commit(self, tag: bytes, payload: bytes = b"") -> None:
        """Append a change and wait until it is durable."""
        record, _done = self._log.append(tag, payload)
        self._apply(record)
        self._changes += 1
        await self._disk.wait(self._log.sync())

    def _prefix_of(self, parts: tuple[str, ...]) -> bool:
        n = len(parts)
        return any(len(k) > n and k[:n] == parts for k in self._values)

    async def _value(self, parts: tuple[str, ...]) -> bytes:
        data, done = self._log.read(self._values[parts].record)
        await self._disk.wait(done)
        if isinstance(data, DeviceError):
            raise data
        return data

    async def exists(self, key: str) -> EntryKind | None:
        parts = split_key(key)
        if parts in self._values:
            return EntryKind.VALUE
        if not parts or self._prefix_of(parts):
            return EntryKind.DICTIONARY
        return None

    async def get(self, key: str) -> bytes:
        parts = split_key(key)
        if parts in self._values:
            return await self._value(parts)
        if not parts or self._prefix_of(parts):
            raise NotAValue(f"{key!r} is a dictionary, not a value")
        raise KeyNotFound(key)

    async def get_partial(self, key: str, offset: int, length: int) -> bytes:
        value = await self.get(key)
        return value[max(0, offset) : max(0, offset) + max(0, length)]

    async def size(self, key: str) -> int:
        parts = split_key(key)
        if parts in self._values:
            return self._values[parts].record.length
        return len(await self.get(key))

    async def list(self, prefix: str = "") -> list[tuple[str, EntryKind]]:
        parts = split_key(prefix)
        if parts in self._values:
            raise NotAValue(f"{prefix!r} is a value, not a dictionary")
        n = len(parts)
        children: dict[str, EntryKind] = {}
        for k in self._values:
            if len(k) > n and k[:n] == parts:
                kind = EntryKind.VALUE if len(k) == n + 1 else EntryKind.DICTIONARY
                if children.get(k[n]) is not EntryKind.DICTIONARY:
                    children[k[n]] = kind
        if not children and parts and parts not in self._values:
            raise KeyNotFound(prefix)
        return sorted(children.items())

    async def digest(self, key: str) -> str:
        parts = split_key(key)
        if parts in self._values:
            return hashlib.sha256(await self._value(parts)).hexdigest()
        listing = await self.list(key)
        text = "\n".join(f"{name} {kind.value}" for name, kind in listing)
        return hashlib.sha256(text.encode()).hexdigest()

    async def last_modified(self, key: str) -> float:
        parts = split_key(key)
        if parts in self._values:
            return self._values[parts].modified
        if not parts or self._prefix_of(parts):
            n = len(parts)
            return max((v.modified for k, v in self._values.items() if k[:n] == parts), default=0.0)
        raise KeyNotFound(key)

    async def set(self, key: str, value: bytes) -> None:
        parts = split_key(key)
        if not parts:
            raise DeviceError("kv_rw: give a key with at least one name, not the root")
        for i in range(1, len(parts)):
            if parts[:i] in self._values:
                raise NotAValue(f"{'/'.join(parts[:i])!r} is a value, not a dictionary")
        if self._prefix_of(parts):
            raise NotAValue(f"{key!r} is a dictionary, not a value")
        stamp = struct.pack(">d", self._now())
        await self._commit(_SET + _text("/".join(parts)) + stamp, bytes(value))

    async def remove(self, key: str) -> None:
        parts = split_key(key)
        n = len(parts)
        if any(k[:n] == parts for k in self._values):
            await self._commit(_REMOVE + _text("/".join(parts)))

    async def rename(self, source: str, dest: str) -> None:
        src, dst = split_key(source), split_key(dest)
        n = len(src)
        if not src or not dst:
            raise DeviceError("kv_rw: cannot rename the root or rename onto it")
        if not any(k[:n] == src for k in self._values):
            raise KeyNotFound(source)
        if dst[:n] == src:
            if dst == src:
                return
            raise DeviceError(f"kv_rw: cannot move {source!r} into itself ({dest!r})")
        await self._commit(_RENAME + _text("/".join(src)) + _text("/".join(dst)))

    def _drop(self, parts: tuple[str, ...]) -> None:
        n = len(parts)
        for k in [k for k in self._values if k[:n] == parts]:
            del self._values[k]

    def _move(self, src: tuple[str, ...], dst: tuple[str, ...]) -> None:
        n = len(src)
        moved = {dst + k[n:]: v for k, v in self._values.items() if k[:n] == src}
        self._drop(src)
        self._drop(dst)
        self._values.update(moved)
