"""A store on disk is a Git repository, checked with the real ``git`` CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from looming.store.errors import BadRef, CorruptObject, MissingObject
from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner


def _fill(repo: Repo) -> None:
    store = repo.store()
    for i in range(20):
        store.set(f"dir{i % 4}/key{i}", b"value %d\n" % i)
    store.remove("dir0/key4")
    feature = store.clone("feature")
    feature.set("feature.txt", b"feature\n")
    store.set("main.txt", b"main\n")
    assert store.merge("feature").ok


def test_git_fsck_log_show_and_clone(disk_repo: Repo, git: GitRunner, tmp_path: Path) -> None:
    _fill(disk_repo)
    path = disk_repo.path
    assert path is not None
    git("fsck", "--strict", "--no-dangling", cwd=path)
    log = git("log", "--format=%s", "main", cwd=path).splitlines()
    assert log[0] == "merge feature into main"
    assert len(log) == 24
    assert git("show", "main:dir1/key5", cwd=path) == "value 5\n"
    git("clone", "-q", path, str(tmp_path / "checkout"), cwd=tmp_path)
    assert (tmp_path / "checkout" / "feature.txt").read_text() == "feature\n"
    assert not (tmp_path / "checkout" / "dir0" / "key4").exists()
    assert git("rev-parse", "HEAD", cwd=tmp_path / "checkout").strip() == disk_repo.head("main")


def test_small_packs_are_merged(tmp_path: Path, git: GitRunner) -> None:
    repo = Repo.init(str(tmp_path / "s.git"), merge_packs_after=8, clock=UnixClock())
    store = repo.store()
    for i in range(40):
        store.set(f"k{i}", b"%d" % i)
    packs = list((tmp_path / "s.git" / "objects" / "pack").glob("*.pack"))
    assert 1 <= len(packs) <= 8
    assert not list((tmp_path / "s.git" / "objects").glob("??/*"))  # nothing loose
    assert store.get("k3") == b"3"
    assert Repo.open(str(tmp_path / "s.git"), clock=UnixClock()).store().get("k39") == b"39"
    git("fsck", "--strict", cwd=tmp_path / "s.git")
    git("verify-pack", str(packs[0].with_suffix(".idx")), cwd=tmp_path)
    repo.close()


def test_git_made_repository_opens_as_store(tmp_path: Path, git: GitRunner) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", cwd=work)
    (work / "a").mkdir()
    for i in range(30):
        (work / "a" / f"f{i}").write_text("line\n" * i + f"file {i}\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    (work / "a" / "f1").write_text("changed\n")
    git("commit", "-q", "-am", "second", cwd=work)
    git("branch", "side", cwd=work)
    git("gc", "-q", "--aggressive", cwd=work)  # packs with deltas, packed refs
    assert (work / ".git" / "packed-refs").exists()
    repo = Repo.open(str(work), clock=UnixClock())
    store = repo.store("main")
    assert store.get("a/f1") == b"changed\n"
    assert store.get("a/f29") == b"line\n" * 29 + b"file 29\n"
    assert [c.message for c in store.history()] == ["second\n", "first\n"]
    assert repo.branches() == ["main", "side"]
    # Our commits on top; git sees them and the repository stays valid.
    store.set("from-looming", b"hello\n")
    repo.remove_branch("side")
    assert git("log", "-1", "--format=%s", cwd=work).strip() == "set from-looming"
    assert git("branch", "--list", cwd=work).split() == ["*", "main"]
    git("fsck", "--strict", cwd=work)
    repo.close()


def test_git_commits_are_seen_by_the_store(disk_repo: Repo, git: GitRunner, tmp_path: Path) -> None:
    _fill(disk_repo)
    path = disk_repo.path
    assert path is not None
    checkout = tmp_path / "checkout"
    git("clone", "-q", path, str(checkout), cwd=tmp_path)
    (checkout / "from-git.txt").write_text("git\n")
    git("add", ".", cwd=checkout)
    git("commit", "-q", "-m", "from git", cwd=checkout)
    git("push", "-q", "origin", "main", cwd=checkout)
    store = disk_repo.store()
    assert store.get("from-git.txt") == b"git\n"
    assert store.history(limit=1)[0].message == "from git\n"


def test_corrupt_objects_are_detected(disk_repo: Repo, git: GitRunner) -> None:
    import zlib

    path = disk_repo.path
    assert path is not None
    # A loose object written by git, then damaged.
    blob_hex = git("hash-object", "-w", "--stdin", cwd=path, input=b"precious").strip()
    tree_hex = git("mktree", cwd=path, input=f"100644 blob {blob_hex}\tk\n".encode()).strip()
    commit_hex = git("commit-tree", tree_hex, "-m", "by git", cwd=path).strip()
    disk_repo.set_head("main", commit_hex)
    assert Repo.open(path, clock=UnixClock()).store().get("k") == b"precious"
    loose = Path(path) / "objects" / blob_hex[:2] / blob_hex[2:]
    os.chmod(loose, 0o644)
    loose.write_bytes(zlib.compress(b"blob 8\0precioux"))
    with pytest.raises(CorruptObject) as error:
        Repo.open(path, clock=UnixClock()).store().get("k")
    assert blob_hex in str(error.value)
    loose.write_bytes(b"not zlib")
    with pytest.raises(CorruptObject):
        Repo.open(path, clock=UnixClock()).store().get("k")
    loose.unlink()
    with pytest.raises(MissingObject) as missing:
        Repo.open(path, clock=UnixClock()).store().get("k")
    assert blob_hex in str(missing.value)
    # A damaged byte inside one of our packs.
    store = disk_repo.store()
    store.set("packed", b"in a pack " * 20)
    (pack,) = [
        p
        for p in (Path(path) / "objects" / "pack").glob("*.pack")
        if b"in a pack" not in p.read_bytes()
    ]
    del pack
    damaged = Repo.open(path, clock=UnixClock())
    for pack_file in (Path(path) / "objects" / "pack").glob("*.pack"):
        data = bytearray(pack_file.read_bytes())
        data[-30] ^= 0xFF  # inside the last object's compressed data
        os.chmod(pack_file, 0o644)
        pack_file.write_bytes(bytes(data))
    with pytest.raises(CorruptObject):
        damaged.store().get("packed")


def test_bad_ref_is_reported(disk_repo: Repo) -> None:
    disk_repo.store().set("k", b"v")
    path = disk_repo.path
    assert path is not None
    (Path(path) / "refs" / "heads" / "main").write_text("garbage\n")
    with pytest.raises(BadRef) as error:
        disk_repo.store().get("k")
    assert "refs/heads/main" in str(error.value)


def test_truncated_pack_is_rejected(disk_repo: Repo) -> None:
    _fill(disk_repo)
    data = disk_repo.export_pack()
    other = Repo.memory(clock=UnixClock())
    with pytest.raises(CorruptObject):
        other.import_pack(data[: len(data) // 2])
    added = other.import_pack(data)
    assert len(added) == len(set(added))
    other.set_head("main", disk_repo.head("main"))
    assert other.store().get("feature.txt") == b"feature\n"


def test_import_git_pack_with_deltas(tmp_path: Path, git: GitRunner) -> None:
    work = tmp_path / "w"
    work.mkdir()
    git("init", "-q", cwd=work)
    for i in range(5):
        (work / "f").write_text("common line\n" * 50 + f"version {i}\n")
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", f"v{i}", cwd=work)
    head = git("rev-parse", "HEAD", cwd=work).strip()
    import subprocess

    raw = subprocess.run(
        ["git", "pack-objects", "--stdout", "--revs"],
        cwd=work,
        input=b"HEAD\n",
        capture_output=True,
        check=True,
    ).stdout
    repo = Repo.memory(clock=UnixClock())
    repo.import_pack(raw)
    repo.set_head("main", head)
    assert repo.store().get("f").endswith(b"version 4\n")
    assert len(repo.store().history()) == 5


def test_merged_packs_hold_deltas_git_accepts(tmp_path: Path, git: GitRunner) -> None:
    path = str(tmp_path / "d.git")
    repo = Repo.init(path, merge_packs_after=4, clock=UnixClock())
    store = repo.store()
    for commit in range(60):
        with store.with_tree(f"commit {commit}") as tx:
            for key in range(commit * 5, commit * 5 + 5):
                tx.set(f"big/k{key % 200:03d}", b"version %d of %d\n" % (commit, key))
    repo.gc()
    packs = list((tmp_path / "d.git" / "objects" / "pack").glob("*.idx"))
    assert len(packs) == 1
    verify = git("verify-pack", "-v", str(packs[0]), cwd=tmp_path)
    assert "chain length = 1:" in verify  # directory versions stored as deltas
    git("fsck", "--strict", cwd=path)
    fresh = Repo.open(path, clock=UnixClock()).store()
    for key in range(295, 300):
        assert fresh.get(f"big/k{key % 200:03d}") == b"version 59 of %d\n" % key
    assert len(fresh.history()) == 60
    git("clone", "-q", path, str(tmp_path / "clone"), cwd=tmp_path)
    assert (tmp_path / "clone" / "big" / "k100").read_bytes() == b"version 20 of 100\n"
    repo.close()


def test_gc_merges_git_made_packs_too(tmp_path: Path, git: GitRunner) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", cwd=work)
    for i in range(8):
        (work / "f").write_text("shared line\n" * 40 + f"version {i}\n")
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", f"v{i}", cwd=work)
    git("gc", "-q", cwd=work)  # one git pack, with OFS deltas
    repo = Repo.open(str(work), clock=UnixClock())
    store = repo.store()
    for i in range(5):
        store.set(f"ours/{i}", b"%d" % i)
    repo.gc()
    packs = list((work / ".git" / "objects" / "pack").glob("*.pack"))
    assert len(packs) == 1
    git("fsck", "--strict", cwd=work)
    fresh = Repo.open(str(work), clock=UnixClock()).store()
    assert fresh.get("f").endswith(b"version 7\n")
    assert fresh.get("ours/4") == b"4"
    assert len(fresh.history()) == 13
    repo.close()


def test_big_directories_stored_then_deflated(tmp_path: Path, git: GitRunner) -> None:
    path = str(tmp_path / "big.git")
    repo = Repo.init(path, merge_packs_after=4, clock=UnixClock())
    store = repo.store()
    with store.with_tree("a thousand keys") as tx:
        for key in range(1000):
            tx.set(f"k{key:04d}", b"%d" % key)
    tree_size = len(repo.backend.read(bytes.fromhex(store.history()[0].tree))[1])
    assert tree_size > 16384  # big enough to be stored, not deflated, at first
    for commit in range(9):
        store.set(f"k{commit:04d}", b"changed %d" % commit)
    git("fsck", "--strict", cwd=path)
    repo.gc()
    git("fsck", "--strict", cwd=path)
    (index,) = (tmp_path / "big.git" / "objects" / "pack").glob("*.idx")
    trees = [
        line.split()
        for line in git("verify-pack", "-v", str(index), cwd=tmp_path).splitlines()
        if " tree " in line
    ]
    assert len(trees) == 10
    # sha, type, size, size in pack, offset[, depth, base]: one whole tree,
    # deflated, and nine versions stored as deltas.
    whole = [fields for fields in trees if len(fields) == 5]
    assert len(whole) == 1 and int(whole[0][3]) < int(whole[0][2])  # stored would be larger
    assert all(int(fields[3]) < 200 for fields in trees if len(fields) == 7)
    fresh = Repo.open(path, clock=UnixClock()).store()
    assert fresh.get("k0003") == b"changed 3" and fresh.get("k0999") == b"999"
    repo.close()
