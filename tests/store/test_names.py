"""Key and branch names, checked against the real git CLI.

Branch names: ``git check-ref-format --branch`` decides, one name per run.
Key names: each candidate becomes the one entry of a tree written with
``git mktree``; ``git fsck --strict`` then names the trees (and the
``.gitmodules`` blobs it parsed) it refuses. Every candidate's blob is a
``.gitmodules`` that fsck fails when it parses it, so a name git treats as
``.gitmodules`` shows up too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.store import InvalidBranch, InvalidKey, InvalidPath, Repo
from looming.store.errors import BadRef
from looming.store.names import branch_rule, check_branch, check_key, key_rule
from looming.unix.clock import UnixClock

from .conftest import run_git

_REF_CHARS = [*list("aZ9-._/@{}~^:?*[]\\ \t\x01\x7f"), "é", "HEAD", ".lock", "..", "//"]
_KEY_CHARS = [
    *list(".gGiItT~1234: $\\aZx"),
    "\u200c",
    "\u200e",
    "\u202a",
    "\u206f",
    "\ufeff",
    "é",
    ".git",
    "git~1",
    "gitmodules",
    "gi7eba",
    "::$INDEX_ALLOCATION",
]
_TRICKY_KEYS = [
    ".git",
    ".GIT",
    ".Git.",
    ".git . .",
    "git~1",
    "GIT~1",
    ".git::$INDEX_ALLOCATION",
    ".g\u200cit",
    "\ufeff.git",
    ".git\u200f",
    "x\\.git",
    "a\\GIT~1\\b",
    ".gitmodules",
    ".GITMODULES  .",
    "gitmod~1",
    "GI7EBA~1",
    "gi7eb~12",
    "~1234567",
    ".gitmodules:stream",
    ".gitignore",
    "git~2",
    ".gi",
    "..",
    ".",
    "...",
    ".git~1",
    "a",
]
_TRICKY_BRANCHES = [
    "HEAD",
    "-x",
    "@",
    "a@{b",
    "a.lock",
    "a/.b",
    "a..b",
    "a/",
    "/a",
    "a//b",
    "a.",
    "é",
    "head",
    "refs/heads/x",
    "a b",
    "x\x7f",
    "a@b",
    "a.lock/b",
    "a/b.lock",
    ".a",
    "a*",
]


def _git_takes_branch(name: str, cwd: Path) -> bool:
    done = subprocess.run(
        ["git", "check-ref-format", "--branch", name], cwd=cwd, capture_output=True, check=False
    )
    return done.returncode == 0


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("peer")
    run_git("init", "-q", str(path), cwd=path)
    run_git("commit", "-q", "--allow-empty", "-m", "start", cwd=path)
    return path


def _check_branches(names: list[str], peer: Path) -> None:
    for name in names:
        ours = branch_rule(name)
        git_takes = _git_takes_branch(name, peer)
        assert (ours is None) == git_takes, (name, ours, git_takes)


def test_tricky_branch_names_as_git(peer: Path) -> None:
    _check_branches(_TRICKY_BRANCHES, peer)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_REF_CHARS), min_size=1, max_size=8).map("".join))
def test_branch_names_as_git_check_ref_format(peer: Path, name: str) -> None:
    _check_branches([name], peer)


def _fsck_refuses(names: list[str], cwd: Path) -> list[bool]:
    """For each name: does git fsck --strict refuse a tree holding it?"""
    blobs: list[str] = []
    for index in range(len(names)):
        body = f'[submodule "../escape{index}"]\n\tpath = x\n\turl = https://example.invalid/\n'
        blobs.append(run_git("hash-object", "-w", "--stdin", cwd=cwd, input=body.encode()).strip())
    batch = b"".join(
        b"100644 blob " + blob.encode() + b"\t" + name.encode() + b"\0\0"
        for blob, name in zip(blobs, names, strict=True)
    )
    trees = run_git("mktree", "-z", "--batch", cwd=cwd, input=batch).split()
    done = subprocess.run(
        ["git", "fsck", "--strict", "--no-dangling", "--no-progress"],
        cwd=cwd,
        capture_output=True,
        check=False,
    )
    report = done.stdout.decode() + done.stderr.decode()
    faulted = set(re.findall(r"(?:error|warning) in (?:tree|blob) ([0-9a-f]{40})", report))
    return [tree in faulted or blob in faulted for tree, blob in zip(trees, blobs, strict=True)]


def _check_keys(names: list[str], cwd: Path) -> None:
    names = [name for name in names if name and "/" not in name and "\0" not in name]
    if not names:
        return
    for name, git_refuses in zip(names, _fsck_refuses(names, cwd), strict=True):
        ours = key_rule(name)
        assert (ours is not None) == git_refuses, (name, ours, git_refuses)


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    run_git("init", "-q", "--bare", str(tmp_path / "k.git"), cwd=tmp_path)
    return tmp_path / "k.git"


def test_tricky_key_names_as_git_fsck(bare: Path) -> None:
    _check_keys(_TRICKY_KEYS, bare)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(st.sampled_from(_KEY_CHARS), min_size=1, max_size=5).map("".join),
        min_size=1,
        max_size=25,
        unique=True,
    )
)
def test_key_names_as_git_fsck(tmp_path_factory: pytest.TempPathFactory, names: list[str]) -> None:
    path = tmp_path_factory.mktemp("keys")
    run_git("init", "-q", "--bare", str(path), cwd=path)
    _check_keys(names, path)


@pytest.mark.parametrize("name", ["", "a/b", "a\0b"])
def test_names_fsck_cannot_hold_are_refused(name: str) -> None:
    assert key_rule(name) is not None


def test_the_error_names_the_rule() -> None:
    with pytest.raises(InvalidKey, match=r"'\.git'"):
        check_key("site/.GIT/config")
    with pytest.raises(InvalidBranch, match="cannot start with '-'"):
        check_branch("-x")
    with pytest.raises(InvalidBranch, match="not a branch name"):
        check_branch("HEAD")


def test_the_store_refuses_bad_names_and_stays_as_it_was(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path / "r.git"), clock=UnixClock())
    store = repo.store("main")
    store.set("ok", b"1")
    head = store.head
    for key in [".GIT/config", "Git~1/x", "a/.git. /b", "..", ".gitmodules"]:
        with pytest.raises(InvalidPath):
            store.set(key, b"x")
    for branch in ["HEAD", "-x", "a..b", "x.lock"]:
        with pytest.raises(BadRef):
            store.clone(branch)
        with pytest.raises(InvalidBranch):
            repo.set_head(branch, head)
    assert store.head == head
    assert repo.branches() == ["main"]
    repo.close()
    run_git("fsck", "--strict", cwd=tmp_path / "r.git")
