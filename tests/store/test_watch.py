"""Watches: ordered, serial notifications, also for updates by other processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

from looming.store.repo import Repo
from looming.store.watch import WatchEvent


class Collector:
    def __init__(self, expected: int) -> None:
        self.events: list[WatchEvent] = []
        self.expected = expected
        self.done = threading.Event()
        self.active = 0
        self.overlaps = 0
        self.lock = threading.Lock()

    def __call__(self, event: WatchEvent) -> None:
        with self.lock:
            self.active += 1
            if self.active > 1:
                self.overlaps += 1
        self.events.append(event)
        with self.lock:
            self.active -= 1
        if len(self.events) >= self.expected:
            self.done.set()


def test_watch_branch_in_order(any_repo: Repo) -> None:
    store = any_repo.store()
    store.set("seed", b"0")
    collector = Collector(expected=20)
    watch = store.watch(collector)
    commits = [store.set(f"k{i % 3}", b"%d" % i) for i in range(20)]
    assert collector.done.wait(timeout=20)
    watch.stop()
    assert [event.new for event in collector.events] == commits
    assert [event.old for event in collector.events[1:]] == commits[:-1]
    assert collector.events[4].paths == (("k1",),)
    assert collector.overlaps == 0
    assert watch.errors == []


def test_watch_prefix_only_sees_its_paths(any_repo: Repo) -> None:
    store = any_repo.store()
    collector = Collector(expected=2)
    with store.watch(collector, prefix="watched"):
        store.set("other/a", b"1")
        first = store.set("watched/a", b"1")
        store.set("other/b", b"1")
        second = store.set("watched/deep/b", b"2")
        assert collector.done.wait(timeout=20)
    assert [event.new for event in collector.events] == [first, second]
    assert collector.events[1].paths == (("watched", "deep", "b"),)


def test_watch_sees_other_processes(disk_repo: Repo) -> None:
    path = disk_repo.path
    assert path is not None
    store = disk_repo.store()
    store.set("seed", b"0")
    collector = Collector(expected=10)
    with store.watch(collector):
        script = (
            "import sys\nfrom looming.store.repo import Repo\nfrom looming.unix.clock import UnixClock\n"
            "s = Repo.open(sys.argv[1], clock=UnixClock()).store()\n"
            "for i in range(10):\n    s.set('remote/%d' % i, b'x')\n"
        )
        subprocess.run([sys.executable, "-c", script, path], check=True, timeout=60)
        assert collector.done.wait(timeout=20)
    history = [info.id for info in store.history(limit=10)][::-1]
    # Several commits may land between two polls: each is still reported, in order.
    assert [event.new for event in collector.events] == history
    assert [event.paths for event in collector.events] == [(("remote", str(i)),) for i in range(10)]


def test_async_iterator(any_repo: Repo) -> None:
    store = any_repo.store()

    async def main() -> list[WatchEvent]:
        seen: list[WatchEvent] = []
        async with store.events(prefix="a") as events:
            await asyncio.to_thread(store.set, "a/1", b"1")
            await asyncio.to_thread(store.set, "b/1", b"1")
            await asyncio.to_thread(store.set, "a/2", b"2")
            async for event in events:
                seen.append(event)
                if len(seen) == 2:
                    break
        return seen

    seen = asyncio.run(main())
    assert [event.paths for event in seen] == [(("a", "1"),), (("a", "2"),)]
