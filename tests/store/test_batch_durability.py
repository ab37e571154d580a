"""Batches of commits (Repo.batch) with durability="full": a writer killed
in the middle of one, a power cut at any point of many, and a model of
batches checked step by step against the git CLI."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from looming.store import RefChanged, Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner, run_git
from .test_power_loss import Disk, tracking

BATCH_WRITER = """
import sys
from looming.store.repo import Repo
from looming.unix.clock import UnixClock
path, tag = sys.argv[1], sys.argv[2]
repo = Repo.open(path, durability="full", merge_packs_after=3, clock=UnixClock())
store = repo.store()
for batch in range(10_000):
    with repo.batch():
        for commit in range(10):
            with store.with_tree(f"{tag} {batch} {commit}") as tx:
                for key in range(4):
                    tx.set(f"{tag}/b{batch}/c{commit}/k{key}", b"%d" % key)
    print(store.head, flush=True)  # acknowledged: the batch has returned
"""


def test_a_writer_killed_inside_a_batch_loses_nothing_acknowledged(
    tmp_path: Path, git: GitRunner
) -> None:
    chooser = random.Random(20261206)
    path = str(tmp_path / "batches.git")
    Repo.init(path, clock=UnixClock()).close()
    acknowledged: list[str] = []
    for round_number in range(4):
        writer = subprocess.Popen(
            [sys.executable, "-c", BATCH_WRITER, path, f"r{round_number}"],
            stdout=subprocess.PIPE,
        )
        assert writer.stdout is not None
        for _ in range(chooser.randrange(1, 6)):
            line = writer.stdout.readline().decode().strip()
            assert line, "the writer stopped before it was killed"
            acknowledged.append(line)
        # Somewhere inside the next batch (or the fold of packs after it).
        time.sleep(chooser.uniform(0, 0.03))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        git("fsck", "--strict", "--no-dangling", cwd=path)
        history = set(git("rev-list", "main", cwd=path).split())
        assert [commit for commit in acknowledged if commit not in history] == []
        # The head is a whole batch: its last commit has all its keys.
        repo = Repo.open(path, clock=UnixClock())
        head = repo.store().history()[0]
        tag, batch, commit = head.message.split()
        for key in range(4):
            assert repo.at(head.id).get(f"{tag}/b{batch}/c{commit}/k{key}") == b"%d" % key
        repo.store().set(f"after/{round_number}", b"writable")
        repo.close()
    git("fsck", "--strict", "--no-dangling", cwd=path)


def test_every_acknowledged_batch_survives_a_power_cut(tmp_path: Path) -> None:
    """Batches of ten commits, packs folded every few batches, cut at every
    acknowledgement and at random points between."""
    path = tmp_path / "r.git"
    Repo.init(str(path), clock=UnixClock()).close()
    disk = Disk(str(path))
    disk.start()
    start = len(disk.events)
    rng = random.Random(7)
    with tracking(disk):
        repo = Repo.open(str(path), durability="full", merge_packs_after=3, clock=UnixClock())
        store = repo.store("main")
        for batch in range(8):
            with repo.batch():
                for commit in range(10):
                    with store.with_tree(f"{batch} {commit}") as tx:
                        tx.set(f"d{commit % 3}/b{batch}c{commit}", b"x" * rng.choice([5, 900]))
            disk.acknowledged(store.head or "")
        repo.close()
    acks = [i + 1 for i, event in enumerate(disk.events) if event[0] == "ack"]
    points = sorted(set(acks) | set(rng.sample(range(start, len(disk.events) + 1), 25)))
    for upto in points:
        into = tmp_path / f"cut{upto}"
        acknowledged = disk.after_power_cut(upto, str(into))
        history: set[str] = set()
        if (into / "refs" / "heads" / "main").exists():
            history = set(run_git("rev-list", "main", cwd=into).split())
        run_git("fsck", "--strict", "--no-dangling", cwd=into)
        assert [commit for commit in acknowledged if commit not in history] == [], upto


class Abort(Exception):
    """Raised inside a batch to abandon it."""


KEYS = st.sampled_from([f"d{d}/k{k}" for d in range(3) for k in range(4)])
VALUES = st.binary(min_size=0, max_size=40)


class Batches(RuleBasedStateMachine):
    """Commits inside and outside batches, batches abandoned, and git moving
    the branch under a batch: the store and ``git`` always agree with a
    model of what was acknowledged."""

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, bytes] = {}
        self.commits = 0

    @initialize()
    def open_repository(self) -> None:
        import tempfile

        self.folder = tempfile.TemporaryDirectory(prefix="looming-batches-")
        self.path = str(Path(self.folder.name) / "r.git")
        self.repo = Repo.init(
            self.path,
            durability="full",
            merge_packs_after=2,
            fold_when_idle=None,
            clock=UnixClock(),
        )
        self.store = self.repo.store("main")

    def teardown(self) -> None:
        if hasattr(self, "repo"):
            self.repo.close()
            run_git("fsck", "--strict", "--no-dangling", cwd=self.path)
            self.folder.cleanup()

    @rule(key=KEYS, value=VALUES)
    def set_outside_a_batch(self, key: str, value: bytes) -> None:
        self.store.set(key, value)
        self.model[key] = value
        self.commits += 1

    @rule(edits=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=12), abort=st.booleans())
    def batch(self, edits: list[tuple[str, bytes]], abort: bool) -> None:
        before = self.head_on_disk()
        try:
            with self.repo.batch():
                for key, value in edits:
                    self.store.set(key, value)
                # Visible here, not on the disk yet.
                assert self.store.get(edits[-1][0]) == edits[-1][1]
                assert self.head_on_disk() == before
                if abort:
                    raise Abort
        except Abort:
            return
        for key, value in edits:
            self.model[key] = value
        self.commits += len(edits)

    @precondition(lambda self: self.commits > 0)
    @rule(key=KEYS)
    def git_moves_the_branch_under_a_batch(self, key: str) -> None:
        head = self.head_on_disk()
        assert head is not None
        try:
            with self.repo.batch():
                self.store.set(key, b"lost")
                tree = run_git("rev-parse", f"{head}^{{tree}}", cwd=self.path).strip()
                theirs = run_git("commit-tree", tree, "-p", head, "-m", "git", cwd=self.path)
                run_git("update-ref", "refs/heads/main", theirs.strip(), head, cwd=self.path)
        except RefChanged:
            pass
        else:
            raise AssertionError("a batch whose ref git moved was kept")
        self.commits += 1  # git's commit, same tree

    def head_on_disk(self) -> str | None:
        shown = _git_bytes(self.path, "rev-parse", "--verify", "-q", "refs/heads/main")
        return shown.decode().strip() or None

    @invariant()
    def store_and_git_agree_with_the_model(self) -> None:
        if not hasattr(self, "repo"):
            return
        keys = sorted({f"d{d}/k{k}" for d in range(3) for k in range(4)})
        assert {key: self.store.find(key) for key in keys} == {
            key: self.model.get(key) for key in keys
        }
        head = self.head_on_disk()
        assert (head is None) == (self.commits == 0)
        if head is not None:
            assert _git_blobs(self.path, head, keys) == self.model


def _git_bytes(path: str, *args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["git", *args],
        cwd=path,
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
        env={"GIT_CONFIG_NOSYSTEM": "1", "HOME": path, "PATH": os.environ["PATH"]},
    )
    return done.stdout


def _git_blobs(path: str, head: str, keys: list[str]) -> dict[str, bytes]:
    """What ``git cat-file --batch`` reads for ``keys`` at ``head`` (those that exist)."""
    out = _git_bytes(
        path, "cat-file", "--batch", data=b"".join(f"{head}:{key}\n".encode() for key in keys)
    )
    found: dict[str, bytes] = {}
    position = 0
    for key in keys:
        end = out.index(b"\n", position)
        header = out[position:end].split()
        position = end + 1
        if header[-1] == b"missing":
            continue
        size = int(header[2])
        found[key] = out[position : position + size]
        position += size + 1
    return found


TestBatches = Batches.TestCase
TestBatches.settings = settings(
    max_examples=12,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
