"""The store as a unikernel's ``kv_rw`` device: every write is a commit.

Reads come from the branch head at the time of each call; a value's digest
is its Git blob id and a dictionary's its tree id, so both serve as ETags.
"""

from __future__ import annotations

from looming.devices.clock import Clock
from looming.devices.kv import EntryKind
from looming.errors import DeviceError, KeyNotFound, NotAValue
from looming.store.errors import InvalidPath, StoreError
from looming.store.gitbackend import GitBackend
from looming.store.objects import MODE_TREE
from looming.store.path import Path, to_path
from looming.store.repo import HEADS, Repo
from looming.store.store import Store
from looming.store.tree import Kind, lookup


class StoreKv:
    """:class:`looming.devices.KvRw` over a :class:`Store` holding bytes."""

    def __init__(self, store: Store) -> None:
        if store.branch is None:
            raise DeviceError("kv_rw needs a store bound to a branch")
        self.store = store
        self._modified: dict[tuple[str | None, Path], float] = {}

    @classmethod
    async def connect(cls, path: str, *, clock: Clock, branch: str = "main") -> StoreKv:
        """Open (creating if needed) the repository at ``path`` on ``branch``;
        commits are stamped with the time of ``clock``."""
        try:
            repo = Repo.open(path, clock=clock)
        except Exception:
            repo = Repo.init(path, branch=branch, clock=clock)
        return cls(repo.store(branch))

    async def disconnect(self) -> None:
        """Close the repository: what this unikernel wrote is left as one
        compact pack."""
        self.store.repo.close()

    def generation(self) -> object:
        """A stamp of the branch head: it changes with every commit, also one
        pushed by ``git`` or written by another process, so a cache of what
        was read (:class:`looming.http.StaticSite`) knows when to drop. On
        disk it is read from the ref file kept open (a few microseconds)."""
        branch = self.store.branch
        backend = self.store.repo.backend
        try:
            if isinstance(backend, GitBackend) and branch is not None:
                return backend.ref_stamp(HEADS + branch)
            return self.store.head_id()
        except StoreError as error:
            raise DeviceError(f"kv_store: {error}") from None

    @staticmethod
    def _read_key(key: str) -> Path:
        try:
            return to_path(key)
        except InvalidPath:
            raise KeyNotFound(key) from None

    @staticmethod
    def _write_key(key: str) -> Path:
        try:
            path = to_path(key)
        except InvalidPath as error:
            raise DeviceError(f"kv_rw: {error}") from None
        if not path:
            raise DeviceError("kv_rw: give a key with at least one name, not the root")
        return path

    def _entry(self, key: str) -> tuple[int, bytes]:
        path = self._read_key(key)
        entry = lookup(self.store.repo.db, self.store._tree_id(), path)
        if entry is None:
            raise KeyNotFound(key)
        return entry

    async def exists(self, key: str) -> EntryKind | None:
        try:
            mode, _oid = self._entry(key)
        except KeyNotFound:
            return None
        return EntryKind.DICTIONARY if mode == MODE_TREE else EntryKind.VALUE

    async def get(self, key: str) -> bytes:
        mode, oid = self._entry(key)
        if mode == MODE_TREE:
            raise NotAValue(f"{key!r} is a dictionary, not a value")
        return self.store.repo.db.blob(oid)

    async def get_partial(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise DeviceError("kv: offset and length must not be negative")
        data = await self.get(key)
        return data[offset : offset + length]

    async def size(self, key: str) -> int:
        return len(await self.get(key))

    async def list(self, prefix: str = "") -> list[tuple[str, EntryKind]]:
        mode, _oid = self._entry(prefix)
        if mode != MODE_TREE:
            raise NotAValue(f"{prefix!r} is a value, not a dictionary")
        return [
            (name, EntryKind.DICTIONARY if kind == Kind.NODE else EntryKind.VALUE)
            for name, kind in self.store.list(self._read_key(prefix))
        ]

    async def digest(self, key: str) -> str:
        _mode, oid = self._entry(key)
        return oid.hex()

    async def last_modified(self, key: str) -> float:
        path = self._read_key(key)
        self._entry(key)
        cache_key = (self.store.head, path)
        cached = self._modified.get(cache_key)
        if cached is None:
            found = self.store.last_modified(path) if path else self.store.history(limit=1)
            cached = float(found[0].time) if found else 0.0
            self._modified[cache_key] = cached
        return cached

    async def set(self, key: str, value: bytes) -> None:
        path = self._write_key(key)
        if await self.exists(key) is EntryKind.DICTIONARY:
            raise NotAValue(f"{key!r} is a dictionary; remove it before storing a value")
        self.store.set(path, bytes(value))

    async def remove(self, key: str) -> None:
        try:
            path = to_path(key)
        except InvalidPath as error:
            raise DeviceError(f"kv_rw: {error}") from None
        if path:
            self.store.remove(path)
        else:
            self.store.set_tree((), None, "remove everything")

    async def rename(self, source: str, dest: str) -> None:
        self._entry(source)
        self.store.rename(self._write_key(source), self._write_key(dest))
