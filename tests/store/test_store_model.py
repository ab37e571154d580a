"""A Repo on a Git directory against a model of branches as dicts and of
the commit graph (hypothesis, stateful).

Rules set, remove, read and list random paths on up to three branches,
clone branches, merge one into another with the default merge function,
group writes in batches (some abandoned) and reopen the repository from
disk. Every acknowledged write that changes something gets a unique
message, and the model keeps each commit's parents and content, so it
knows each branch's content, what a three-way merge must give (or which
paths must conflict), and which commits ``git log`` must list: exactly one
per acknowledged write or merge. ``git fsck --strict`` checks the objects
at the end. The clock is fake, so a failing example replays exactly.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from looming.store import Repo
from looming.store.store import Store
from looming.store.tree import Kind

from .conftest import run_git

# No path is a directory of another: values and directories never collide.
SHARED = ["x", "y", "a/x", "a/y", "a/b/x", "c/d/e/x"]
BRANCHES = ["main", "b1", "b2"]
# Paths each branch writes alone: merges of them never conflict.
OWN = {branch: [f"{branch}/k{i}" for i in range(3)] for branch in BRANCHES}
PATHS = SHARED + [path for paths in OWN.values() for path in paths]
DIRECTORIES = ["", "a", "a/b", "c", "c/d", "c/d/e", "z", *BRANCHES]
VALUES = st.sampled_from([b"", b"1", b"2", b"three", b"\x00\xff"])
Content = dict[str, bytes]


class FakeClock:
    """A wall clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.seconds = 1_800_000_000

    def now_ns(self) -> int:
        self.seconds += 1
        return self.seconds * 1_000_000_000

    def now(self) -> float:
        return float(self.seconds)

    def utc_offset_s(self) -> int:
        return 0


class Abandon(Exception):
    """Leaves a batch without committing it."""


@dataclass(frozen=True)
class Node:
    """One commit of the model: its parents' subjects and its content."""

    parents: tuple[str, ...]
    content: Content


