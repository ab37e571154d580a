"""Watches: tell a callback, in order and one at a time, how a branch moved.

A watch runs one thread that wakes when this process moves a ref (a
listener on the repository) or when the ref files change on disk (polled,
so updates by other processes and by ``git`` are seen too). Each move is
reported as one :class:`WatchEvent` per commit along the first-parent chain
from the old head to the new one, so nothing is skipped when several commits
land between two polls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from looming.store.objects import ObjectId
from looming.store.path import Path, has_prefix
from looming.store.tree import diff_trees

if TYPE_CHECKING:
    from looming.store.store import Store

POLL_INTERVAL_S = 0.05
MAX_STEPS = 1000


@dataclass(frozen=True)
class WatchEvent:
    """The branch moved from ``old`` to ``new``; ``paths`` changed under the prefix."""

    branch: str
    old: str | None
    new: str | None
    paths: tuple[Path, ...]


class Watch:
    """A running watch; :meth:`stop` ends it (waiting for a running callback)."""

    def __init__(
        self, store: Store, callback: Callable[[WatchEvent], object], prefix: Path
    ) -> None:
        if store.branch is None:
            raise ValueError("watch a store bound to a branch, not to a commit")
        self.store = store
        self.branch = store.branch
        self.callback = callback
        self.prefix = prefix
        self.errors: list[BaseException] = []
        self._wake = threading.Event()
        self._stopping = False
        self._last = store.head_id()
        self._version = store.repo.backend.refs_version()
        self._thread = threading.Thread(target=self._run, name=f"watch {self.branch}", daemon=True)

    @classmethod
    def start(cls, store: Store, callback: Callable[[WatchEvent], object], prefix: Path) -> Watch:
        watch = cls(store, callback, prefix)
        store.repo.add_ref_listener(watch._on_ref)
        watch._thread.start()
        return watch

    def _on_ref(self, branch: str, _old: ObjectId | None, _new: ObjectId | None) -> None:
        if branch == self.branch:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self.store.repo.remove_ref_listener(self._on_ref)
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        backend = self.store.repo.backend
        while not self._stopping:
            woken = self._wake.wait(POLL_INTERVAL_S)
            self._wake.clear()
            if self._stopping:
                break
            if not woken:
                version = backend.refs_version()
                if version == self._version:
                    continue
                self._version = version
            try:
                self._check()
            except Exception as error:  # a failing callback must not kill the watch
                self.errors.append(error)

    def _steps(
        self, old: ObjectId | None, new: ObjectId | None
    ) -> list[tuple[ObjectId | None, ObjectId | None]]:
        if new is None:
            return [(old, new)]
        db = self.store.repo.db
        chain = [new]
        current = new
        for _ in range(MAX_STEPS):
            parents = db.commit(current).parents
            if not parents:
                if old is None:  # the branch was born: report from its root
                    chain.reverse()
                    return list(zip([None, *chain[:-1]], chain, strict=True))
                break
            current = parents[0]
            if current == old:
                chain.reverse()
                return list(zip([old, *chain[:-1]], chain, strict=True))
            chain.append(current)
        return [(old, new)]

    def _check(self) -> None:
        new = self.store.repo.head_id(self.branch)
        if new == self._last:
            return
        db = self.store.repo.db
        for old_commit, new_commit in self._steps(self._last, new):
            old_tree = db.commit(old_commit).tree if old_commit is not None else None
            new_tree = db.commit(new_commit).tree if new_commit is not None else None
            paths = tuple(
                path
                for path, _b, _a in diff_trees(db, old_tree, new_tree)
                if has_prefix(path, self.prefix)
            )
            self._last = new_commit
            if paths or (not self.prefix and old_tree == new_tree):
                self.callback(
                    WatchEvent(
                        self.branch,
                        old_commit.hex() if old_commit is not None else None,
                        new_commit.hex() if new_commit is not None else None,
                        paths,
                    )
                )
        self._last = new


class AsyncWatch:
    """``async for event in store.events(prefix)``: watch events on the loop."""

    def __init__(self, store: Store, prefix: Path) -> None:
        self._store = store
        self._prefix = prefix
        self._queue: asyncio.Queue[WatchEvent] | None = None
        self._watch: Watch | None = None

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    def start(self) -> None:
        """Begin watching now (else at the first ``__anext__``)."""
        if self._watch is not None:
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._queue = queue
        self._watch = Watch.start(
            self._store,
            lambda event: loop.call_soon_threadsafe(queue.put_nowait, event),
            self._prefix,
        )

    async def __anext__(self) -> WatchEvent:
        self.start()
        assert self._queue is not None
        return await self._queue.get()

    async def aclose(self) -> None:
        if self._watch is not None:
            await asyncio.to_thread(self._watch.stop)
            self._watch = None

    async def __aenter__(self) -> AsyncWatch:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
