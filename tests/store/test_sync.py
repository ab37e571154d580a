"""Replicas over the Git protocol, against the real ``git`` CLI and ``git daemon``."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.store import sync
from looming.store.errors import RefChanged
from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner


def _git_repo(path: Path, git: GitRunner, files: dict[str, str]) -> None:
    path.mkdir()
    git("init", "-q", cwd=path)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "from git", cwd=path)


def test_pull_from_git_repository_merges(tmp_path: Path, git: GitRunner) -> None:
    upstream = tmp_path / "upstream"
    _git_repo(upstream, git, {"a.txt": "a\n", "dir/b.txt": "b\n"})
    repo = sync.clone(str(upstream), str(tmp_path / "replica.git"), clock=UnixClock())
    store = repo.store()
    assert store.get("dir/b.txt") == b"b\n"
    store.set("local.txt", b"local\n")
    (upstream / "a.txt").write_text("a changed\n")
    git("commit", "-q", "-am", "upstream change", cwd=upstream)
    result = sync.pull(store, str(upstream))
    assert result.ok and not result.fast_forward
    assert store.get("a.txt") == b"a changed\n" and store.get("local.txt") == b"local\n"
    git("fsck", "--strict", cwd=tmp_path / "replica.git")
    repo.close()


def test_push_to_bare_git_repository(tmp_path: Path, git: GitRunner) -> None:
    bare = tmp_path / "bare.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    repo = Repo.init(str(tmp_path / "store.git"), clock=UnixClock())
    store = repo.store()
    for i in range(10):
        store.set(f"k/{i}", b"%d\n" % i)
    sync.push(repo, str(bare), "main")
    git("fsck", "--strict", cwd=bare)
    assert git("log", "--format=%s", "-1", "main", cwd=bare).strip() == "set k/9"
    assert git("show", "main:k/3", cwd=bare) == "3\n"
    # A second replica races ahead; pushing without pulling is refused.
    other = sync.clone(str(bare), str(tmp_path / "other.git"), clock=UnixClock())
    other.store().set("other", b"o\n")
    sync.push(other, str(bare), "main")
    store.set("mine", b"m\n")
    with pytest.raises(RefChanged):
        sync.push(repo, str(bare), "main")
    assert sync.pull(store, str(bare)).ok
    sync.push(repo, str(bare), "main")
    assert git("show", "main:other", cwd=bare) == "o\n"
    assert git("show", "main:mine", cwd=bare) == "m\n"
    repo.close()
    other.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    base = tmp_path / "served"
    base.mkdir()
    port = _free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # wait until it accepts connections
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        yield f"git://127.0.0.1:{port}", base
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_git_protocol_both_ways(
    git_daemon: tuple[str, Path], tmp_path: Path, git: GitRunner
) -> None:
    url, base = git_daemon
    repo = Repo.init(str(base / "store.git"), clock=UnixClock())
    store = repo.store()
    store.set("hello.txt", b"served by git daemon\n")
    # git clones our store over git://
    git("clone", "-q", f"{url}/store.git", str(tmp_path / "clone"), cwd=tmp_path)
    assert (tmp_path / "clone" / "hello.txt").read_text() == "served by git daemon\n"
    # git pushes to our store over git://
    (tmp_path / "clone" / "pushed.txt").write_text("pushed by git\n")
    git("add", ".", cwd=tmp_path / "clone")
    git("commit", "-q", "-m", "push from git", cwd=tmp_path / "clone")
    git("push", "-q", "origin", "main", cwd=tmp_path / "clone")
    assert store.get("pushed.txt") == b"pushed by git\n"
    # another store fetches and pushes over git://
    replica = sync.clone(f"{url}/store.git", str(tmp_path / "replica.git"), clock=UnixClock())
    replica_store = replica.store()
    assert replica_store.get("pushed.txt") == b"pushed by git\n"
    replica_store.set("from-replica", b"r\n")
    sync.push(replica, f"{url}/store.git", "main")
    assert store.get("from-replica") == b"r\n"
    git("fsck", "--strict", cwd=base / "store.git")
    repo.close()
    replica.close()
