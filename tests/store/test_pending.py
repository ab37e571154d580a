"""Pending merges: the JSON API's conflict workflow, and a stateful test of
merge / resolve / continue / abort against a model of two branches."""

from __future__ import annotations

import json
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from looming.store import pending
from looming.store.errors import RefChanged
from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .served import basic, call, serving


def test_json_api_conflict_workflow(disk_repo: Repo) -> None:
    store = disk_repo.store()
    store.set("a", b"base")
    feature = store.clone("feature")
    feature.set("a", b"theirs")
    feature.set("b", b"clean")
    store.set("a", b"ours")
    head = store.head
    with serving(disk_repo) as (port, _):

        def api(method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
            status, data = call(port, method, "/api/main/" + path, body, basic())
            return status, json.loads(data) if data.startswith((b"{", b"[")) else data

        assert api("GET", "merge")[0] == 404
        status, body = api("POST", "merge?from=feature", b"")
        assert status == 409 and body["pending"] is True
        (conflict,) = body["conflicts"]
        assert conflict | {"why": ""} == {
            "path": "a",
            "base": "base",
            "ours": "ours",
            "theirs": "theirs",
            "why": "",
        }
        status, body = api("GET", "merge")
        assert status == 200 and body["unresolved"] == ["a"] and body["ours"] == head
        assert api("POST", "merge?from=feature", b"")[0] == 400  # one pending merge per branch
        for bad in (b"{not json", b"[1]", b'{"key": 3}', b'{"key": "a", "side": "mine"}'):
            assert api("POST", "resolve", bad)[0] == 400
        assert api("POST", "resolve", b'{"key": "zz", "side": "ours"}')[0] == 400
        assert api("POST", "resolve", b'{"key": "a/../b", "value": "x"}')[0] == 400
        assert api("POST", "merge/continue", b"")[0] == 400  # unresolved
        assert api("GET", "merge")[1]["unresolved"] == ["a"]
        assert store.head == head
        status, body = api("POST", "resolve", b'{"key": "a", "value": "both"}')
        assert status == 200 and body["unresolved"] == []
        status, body = api("POST", "merge/continue", b"")
        assert status == 200
        assert store.get("a") == b"both" and store.get("b") == b"clean"
        assert store.history(1)[0].parents == (head, feature.head)
        # An abort forgets a merge and leaves the branch.
        feature.set("a", b"again")
        store.set("a", b"and again")
        head = store.head
        assert api("POST", "merge?from=feature", b"")[0] == 409
        assert api("POST", "merge/abort", b"")[0] == 200
        assert api("GET", "merge")[0] == 404 and store.head == head
        # Without the token nothing of it is allowed.
        assert call(port, "POST", "/api/main/merge?from=feature", b"")[0] == 401
        assert call(port, "POST", "/api/main/resolve", b"{}")[0] == 401


KEYS = ("k1", "k2", "k3")
VALUES = (b"x", b"y", b"z")
Content = dict[str, bytes]


def three_way(base: Content, ours: Content, theirs: Content) -> tuple[Content, dict[str, Any]]:
    """The model's merge: per key, the side that changed; both changed
    differently is a conflict (ours kept in the merged content meanwhile)."""
    merged: Content = {}
    conflicts: dict[str, Any] = {}
    for key in KEYS:
        b, o, t = base.get(key), ours.get(key), theirs.get(key)
        if o == t or t == b:
            value = o
        elif o == b:
            value = t
        else:
            conflicts[key] = (b, o, t)
            value = o
        if value is not None:
            merged[key] = value
    return merged, conflicts


class PendingMerges(RuleBasedStateMachine):
    """main and feature; feature is merged into main, conflicts resolved."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="pending-")
        self.repo = Repo.init(self.folder + "/r.git", fold_when_idle=None, clock=UnixClock())
        self.main = self.repo.store("main")
        self.main.set("seed", b"s")
        self.feature = self.main.clone("feature")
        self.model: dict[str, Content] = {"main": {}, "feature": {}}
        self.base: Content = {}
        self.pending: dict[str, Any] | None = None
        self.main_moved = False
        self.writes = 0

    def teardown(self) -> None:
        self.repo.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    @rule(
        branch=st.sampled_from(["main", "feature"]),
        key=st.sampled_from(KEYS),
        value=st.sampled_from((*VALUES, None)),
    )
    def write(self, branch: str, key: str, value: bytes | None) -> None:
        store = self.main if branch == "main" else self.feature
        # Unique messages: the same change on both branches in the same
        # second would otherwise be one commit (same tree, parent, message
        # and time), which git rightly treats as already merged.
        self.writes += 1
        message = f"write {self.writes}"
        before = dict(self.model[branch])
        if value is None:
            store.remove(key, message)
            self.model[branch].pop(key, None)
        else:
            store.set(key, value, message)
            self.model[branch][key] = value
        # A write that changes nothing makes no commit: the branch stays.
        if branch == "main" and self.pending is not None and self.model[branch] != before:
            self.main_moved = True

    @precondition(lambda self: self.pending is None)
    @rule()
    def merge(self) -> None:
        result = pending.start_merge(self.main, "feature")
        merged, conflicts = three_way(self.base, self.model["main"], self.model["feature"])
        assert {"/".join(c.path) for c in result.conflicts} == set(conflicts)
        if conflicts:
            # The merge's "theirs" is feature as it is now; it may move on.
            theirs = dict(self.model["feature"])
            self.pending = {
                "merged": merged,
                "conflicts": conflicts,
                "chosen": {},
                "theirs": theirs,
            }
            self.main_moved = False
        else:
            self.model["main"] = merged
            self.base = dict(self.model["feature"])

    @precondition(lambda self: self.pending is not None)
    @rule(data=st.data())
    def resolve(self, data: st.DataObject) -> None:
        assert self.pending is not None
        key = data.draw(st.sampled_from(sorted(self.pending["conflicts"])))
        choice = data.draw(st.sampled_from(["ours", "theirs", *VALUES]))
        _b, ours, theirs = self.pending["conflicts"][key]
        if choice in ("ours", "theirs"):
            pending.resolve(self.repo, "main", key, side=str(choice))
            self.pending["chosen"][key] = ours if choice == "ours" else theirs
        else:
            assert isinstance(choice, bytes)
            pending.resolve(self.repo, "main", key, value=choice)
            self.pending["chosen"][key] = choice

    @precondition(lambda self: self.pending is not None)
    @rule()
    def continue_merge(self) -> None:
        assert self.pending is not None
        unresolved = set(self.pending["conflicts"]) - set(self.pending["chosen"])
        if unresolved:
            with pytest.raises(pending.MergePending, match="unresolved"):
                pending.continue_merge(self.main)
            return
        if self.main_moved:
            with pytest.raises(RefChanged):
                pending.continue_merge(self.main)
            return
        pending.continue_merge(self.main)
        content = dict(self.pending["merged"])
        for key, value in self.pending["chosen"].items():
            if value is None:
                content.pop(key, None)
            else:
                content[key] = value
        self.model["main"] = content
        self.base = self.pending["theirs"]
        self.pending = None

    @precondition(lambda self: self.pending is not None)
    @rule()
    def abort(self) -> None:
        pending.abort_merge(self.repo, "main")
        self.pending = None

    @invariant()
    def branches_match_the_model(self) -> None:
        for branch, store in (("main", self.main), ("feature", self.feature)):
            actual = {k: store.get(k) for k in KEYS if store.find(k) is not None}
            assert actual == self.model[branch]
        record = pending.load(self.repo, "main")
        assert (record is None) == (self.pending is None)
        if record is not None and self.pending is not None:
            assert set(record.unresolved) == set(self.pending["conflicts"]) - set(
                self.pending["chosen"]
            )


PendingMerges.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_pending_merges_follow_the_model = PendingMerges.TestCase
