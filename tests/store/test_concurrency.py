"""Concurrent writers (threads and processes) and writers killed mid-write."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner

WRITER = """
import sys
from looming.store.repo import Repo
from looming.unix.clock import UnixClock
path, name, count, threshold = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
repo = Repo.open(path, merge_packs_after=threshold, clock=UnixClock())
store = repo.store()
for i in range(count):
    with store.with_tree(f"{name} batch {i}") as tx:
        for j in range(5):
            tx.set(f"{name}/d{j}/k{i}", b"%d" % i)
    print(i, flush=True)
"""


def test_threads_write_concurrently(any_repo: Repo) -> None:
    store = any_repo.store()
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(40):
                store.set(f"{name}/{i}", name.encode())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.history()) == 160
    for n in range(4):
        assert len(store.list(f"t{n}")) == 40


def test_processes_write_concurrently(disk_repo: Repo, git: GitRunner) -> None:
    path = disk_repo.path
    assert path is not None
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, path, f"p{n}", "30", "32"], stdout=subprocess.DEVNULL
        )
        for n in range(3)
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    store = Repo.open(path, clock=UnixClock()).store()
    assert len(store.history()) == 90
    for n in range(3):
        for j in range(5):
            assert len(store.list(f"p{n}/d{j}")) == 30
    git("fsck", "--strict", cwd=path)


def test_killed_writers_leave_a_valid_repository(tmp_path: Path, git: GitRunner) -> None:
    chooser = random.Random(20261126)
    path = str(tmp_path / "crash.git")
    Repo.init(path, clock=UnixClock()).close()
    committed = 0
    for round_number in range(6):
        # Merging packs every 4 commits makes kills land inside merges too.
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, path, f"r{round_number}", "1000", "4"],
            stdout=subprocess.PIPE,
        )
        assert writer.stdout is not None
        wait_for = chooser.randrange(1, 40)
        for _ in range(wait_for):
            assert writer.stdout.readline()
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        committed += wait_for
        git("fsck", "--strict", "--no-dangling", cwd=path)
        repo = Repo.open(path, clock=UnixClock())
        store = repo.store()
        history = store.history()
        assert len(history) >= committed
        # Every committed batch is whole: five keys per commit.
        for info in history[:5]:
            name, _, index = info.message.strip().partition(" batch ")
            for j in range(5):
                assert repo.at(info.id).get(f"{name}/d{j}/k{index}") == index.encode()
        store.set("after-crash", b"writable")
        repo.close()


def test_gc_removes_what_killed_writers_left(tmp_path: Path, git: GitRunner) -> None:
    import os

    class LaterClock:
        def now_ns(self) -> int:
            return 4_000_000_000 * 1_000_000_000

        def now(self) -> float:
            return 4_000_000_000.0

        def utc_offset_s(self) -> int:
            return 0

    path = tmp_path / "s.git"
    repo = Repo.init(str(path), clock=LaterClock())
    repo.store().set("k", b"v")
    stray_pack = path / "objects" / "pack" / ("pack-" + "1" * 40 + ".pack")
    stray_index = path / "objects" / "pack" / ("pack-" + "2" * 40 + ".idx.tmp")
    stray_pack.write_bytes(b"PACK half written")
    stray_index.write_bytes(b"half")
    os.utime(stray_pack, (1_000_000_000, 1_000_000_000))
    os.utime(stray_index, (1_000_000_000, 1_000_000_000))
    repo.gc()
    assert not stray_pack.exists() and not stray_index.exists()
    assert repo.store().get("k") == b"v"
    git("fsck", "--strict", cwd=path)
    repo.close()


def test_readers_survive_a_writer_merging_packs(disk_repo: Repo) -> None:
    path = disk_repo.path
    assert path is not None
    disk_repo.store().set("w0/d0/k0", b"0")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, path, "w", "60", "2"], stdout=subprocess.PIPE
    )
    assert writer.stdout is not None
    reader = Repo.open(path, clock=UnixClock())
    seen = 0
    for line in writer.stdout:
        index = int(line)
        # A fresh store each time: no cached objects, so reads go to packs
        # that the writer keeps merging and deleting.
        store = Repo.open(path, clock=UnixClock()).store()
        head = store.head
        assert head is not None
        assert store.get(f"w/d4/k{index}") == b"%d" % index
        assert reader.store().get(f"w/d0/k{index}") == b"%d" % index
        seen += 1
    assert writer.wait(timeout=60) == 0
    assert seen == 60
    reader.close()


def test_commits_use_spare_files_made_while_idle(disk_repo: Repo, git: GitRunner) -> None:
    import os
    import time

    from looming.store.gitbackend import GitBackend
    from looming.store.spares import IDLE_SECONDS, SPARE_DIR

    backend = disk_repo.backend
    assert isinstance(backend, GitBackend) and disk_repo.path is not None
    store = disk_repo.store()
    store.set("first", b"1")  # starts the thread; it fills the pool once idle
    spares = os.path.join(backend.git_dir, SPARE_DIR)
    # Wait until the pool is full (its lease file beside the spares): until
    # then the thread may add a spare between the listing below and the
    # commit, and the commit would take that one.
    full = backend._spares.keep + 1
    for _ in range(400):  # bounded wait for the idle thread
        if len(os.listdir(spares)) >= full:
            break
        time.sleep(IDLE_SECONDS / 2)
    before = set(os.listdir(spares))
    assert len(before) == full
    store.set("second", b"2")
    # The pack and its index were spares, renamed into place, and the
    # ref's lock was one, linked into place.
    assert len(before - set(os.listdir(spares))) == 3
    git("fsck", "--strict", cwd=disk_repo.path)
    disk_repo.close()
    # Closing removes this process's unused spares.
    assert os.listdir(spares) == []
    assert Repo.open(disk_repo.path, clock=UnixClock()).store().get("second") == b"2"


def test_a_forked_child_takes_the_lock_for_itself(tmp_path: Path, git: GitRunner) -> None:
    import os
    import select

    path = str(tmp_path / "fork.git")
    repo = Repo.init(path, fold_when_idle=None, clock=UnixClock())
    repo.store().set("before", b"fork")
    read_end, write_end = os.pipe()
    with repo.backend.writer_lock():  # held by the parent across the fork
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(read_end)
                repo.store().set("child", b"wrote")  # must wait for the parent
                repo.close()
                os.write(write_end, b"ok")
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        # While the parent holds the lock the child cannot commit.
        assert select.select([read_end], [], [], 0.5)[0] == []
    assert select.select([read_end], [], [], 60)[0] == [read_end]
    assert os.read(read_end, 2) == b"ok"
    os.close(read_end)
    assert os.waitpid(pid, 0)[1] == 0
    repo.store().set("after", b"parent")
    git("fsck", "--strict", "--no-dangling", cwd=path)
    fresh = Repo.open(path, clock=UnixClock())
    assert [fresh.store().get(k) for k in ("before", "child", "after")] == [
        b"fork",
        b"wrote",
        b"parent",
    ]
    fresh.close()
    repo.close()
