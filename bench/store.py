"""Benchmark: looming's store on disk beside git fast-import and dulwich.

    .venv/bin/python bench/store.py [--quick] [--rounds N] [--writers N] [--json PATH]

Each workload runs every system once per round, the systems' order turned
round by round (A B C D, then B C D A, ...), so a slow spell of the machine
falls on all of them; the median of the rounds is reported. Before each
run (untimed) ``os.sync()`` writes out what the run before left unsynced,
so no system's first fsync pays for another's writes.

* ``batched``: commits of 10 keys each (looming: one ``with_tree``
  transaction per commit), spread under 100 directories.
* ``single``: commits of one key each (looming: ``Store.set``).
  looming runs with ``durability="full"``, the same with commits grouped
  10 to a ``Repo.batch()`` ("x10": one durable write per 10 commits), and
  ``"none"``; then git fast-import (one stream) and dulwich
  (``DiskObjectStore.add_objects`` per commit). What each makes durable
  (checked with ``strace -f -e fsync``): looming full, per commit (per
  batch for x10), three waits: the pack and its index fsynced together,
  then the pack folder together with the ref's lock file, then the ref's
  folder after the rename. git fast-import, with git's default
  ``core.fsync`` (the bench sets no ``core.fsync`` or
  ``core.fsyncMethod``; GIT_CONFIG_NOSYSTEM=1), fsyncs its one pack and
  index once, at the end of the stream, and neither the ref nor any
  folder, so a power cut can lose the run's ref update; it is the
  reference of the ratios. "git fast-import fsync=all" runs it with
  ``-c core.fsync=all`` (also the ref; still no folder). dulwich does
  not fsync.
* ``reads``: every key of the batched history read at the head, cold (a
  freshly opened repository) and warm (the same keys again); git reads
  with one ``git cat-file --batch``.
* ``writers``: N separate writer processes (600 by default; forked after
  import, as a CLI run would be after start-up), each opening the
  repository, setting one key and closing it; then the packs left and the
  objects' size against ``git repack -a -d -f`` and ``git gc`` of a copy.

Goals (issue 15): durability=full >= 0.8x fast-import batched and >= 200
single commits/s; size after the writers <= 1.2x ``git repack -a -d -f``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

KEYS_PER_COMMIT = 10
GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def key_path(key: int) -> tuple[str, str]:
    return (f"d{key % 100:02d}", f"k{key:05d}")


def value(key: int, commit: int) -> bytes:
    return b"value of key %d written by commit %d\n" % (key, commit)


def keys_of(commit: int, per_commit: int) -> range:
    return range(commit * per_commit, commit * per_commit + per_commit)


def folder_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def git(*args: str, cwd: Path, data: bytes | None = None) -> bytes:
    return subprocess.run(
        ["git", *args], cwd=cwd, input=data, capture_output=True, check=True, env=GIT_ENV
    ).stdout


# ---------------------------------------------------------------- writers


def looming_commits(durability: str, batch: int = 1) -> Callable[[Path, int, int], float]:
    def run(disk: Path, commits: int, per_commit: int) -> float:
        from looming.store import Repo
        from looming.unix.clock import UnixClock

        repo = Repo.init(str(disk), clock=UnixClock(), durability=durability)
        store = repo.store("main")
        started = time.perf_counter()
        for first in range(0, commits, batch):
            with repo.batch() if batch > 1 else contextlib.nullcontext():
                for commit in range(first, min(first + batch, commits)):
                    if per_commit == 1:
                        store.set(key_path(commit), value(commit, commit))
                        continue
                    with store.with_tree(f"commit {commit}") as tx:
                        for key in keys_of(commit, per_commit):
                            tx.set(key_path(key), value(key, commit))
        elapsed = time.perf_counter() - started
        repo.close()
        return commits / elapsed

    return run


def fast_import_commits(
    disk: Path, commits: int, per_commit: int, config: tuple[str, ...] = ()
) -> float:
    git("init", "-q", "--bare", str(disk), cwd=disk.parent)
    chunks: list[bytes] = []
    for commit in range(commits):
        message = b"commit %d\n" % commit
        chunks.append(b"commit refs/heads/main\n")
        chunks.append(b"committer bench <b@example.invalid> %d +0000\n" % (1_700_000_000 + commit))
        chunks.append(b"data %d\n%s" % (len(message), message))
        for key in keys_of(commit, per_commit):
            data = value(key, commit)
            name = "/".join(key_path(key)).encode()
            chunks.append(b"M 100644 inline %s\ndata %d\n%s\n" % (name, len(data), data))
    stream = b"".join(chunks)
    started = time.perf_counter()
    git(*config, "fast-import", "--quiet", cwd=disk, data=stream)
    return commits / (time.perf_counter() - started)


def dulwich_commits(disk: Path, commits: int, per_commit: int) -> float:
    from dulwich.object_store import DiskObjectStore
    from dulwich.objects import Blob, Commit, Tree

    git("init", "-q", "--bare", str(disk), cwd=disk.parent)
    store = DiskObjectStore(str(disk / "objects"))
    folders: dict[str, Tree] = {}
    root = Tree()
    parent: bytes | None = None
    started = time.perf_counter()
    for commit in range(commits):
        new: list[object] = []
        touched: set[str] = set()
        for key in keys_of(commit, per_commit):
            folder, name = key_path(key)
            blob = Blob.from_string(value(key, commit))
            new.append(blob)
            if folder not in touched:
                old = folders.get(folder)
                folders[folder] = Tree.from_string(old.as_raw_string()) if old else Tree()
                touched.add(folder)
            folders[folder].add(name.encode(), 0o100644, blob.id)
        root = Tree.from_string(root.as_raw_string())
        for folder in sorted(touched):
            new.append(folders[folder])
            root.add(folder.encode(), 0o040000, folders[folder].id)
        new.append(root)
        made = Commit()
        made.tree = root.id
        made.parents = [parent] if parent else []  # type: ignore[list-item]
        made.author = made.committer = b"bench <b@example.invalid>"
        made.author_time = made.commit_time = 1_700_000_000 + commit
        made.author_timezone = made.commit_timezone = 0
        made.message = b"commit %d\n" % commit
        new.append(made)
        store.add_objects([(obj, None) for obj in new])  # type: ignore[misc]
        parent = made.id
    elapsed = time.perf_counter() - started
    assert parent is not None
    (disk / "refs" / "heads" / "main").write_bytes(parent + b"\n")
    store.close()
    return commits / elapsed


WRITERS: dict[str, Callable[[Path, int, int], float]] = {
    "looming full": looming_commits("full"),
    "looming full x10": looming_commits("full", batch=10),
    "looming none": looming_commits("none"),
    "git fast-import": fast_import_commits,
    "git fast-import fsync=all": lambda disk, commits, per_commit: fast_import_commits(
        disk, commits, per_commit, ("-c", "core.fsync=all")
    ),
    "dulwich": dulwich_commits,
}


# ---------------------------------------------------------------- reads


def looming_reads(disk: Path, paths: list[tuple[str, str]]) -> tuple[float, float]:
    from looming.store import Repo
    from looming.unix.clock import UnixClock

    started = time.perf_counter()
    repo = Repo.open(str(disk), clock=UnixClock())
    head = repo.at(repo.head("main") or "")
    for path in paths:
        head.get(path)
    cold = len(paths) / (time.perf_counter() - started)
    started = time.perf_counter()
    for path in paths:
        head.get(path)
    warm = len(paths) / (time.perf_counter() - started)
    repo.close()
    return cold, warm


def git_reads(disk: Path, paths: list[tuple[str, str]]) -> tuple[float, float]:
    request = b"".join(b"main:%s\n" % "/".join(path).encode() for path in paths)
    rates = []
    for _pass in range(2):
        started = time.perf_counter()
        out = git("cat-file", "--batch", cwd=disk, data=request)
        rates.append(len(paths) / (time.perf_counter() - started))
        assert out.count(b" blob ") >= len(paths)
    return rates[0], rates[1]


def dulwich_reads(disk: Path, paths: list[tuple[str, str]]) -> tuple[float, float]:
    from dulwich.object_store import tree_lookup_path
    from dulwich.repo import Repo as DulwichRepo

    started = time.perf_counter()
    repo = DulwichRepo(str(disk))
    root = repo[repo.refs[b"refs/heads/main"]].tree  # type: ignore[attr-defined,index]
    encoded = [b"/".join(part.encode() for part in path) for path in paths]
    for path in encoded:
        repo.object_store[tree_lookup_path(repo.object_store.__getitem__, root, path)[1]]
    cold = len(paths) / (time.perf_counter() - started)
    started = time.perf_counter()
    for path in encoded:
        repo.object_store[tree_lookup_path(repo.object_store.__getitem__, root, path)[1]]
    warm = len(paths) / (time.perf_counter() - started)
    repo.close()
    return cold, warm


# ---------------------------------------------------------------- separate writers


def separate_writers(disk: Path, count: int) -> tuple[float, int, int, int, int]:
    """``count`` processes, each opening the repository, setting one key
    and closing it; (writers/s, packs, bytes, bytes after git repack -a -d
    -f, bytes after git gc)."""
    from looming.store import Repo
    from looming.unix.clock import UnixClock

    Repo.init(str(disk), clock=UnixClock()).close()
    started = time.perf_counter()
    for number in range(count):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                repo = Repo.open(str(disk), clock=UnixClock())
                repo.store("main").set(key_path(number), value(number, number))
                repo.close()
                code = 0
            finally:
                os._exit(code)
        _pid, status = os.waitpid(pid, 0)
        if status != 0:
            raise RuntimeError(f"writer {number} failed (status {status})")
    rate = count / (time.perf_counter() - started)
    packs = len(list((disk / "objects" / "pack").glob("*.pack")))
    size = folder_bytes(disk / "objects")
    sizes = []
    for command in (["repack", "-a", "-d", "-f", "-q"], ["gc", "-q"]):
        copy = disk.parent / "copy.git"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(disk, copy)
        git(*command, cwd=copy)
        git("prune-packed", cwd=copy)
        sizes.append(folder_bytes(copy / "objects"))
        shutil.rmtree(copy)
    return rate, packs, size, sizes[0], sizes[1]


# ---------------------------------------------------------------- main


def rounds_of(systems: list[str], rounds: int) -> list[list[str]]:
    """ABAB...: each round every system once, the order turned by one."""
    return [systems[r % len(systems) :] + systems[: r % len(systems)] for r in range(rounds)]


WORKLOADS = ("batched", "single", "reads", "writers")


def commit_rates(
    scratch: Path, workload: str, per_commit: int, commits: int, rounds: int
) -> dict[str, list[float]]:
    """Each writer's commits/s, one figure per round, rounds interleaved."""
    rates: dict[str, list[float]] = {name: [] for name in WRITERS}
    for number, order in enumerate(rounds_of(list(WRITERS), rounds)):
        for name in order:
            progress(f"{workload} round {number + 1}: {name}")
            disk = scratch / "w.git"
            shutil.rmtree(disk, ignore_errors=True)
            disk.mkdir()
            # Untimed: the writes of the system before (dulwich and
            # fast-import leave theirs unsynced, and the removal above is
            # metadata too) reach the disk now, not in the next system's
            # first fsync, which on ext4 would carry them all.
            os.sync()
            rates[name].append(WRITERS[name](disk, commits, per_commit))
    return rates