class StoreModel(RuleBasedStateMachine):
    """A Repo and the model; see the module docs."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="looming-store-model-")
        self.path = str(Path(self.folder) / "r.git")
        self.clock = FakeClock()
        self.repo = Repo.init(self.path, clock=self.clock, durability="none", fold_when_idle=None)
        self.stores: dict[str, Store] = {}
        self.graph: dict[str, Node] = {}
        self.heads: dict[str, str] = {}
        self.serial = 0
        self._bind()
        self._write("main", "x", b"seed")
        self.stores["b1"] = self.stores["main"].clone("b1")
        self.heads["b1"] = self.heads["main"]

    def _bind(self) -> None:
        self.stores = {branch: self.repo.store(branch) for branch in [*self.heads, "main"]}

    def _subject(self, kind: str) -> str:
        self.serial += 1
        return f"{kind} {self.serial}"

    def _content(self, branch: str) -> Content:
        head = self.heads.get(branch)
        return dict(self.graph[head].content) if head is not None else {}

    def _commit(
        self, branch: str, subject: str, parents: tuple[str, ...], content: Content
    ) -> None:
        self.graph[subject] = Node(parents, content)
        self.heads[branch] = subject

    def _write(self, branch: str, path: str, value: bytes | None) -> None:
        """One acknowledged set or remove, and the commit it makes (if any)."""
        subject = self._subject("write")
        store = self.stores[branch]
        content = self._content(branch)
        before = dict(content)
        if value is None:
            store.remove(path, subject)
            content.pop(path, None)
        else:
            store.set(path, value, subject)
            content[path] = value
        if content != before or branch not in self.heads:
            head = self.heads.get(branch)
            self._commit(branch, subject, (head,) if head else (), content)

    def _reachable(self, subject: str) -> set[str]:
        seen: set[str] = set()
        todo = [subject]
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(self.graph[node].parents)
        return seen

    # ------------------------------------------------------------ rules

    @rule(branch=st.sampled_from(BRANCHES), path=st.sampled_from(SHARED), value=VALUES)
    def set_value(self, branch: str, path: str, value: bytes) -> None:
        if branch in self.stores:
            self._write(branch, path, value)

    @rule(branch=st.sampled_from(BRANCHES), data=st.data(), value=st.none() | VALUES)
    def write_own(self, branch: str, data: st.DataObject, value: bytes | None) -> None:
        if branch in self.stores:
            self._write(branch, data.draw(st.sampled_from(OWN[branch])), value)

    @rule(branch=st.sampled_from(BRANCHES), path=st.sampled_from(PATHS))
    def remove_path(self, branch: str, path: str) -> None:
        if branch in self.stores:
            self._write(branch, path, None)

    @rule(branch=st.sampled_from(BRANCHES), path=st.sampled_from(PATHS))
    def get_value(self, branch: str, path: str) -> None:
        if branch in self.stores:
            assert self.stores[branch].find(path) == self._content(branch).get(path)

    @rule(branch=st.sampled_from(BRANCHES), directory=st.sampled_from(DIRECTORIES))
    def list_directory(self, branch: str, directory: str) -> None:
        if branch not in self.stores:
            return
        prefix = f"{directory}/" if directory else ""
        expected: dict[str, Kind] = {}
        for path in self._content(branch):
            if path.startswith(prefix):
                name, *rest = path[len(prefix) :].split("/")
                expected[name] = Kind.NODE if rest else Kind.CONTENTS
        assert sorted(self.stores[branch].list(directory)) == sorted(expected.items())

    @precondition(lambda self: len(self.stores) < len(BRANCHES))
    @rule(data=st.data())
    def clone(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(sorted(self.stores)))
        name = next(b for b in BRANCHES if b not in self.stores)
        self.stores[name] = self.stores[source].clone(name)
        self.heads[name] = self.heads[source]

    @precondition(lambda self: len(self.stores) > 1)
    @rule(data=st.data())
    def merge(self, data: st.DataObject) -> None:
        ours = data.draw(st.sampled_from(sorted(self.stores)))
        theirs = data.draw(st.sampled_from(sorted(set(self.stores) - {ours})))
        a, b = self.heads[ours], self.heads[theirs]
        base = self._merge_base(a, b)
        if base is None:
            return  # criss-cross: more than one best base; not modelled
        subject = self._subject("merge")
        result = self.stores[ours].merge(self.stores[theirs], subject)
        if a in self._reachable(b):
            assert result.ok and result.fast_forward
            self.heads[ours] = b
            return
        if b in self._reachable(a):
            assert result.ok and not result.fast_forward and result.commit == self.stores[ours].head
            return
        merged, conflicts = _three_way(
            self.graph[base].content, self.graph[a].content, self.graph[b].content
        )
        assert {"/".join(c.path) for c in result.conflicts} == conflicts
        if conflicts:
            assert result.commit is None
        else:
            self._commit(ours, subject, (a, b), merged)

    def _merge_base(self, a: str, b: str) -> str | None:
        common = self._reachable(a) & self._reachable(b)
        best = [c for c in common if not any(c != d and c in self._reachable(d) for d in common)]
        return best[0] if len(best) == 1 else None

    @rule(
        branch=st.sampled_from(BRANCHES),
        edits=st.lists(st.tuples(st.sampled_from(PATHS), st.none() | VALUES), max_size=6),
        abandon=st.booleans(),
    )
    def batch(self, branch: str, edits: list[tuple[str, bytes | None]], abandon: bool) -> None:
        if branch not in self.stores:
            return
        graph, heads, serial = dict(self.graph), dict(self.heads), self.serial
        try:
            with self.repo.batch():
                for path, value in edits:
                    self._write(branch, path, value)
                assert self.stores[branch].find(PATHS[0]) == self._content(branch).get(PATHS[0])
                if abandon:
                    raise Abandon
        except Abandon:
            self.graph, self.heads, self.serial = graph, heads, serial

    @rule()
    def reopen(self) -> None:
        self.repo.close()
        self.repo = Repo.open(self.path, clock=self.clock, durability="none", fold_when_idle=None)
        self._bind()

    @rule()
    def git_agrees(self) -> None:
        for branch, head in self.heads.items():
            subjects = run_git("log", "--format=%s", f"refs/heads/{branch}", cwd=self.path)
            listed = subjects.splitlines()
            assert len(listed) == len(set(listed)), "a write made two commits"
            assert set(listed) == self._reachable(head), f"git log of {branch}"

    # ------------------------------------------------------------ invariants

    @invariant()
    def branches_match_the_model(self) -> None:
        for branch, store in self.stores.items():
            found = {path: store.find(path) for path in PATHS}
            assert {p: v for p, v in found.items() if v is not None} == self._content(branch)

    def teardown(self) -> None:
        try:
            self.repo.close()
            self.git_agrees()
            run_git("fsck", "--strict", "--no-dangling", cwd=self.path)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _three_way(base: Content, ours: Content, theirs: Content) -> tuple[Content, set[str]]:
    merged: Content = {}
    conflicts: set[str] = set()
    for path in base.keys() | ours.keys() | theirs.keys():
        b, o, t = base.get(path), ours.get(path), theirs.get(path)
        value = o if o == t or t == b else t if o == b else None
        if o != t and o != b and t != b:
            conflicts.add(path)
        elif value is not None:
            merged[path] = value
    return merged, conflicts


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
