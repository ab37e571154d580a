"""Power cuts: the disk as it would be after one, at many points of a run.

A write-tracking layer interposes on the ``os`` calls the store makes
(``open`` with ``O_CREAT``, ``fsync``/``fdatasync``) while a writer
commits. Each fsync of a file records its bytes; each fsync of a folder
records its names and the files they point at. A power cut after event
``k`` leaves only what was fsynced by then: every folder as it was at its
last fsync (as it was at the start when never fsynced since), every file
with the bytes of its last fsync (empty when never fsynced). The test
rebuilds that disk for many ``k`` and checks that each commit the store had
acknowledged by then is in the branch's history and that ``git fsck
--strict`` passes. With ``durability="none"`` the same model must find a
lost commit, which shows the model is not too kind.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from looming.store import Repo
from looming.unix.clock import UnixClock

from .conftest import run_git

Node = int  # a file as the model knows it (an inode can be reused, a node not)


@dataclass
class Disk:
    """What was fsynced under ``root``, in order."""

    root: str
    events: list[tuple[str, Any, Any]] = field(default_factory=list)
    node_of_inode: dict[int, Node] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    nodes: int = 0

    def new_node(self, inode: int) -> Node:
        self.nodes += 1
        self.node_of_inode[inode] = self.nodes
        return self.nodes

    def node(self, inode: int) -> Node:
        known = self.node_of_inode.get(inode)
        return known if known is not None else self.new_node(inode)

    def start(self) -> None:
        """Everything on the disk now counts as synced."""
        for directory, _dirs, files in os.walk(self.root):
            self.record_folder(directory)
            for name in files:
                path = os.path.join(directory, name)
                with open(path, "rb") as file:
                    self.events.append(("file", self.node(os.stat(path).st_ino), file.read()))

    def record_folder(self, path: str) -> None:
        names: dict[str, object] = {}
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                names[entry.name] = ("dir", entry.path)
            else:
                names[entry.name] = self.node(entry.inode())
        self.events.append(("folder", path, names))

    def fsynced(self, descriptor: int) -> None:
        try:
            path = os.readlink(f"/proc/self/fd/{descriptor}")
        except OSError:
            return
        # An inode's bytes count by inode: one opened under a name since
        # removed (a spare linked as a ref's lock) reads as "... (deleted)".
        path = path.removesuffix(" (deleted)")
        if not path.startswith(self.root):
            return
        with self.lock:
            if os.path.isdir(path):
                self.record_folder(path)
            else:
                with open(f"/proc/self/fd/{descriptor}", "rb") as file:
                    data = file.read()
                self.events.append(("file", self.node(os.fstat(descriptor).st_ino), data))

    def acknowledged(self, commit: str) -> None:
        with self.lock:
            self.events.append(("ack", commit, None))

    def after_power_cut(self, upto: int, into: str) -> list[str]:
        """Write into ``into`` the disk a power cut after event ``upto``
        leaves; the commits acknowledged by then."""
        folders: dict[str, dict[str, object]] = {}
        contents: dict[Node, bytes] = {}
        acknowledged: list[str] = []
        for kind, what, value in self.events[:upto]:
            if kind == "folder":
                folders[what] = value
            elif kind == "file":
                contents[what] = value
            else:
                acknowledged.append(what)
        self._build(self.root, into, folders, contents)
        return acknowledged

    def _build(
        self,
        folder: str,
        into: str,
        folders: dict[str, dict[str, object]],
        contents: dict[int, bytes],
    ) -> None:
        os.makedirs(into, exist_ok=True)
        for name, node in folders.get(folder, {}).items():
            if isinstance(node, tuple):
                self._build(node[1], os.path.join(into, name), folders, contents)
            else:
                Path(into, name).write_bytes(contents.get(node, b""))


@contextmanager
def tracking(disk: Disk) -> Iterator[None]:
    """Interpose on the os calls that create files and make them durable."""
    real_open = os.open
    real_fsync = os.fsync
    real_fdatasync = os.fdatasync

    def traced_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fresh = bool(flags & os.O_CREAT) and not os.path.lexists(path)
        descriptor = real_open(path, flags, *args, **kwargs)
        if fresh and os.path.abspath(os.fsdecode(path)).startswith(disk.root):
            with disk.lock:
                disk.new_node(os.fstat(descriptor).st_ino)
        return descriptor

    def traced(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(descriptor: int) -> None:
            real(descriptor)
            disk.fsynced(descriptor)

        return sync

    os.open = traced_open  # type: ignore[assignment]
    os.fsync = traced(real_fsync)
    os.fdatasync = traced(real_fdatasync)
    try:
        yield
    finally:
        os.open = real_open
        os.fsync = real_fsync
        os.fdatasync = real_fdatasync


def _work(repo: Repo, disk: Disk, rng: random.Random) -> None:
    """Commits of several kinds: single sets, transactions, large values,
    removals, a second branch, pack folding, and the store's gc."""
    store = repo.store("main")
    for number in range(24):
        choice = rng.random()
        if choice < 0.5:
            commit = store.set(f"d{number % 3}/k{number}", os.urandom(rng.choice([10, 3000])))
        elif choice < 0.7:
            with store.with_tree(f"batch {number}") as tx:
                for key in range(5):
                    tx.set(f"batch/{number}/{key}", b"%d" % key)
            commit = store.head or ""
        elif choice < 0.85 and store.list("d0"):
            commit = store.remove(f"d0/{store.list('d0')[0][0]}") or store.head or ""
        else:
            commit = store.set("big", os.urandom(40_000))
        disk.acknowledged(commit)
    with repo.batch():  # a transaction of commits, acknowledged at its end
        batch = [store.set(f"batched/{n}", b"%d" % n) for n in range(5)]
    for commit in batch:
        disk.acknowledged(commit)
    side = store.clone("side")
    disk.acknowledged(side.set("only/on/side", b"x"))
    repo.gc()
    disk.acknowledged(store.set("after/gc", b"y"))


