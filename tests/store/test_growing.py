"""The growing pack: per-commit packs folded into one, directory versions as
deltas with bounded chains, checked with ``git verify-pack`` and ``fsck``."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from looming.store import gitbackend
from looming.store import growing as growing_module
from looming.store.pack import MAX_DELTA_DEPTH
from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner

VERSIONS = 130  # well past one chain of MAX_DELTA_DEPTH deltas


def _trees_in(index: Path, git: GitRunner) -> list[list[str]]:
    # sha, type, size, size in pack, offset[, depth, base]
    return [
        line.split()
        for line in git("verify-pack", "-v", str(index), cwd=index.parent).splitlines()
        if " tree " in line
    ]


def test_long_history_of_one_directory_folds_into_one_small_pack(
    tmp_path: Path, git: GitRunner
) -> None:
    path = str(tmp_path / "long.git")
    repo = Repo.init(path, merge_packs_after=8, fold_when_idle=None, clock=UnixClock())
    store = repo.store()
    with store.with_tree("three hundred keys") as tx:
        for key in range(300):
            tx.set(f"k{key:04d}", b"first %d" % key)
    heads = []
    for version in range(VERSIONS):
        with store.with_tree(f"version {version}") as tx:
            tx.set(f"k{version * 7 % 300:04d}", b"version %d" % version)
            tx.set(f"new{version:04d}", b"added in %d" % version)
        heads.append(store.head)
    git("fsck", "--strict", "--no-dangling", cwd=path)
    packs = sorted((tmp_path / "long.git" / "objects" / "pack").glob("*.idx"))
    growing = max(packs, key=lambda index: index.stat().st_size)
    trees = _trees_in(growing, git)
    depths = [int(fields[5]) for fields in trees if len(fields) == 7]
    whole = [fields for fields in trees if len(fields) == 5]
    assert len(trees) >= VERSIONS - 8  # all but the last few versions were folded in
    assert max(depths) <= MAX_DELTA_DEPTH
    # Past the first chain, a new segment begins with a delta against the
    # previous segment's first version: no new whole copy.
    assert len(whole) == 1
    delta_sizes = [int(fields[3]) for fields in trees if len(fields) == 7]
    whole_size = int(whole[0][3])
    # A segment's first delta spans that segment's changes, not all since the
    # first chain: none is much more than MAX_DELTA_DEPTH versions' worth.
    typical = sorted(delta_sizes)[len(delta_sizes) // 2]
    assert max(delta_sizes) < (MAX_DELTA_DEPTH + 10) * typical
    # Each delta is smaller than the deflated whole tree, and all of them
    # together weigh as a few whole copies, not one per version.
    assert max(delta_sizes) < whole_size
    assert sum(delta_sizes) < 10 * whole_size
    # Every version reads back, in this process and in a fresh one.
    fresh = Repo.open(path, clock=UnixClock())
    for version in (0, 49, 50, 51, 99, VERSIONS - 1):
        head = heads[version]
        assert head is not None
        for reader in (repo, fresh):
            view = reader.at(head)
            assert view.get(f"new{version:04d}") == b"added in %d" % version
            assert view.get(f"k{version * 7 % 300:04d}") == b"version %d" % version
    assert git("show", f"{heads[-1]}:new{VERSIONS - 1:04d}", cwd=path) == (
        f"added in {VERSIONS - 1}"
    )
    fresh.close()
    repo.gc()
    git("fsck", "--strict", "--no-dangling", cwd=path)
    assert len(list((tmp_path / "long.git" / "objects" / "pack").glob("*.pack"))) == 1
    assert Repo.open(path, clock=UnixClock()).at(heads[60] or "").get("new0060") == b"added in 60"
    repo.close()


def test_growing_pack_is_replaced_not_added_to(tmp_path: Path, git: GitRunner) -> None:
    path = str(tmp_path / "few.git")
    repo = Repo.init(path, merge_packs_after=4, fold_when_idle=None, clock=UnixClock())
    store = repo.store()
    for commit in range(4 * 5):
        store.set(f"d{commit % 3}/k{commit}", b"%d" % commit)
    # Five folds of four per-commit packs each: one pack remains, not five.
    packs = list((tmp_path / "few.git" / "objects" / "pack").glob("*.pack"))
    assert len(packs) == 1
    git("fsck", "--strict", "--no-dangling", cwd=path)
    assert len(git("rev-list", "main", cwd=path).split()) == 20
    repo.close()


def test_a_full_growing_pack_is_sealed_and_a_new_one_begun(
    tmp_path: Path, git: GitRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitbackend, "SEAL_ABOVE", 4000)
    path = str(tmp_path / "sealed.git")
    repo = Repo.init(path, merge_packs_after=4, clock=UnixClock())
    store = repo.store()
    for commit in range(40):
        store.set(f"d{commit % 5}/k{commit}", b"value %d" % commit * 20)
    pack_dir = tmp_path / "sealed.git" / "objects" / "pack"
    assert len(list(pack_dir.glob("*.pack"))) > 2  # sealed packs stay as they are
    git("fsck", "--strict", "--no-dangling", cwd=path)
    fresh = Repo.open(path, clock=UnixClock()).store()
    assert all(fresh.get(f"d{c % 5}/k{c}") == b"value %d" % c * 20 for c in range(40))
    repo.gc()
    assert len(list(pack_dir.glob("*.pack"))) == 1
    git("fsck", "--strict", "--no-dangling", cwd=path)
    assert len(git("rev-list", "main", cwd=path).split()) == 40
    repo.close()


def _packs(path: Path) -> list[Path]:
    return sorted((path / "objects" / "pack").glob("*.pack"))


def test_closing_the_writer_leaves_one_compact_pack(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "closed.git"
    repo = Repo.init(str(path), fold_when_idle=None, clock=UnixClock())
    store = repo.store()
    for commit in range(6):  # fewer than a fold needs: six per-commit packs
        store.set(f"d/k{commit}", b"value %d" % commit)
    assert len(_packs(path)) == 6
    repo.close()
    assert len(_packs(path)) == 1
    git("fsck", "--strict", "--no-dangling", cwd=str(path))
    fresh = Repo.open(str(path), clock=UnixClock())
    assert [fresh.store().get(f"d/k{c}") for c in range(6)] == [b"value %d" % c for c in range(6)]
    fresh.close()


def test_an_idle_writer_folds_what_it_wrote(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "idle.git"
    repo = Repo.init(str(path), fold_when_idle=0.05, clock=UnixClock())
    store = repo.store()
    for commit in range(5):
        store.set(f"k{commit}", b"%d" % commit)
    deadline = time.monotonic() + 20
    while len(_packs(path)) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(_packs(path)) == 1
    git("fsck", "--strict", "--no-dangling", cwd=str(path))
    # The writer goes on as before, and its next commits fold in later.
    for commit in range(5, 8):
        store.set(f"k{commit}", b"%d" % commit)
    deadline = time.monotonic() + 20
    while len(_packs(path)) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(_packs(path)) == 1
    assert Repo.open(str(path), clock=UnixClock()).store().get("k7") == b"7"
    repo.close()


def test_an_idle_fold_waits_for_another_process_holding_the_lock(
    tmp_path: Path, git: GitRunner
) -> None:
    path = tmp_path / "shared.git"
    repo = Repo.init(str(path), fold_when_idle=0.05, clock=UnixClock())
    store = repo.store()
    store.set("a", b"1")
    store.set("b", b"2")
    # Another writer holds the store's lock: the idle folder leaves the
    # small packs alone rather than wait for it.
    other = os.open(path / "looming.lock", os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        time.sleep(0.5)  # ten idle periods
        assert len(_packs(path)) == 2
        repo.close()  # does not wait for the lock either
        assert len(_packs(path)) == 2
    finally:
        os.close(other)
    git("fsck", "--strict", "--no-dangling", cwd=str(path))


def test_reads_in_another_thread_go_on_through_idle_folds(tmp_path: Path) -> None:
    path = tmp_path / "busy.git"
    repo = Repo.init(str(path), fold_when_idle=0.01, clock=UnixClock())
    store = repo.store()
    failures: list[BaseException] = []
    done = threading.Event()
    heads: list[str] = []

    def reader() -> None:
        while not done.is_set():
            seen = len(heads)
            if not seen:
                continue
            view = repo.at(heads[seen - 1])
            try:
                for key in range(seen):
                    assert view.get(f"d{key % 3}/k{key}") == b"%d" % key
            except BaseException as error:
                failures.append(error)
                return
            time.sleep(0.001)  # leave the writer the interpreter now and then

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for commit in range(40):
            store.set(f"d{commit % 3}/k{commit}", b"%d" % commit)
            heads.append(store.head or "")
            if commit % 8 == 7:
                # Idle long enough for the folder to run while reads go on.
                deadline = time.monotonic() + 20
                while len(_packs(path)) > 1 and time.monotonic() < deadline:
                    time.sleep(0.005)
    finally:
        done.set()
        thread.join()
    assert failures == []
    assert len(_packs(path)) == 1
    repo.close()


def test_one_commit_now_and_then_does_not_copy_the_growing_pack(tmp_path: Path) -> None:
    path = tmp_path / "sparse.git"
    repo = Repo.init(str(path), merge_packs_after=4, fold_when_idle=0.05, clock=UnixClock())
    store = repo.store()
    for commit in range(40):
        store.set(f"d{commit % 5}/k{commit}", b"value %d" % commit * 8)
    deadline = time.monotonic() + 20
    while len(_packs(path)) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    (growing,) = _packs(path)
    store.set("late", b"one more")  # a small pack of 1/40 of the history
    time.sleep(0.5)  # ten idle periods: not worth rewriting the growing pack
    assert growing.exists() and len(_packs(path)) == 2
    repo.close()  # closing folds it all the same
    assert len(_packs(path)) == 1
    assert Repo.open(str(path), clock=UnixClock()).store().get("late") == b"one more"


def _commit_batches(repo: Repo, batches: range) -> None:
    store = repo.store()
    for batch in batches:
        with repo.batch():
            for commit in range(batch * 3, batch * 3 + 3):
                store.set(f"d{commit % 4}/k{commit}", b"value %d" % commit)


def _check_all(path: str, commits: int, git: GitRunner) -> None:
    git("fsck", "--strict", "--no-dangling", cwd=path)
    fresh = Repo.open(path, clock=UnixClock()).store()
    assert all(fresh.get(f"d{c % 4}/k{c}") == b"value %d" % c for c in range(commits))


def test_a_failed_absorb_folds_its_pack_from_its_bytes(
    tmp_path: Path, git: GitRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packs are appended to the growing pack in steps during fsync rounds;
    one that fails midway is undone, and it and the packs queued after it
    are folded from their bytes instead."""
    path = str(tmp_path / "failed.git")
    repo = Repo.init(path, merge_packs_after=6, fold_when_idle=None, clock=UnixClock())
    real = growing_module.GrowingPack._append_spans
    calls = [0]

    def flaky(self: growing_module.GrowingPack, *args: object, **kwargs: object) -> None:
        calls[0] += 1
        if calls[0] == 5:  # the second step of the second pack
            real(self, *args, **kwargs)  # half of it appended, then it fails
            raise MemoryError("injected")
        real(self, *args, **kwargs)

    monkeypatch.setattr(growing_module.GrowingPack, "_append_spans", flaky)
    _commit_batches(repo, range(10))
    assert calls[0] > 5
    repo.close()
    assert len(list(Path(path, "objects", "pack").glob("*.pack"))) == 1
    _check_all(path, 30, git)


def test_a_pack_that_could_not_be_installed_is_unabsorbed(
    tmp_path: Path, git: GitRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from looming.store import spares
    from looming.store.errors import StoreError

    path = str(tmp_path / "uninstalled.git")
    repo = Repo.init(path, merge_packs_after=6, fold_when_idle=None, clock=UnixClock())
    _commit_batches(repo, range(2))
    real = spares.os.rename

    def failing(source: str, target: str) -> None:
        if target.endswith(".idx"):
            raise OSError(28, "No space left on device", target)
        real(source, target)

    monkeypatch.setattr(spares.os, "rename", failing)
    with pytest.raises(StoreError, match="No space left"):
        _commit_batches(repo, range(2, 3))
    monkeypatch.setattr(spares.os, "rename", real)
    store = repo.store()
    store.set("after", b"the failure")
    _commit_batches(repo, range(3, 10))
    repo.close()
    git("fsck", "--strict", "--no-dangling", cwd=path)
    fresh = Repo.open(path, clock=UnixClock()).store()
    assert fresh.get("after") == b"the failure"
    assert all(fresh.get(f"d{c % 4}/k{c}") == b"value %d" % c for c in [*range(6), *range(9, 30)])
