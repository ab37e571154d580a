"""A checksummed, append-only log in one file of a simulated disk: how the
sim node's kv_rw and kv_store keep their data (:mod:`looming.sim.storage`,
:mod:`looming.sim.diskstore`).

A record is a header, a short *tag* (what the record is: a key, an object
id) and a payload. The header holds the payload's checksum, how much of the
log its writer knew to be durable, and its own checksum, which covers the
tag, the writer's boot id and the previous header's checksum. Replay walks
the chain of headers:

- a header that fails its checksum ends the log: a torn or lost write at the
  tail, or a record an earlier boot left beyond it (its chain differs, so
  it never rejoins the log);
- a payload that fails its checksum inside the part of the log a later
  header says was durable was corrupted in place: the record is kept (its
  tag is known) and reading it raises :class:`DiskCorruption`; beyond that
  part it is a write torn by a crash, and the log ends before it (with
  whatever followed it, which was not durable either).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from looming.errors import DeviceError
from looming.sim.disk import DiskCorruption, DiskReadError, SimDisk

# A failed read is retried this many times before a replay (a boot) gives
# up: EIO is often transient.
REPLAY_READ_TRIES = 8

# magic, boot id, tag length, payload length, durable end, payload crc32, header crc32
_HEADER = struct.Struct(">2sQHIQII")
_MAGIC = b"LR"


@dataclass(frozen=True, slots=True)
class Record:
    """Where one record's payload is, its checksum, and its tag."""

    offset: int
    length: int
    crc: int
    tag: bytes


@dataclass(frozen=True, slots=True)
class _Header:
    offset: int
    tag: bytes
    length: int
    durable: int  # the end of what was durable when it was written
    crc: int
    chain: int  # the header's own checksum, which the next one covers
    payload_at: int


def _header_crc(boot: int, tag: bytes, length: int, durable: int, crc: int, chain: int) -> int:
    fields = struct.pack(">QHIQI", boot, len(tag), length, durable, crc)
    return zlib.crc32(tag, zlib.crc32(fields, chain))


def _header_at(data: bytes, offset: int, previous: int) -> _Header | None:
    if offset + _HEADER.size > len(data):
        return None
    magic, boot, tag_length, length, durable, crc, chain = _HEADER.unpack_from(data, offset)
    tag_at = offset + _HEADER.size
    tag = data[tag_at : tag_at + tag_length]
    if magic != _MAGIC or len(tag) != tag_length:
        return None
    if _header_crc(boot, tag, length, durable, crc, previous) != chain:
        return None
    return _Header(offset, tag, length, durable, crc, chain, tag_at + tag_length)


def _chain_of(data: bytes) -> list[_Header]:
    """The headers reachable from the start, each with its whole payload."""
    headers: list[_Header] = []
    offset, chain = 0, 0
    while (header := _header_at(data, offset, chain)) is not None:
        if header.payload_at + header.length > len(data):
            break
        headers.append(header)
        offset, chain = header.payload_at + header.length, header.chain
    return headers


class RecordLog:
    """An append-only log of tagged records in the file ``name`` of ``disk``."""

    def __init__(self, disk: SimDisk, name: str) -> None:
        self.disk = disk
        self.name = name
        self.end = 0
        self._chain = 0
        self._synced = 0  # the end of the log at the last sync issued
        self._boot = disk.unique_id()

    def replay(self) -> list[tuple[Record, bytes | None]]:
        """Every record of the log, with its payload (None: corrupted in
        place); the next record goes after the last."""
        data = read_retrying(self.disk, self.name, 0, self.disk.size(self.name))
        headers = _chain_of(data)
        durable = max((header.durable for header in headers), default=0)
        found: list[tuple[Record, bytes | None]] = []
        end, chain = 0, 0
        for header in headers:
            start, length = header.payload_at, header.length
            payload: bytes | None = data[start : start + length]
            if zlib.crc32(data[start : start + length]) != header.crc:
                if header.offset >= durable:
                    break  # torn by a crash: the log ends here
                self.disk.note(f"log {self.name}: record at {start} fails its checksum")
                payload = None
            found.append((Record(start, length, header.crc, header.tag), payload))
            end, chain = start + length, header.chain
        if any(data[end:]):
            self.disk.note(f"log {self.name}: {len(data) - end} bytes after {end} ignored")
        self.end, self._chain, self._synced = end, chain, end
        return found

    def append(self, tag: bytes, payload: bytes) -> tuple[Record, float]:
        """Write a record (not yet durable); it and when the write completes."""
        crc = zlib.crc32(payload)
        durable = self._synced
        chain = _header_crc(self._boot, tag, len(payload), durable, crc, self._chain)
        header = _HEADER.pack(_MAGIC, self._boot, len(tag), len(payload), durable, crc, chain)
        start = self.end + len(header) + len(tag)
        done = self.disk.write(self.name, self.end, header + tag + payload)
        self.end = start + len(payload)
        self._chain = chain
        return Record(start, len(payload), crc, tag), done

    def sync(self) -> float:
        """Make every record appended durable; when that happens. A record
        appended later is queued behind the sync, so it reaches the disk only
        once the sync is done: it may say the log is durable up to here."""
        self._synced = self.end
        return self.disk.sync(self.name)

    def read(self, record: Record) -> tuple[bytes | DeviceError, float]:
        """The record's payload, checked (or the error), and when it is read."""
        data, done = self.disk.read(self.name, record.offset, record.length)
        if isinstance(data, DiskReadError):
            return data, done
        if zlib.crc32(data) != record.crc:
            return DiskCorruption(
                f"disk of {self.disk.node}: {self.name}@{record.offset} fails its checksum"
            ), done
        return data, done


def read_retrying(disk: SimDisk, name: str, offset: int, length: int) -> bytes:
    """A read of ``disk`` retried on EIO up to :data:`REPLAY_READ_TRIES` times."""
    for _ in range(REPLAY_READ_TRIES - 1):
        try:
            return disk.read_now(name, offset, length)
        except DiskReadError:
            continue
    return disk.read_now(name, offset, length)
