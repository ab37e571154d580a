"""A sim node's ``kv_store``: the real store (Repo, Store, merge) over a
backend whose objects and refs live on the node's :class:`SimDisk`.

:class:`SimDiskBackend` keeps the order the Git backend keeps: objects are
appended to a checksummed log (:class:`RecordLog`, the id and type in
each record's tag, the body in its payload) and synced before the
ref that names them is written, and refs are written whole into one of two
slots, each with a sequence number and a checksum, alternately (the other
slot still holds the previous table), so a ref update is atomic: after a
crash at any moment the refs read are the last table whose write completed,
and every object it names is on the disk. Objects are checked against their
id when read, so a corrupted sector is :class:`CorruptObject`, never wrong
data.

The backend is synchronous (as the store is); the time its I/O takes is
owed to the disk, and :class:`SimStoreKv` waits for it before each call
returns, so a crash can strike while a commit's writes are in flight.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any

from looming.devices.clock import Clock
from looming.errors import DeviceError
from looming.sim.disk import DiskReadError, SimDisk
from looming.sim.disklog import Record, RecordLog, read_retrying
from looming.store.errors import CorruptObject, MissingObject, RefChanged, StoreError
from looming.store.kv import StoreKv
from looming.store.objects import ObjectId, hash_object
from looming.store.repo import Repo

SLOT_SIZE = 64 * 1024
_SLOT = struct.Struct(">2sQII")  # magic, sequence number, length, crc32
_SLOT_MAGIC = b"RT"


class SimDiskBackend:
    """:class:`looming.store.backend.Backend` on a simulated disk."""

    def __init__(self, disk: SimDisk, name: str) -> None:
        self.disk = disk
        self.objects_file = f"kv_store/{name}/objects"
        self.refs_file = f"kv_store/{name}/refs"
        self._log = RecordLog(disk, self.objects_file)
        self._objects: dict[ObjectId, Record] = {}
        self._refs: dict[str, ObjectId] = {}
        self._sequence = 0
        self._lock = threading.RLock()
        self.head = "refs/heads/main"

    @classmethod
    def open(cls, disk: SimDisk, name: str) -> SimDiskBackend:
        """The store as the disk holds it: objects replayed, newest ref table."""
        backend = cls(disk, name)
        for record, _payload in backend._log.replay():
            backend._objects[record.tag[:20]] = record
        backend._load_refs()
        return backend

    def _load_refs(self) -> None:
        best: tuple[int, bytes] | None = None
        for slot in (0, 1):
            raw = self._read_retrying(self.refs_file, slot * SLOT_SIZE, SLOT_SIZE)
            if len(raw) < _SLOT.size:
                continue
            magic, sequence, length, crc = _SLOT.unpack_from(raw)
            table = raw[_SLOT.size : _SLOT.size + length]
            if magic != _SLOT_MAGIC or len(table) != length:
                continue
            if zlib.crc32(table, sequence) != crc:
                continue
            if best is None or sequence > best[0]:
                best = (sequence, table)
        if best is None:
            return
        self._sequence = best[0]
        for line in best[1].decode().splitlines():
            name, _, hex_id = line.partition(" ")
            self._refs[name] = bytes.fromhex(hex_id)

    def _read_retrying(self, name: str, offset: int, length: int) -> bytes:
        try:
            return read_retrying(self.disk, name, offset, length)
        except DiskReadError as error:
            raise StoreError(f"{error}; the store cannot be opened") from None

    # -- objects --------------------------------------------------------------

    def read(self, object_id: ObjectId) -> tuple[str, bytes]:
        record = self._objects.get(object_id)
        if record is None:
            raise MissingObject(object_id.hex())
        data, _done = self._log.read(record)
        if isinstance(data, DiskReadError):
            raise StoreError(f"{data}; retry")
        if isinstance(data, DeviceError):
            raise CorruptObject(object_id.hex(), str(data))
        kind = record.tag[20:].decode()
        if hash_object(kind, data) != object_id:
            raise CorruptObject(object_id.hex(), "its bytes do not hash to its id")
        return kind, data

    def contains(self, object_id: ObjectId) -> bool:
        return object_id in self._objects

    def write(self, kind: str, body: bytes) -> ObjectId:
        object_id = hash_object(kind, body)
        if object_id not in self._objects:
            record, _done = self._log.append(object_id + kind.encode(), bytes(body))
            self._objects[object_id] = record
        return object_id

    def flush(self) -> None:
        self._log.sync()

    # -- refs ---------------------------------------------------------------------

    def read_ref(self, name: str) -> ObjectId | None:
        return self._refs.get(name)

    def set_ref(self, name: str, old: ObjectId | None, new: ObjectId | None) -> None:
        with self._lock:
            if self._refs.get(name) != old:
                raise RefChanged(f"{name} moved while updating it; retry")
            refs = dict(self._refs)
            if new is None:
                refs.pop(name, None)
            else:
                refs[name] = new
            # Objects first, so the table never names one that is not durable.
            self.flush()
            self._write_refs(refs)
            self._refs = refs

    def _write_refs(self, refs: dict[str, ObjectId]) -> None:
        table = "".join(f"{n} {oid.hex()}\n" for n, oid in sorted(refs.items())).encode()
        if _SLOT.size + len(table) > SLOT_SIZE:
            raise StoreError(f"too many refs for the simulated store ({len(refs)})")
        sequence = self._sequence + 1
        header = _SLOT.pack(_SLOT_MAGIC, sequence, len(table), zlib.crc32(table, sequence))
        self.disk.write(self.refs_file, (sequence % 2) * SLOT_SIZE, header + table)
        self.disk.sync(self.refs_file)
        self._sequence = sequence

    def list_refs(self, prefix: str) -> dict[str, ObjectId]:
        return {name: oid for name, oid in self._refs.items() if name.startswith(prefix)}

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        with self._lock:
            yield

    def refs_version(self) -> object:
        return self._sequence

    def note_delta_base(self, object_id: ObjectId, base: ObjectId) -> None:
        pass

    def close(self) -> None:
        pass


class SimStoreKv(StoreKv):
    """:class:`looming.store.kv.StoreKv` that waits for the disk: each call
    returns once the I/O it did has completed in virtual time, and a store
    error is the device's error."""

    disk: SimDisk

    @classmethod
    async def open(cls, disk: SimDisk, name: str, branch: str, clock: Clock) -> SimStoreKv:
        try:
            backend = SimDiskBackend.open(disk, name)
        except StoreError as error:
            raise DeviceError(f"kv_store {name}: {error}") from None
        repo = Repo(backend, clock=clock)
        kv = cls(repo.store(branch))
        kv.disk = disk
        await disk.idle()
        return kv

    async def _settled(self, call: Any) -> Any:
        # Not in a finally: a crash closes the coroutine, which must not wait.
        try:
            result = await call
        except StoreError as error:
            await self.disk.idle()
            raise DeviceError(f"kv_store: {error}") from None
        await self.disk.idle()
        return result

    async def exists(self, key: str) -> Any:
        return await self._settled(super().exists(key))

    async def get(self, key: str) -> bytes:
        value: bytes = await self._settled(super().get(key))
        return value

    async def get_partial(self, key: str, offset: int, length: int) -> bytes:
        value: bytes = await self._settled(super().get_partial(key, offset, length))
        return value

    async def size(self, key: str) -> int:
        value: int = await self._settled(super().size(key))
        return value

    async def list(self, prefix: str = "") -> Any:
        return await self._settled(super().list(prefix))

    async def digest(self, key: str) -> str:
        value: str = await self._settled(super().digest(key))
        return value

    async def last_modified(self, key: str) -> float:
        value: float = await self._settled(super().last_modified(key))
        return value

    async def set(self, key: str, value: bytes) -> None:
        await self._settled(super().set(key, value))

    async def remove(self, key: str) -> None:
        await self._settled(super().remove(key))

    async def rename(self, source: str, dest: str) -> None:
        await self._settled(super().rename(source, dest))

    async def disconnect(self) -> None:
        await self.disk.idle()
