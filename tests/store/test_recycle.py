"""Packs retired by folding become the next commits' files (no inode
allocation per commit), unless anybody else can still see them: a reader
with the pack open, or a ``git clone`` that hard-linked it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from looming.store.repo import Repo
from looming.store.spares import SPARE_DIR
from looming.unix.clock import UnixClock

from .conftest import GitRunner


def _packs(path: Path) -> list[Path]:
    return sorted((path / "objects" / "pack").glob("*.pack"))


def _commit(repo: Repo, first: int, count: int) -> None:
    store = repo.store()
    for commit in range(first, first + count):
        with store.with_tree(f"commit {commit}") as tx:
            for key in range(commit * 5, commit * 5 + 5):
                tx.set(f"d{key % 7}/k{key}", b"value %d of commit %d\n" % (key, commit))


def test_folded_packs_become_spares_and_the_store_stays_whole(
    tmp_path: Path, git: GitRunner
) -> None:
    path = tmp_path / "r.git"
    repo = Repo.init(str(path), merge_packs_after=4, fold_when_idle=None, clock=UnixClock())
    _commit(repo, 0, 4)  # the fourth commit folds the first four packs
    spares = list((path / SPARE_DIR).iterdir())
    assert any(spare.stat().st_size > 0 for spare in spares)  # retired packs, kept
    _commit(repo, 4, 30)  # written into them, folded, retired again
    git("fsck", "--strict", "--no-dangling", cwd=str(path))
    fresh = Repo.open(str(path), clock=UnixClock())
    assert fresh.store().get("d1/k169") == b"value 169 of commit 33\n"
    assert len(fresh.store().history()) == 34
    fresh.close()
    repo.close()
    assert not [spare for spare in (path / SPARE_DIR).iterdir() if spare.stat().st_size]


def test_a_pack_open_elsewhere_is_not_written_over(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "r.git"
    repo = Repo.init(str(path), merge_packs_after=4, fold_when_idle=None, clock=UnixClock())
    _commit(repo, 0, 2)
    held = _packs(path)
    readers = {pack: os.open(pack, os.O_RDONLY) for pack in held}
    try:
        before = {pack: os.pread(fd, 1 << 20, 0) for pack, fd in readers.items()}
        _commit(repo, 2, 30)  # folds retire the held packs; later commits need files
        for pack, fd in readers.items():
            after = os.pread(fd, 1 << 20, 0)
            assert after == before[pack]
            assert hashlib.sha1(after[:-20]).digest() == after[-20:]  # still a whole pack
    finally:
        for fd in readers.values():
            os.close(fd)
    git("fsck", "--strict", "--no-dangling", cwd=str(path))
    repo.close()


def test_a_local_git_clone_sharing_our_packs_stays_intact(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "r.git"
    repo = Repo.init(str(path), merge_packs_after=4, fold_when_idle=None, clock=UnixClock())
    _commit(repo, 0, 6)
    clone = tmp_path / "clone.git"
    git("clone", "-q", "--bare", "--local", str(path), str(clone), cwd=str(tmp_path))
    linked = [pack for pack in _packs(clone) if pack.stat().st_nlink > 1]
    assert linked  # git shares our pack files by hard links
    files = sorted((clone / "objects" / "pack").iterdir())
    before = [file.read_bytes() for file in files]
    _commit(repo, 6, 30)  # retires the shared packs, then fills many spares
    assert [file.read_bytes() for file in files] == before
    git("fsck", "--strict", cwd=str(clone))
    for index in (clone / "objects" / "pack").glob("*.idx"):
        git("verify-pack", str(index), cwd=str(clone))
    assert git("log", "--format=%s", "-1", "main", cwd=str(clone)).strip() == "commit 5"
    git("fsck", "--strict", "--no-dangling", cwd=str(path))
    repo.close()


def test_packs_beyond_the_spares_budget_are_removed_off_the_commit_path(
    tmp_path: Path, git: GitRunner
) -> None:
    from looming.store import spares

    path = tmp_path / "r.git"
    repo = Repo.init(str(path), merge_packs_after=4, fold_when_idle=None, clock=UnixClock())
    pool = repo.backend._spares  # type: ignore[attr-defined]
    removed: list[str] = []
    real_unlink = os.unlink

    def unlink(name: str) -> None:
        removed.append(os.path.basename(name))
        real_unlink(name)

    budget, spares.RECYCLE_BYTES = spares.RECYCLE_BYTES, 0  # nothing kept: all discarded
    os.unlink = unlink  # type: ignore[assignment]
    try:
        _commit(repo, 0, 12)  # three folds, each retiring packs
        pool._doomed.join()
    finally:
        os.unlink = real_unlink
        spares.RECYCLE_BYTES = budget
    # Every retired pack file was renamed into the spares folder before it
    # was removed there: none was unlinked under its pack name.
    assert removed and not any(name.startswith("pack-") for name in removed)
    assert len(_packs(path)) == 1
    left = set(os.listdir(path / SPARE_DIR))
    assert [name for name in removed if name in left] == []
    repo.close()
    git("fsck", "--strict", "--no-dangling", cwd=str(path))
    assert Repo.open(str(path), clock=UnixClock()).store().get("d0/k0") is not None


def test_a_long_running_writer_keeps_no_delta_bases_it_has_folded(tmp_path: Path) -> None:
    from looming.store.gitbackend import GitBackend

    path = tmp_path / "r.git"
    repo = Repo.init(
        str(path), merge_packs_after=4, fold_when_idle=None, durability="none", clock=UnixClock()
    )
    backend = repo.backend
    assert isinstance(backend, GitBackend)
    most = 0
    for first in range(0, 200, 4):
        _commit(repo, first, 4)  # every fourth commit folds
        most = max(most, len(backend._delta_bases))
    # Each commit changes up to 5 directories and the root: what is held is
    # the last few commits' bases, not the 1,000+ of the whole run.
    assert most <= 4 * 6, most
    assert repo.store().get("d3/k997") == b"value 997 of commit 199\n"
    repo.close()
