"""``looming store`` from the command line: run() and ``python -m``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from looming.store import cli
from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="looming store")
    cli.add_arguments(parser)
    code = cli.run(parser.parse_args(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_session(tmp_path: Path, capsys: pytest.CaptureFixture[str], git: GitRunner) -> None:
    repo = str(tmp_path / "r.git")
    assert run(capsys, "init", repo)[0] == 0
    assert run(capsys, "-C", repo, "set", "a/b", "hello", "-m", "first")[0] == 0
    (tmp_path / "value").write_bytes(b"from file")
    assert run(capsys, "-C", repo, "set", "c", "--file", str(tmp_path / "value"))[0] == 0
    assert run(capsys, "-C", repo, "ls") == (0, "a/\nc\n", "")
    assert run(capsys, "-C", repo, "tree") == (0, "a/b\nc\n", "")
    assert run(capsys, "-C", repo, "get", "c")[1] == "from file"
    code, out, _ = run(capsys, "-C", repo, "log")
    assert code == 0 and [line.split(" ", 1)[1] for line in out.splitlines()] == ["set c", "first"]
    assert run(capsys, "-C", repo, "branch", "feature")[0] == 0
    assert run(capsys, "-C", repo, "-b", "feature", "set", "f", "feature")[0] == 0
    assert run(capsys, "-C", repo, "branch")[1] == "  feature\n* main\n"
    code, out, _ = run(capsys, "-C", repo, "merge", "feature")
    assert code == 0 and out.startswith("fast-forward to ")
    assert run(capsys, "-C", repo, "rm", "a")[0] == 0
    assert run(capsys, "-C", repo, "ls")[1] == "c\nf\n"
    # a conflict: listed on stderr, exit 1, nothing committed
    run(capsys, "-C", repo, "-b", "feature", "set", "c", "theirs")
    run(capsys, "-C", repo, "set", "c", "ours")
    code, _out, err = run(capsys, "-C", repo, "merge", "feature")
    assert code == 1 and "conflict: c" in err
    # clone, push and pull between two repositories
    clone = str(tmp_path / "clone.git")
    assert run(capsys, "clone", repo, clone)[0] == 0
    assert run(capsys, "-C", clone, "set", "new", "from clone")[0] == 0
    assert run(capsys, "-C", clone, "push", repo)[0] == 0
    assert Repo.open(repo, clock=UnixClock()).store().get("new") == b"from clone"
    run(capsys, "-C", repo, "set", "back", "to clone")
    assert run(capsys, "-C", clone, "pull", repo)[0] == 0
    assert run(capsys, "-C", clone, "get", "back")[1] == "to clone"
    code, out, _ = run(capsys, "-C", clone, "fetch", repo)
    assert code == 0 and "feature" in out
    git("fsck", "--strict", cwd=repo)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "nope"], "no such key"),
        (["set", "a//b", "x"], "empty"),
        (["branch", "bad..name"], "not a valid"),
        (["merge", "no-such-branch"], "neither a commit id nor a branch"),
        (["ls", "missing"], "nothing at"),
        (["pull", "/nonexistent/remote"], "fetch from /nonexistent/remote failed"),
    ],
)
def test_user_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    repo = str(tmp_path / "r.git")
    run(capsys, "init", repo)
    run(capsys, "-C", repo, "set", "k", "v")
    code, _out, err = run(capsys, "-C", repo, *argv)
    assert code == 2
    assert err.startswith("looming store: ") and message in err and "Traceback" not in err


def test_not_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "-C", str(tmp_path), "ls")
    assert code == 2 and "not a Git repository" in err


def test_python_m_and_help(tmp_path: Path) -> None:
    repo = str(tmp_path / "r.git")
    done = subprocess.run(
        [sys.executable, "-m", "looming.store.cli", "init", repo], capture_output=True, check=False
    )
    assert done.returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "looming.store.cli", "-C", repo, "set", "k"],
        input=b"from stdin",
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "looming.store.cli", "-C", repo, "get", "k"],
        capture_output=True,
        check=False,
    )
    assert done.stdout == b"from stdin"


@pytest.mark.parametrize(
    "command",
    [
        "init",
        "get",
        "set",
        "rm",
        "ls",
        "tree",
        "log",
        "branch",
        "merge",
        "clone",
        "fetch",
        "pull",
        "push",
        "watch",
        "serve",
        "resolve",
        "gc",
    ],
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="looming store")
    cli.add_arguments(parser)
    with pytest.raises(SystemExit) as done:
        parser.parse_args([command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: looming store {command}")


def test_watch_command(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path / "r.git"), clock=UnixClock())
    store = repo.store()
    store.set("seed", b"0")
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "looming.store.cli",
            "-C",
            str(tmp_path / "r.git"),
            "watch",
            "w",
            "--count",
            "2",
        ],
        stdout=subprocess.PIPE,
    )
    assert watcher.stdout is not None
    assert watcher.stdout.readline().startswith(b"watching main")
    store.set("other", b"x")
    first = store.set("w/a", b"1")
    second = store.set("w/b", b"2")
    out, _ = watcher.communicate(timeout=30)
    lines = out.decode().splitlines()
    assert [line.split()[1] for line in lines] == [first, second]
    assert lines[1].split()[2] == "w/b"


def test_serve_stops_on_sigterm_and_leaves_the_store_compact(
    tmp_path: Path, git: GitRunner
) -> None:
    import base64
    import os
    import re
    import signal
    import urllib.request

    path = tmp_path / "served.git"
    Repo.init(str(path), clock=UnixClock()).close()
    token = "serve-token-0123456789abcdef"
    server = subprocess.Popen(
        [sys.executable, "-m", "looming.store.cli", "-C", str(path), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        env={**os.environ, "LOOMING_STORE_TOKEN": token},
    )
    try:
        assert server.stdout is not None
        found = re.search(rb"http://127\.0\.0\.1:(\d+)/", server.stdout.readline())
        assert found is not None
        assert server.stdout.readline().startswith(b"access: writes need the token")
        credentials = base64.b64encode(f"me:{token}".encode()).decode()
        for number in range(3):
            request = urllib.request.Request(
                f"http://127.0.0.1:{int(found.group(1))}/api/main/set/k{number}",
                data=b"v%d" % number,
                method="PUT",
                headers={"Authorization": f"Basic {credentials}"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # Closed on the way out: one pack holds the three commits, no spare is left.
    assert len(list((path / "objects" / "pack").glob("*.pack"))) == 1
    assert [p.name for p in (path / "looming-spares").iterdir()] == []
    git("fsck", "--strict", "--no-dangling", cwd=str(path))
    assert Repo.open(str(path), clock=UnixClock()).store().get("k2") == b"v2"
