"""Maintenance: packs of many short-lived writers, and what killed ones left."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

from looming.store import Repo
from looming.store.gitbackend import MANY_PACKS, GitBackend
from looming.store.spares import SPARE_DIR
from looming.unix.clock import UnixClock

from .conftest import GitRunner


def _objects_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in (path / "objects").rglob("*") if f.is_file())


def _packs(path: Path) -> list[Path]:
    return sorted((path / "objects" / "pack").glob("*.pack"))


def _one_writer(
    path: Path, number: int, *, kill_after: float | None = None, kill_before_close: bool = False
) -> None:
    """A writer process doing one set, as `looming store set` does (forked,
    so the test does not pay Python's start-up per writer). It is killed
    ``kill_after`` seconds in, or once its set is done but before it closes
    the repository (whatever the machine's load, it then leaves files behind)."""
    ready, done = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(ready)
            repo = Repo.open(
                str(path), durability="none", clock=UnixClock()
            )  # packs, not fsyncs, matter here
            repo.store("main").set(f"d{number % 7}/k{number}", b"value %d\n" % number)
            if kill_before_close:
                os.write(done, b"!")
                time.sleep(60)
            repo.close()
        finally:
            os._exit(0)
    os.close(done)
    if kill_before_close:
        assert os.read(ready, 1) == b"!"
        os.kill(pid, signal.SIGKILL)
    elif kill_after is not None:
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
    os.close(ready)
    os.waitpid(pid, 0)


def test_many_short_lived_writers_leave_few_small_packs(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "r.git"
    Repo.init(str(path), clock=UnixClock()).close()
    for number in range(60):
        _one_writer(path, number)
    assert len(_packs(path)) <= MANY_PACKS + 1
    ours = _objects_bytes(path)
    copy = tmp_path / "copy.git"
    subprocess.run(["cp", "-a", str(path), str(copy)], check=True)
    git("gc", "-q", cwd=copy)
    assert ours <= 1.5 * _objects_bytes(copy)
    git("fsck", "--strict", "--no-dangling", cwd=path)
    store = Repo.open(str(path), clock=UnixClock()).store("main")
    assert all(store.get(f"d{n % 7}/k{n}") == b"value %d\n" % n for n in range(60))
    assert list((path / SPARE_DIR).iterdir()) == []


def test_what_killed_writers_left_is_reclaimed(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "r.git"
    Repo.init(str(path), clock=UnixClock()).close()
    rng = random.Random(7)
    for number in range(25):
        # Killed at random moments, and every fifth one surely with its files open.
        if number % 5 == 4:
            _one_writer(path, number, kill_before_close=True)
        else:
            _one_writer(path, number, kill_after=rng.uniform(0.0, 0.06))
    # A live writer's files are not touched by a gc in another process.
    live = Repo.open(str(path), clock=UnixClock())
    live_store = live.store("main")
    live_store.set("live/0", b"x")
    spares = set((path / SPARE_DIR).iterdir())
    live_files = {spare for spare in spares if spare.name.startswith(f"{os.getpid()}.")}
    assert live_files and spares - live_files  # the killed writers left some
    # A pack without its index may be one git is writing now: removed only
    # once an hour old.
    hour_ago = time.time() - 3700
    for leftover in (path / "objects" / "pack").iterdir():
        os.utime(leftover, (hour_ago, hour_ago))
    repo = Repo.open(str(path), clock=UnixClock())
    repo.gc()
    repo.close()
    assert live_files <= set((path / SPARE_DIR).iterdir())
    assert len(_packs(path)) == 1
    live_store.set("live/1", b"y")
    live.close()
    assert list((path / SPARE_DIR).iterdir()) == []
    assert [p for p in (path / "objects" / "pack").iterdir() if p.suffix == ".tmp"] == []
    assert not list((path / "refs").rglob("*.lock"))
    assert all(pack.with_suffix(".idx").exists() for pack in _packs(path))
    git("fsck", "--strict", "--no-dangling", cwd=path)


def test_a_kept_pack_is_not_merged(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "r.git"
    Repo.init(str(path), clock=UnixClock()).close()
    _one_writer(path, 0)
    (kept,) = _packs(path)
    kept.with_suffix(".keep").write_bytes(b"")
    for number in range(1, 30):
        _one_writer(path, number)
    repo = Repo.open(str(path), clock=UnixClock())
    assert isinstance(repo.backend, GitBackend)
    repo.gc()
    assert kept.exists() and len(_packs(path)) == 2
    repo.close()
    git("fsck", "--strict", "--no-dangling", cwd=path)
