"""Merge laws at the level of whole trees and commits (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.store.contents import JSON
from looming.store.merge import json_object
from looming.store.repo import Repo
from looming.unix.clock import UnixClock

names = st.sampled_from(["a", "b", "c"])
paths = st.lists(names, min_size=1, max_size=3).map(tuple)
values = st.one_of(
    st.integers(0, 3), st.dictionaries(st.sampled_from("xy"), st.integers(0, 2), max_size=2)
)
operations = st.lists(st.tuples(paths, st.one_of(st.none(), values)), max_size=6)


def _apply(repo: Repo, branch: str, ops: list[tuple[tuple[str, ...], object]]) -> None:
    store = repo.store(branch, codec=JSON, merge=json_object)
    with store.with_tree("edit", strategy="test_and_set") as tx:
        for path, value in ops:
            if value is None:
                tx.remove(path)
            else:
                tx.set(path, value)


def _setup(base_ops: list, ours_ops: list, theirs_ops: list) -> Repo:  # type: ignore[type-arg]
    repo = Repo.memory(clock=UnixClock())
    store = repo.store("base", codec=JSON)
    store.set("seed", 0)
    _apply(repo, "base", base_ops)
    store.clone("ours")
    store.clone("theirs")
    _apply(repo, "ours", ours_ops)
    _apply(repo, "theirs", theirs_ops)
    return repo


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, operations, operations)
def test_tree_merge_is_symmetric(base_ops: list, ours_ops: list, theirs_ops: list) -> None:  # type: ignore[type-arg]
    repo = _setup(base_ops, ours_ops, theirs_ops)
    left = repo.store("ours", codec=JSON, merge=json_object).clone("left")
    right = repo.store("theirs", codec=JSON, merge=json_object).clone("right")
    forward = left.merge("theirs")
    backward = right.merge("ours")
    assert sorted(c.path for c in forward.conflicts) == sorted(c.path for c in backward.conflicts)
    for conflict in forward.conflicts:
        mirror = next(c for c in backward.conflicts if c.path == conflict.path)
        assert (conflict.ours, conflict.theirs) == (mirror.theirs, mirror.ours)
    if forward.ok:
        # Same merged tree either way (the commits differ only in parent order).
        assert repo.commit_info(left.head or "").tree == repo.commit_info(right.head or "").tree


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, operations)
def test_tree_merge_with_base_and_itself(base_ops: list, ours_ops: list) -> None:  # type: ignore[type-arg]
    repo = _setup(base_ops, ours_ops, [])
    ours = repo.store("ours", codec=JSON, merge=json_object)
    before = ours.head
    # theirs == base: merging it changes nothing.
    result = ours.merge("theirs")
    assert result.ok and ours.head == before
    # merging ours into a copy of itself: nothing to do either.
    twin = ours.clone("twin")
    assert twin.merge("ours").ok and twin.head == before
    # base merged with ours fast-forwards to ours exactly.
    base = repo.store("base", codec=JSON).clone("base2")
    assert base.merge("ours").ok and base.head == before
