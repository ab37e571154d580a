"""The growing pack: per-commit packs folded into one, directory versions as
deltas with bounded chains, checked with ``git verify-pack`` and ``fsck``."""

from __future__ import annotations

from pathlib import Path

import pytest

from looming.store import gitbackend
from looming.store.pack import MAX_DELTA_DEPTH
from looming.store.repo import Repo

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
    repo = Repo.init(path, merge_packs_after=8)
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
    # Past the first chain, versions delta against its anchor: no new whole copy.
    assert len(whole) == 1
    delta_sizes = [int(fields[3]) for fields in trees if len(fields) == 7]
    whole_size = int(whole[0][3])
    # Each delta is smaller than the deflated whole tree, and all of them
    # together weigh as a few whole copies, not one per version.
    assert max(delta_sizes) < whole_size
    assert sum(delta_sizes) < 10 * whole_size
    # Every version reads back, in this process and in a fresh one.
    fresh = Repo.open(path)
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
    assert Repo.open(path).at(heads[60] or "").get("new0060") == b"added in 60"
    repo.close()


def test_growing_pack_is_replaced_not_added_to(tmp_path: Path, git: GitRunner) -> None:
    path = str(tmp_path / "few.git")
    repo = Repo.init(path, merge_packs_after=4)
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
    repo = Repo.init(path, merge_packs_after=4)
    store = repo.store()
    for commit in range(40):
        store.set(f"d{commit % 5}/k{commit}", b"value %d" % commit * 20)
    pack_dir = tmp_path / "sealed.git" / "objects" / "pack"
    assert len(list(pack_dir.glob("*.pack"))) > 2  # sealed packs stay as they are
    git("fsck", "--strict", "--no-dangling", cwd=path)
    fresh = Repo.open(path).store()
    assert all(fresh.get(f"d{c % 5}/k{c}") == b"value %d" % c * 20 for c in range(40))
    repo.gc()
    assert len(list(pack_dir.glob("*.pack"))) == 1
    git("fsck", "--strict", "--no-dangling", cwd=path)
    assert len(git("rev-list", "main", cwd=path).split()) == 40
    repo.close()
