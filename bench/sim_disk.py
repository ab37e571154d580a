"""What a sim node's storage costs, beside the same code on other backends.

Store commits per second (the real Repo/Store, 200 commits over 50 keys):
on a simulated disk (SimDiskBackend: a checksummed log, two ref slots),
in memory (MemoryBackend) and as a Git repository on the host
(GitBackend, durability "none" and "full"). kv_rw sets per second: the
simulated disk's log (SimKvRw) beside a host folder (DirectoryKvRw, one
fsync per set). Rounds are interleaved (ABAB); the median of each is
printed with its ratio to the in-memory store (commits) or to the host
folder (kv_rw sets).
Usage: python -P bench/sim_disk.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

from looming import __version__
from looming.devices.kv import KvRw
from looming.sim.devices import SimRandom
from looming.sim.disk import SimDisk
from looming.sim.diskstore import SimDiskBackend
from looming.sim.storage import SimKvRw
from looming.store.backend import MemoryBackend
from looming.store.repo import Repo
from looming.unix.clock import UnixClock
from looming.unix.kv import DirectoryKvRw

COMMITS = 200
SETS = 300


def new_disk() -> SimDisk:
    return SimDisk("bench", lambda: 0.0, SimRandom(1), lambda _kind, _text: None)


def commits_per_second(open_repo: Callable[[str], Repo]) -> float:
    folder = tempfile.mkdtemp(prefix="looming-bench-")
    try:
        repo = open_repo(folder)
        store = repo.store("main")
        started = time.perf_counter()
        for i in range(COMMITS):
            store.set(f"k{i % 50}", str(i).encode())
        took = time.perf_counter() - started
        repo.close()
        return COMMITS / took
    finally:
        shutil.rmtree(folder)


STORES: dict[str, Callable[[str], Repo]] = {
    "sim disk": lambda _f: Repo(SimDiskBackend.open(new_disk(), "d"), clock=UnixClock()),
    "memory": lambda _f: Repo(MemoryBackend(), clock=UnixClock()),
    "git none": lambda f: Repo.init(f, clock=UnixClock(), durability="none"),
    "git full": lambda f: Repo.init(f, clock=UnixClock(), durability="full"),
}


async def sets_per_second(open_kv: Callable[[str], Awaitable[KvRw]]) -> float:
    folder = tempfile.mkdtemp(prefix="looming-bench-")
    try:
        kv = await open_kv(folder)
        started = time.perf_counter()
        for i in range(SETS):
            await kv.set(f"k{i % 50}", str(i).encode() * 10)
        return SETS / (time.perf_counter() - started)
    finally:
        shutil.rmtree(folder)


async def _open_sim_kv(_folder: str) -> KvRw:
    return await SimKvRw.open(new_disk(), "bench", lambda: 0.0)


KVS: dict[str, Callable[[str], Awaitable[KvRw]]] = {
    "sim disk": _open_sim_kv,
    "host folder": DirectoryKvRw.connect,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    rounds = parser.parse_args().rounds
    commits: dict[str, list[float]] = {name: [] for name in STORES}
    sets: dict[str, list[float]] = {name: [] for name in KVS}
    for _ in range(rounds):
        for name, open_repo in STORES.items():
            commits[name].append(commits_per_second(open_repo))
        for name, open_kv in KVS.items():
            sets[name].append(asyncio.run(sets_per_second(open_kv)))
    print(f"looming {__version__}, Python {platform.python_version()}, {rounds} rounds (ABAB)")
    base = statistics.median(commits["memory"])
    print(f"store commits/s ({COMMITS} per round)          median   ratio to memory")
    for name, values in commits.items():
        median = statistics.median(values)
        print(f"  {name:12s} {median:26.0f} {median / base:10.2f}")
    base = statistics.median(sets["host folder"])
    print(f"kv_rw sets/s ({SETS} per round)               median   ratio to host folder")
    for name, values in sets.items():
        median = statistics.median(values)
        print(f"  {name:12s} {median:26.0f} {median / base:10.2f}")


if __name__ == "__main__":
    main()
