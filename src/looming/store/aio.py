"""The async form of :class:`Store`: the same operations, awaited.

Each operation runs on a worker thread so disk reads, writes and the
writer lock never block the event loop; the store's own locks keep
concurrent operations consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from looming.store.store import (
    ChangeList,
    CommitList,
    MergeResult,
    PathLike,
    Store,
    Transaction,
    Tree,
)
from looming.store.tree import Kind
from looming.store.watch import AsyncWatch


class AsyncStore:
    """``await store.get(...)``, ``await store.set(...)``, ... over a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.sync = store

    @property
    def head(self) -> str | None:
        return self.sync.head

    async def get(self, path: PathLike) -> Any:
        return await asyncio.to_thread(self.sync.get, path)

    async def find(self, path: PathLike) -> Any:
        return await asyncio.to_thread(self.sync.find, path)

    async def list(self, path: PathLike = ()) -> list[tuple[str, Kind]]:
        return await asyncio.to_thread(self.sync.list, path)

    async def tree(self, path: PathLike = ()) -> Tree | None:
        return await asyncio.to_thread(self.sync.tree, path)

    async def set(self, path: PathLike, value: Any, message: str | None = None) -> str:
        return await asyncio.to_thread(self.sync.set, path, value, message)

    async def remove(self, path: PathLike, message: str | None = None) -> str | None:
        return await asyncio.to_thread(self.sync.remove, path, message)

    async def set_tree(
        self, path: PathLike, tree: Tree | Mapping[str, Any] | None, message: str | None = None
    ) -> str | None:
        return await asyncio.to_thread(self.sync.set_tree, path, tree, message)

    async def test_and_set(
        self, path: PathLike, test: Any, set: Any, message: str | None = None
    ) -> bool:
        return await asyncio.to_thread(self.sync.test_and_set, path, test, set, message)

    async def history(self, limit: int | None = None) -> CommitList:
        return await asyncio.to_thread(self.sync.history, limit)

    async def last_modified(self, path: PathLike, limit: int = 1) -> CommitList:
        return await asyncio.to_thread(self.sync.last_modified, path, limit)

    async def diff(self, old: str | None, new: str | None) -> ChangeList:
        return await asyncio.to_thread(self.sync.diff, old, new)

    async def merge(self, other: str | Store, message: str | None = None) -> MergeResult:
        return await asyncio.to_thread(self.sync.merge, other, message)

    async def merge_into(self, into: str | Store, message: str | None = None) -> MergeResult:
        return await asyncio.to_thread(self.sync.merge_into, into, message)

    async def clone(self, branch: str) -> AsyncStore:
        return AsyncStore(await asyncio.to_thread(self.sync.clone, branch))

    @contextlib.asynccontextmanager
    async def with_tree(
        self, message: str, *, strategy: str = "merge"
    ) -> AsyncIterator[Transaction]:
        """As :meth:`Store.with_tree`; the commit on exit runs off the loop."""
        manager = self.sync.with_tree(message, strategy=strategy)
        transaction = await asyncio.to_thread(manager.__enter__)
        try:
            yield transaction
        except BaseException as error:
            if not manager.__exit__(type(error), error, error.__traceback__):
                raise
        else:
            await asyncio.to_thread(manager.__exit__, None, None, None)

    def events(self, prefix: PathLike = ()) -> AsyncWatch:
        return self.sync.events(prefix)
