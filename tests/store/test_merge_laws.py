"""The merge laws, for every merge function, by property testing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.store import merge as mf
from looming.store.contents import JSON, STR
from looming.store.merge import ABSENT, Conflicting, Merged, MergeFunction

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3))
json_value = st.recursive(
    json_leaf,
    lambda inner: st.dictionaries(st.sampled_from("abcd"), inner, max_size=4),
    max_leaves=8,
)
lines = st.lists(st.sampled_from(["a\n", "b\n", "c\n", "d\n", "e\n"]), max_size=8).map("".join)
counters = st.integers(-100, 100)
sets = st.lists(st.integers(0, 6), max_size=6).map(lambda items: sorted(set(items)))
registers = st.tuples(st.integers(0, 3), st.text(max_size=2))

CASES: list[
    tuple[str, MergeFunction, st.SearchStrategy[Any], bool]
] = [  # name, f, values, symmetric
    ("default", mf.default, json_value, True),
    ("text", mf.text, lines, False),
    ("counter", mf.counter, counters, True),
    ("lww", mf.lww(), registers, True),
    ("set", mf.set_union, sets, True),
    ("map", mf.map_of(mf.counter), st.dictionaries(st.sampled_from("xyz"), counters), True),
    ("json", mf.json_object, json_value, True),
    ("first_of", mf.first_of(mf.text, mf.lww(len)), lines, True),
]


def maybe_absent(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(ABSENT), values)


def _value(outcome: Merged[Any] | Conflicting) -> Any:
    assert isinstance(outcome, Merged), outcome
    return outcome.value


@pytest.mark.parametrize(
    ("name", "function", "values", "symmetric"), CASES, ids=[c[0] for c in CASES]
)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_merge_laws(
    name: str,
    function: MergeFunction,
    values: st.SearchStrategy[Any],
    symmetric: bool,
    data: st.DataObject,
) -> None:
    base = data.draw(maybe_absent(values), label="base")
    ours = data.draw(maybe_absent(values), label="ours")
    theirs = data.draw(maybe_absent(values), label="theirs")
    # Merging with the base is identity, on either side.
    assert _value(function(base, base, ours)) == ours
    assert _value(function(base, ours, base)) == ours
    # Idempotence: both sides made the same change (counters add up instead).
    if name != "counter":
        assert _value(function(base, ours, ours)) == ours
    # Symmetry: swapping ours and theirs gives the same result (or the same conflict).
    forward = function(base, ours, theirs)
    backward = function(base, theirs, ours)
    if symmetric:
        assert forward == backward or (
            isinstance(forward, Conflicting) and isinstance(backward, Conflicting)
        )
    else:
        assert isinstance(forward, Conflicting) == isinstance(backward, Conflicting)
        if isinstance(forward, Merged):
            assert forward.value == _value(backward) or name == "text"


def test_text_merges_disjoint_edits() -> None:
    base = "one\ntwo\nthree\nfour\nfive\n"
    ours = "ONE\ntwo\nthree\nfour\nfive\n"
    theirs = "one\ntwo\nthree\nfour\nFIVE\n"
    assert _value(mf.text(base, ours, theirs)) == "ONE\ntwo\nthree\nfour\nFIVE\n"
    assert isinstance(mf.text(base, "x\n" + base, "y\n" + base), Conflicting)
    assert _value(mf.text(b"a\nb\n", b"a\nb\nc\n", b"z\na\nb\n")) == b"z\na\nb\nc\n"


def test_lww_tie_break_is_deterministic() -> None:
    merge = mf.lww()
    left, right = (5, "left"), (5, "right")
    assert _value(merge(ABSENT, left, right)) == _value(merge(ABSENT, right, left)) == right
    assert _value(merge((1, "x"), (7, "new"), (6, "old"))) == (7, "new")


def test_counter_set_and_json() -> None:
    assert _value(mf.counter(10, 13, 8)) == 11
    assert _value(mf.set_union([1, 2, 3], [1, 2, 4], [2, 3, 5])) == [2, 4, 5]
    merged = mf.json_object(
        {"a": 1, "n": {"x": 1}}, {"a": 2, "n": {"x": 1, "y": 2}}, {"a": 1, "n": {"x": 3}}
    )
    assert _value(merged) == {"a": 2, "n": {"x": 3, "y": 2}}
    assert isinstance(mf.json_object({"a": 1}, {"a": 2}, {"a": 3}), Conflicting)


def test_composed_functions() -> None:
    as_int = mf.mapped(mf.counter, int, str)
    assert _value(as_int("1", "3", "4")) == "6"
    safe = mf.first_of(mf.default, mf.lww(len))
    assert _value(safe("a", "bb", "ccc")) == "ccc"


@given(json_value)
def test_json_codec_round_trips(value: Any) -> None:
    assert JSON.decode(JSON.encode(value)) == value


@given(st.text())
def test_str_codec_round_trips(value: str) -> None:
    assert STR.decode(STR.encode(value)) == value