def read_rates(scratch: Path, commits: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Cold and warm keys/s of one batched history, written once by looming."""
    paths = [key_path(key) for key in range(commits * KEYS_PER_COMMIT)]
    reads: dict[str, list[tuple[float, float]]] = {"looming": [], "git": [], "dulwich": []}
    readers = {"looming": looming_reads, "git": git_reads, "dulwich": dulwich_reads}
    written = scratch / "read.git"
    written.mkdir()
    looming_commits("none")(written, commits, KEYS_PER_COMMIT)
    for number, order in enumerate(rounds_of(list(readers), rounds)):
        for name in order:
            progress(f"reads round {number + 1}: {name}")
            reads[name].append(readers[name](written, paths))
    return {
        name: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
        for name, v in reads.items()
    }


def workloads(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in WORKLOADS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(unknown) or text!r}; choose from {', '.join(WORKLOADS)}"
        )
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer commits and writers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commits", type=int, default=None, help="per round (default 300)")
    parser.add_argument("--writers", type=int, default=None, help="default 600")
    parser.add_argument(
        "--only",
        type=workloads,
        default=list(WORKLOADS),
        metavar="W[,W...]",
        help=f"run only these workloads ({', '.join(WORKLOADS)}; default all)",
    )
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    commits = args.commits or (100 if args.quick else 300)
    writers = args.writers or (100 if args.quick else 600)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="looming-bench-store-") as scratch_name:
        scratch = Path(scratch_name)
        for workload, per_commit in (("batched", KEYS_PER_COMMIT), ("single", 1)):
            if workload in args.only:
                results[workload] = commit_rates(
                    scratch, workload, per_commit, commits, args.rounds
                )
        if "reads" in args.only:
            results["reads"] = read_rates(scratch, commits, args.rounds)
        if "writers" in args.only:
            progress(f"{writers} separate writer processes")
            results["writers"] = separate_writers(scratch / "writers.git", writers)
    report(results, commits, writers)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def report(results: dict[str, object], commits: int, writers: int) -> None:
    import dulwich

    version = git("--version", cwd=Path.cwd()).decode().strip()
    print()
    print(
        f"store benchmark: python {platform.python_version()}, {version}, "
        f"dulwich {'.'.join(map(str, dulwich.__version__))}, {commits} commits per run"
    )
    for workload, keys in (("batched", KEYS_PER_COMMIT), ("single", 1)):
        if workload in results:
            report_rates(workload, keys, results[workload])
    print(
        "\nwhat is fsynced: looming full: per commit (x10: per batch of 10) the pack and its\n"
        "  index, then the pack folder with the ref's lock, then the ref's folder; git\n"
        "  fast-import (git's default core.fsync, no core.fsync/fsyncMethod set here): its\n"
        "  pack and index once per run, not the ref nor any folder; fsync=all: also the ref;\n"
        "  dulwich: nothing"
    )
    reads = results.get("reads")
    if reads is not None:
        report_reads(reads, commits)
    writer_results = results.get("writers")
    if writer_results is not None:
        report_writers(writer_results, writers)


def report_rates(workload: str, keys: int, rates: object) -> None:
    """Medians and x fast-import; for looming, the range of the per-round
    ratios too (each round's figures were taken side by side)."""
    assert isinstance(rates, dict)
    reference = statistics.median(rates["git fast-import"])
    print(f"\n{workload}: commits of {keys} key(s), commits/s (median), x fast-import")
    for name, values in rates.items():
        rate = statistics.median(values)
        line = f"  {name:25} {rate:10.0f}  {rate / reference:6.2f}x"
        if name.startswith("looming"):
            ratios = [v / g for v, g in zip(values, rates["git fast-import"], strict=True)]
            line += f"  (rounds {min(ratios):.2f}-{max(ratios):.2f}x)"
        print(line)


def report_reads(reads: object, commits: int) -> None:
    assert isinstance(reads, dict)
    print(f"\nreads of {commits * KEYS_PER_COMMIT} keys at the head, keys/s (cold, warm)")
    for name, (cold, warm) in reads.items():
        print(f"  {name:16} {cold:10.0f} {warm:10.0f}  x git {cold / reads['git'][0]:5.2f}")


def report_writers(writer_results: object, writers: int) -> None:
    assert isinstance(writer_results, tuple)
    rate, packs, size, repacked, gced = writer_results
    print(
        f"\n{writers} separate writers (one set each): {rate:.0f} writers/s, {packs} packs, "
        f"{size / 1024:.0f} KiB = {size / repacked:.2f}x git repack -a -d -f "
        f"({repacked / 1024:.0f} KiB), {size / gced:.2f}x git gc ({gced / 1024:.0f} KiB)"
    )


if __name__ == "__main__":
    sys.exit(main())
