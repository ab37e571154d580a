"""Fixtures for the store tests: repositories in temporary directories and
a helper to run the real ``git`` CLI on them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from looming.store.repo import Repo
from looming.unix.clock import UnixClock

GitRunner = Callable[..., str]

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Git Peer",
    "GIT_AUTHOR_EMAIL": "peer@example.invalid",
    "GIT_COMMITTER_NAME": "Git Peer",
    "GIT_COMMITTER_EMAIL": "peer@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def run_git(*args: str, cwd: str | Path, input: bytes | None = None) -> str:
    env = dict(os.environ)
    env.update(_GIT_ENV)
    env["HOME"] = str(cwd)
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always", *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode("utf-8", "replace")


@pytest.fixture
def git() -> GitRunner:
    return run_git


@pytest.fixture
def disk_repo(tmp_path: Path) -> Iterator[Repo]:
    repo = Repo.init(str(tmp_path / "store.git"), clock=UnixClock())
    yield repo
    repo.close()


@pytest.fixture(params=["memory", "disk"])
def any_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    repo = (
        Repo.memory(clock=UnixClock())
        if request.param == "memory"
        else Repo.init(str(tmp_path / "store.git"), clock=UnixClock())
    )
    yield repo
    repo.close()
