"""The CLI's conflict workflow (merge --status, resolve, --continue, --abort),
its author and option-order handling, gc, pulls of unrelated histories, and
what ``serve`` says when it starts without credentials."""

from __future__ import annotations

import argparse
import os
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


@pytest.fixture
def conflicted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A repository whose main has a pending merge of ``feature``: ``c`` and
    ``d`` conflict, ``e`` merged cleanly."""
    repo = str(tmp_path / "r.git")
    run(capsys, "init", repo)
    run(capsys, "-C", repo, "set", "c", "base")
    run(capsys, "-C", repo, "set", "d", "base-d")
    run(capsys, "-C", repo, "branch", "feature")
    run(capsys, "-C", repo, "set", "c", "ours")
    run(capsys, "-C", repo, "rm", "d")
    run(capsys, "-C", repo, "set", "c", "theirs", "--branch", "feature")
    run(capsys, "-C", repo, "set", "d", "theirs-d", "--branch", "feature")
    run(capsys, "-C", repo, "set", "e", "clean", "--branch", "feature")
    code, _out, err = run(capsys, "-C", repo, "merge", "feature")
    assert code == 1 and "conflict: c" in err and "merge --status" in err
    return repo


def test_merge_status_resolve_continue(
    conflicted: str, capsys: pytest.CaptureFixture[str], git: GitRunner
) -> None:
    repo = conflicted
    head = Repo.open(repo, clock=UnixClock()).head("main")
    code, out, _ = run(capsys, "-C", repo, "merge", "--status")
    assert code == 0
    assert "c: " in out and "base   'base'" in out and "ours   'ours'" in out
    assert "theirs 'theirs'" in out and "ours   (absent)" in out and "2 unresolved" in out
    # The branch has not moved; a second merge is refused while one is pending.
    assert Repo.open(repo, clock=UnixClock()).head("main") == head
    code, _, err = run(capsys, "-C", repo, "merge", "feature")
    assert code == 2 and "pending" in err
    code, _, err = run(capsys, "-C", repo, "merge", "--continue")
    assert code == 2 and "2 conflicts are unresolved" in err
    code, _, err = run(capsys, "-C", repo, "resolve", "e", "--ours")
    assert code == 2 and "not in conflict" in err
    code, _, err = run(capsys, "-C", repo, "resolve", "c")
    assert code == 2 and "--ours or --theirs" in err
    assert run(capsys, "-C", repo, "resolve", "c", "both")[0] == 0
    assert run(capsys, "-C", repo, "resolve", "d", "--theirs")[0] == 0
    assert "all resolved" in run(capsys, "-C", repo, "merge", "--status")[1]
    code, out, _ = run(
        capsys, "--author", "Ada L <ada@example.org>", "-C", repo, "merge", "--continue"
    )
    assert code == 0 and out.startswith("merged: ")
    store = Repo.open(repo, clock=UnixClock()).store()
    assert [store.get(k) for k in ("c", "d", "e")] == [b"both", b"theirs-d", b"clean"]
    (info,) = store.history(1)
    assert len(info.parents) == 2 and info.parents[0] == head
    assert info.author == "Ada L <ada@example.org>"
    assert "no merge is pending" in run(capsys, "-C", repo, "merge", "--status")[1]
    git("fsck", "--strict", cwd=repo)
    # The pending merge's record was in a folder git ignores, and is gone.
    assert list((Path(repo) / "looming" / "merge").iterdir()) == []


def test_merge_abort_leaves_the_branch(conflicted: str, capsys: pytest.CaptureFixture[str]) -> None:
    repo = conflicted
    head = Repo.open(repo, clock=UnixClock()).head("main")
    assert run(capsys, "-C", repo, "resolve", "c", "--theirs")[0] == 0
    assert run(capsys, "-C", repo, "merge", "--abort")[0] == 0
    assert Repo.open(repo, clock=UnixClock()).head("main") == head
    code, _, err = run(capsys, "-C", repo, "merge", "--abort")
    assert code == 2 and "no merge is pending" in err
    # Merging again starts afresh, with no resolution remembered.
    assert run(capsys, "-C", repo, "merge", "feature")[0] == 1
    assert "2 unresolved" in run(capsys, "-C", repo, "merge", "--status")[1]


def test_continue_refuses_a_branch_that_moved(
    conflicted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = conflicted
    run(capsys, "-C", repo, "resolve", "c", "--ours")
    run(capsys, "-C", repo, "resolve", "d", "--ours")
    run(capsys, "-C", repo, "set", "z", "moved meanwhile")
    code, _, err = run(capsys, "-C", repo, "merge", "--continue")
    assert code == 2 and "moved since the merge began" in err
    assert Repo.open(repo, clock=UnixClock()).store().get("z") == b"moved meanwhile"


def test_options_after_the_subcommand_and_author(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], git: GitRunner
) -> None:
    repo = str(tmp_path / "r.git")
    run(capsys, "init", repo)
    assert run(capsys, "set", "k", "v", "-C", repo, "--branch", "side")[0] == 0
    assert run(capsys, "set", "--branch", "side", "--repo", repo, "k2", "v2")[0] == 0
    assert run(capsys, "-b", "other", "-C", repo, "set", "k3", "v3", "-b", "side")[0] == 0
    store = Repo.open(repo, clock=UnixClock()).store("side")
    assert [store.get(k) for k in ("k", "k2", "k3")] == [b"v", b"v2", b"v3"]
    assert Repo.open(repo, clock=UnixClock()).branches() == ["side"]
    run(capsys, "-C", repo, "set", "a", "1", "--author", "Grace H <grace@example.org>")
    log = git("log", "-1", "--format=%an|%ae|%cn|%ce", "main", cwd=repo).strip()
    assert log == "Grace H|grace@example.org|Grace H|grace@example.org"
    for bad in ("Grace", "<g@x>", "A <b> <c>", "A\nB <c>"):
        code, _, err = run(capsys, "-C", repo, "set", "a", "2", "--author", bad)
        assert code == 2 and "Name <email>" in err
    for argv in (["set", "--branch=-x", "k", "v"], ["set", "-b", "HEAD", "k", "v"]):
        code, _, err = run(capsys, "-C", repo, *argv)
        assert code == 2 and "not a valid branch name" in err
    code, _, err = run(capsys, "-C", repo, "set", ".GIT/config", "x")
    assert code == 2 and ".git" in err
    git("fsck", "--strict", cwd=repo)


def test_gc_compacts_many_writers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(tmp_path / "r.git")
    run(capsys, "init", repo)
    for number in range(12):
        # each a separate writer that never closes, as a CLI process
        writer = Repo.open(repo, merge_packs_after=1000, fold_when_idle=None, clock=UnixClock())
        writer.store().set(f"k{number}", b"v")
        writer.backend.flush()
    packs = list((Path(repo) / "objects" / "pack").glob("*.pack"))
    code, out, _ = run(capsys, "-C", repo, "gc")
    assert code == 0 and out.startswith("compacted ")
    after = list((Path(repo) / "objects" / "pack").glob("*.pack"))
    assert len(after) < max(len(packs), 2)
    store = Repo.open(repo, clock=UnixClock()).store()
    assert [store.get(f"k{n}") for n in range(12)] == [b"v"] * 12


def test_pull_of_unrelated_histories_needs_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours, theirs = str(tmp_path / "ours.git"), str(tmp_path / "theirs.git")
    run(capsys, "init", ours)
    run(capsys, "init", theirs)
    run(capsys, "-C", ours, "set", "a", "ours")
    run(capsys, "-C", theirs, "set", "b", "theirs")
    head = Repo.open(ours, clock=UnixClock()).head("main")
    code, _, err = run(capsys, "-C", ours, "pull", theirs)
    assert code == 2 and "unrelated histories" in err and "--allow-unrelated-histories" in err
    assert Repo.open(ours, clock=UnixClock()).head("main") == head
    code, out, _ = run(capsys, "-C", ours, "pull", theirs, "--allow-unrelated-histories")
    assert code == 0 and out.startswith("merged: ")
    store = Repo.open(ours, clock=UnixClock()).store()
    assert (store.get("a"), store.get("b")) == (b"ours", b"theirs")


def test_serve_without_credentials_says_how_to_enable_writes(tmp_path: Path) -> None:
    path = tmp_path / "served.git"
    Repo.init(str(path), clock=UnixClock()).close()
    server = subprocess.Popen(
        [sys.executable, "-m", "looming.store.cli", "-C", str(path), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "LOOMING_STORE_TOKEN"},
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith(b"serving ")
        line = server.stdout.readline().decode()
        assert "no credentials are configured" in line and "--token-file" in line
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--token-file", "/nonexistent/token"], "cannot read token file"),
        (["serve", "--cert", "c.pem"], "both --cert and --key"),
        (["serve", "--cert", "/nonexistent/c.pem", "--key", "/nonexistent/k.pem"], "cannot use"),
        (["serve", "--token-file", "/nonexistent/t", "--access", "/x.toml"], "cannot read"),
        (["serve", "--max-body-bytes", "0"], "positive"),
        (["merge"], "say what to merge"),
        (["merge", "x", "--abort"], "take no branch"),
        (["resolve", "k", "v"], "no merge is pending"),
    ],
)
def test_more_user_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    repo = str(tmp_path / "r.git")
    run(capsys, "init", repo)
    code, _out, err = run(capsys, "-C", repo, *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_fetch_skips_branch_names_git_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], git: GitRunner
) -> None:
    remote = tmp_path / "remote"
    git("init", "-q", str(remote), cwd=tmp_path)
    (remote / "f").write_text("x\n")
    git("add", "f", cwd=remote)
    git("commit", "-q", "-m", "one", cwd=remote)
    git("update-ref", "refs/heads/-dash", "HEAD", cwd=remote)
    git("update-ref", "refs/heads/HEAD", "HEAD", cwd=remote)
    repo = str(tmp_path / "r.git")
    run(capsys, "init", repo)
    code, out, err = run(capsys, "-C", repo, "fetch", str(remote))
    assert code == 0 and out.split()[1] == "main" and len(out.splitlines()) == 1
    assert "skipped '-dash'" in err and "skipped 'HEAD'" in err
    refs = git("for-each-ref", "--format=%(refname)", cwd=repo).split()
    assert refs == ["refs/remotes/origin/main"]


def test_a_directory_side_can_be_chosen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(tmp_path / "r.git")
    run(capsys, "init", repo)
    run(capsys, "-C", repo, "set", "seed", "s")
    run(capsys, "-C", repo, "branch", "feature")
    run(capsys, "-C", repo, "set", "d", "a value")
    run(capsys, "-C", repo, "-b", "feature", "set", "d/x", "in a directory")
    assert run(capsys, "-C", repo, "merge", "feature")[0] == 1
    assert "(directory " in run(capsys, "-C", repo, "merge", "--status")[1]
    assert run(capsys, "-C", repo, "resolve", "d", "--theirs")[0] == 0
    assert run(capsys, "-C", repo, "merge", "--continue")[0] == 0
    store = Repo.open(repo, clock=UnixClock()).store()
    assert store.get("d/x") == b"in a directory" and store.find("d") is None


def test_fetch_refuses_trees_git_fsck_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], git: GitRunner
) -> None:
    remote = tmp_path / "remote"
    git("init", "-q", str(remote), cwd=tmp_path)
    (remote / "f").write_text("x\n")
    git("add", "f", cwd=remote)
    git("commit", "-q", "-m", "one", cwd=remote)
    blob = git("hash-object", "-w", "--stdin", cwd=remote, input=b"[core]\n").strip()
    tree = git("mktree", cwd=remote, input=f"100644 blob {blob}\tgit~1\n".encode()).strip()
    bad = git("commit-tree", tree, "-p", "HEAD", "-m", "bad", cwd=remote).strip()
    git("update-ref", "refs/heads/main", bad, cwd=remote)
    repo = str(tmp_path / "r.git")
    run(capsys, "init", repo)
    objects = Path(repo, "objects")
    before = sorted(str(p.relative_to(objects)) for p in objects.rglob("*"))
    code, _out, err = run(capsys, "-C", repo, "fetch", str(remote))
    assert code == 2 and "nothing was kept" in err and "git~1" in err
    assert sorted(str(p.relative_to(objects)) for p in objects.rglob("*")) == before
    assert git("for-each-ref", cwd=repo) == ""
    # Once the remote is mended, the same fetch goes through.
    git("update-ref", "refs/heads/main", "HEAD~1", cwd=remote)
    assert run(capsys, "-C", repo, "fetch", str(remote))[0] == 0
    git("fsck", "--strict", cwd=repo)
