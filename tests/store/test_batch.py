"""Repo.batch: commits grouped into one write to disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from looming.store import RefChanged, Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner


def _packs(path: Path) -> set[Path]:
    return set((path / "objects" / "pack").glob("*.pack"))


def test_a_batch_is_written_once_at_its_end(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "r.git"
    repo = Repo.init(str(path), clock=UnixClock())
    store = repo.store("main")
    first = store.set("a", b"0")
    packs = _packs(path)
    with repo.batch():
        commits = [store.set(f"k{n}", b"%d" % n) for n in range(10)]
        assert store.get("k9") == b"9"  # visible here at once
        assert git("rev-parse", "main", cwd=path).strip() == first  # not on disk yet
        assert _packs(path) == packs
    assert git("rev-parse", "main", cwd=path).strip() == commits[-1]
    assert len(_packs(path) - packs) == 1
    assert git("rev-list", "--count", "main", cwd=path).strip() == "11"
    repo.close()
    git("fsck", "--strict", "--no-dangling", cwd=path)


def test_a_failed_batch_keeps_nothing(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "r.git"
    repo = Repo.init(str(path), clock=UnixClock())
    store = repo.store("main")
    first = store.set("a", b"0")
    with pytest.raises(ZeroDivisionError), repo.batch():
        store.set("b", b"1")
        1 / 0  # noqa: B018
    assert store.head == first and store.find("b") is None
    # git moved the branch during the batch: the batch is refused, git's
    # commit stays.
    with pytest.raises(RefChanged), repo.batch():
        store.set("c", b"2")
        theirs = git("commit-tree", f"{first}^{{tree}}", "-p", first, "-m", "git", cwd=path)
        git("update-ref", "refs/heads/main", theirs.strip(), first, cwd=path)
    assert git("rev-parse", "main", cwd=path).strip() == theirs.strip()
    repo.close()
    git("fsck", "--strict", "--no-dangling", cwd=path)
