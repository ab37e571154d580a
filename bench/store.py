"""Benchmark: looming's store beside dulwich's object store and ``git fast-import``.

    .venv/bin/python bench/store.py [--quick] [--json PATH] [--commits N]

The workload (issue 6): N commits (1,000; 200 with --quick) of 10 keys each,
first spread under 100 directories, then all in one directory; then every
key read back at the head. Each system does the same work:

* looming, in memory and on disk (a Git repository), through ``with_tree``;
* dulwich, with its MemoryObjectStore and on disk with a DiskObjectStore,
  building blobs, trees and commits the way a dulwich user would;
* git fast-import fed one stream, read back with ``git cat-file --batch``.

Disk size is the bytes of the objects folder (files' sizes) with the writer
closed ("disk"; looming's is also shown right after the last commit with the
writer still open, "open": the per-commit packs it has not folded yet and
the retired packs it keeps as spares); for
reference the same history after ``git gc`` (which keeps the deltas it
finds, so it depends on the store's packing; "x gc" is the issue's size
goal), after ``git repack -a -d -f`` (deltas all git's own; "x gc-f"), and
after the store's own ``gc``. Other ratios are against fast-import.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

KEYS_PER_COMMIT = 10
Layout = Callable[[int], tuple[str, ...]]

LAYOUTS: dict[str, Layout] = {
    "100 dirs": lambda key: (f"d{key % 100:02d}", f"k{key:05d}"),
    "1 dir": lambda key: (f"k{key:05d}",),
}


@dataclass
class Result:
    system: str
    layout: str
    commits: int
    commits_per_s: float
    reads_per_s: float
    disk_bytes: int | None  # with the writer closed
    gc_bytes: int | None = None  # the same history after `git gc`
    fresh_gc_bytes: int | None = None  # after `git repack -a -d -f` (deltas git's own)
    own_gc_bytes: int | None = None  # after the store's own gc
    open_bytes: int | None = None  # right after the last commit, the writer still open


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def value(key: int, commit: int) -> bytes:
    return b"value of key %d written by commit %d\n" % (key, commit)


def keys_of(commit: int) -> range:
    # Keys are rewritten: commit i touches keys (i*10 .. i*10+9) modulo the key space,
    # so later commits update earlier keys once all 10,000 exist.
    return range(commit * KEYS_PER_COMMIT, commit * KEYS_PER_COMMIT + KEYS_PER_COMMIT)


def folder_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def git_gc_bytes(git_dir: Path, scratch: Path, fresh: bool = False) -> int:
    """The objects' size after ``git gc`` of a copy, which keeps the deltas
    it finds (so it depends on the packing measured), or with ``fresh``
    after ``git repack -a -d -f``, whose deltas are all git's own."""
    copy = scratch / "gc-copy.git"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(git_dir, copy)
    if fresh:
        subprocess.run(["git", "repack", "-a", "-d", "-f", "-q"], cwd=copy, check=True)
        subprocess.run(["git", "prune-packed"], cwd=copy, check=True)
    else:
        subprocess.run(["git", "gc", "-q"], cwd=copy, check=True)
    size = folder_bytes(copy / "objects")
    shutil.rmtree(copy)
    return size


# ---------------------------------------------------------------- looming


def bench_looming(
    commits: int, layout: Layout, disk: Path | None
) -> tuple[float, float, int | None, int | None]:
    """Commits/s, reads/s, and the disk size right after the last commit and
    once the writer is closed."""
    from looming.store.repo import Repo

    repo = Repo.init(str(disk)) if disk is not None else Repo.memory()
    store = repo.store()
    started = time.perf_counter()
    for commit in range(commits):
        with store.with_tree(f"commit {commit}") as tx:
            for key in keys_of(commit):
                tx.set(layout(key), value(key, commit))
    commit_time = time.perf_counter() - started
    open_size = None
    if disk is not None:
        # The spares count too: retired packs wait there to be written over.
        open_size = folder_bytes(disk / "objects") + folder_bytes(disk / "looming-spares")
    head = repo.at(store.head or "")
    all_keys = commits * KEYS_PER_COMMIT
    paths = [layout(key) for key in range(all_keys)]
    for path in paths:  # warm the caches, then measure
        head.get(path)
    started = time.perf_counter()
    for path in paths:
        head.get(path)
    read_time = time.perf_counter() - started
    repo.close()
    closed_size = folder_bytes(disk / "objects") if disk is not None else None
    return commits / commit_time, all_keys / read_time, open_size, closed_size