def _run(tmp_path: Path, durability: str, seed: int) -> tuple[Disk, list[int]]:
    path = tmp_path / "r.git"
    Repo.init(str(path), clock=UnixClock()).close()
    disk = Disk(str(path))
    disk.start()
    start = len(disk.events)  # the disk as it was before the writer opened it
    rng = random.Random(seed)
    with tracking(disk):
        repo = Repo.open(str(path), durability=durability, merge_packs_after=4, clock=UnixClock())
        _work(repo, disk, rng)
        repo.close()
    points = sorted(
        {i + 1 for i, event in enumerate(disk.events) if event[0] == "ack"}
        | set(rng.sample(range(start, len(disk.events) + 1), min(30, len(disk.events) - start)))
    )
    return disk, points


def _lost_after(disk: Disk, upto: int, into: Path) -> list[str]:
    """Acknowledged commits missing from the rebuilt disk (fsck must pass)."""
    shutil.rmtree(into, ignore_errors=True)
    acknowledged = disk.after_power_cut(upto, str(into))
    history: set[str] = set()
    for branch in ("main", "side"):
        if (into / "refs" / "heads" / branch).exists():
            history |= set(run_git("rev-list", branch, cwd=into).split())
    run_git("fsck", "--strict", "--no-dangling", cwd=into)
    return [commit for commit in acknowledged if commit not in history]


@pytest.mark.parametrize("seed", [int(s) for s in os.environ.get("POWER_SEEDS", "1 2").split()])
def test_every_acknowledged_commit_survives_a_power_cut(tmp_path: Path, seed: int) -> None:
    disk, points = _run(tmp_path, "full", seed)
    assert len(points) > 30
    for upto in points:
        assert _lost_after(disk, upto, tmp_path / f"cut{upto}") == [], upto
    # The store opens on a cut disk and carries on from there.
    into = tmp_path / "reopened"
    disk.after_power_cut(points[len(points) // 2], str(into))
    repo = Repo.open(str(into), clock=UnixClock())
    repo.store("main").set("after/the/cut", b"z")
    repo.close()
    run_git("fsck", "--strict", "--no-dangling", cwd=into)


def test_without_fsync_the_model_loses_commits(tmp_path: Path) -> None:
    disk, points = _run(tmp_path, "none", 3)
    lost = 0
    for upto in points:
        try:
            lost += len(_lost_after(disk, upto, tmp_path / f"cut{upto}"))
        except AssertionError:
            lost += 1  # git fsck or rev-list refused the cut disk: as bad
    assert lost > 0
