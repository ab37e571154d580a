"""A push over HTTP is written to disk as it arrives, not held in memory.

``looming store serve`` runs as its own process; the real ``git push``
sends it a pack far larger than git's ``http.postBuffer`` (so chunked),
while a thread samples the server's resident anonymous memory. Before the
body was spooled, the server held the whole pack two to three times over.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from looming.store import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner, run_git

TOKEN = "memory-token-0123456789abcdef"
MIB = 1 << 20


def _anon_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no RssAnon in /proc status")


@contextmanager
def _server(path: Path, *extra: str) -> Iterator[tuple[int, int]]:
    """``looming store serve`` on a free port: (port, pid)."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "looming.store.cli",
            "-C",
            str(path),
            "serve",
            "--port",
            "0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "LOOMING_STORE_TOKEN": TOKEN},
    )
    try:
        assert server.stdout is not None
        found = re.search(rb"http://127\.0\.0\.1:(\d+)/", server.stdout.readline())
        assert found is not None
        yield int(found.group(1)), server.pid
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _commit_random_files(git: GitRunner, work: Path, count: int, size: int) -> None:
    for number in range(count):
        (work / f"big{number}.bin").write_bytes(os.urandom(size))
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "big files", cwd=work)


def test_a_large_push_is_not_held_in_the_servers_memory(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "served.git"
    repo = Repo.init(str(path), clock=UnixClock())
    repo.store().set("a", b"1")
    repo.close()
    with _server(path) as (port, pid):
        url = f"http://u:{TOKEN}@127.0.0.1:{port}/"
        git("clone", "-q", url, "work", cwd=tmp_path)
        work = tmp_path / "work"
        _commit_random_files(git, work, 16, 2 * MIB)  # 32 MiB, random: a 32 MiB pack
        before = _anon_mib(pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.005):
                try:
                    peak[0] = max(peak[0], _anon_mib(pid))
                except OSError:
                    return

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            git("push", "-q", url, "HEAD:main", cwd=work)
        finally:
            done.set()
            sampler.join()
    # Held whole, the body alone would be 32 MiB (it was 2-3 copies).
    assert peak[0] - before < 16, f"resident memory grew by {peak[0] - before} MiB"
    store = Repo.open(str(path), clock=UnixClock()).store()
    assert store.get("big7.bin") == (work / "big7.bin").read_bytes()
    run_git("fsck", "--strict", "--no-dangling", cwd=path)


def test_a_push_over_the_limit_gets_413_and_leaves_nothing(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "served.git"
    repo = Repo.init(str(path), clock=UnixClock())
    head = repo.store().set("a", b"1")
    repo.close()
    with _server(path, "--max-body-bytes", str(3 * MIB)) as (port, _pid):
        url = f"http://u:{TOKEN}@127.0.0.1:{port}/"
        git("clone", "-q", url, "work", cwd=tmp_path)
        files_before = sorted(p for p in path.rglob("*") if "looming-spares" not in p.parts)
        work = tmp_path / "work"
        _commit_random_files(git, work, 3, 2 * MIB)  # 6 MiB, sent chunked
        try:
            git("push", "-q", url, "HEAD:main", cwd=work)
        except AssertionError as refused:
            assert "413" in str(refused)
        else:
            raise AssertionError("a push over --max-body-bytes was taken")
        files_after = sorted(p for p in path.rglob("*") if "looming-spares" not in p.parts)
    assert Repo.open(str(path), clock=UnixClock()).head("main") == head
    assert files_after == files_before  # the spooled body was an unnamed file