def own_gc_bytes(disk: Path) -> int:
    from looming.store.repo import Repo

    with Repo.open(str(disk)) as repo:
        repo.gc()
    return folder_bytes(disk / "objects")


# ---------------------------------------------------------------- dulwich


def bench_dulwich(
    commits: int, layout: Layout, disk: Path | None
) -> tuple[float, float, int | None]:
    from dulwich.object_store import DiskObjectStore, MemoryObjectStore, tree_lookup_path
    from dulwich.objects import Blob, Commit, Tree

    if disk is not None:
        disk.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "--bare", str(disk)], check=True)
        store: MemoryObjectStore | DiskObjectStore = DiskObjectStore(str(disk / "objects"))
    else:
        store = MemoryObjectStore()
    # The working state a dulwich user keeps: directory name -> Tree.
    directories: dict[tuple[str, ...], Tree] = {(): Tree()}
    parent: bytes | None = None
    started = time.perf_counter()
    for commit in range(commits):
        new_objects = []
        touched: set[tuple[str, ...]] = set()

        def editable(directory: tuple[str, ...], touched: set[tuple[str, ...]] = touched) -> Tree:
            # dulwich trees are mutable and the store keeps the instance it
            # was given: copy a tree before its first change in each commit.
            if directory not in touched:
                touched.add(directory)
                old = directories.get(directory)
                directories[directory] = Tree.from_string(old.as_raw_string()) if old else Tree()
            return directories[directory]

        for key in keys_of(commit):
            path = layout(key)
            blob = Blob.from_string(value(key, commit))
            new_objects.append(blob)
            editable(path[:-1]).add(path[-1].encode(), 0o100644, blob.id)
        root = editable(())
        for directory in sorted(touched - {()}):
            tree = directories[directory]
            new_objects.append(tree)
            root.add(directory[0].encode(), 0o040000, tree.id)
        new_objects.append(root)
        made = Commit()
        made.tree = root.id
        made.parents = [parent] if parent else []
        made.author = made.committer = b"bench <bench@example.invalid>"
        made.author_time = made.commit_time = 1_700_000_000 + commit
        made.author_timezone = made.commit_timezone = 0
        made.message = b"commit %d\n" % commit
        new_objects.append(made)
        store.add_objects([(obj, None) for obj in new_objects])
        parent = made.id
    commit_time = time.perf_counter() - started
    assert parent is not None
    root_id = store[parent].tree
    all_keys = commits * KEYS_PER_COMMIT
    paths = [b"/".join(part.encode() for part in layout(key)) for key in range(all_keys)]

    def read(path: bytes) -> bytes:
        _mode, sha = tree_lookup_path(store.__getitem__, root_id, path)
        return store[sha].as_raw_string()

    # dulwich on disk keeps one pack per add_objects call and searches them
    # all on every lookup, so reading all keys takes minutes: time a sample.
    sample = paths if disk is None else paths[:: max(1, len(paths) // 500)]
    for path in sample[:100]:
        read(path)
    started = time.perf_counter()
    for path in sample:
        read(path)
    read_time = time.perf_counter() - started
    size = folder_bytes(disk / "objects") if disk is not None else None
    return commits / commit_time, len(sample) / read_time, size


# ---------------------------------------------------------------- git fast-import


def bench_fast_import(commits: int, layout: Layout, scratch: Path) -> tuple[float, float, int]:
    repo = scratch / "fast-import.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    chunks: list[bytes] = []
    for commit in range(commits):
        message = b"commit %d\n" % commit
        chunks.append(b"commit refs/heads/main\n")
        chunks.append(
            b"committer bench <bench@example.invalid> %d +0000\n" % (1_700_000_000 + commit)
        )
        chunks.append(b"data %d\n%s" % (len(message), message))
        for key in keys_of(commit):
            data = value(key, commit)
            chunks.append(
                b"M 100644 inline %s\ndata %d\n%s\n"
                % ("/".join(layout(key)).encode(), len(data), data)
            )
    stream = b"".join(chunks)
    started = time.perf_counter()
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=stream, check=True)
    commit_time = time.perf_counter() - started
    all_keys = commits * KEYS_PER_COMMIT
    request = b"".join(b"main:%s\n" % "/".join(layout(key)).encode() for key in range(all_keys))
    started = time.perf_counter()
    done = subprocess.run(
        ["git", "cat-file", "--batch"], cwd=repo, input=request, capture_output=True, check=True
    )
    read_time = time.perf_counter() - started
    assert done.stdout.count(b"blob ") >= all_keys
    return commits / commit_time, all_keys / read_time, folder_bytes(repo / "objects")


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 commits instead of 1,000")
    parser.add_argument("--commits", type=int, default=None)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    commits = args.commits or (200 if args.quick else 1000)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="looming-bench-store-") as scratch_name:
        scratch = Path(scratch_name)
        for layout_name, layout in LAYOUTS.items():
            progress(f"{layout_name}: git fast-import")
            c, r, size = bench_fast_import(commits, layout, scratch)
            results.append(Result("git fast-import", layout_name, commits, c, r, size))
            progress(f"{layout_name}: dulwich in memory")
            c, r, _ = bench_dulwich(commits, layout, None)
            results.append(Result("dulwich memory", layout_name, commits, c, r, None))
            progress(f"{layout_name}: dulwich on disk")
            c, r, size = bench_dulwich(commits, layout, scratch / "dulwich.git")
            results.append(Result("dulwich disk", layout_name, commits, c, r, size))
            progress(f"{layout_name}: looming in memory")
            c, r, _, _ = bench_looming(commits, layout, None)
            results.append(Result("looming memory", layout_name, commits, c, r, None))
            progress(f"{layout_name}: looming on disk")
            disk = scratch / "looming.git"
            c, r, open_size, size = bench_looming(commits, layout, disk)
            progress(f"{layout_name}: git gc of the looming repository, for the size reference")
            gc_size = git_gc_bytes(disk, scratch)
            fresh_size = git_gc_bytes(disk, scratch, fresh=True)
            own_gc = own_gc_bytes(disk)
            results.append(
                Result(
                    "looming disk",
                    layout_name,
                    commits,
                    c,
                    r,
                    size,
                    gc_bytes=gc_size,
                    fresh_gc_bytes=fresh_size,
                    own_gc_bytes=own_gc,
                    open_bytes=open_size,
                )
            )
            for leftover in ("fast-import.git", "dulwich.git", "looming.git"):
                shutil.rmtree(scratch / leftover, ignore_errors=True)
    print()
    print(
        f"store benchmark: {commits} commits x {KEYS_PER_COMMIT} keys, then every key read at the head"
    )
    print(
        f"python {platform.python_version()} on {platform.machine()}; ratios are against git fast-import"
    )
    header = (
        f"{'layout':9} {'system':16} {'commits/s':>10} {'x fi':>6} {'reads/s':>10} {'x fi':>6} "
        f"{'open KiB':>9} {'disk KiB':>9} {'own gc':>8} {'git gc':>8} {'x gc':>5} "
        f"{'gc -f':>8} {'x gc-f':>6}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        reference = next(
            r for r in results if r.layout == result.layout and r.system == "git fast-import"
        )
        disk = f"{result.disk_bytes / 1024:9.0f}" if result.disk_bytes is not None else f"{'-':>9}"
        opened = (
            f"{result.open_bytes / 1024:9.0f}" if result.open_bytes is not None else f"{'-':>9}"
        )
        gc = f"{result.gc_bytes / 1024:8.0f}" if result.gc_bytes is not None else f"{'-':>8}"
        own = (
            f"{result.own_gc_bytes / 1024:8.0f}" if result.own_gc_bytes is not None else f"{'-':>8}"
        )
        versus_gc = versus_fresh = ""
        fresh = f"{'-':>8}"
        if result.disk_bytes is not None and result.gc_bytes:
            versus_gc = f"{result.disk_bytes / result.gc_bytes:5.2f}"
        if result.disk_bytes is not None and result.fresh_gc_bytes:
            fresh = f"{result.fresh_gc_bytes / 1024:8.0f}"
            versus_fresh = f"{result.disk_bytes / result.fresh_gc_bytes:6.2f}"
        print(
            f"{result.layout:9} {result.system:16} {result.commits_per_s:10.0f} "
            f"{result.commits_per_s / reference.commits_per_s:6.2f} {result.reads_per_s:10.0f} "
            f"{result.reads_per_s / reference.reads_per_s:6.2f} {opened} {disk} {own} {gc} "
            f"{versus_gc:>5} {fresh} {versus_fresh:>6}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    sys.exit(main())
