"""Merge functions: how two concurrent changes to one value combine.

A merge function takes the value at the common ancestor (``base``) and the
two new values (``ours``, ``theirs``); any of them may be :data:`ABSENT`
(the key did not exist). It returns :class:`Merged` with the result (or
:data:`ABSENT` to delete the key) or :class:`Conflicting` with the reason.

The laws every function here keeps (tested with hypothesis):

* ``merge(b, b, x) == merge(b, x, b) == x`` (merging with the base is identity),
* ``merge(b, x, x) == x`` (idempotence; not for counters, where two
  increments are two),
* ``merge(b, o, t)`` and ``merge(b, t, o)`` agree (symmetry), except the text
  merge when both sides insert at the same place (then it conflicts both ways).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union

T = TypeVar("T")


class _Absent:
    """The value of a key that does not exist."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT = _Absent()


@dataclass(frozen=True)
class Merged(Generic[T]):
    value: T | _Absent


@dataclass(frozen=True)
class Conflicting:
    why: str


MergeOutcome = Union[Merged[T], Conflicting]  # noqa: UP007 - generic alias
MergeFunction = Callable[[Any, Any, Any], "Merged[Any] | Conflicting"]


def default(base: Any, ours: Any, theirs: Any) -> Merged[Any] | Conflicting:
    """Take the side that changed; conflict when both changed differently."""
    if ours == theirs:
        return Merged(ours)
    if ours == base:
        return Merged(theirs)
    if theirs == base:
        return Merged(ours)
    return Conflicting("both sides changed the value differently")


# ---------------------------------------------------------------- text


def _diff3_regions(
    base: list[Any], ours: list[Any], theirs: list[Any]
) -> list[tuple[str, list[Any], list[Any], list[Any]]]:
    """Split three sequences into stable regions (equal in all three) and the
    unstable ones between them, in the manner of diff3."""

    def matches(other: list[Any]) -> dict[int, int]:
        matcher = difflib.SequenceMatcher(None, base, other, autojunk=False)
        mapping: dict[int, int] = {}
        for block in matcher.get_matching_blocks():
            for offset in range(block.size):
                mapping[block.a + offset] = block.b + offset
        return mapping

    to_ours = matches(ours)
    to_theirs = matches(theirs)
    regions: list[tuple[str, list[Any], list[Any], list[Any]]] = []
    base_at = ours_at = theirs_at = 0
    index = 0
    while index <= len(base):
        # Find the next base line matched in both sides, in order.
        anchor = index
        while anchor < len(base) and not (
            anchor in to_ours
            and anchor in to_theirs
            and to_ours[anchor] >= ours_at
            and to_theirs[anchor] >= theirs_at
        ):
            anchor += 1
        if anchor == len(base):
            o_end, t_end = len(ours), len(theirs)
        else:
            o_end, t_end = to_ours[anchor], to_theirs[anchor]
        if base_at < anchor or ours_at < o_end or theirs_at < t_end:
            regions.append(
                ("changed", base[base_at:anchor], ours[ours_at:o_end], theirs[theirs_at:t_end])
            )
        if anchor == len(base):
            break
        regions.append(("stable", [base[anchor]], [ours[o_end]], [theirs[t_end]]))
        base_at, ours_at, theirs_at = anchor + 1, o_end + 1, t_end + 1
        index = anchor + 1
    return regions


def merge_lines(base: list[Any], ours: list[Any], theirs: list[Any]) -> list[Any] | None:
    """Three-way merge of sequences; None when the same region changed both ways."""
    merged: list[Any] = []
    for kind, base_part, ours_part, theirs_part in _diff3_regions(base, ours, theirs):
        if kind == "stable" or ours_part == theirs_part:
            merged.extend(ours_part)
        elif ours_part == base_part:
            merged.extend(theirs_part)
        elif theirs_part == base_part:
            merged.extend(ours_part)
        else:
            return None
    return merged


def text(base: Any, ours: Any, theirs: Any) -> Merged[Any] | Conflicting:
    """Three-way line merge of ``str`` or ``bytes`` (absent counts as empty
    only when both sides exist)."""
    trivial = default(base, ours, theirs)
    if isinstance(trivial, Merged):
        return trivial
    if ours is ABSENT or theirs is ABSENT:
        return Conflicting("one side removed the text the other changed")
    sample = ours
    if not isinstance(sample, str | bytes) or type(theirs) is not type(sample):
        return Conflicting("text merge needs str or bytes on both sides")
    empty = sample[:0]
    base_value = empty if base is ABSENT or type(base) is not type(sample) else base
    result = merge_lines(
        base_value.splitlines(keepends=True),
        ours.splitlines(keepends=True),
        theirs.splitlines(keepends=True),
    )
    if result is None:
        return Conflicting("both sides changed the same lines")
    return Merged(empty.join(result))


# ---------------------------------------------------------------- counters, registers


def counter(base: Any, ours: Any, theirs: Any) -> Merged[Any] | Conflicting:
    """Integers that count: both sides' increments add up (a missing base
    counts as 0). Not idempotent on purpose: two increments of 1 make 2."""
    if ours == base:
        return Merged(theirs)
    if theirs == base:
        return Merged(ours)
    if ours is ABSENT or theirs is ABSENT:
        return Conflicting("one side removed the counter the other changed")
    base_value = 0 if base is ABSENT else base
    if not all(
        isinstance(value, int) and not isinstance(value, bool)
        for value in (base_value, ours, theirs)
    ):
        return Conflicting("counter merge needs integers")
    return Merged(ours + theirs - base_value)


def _canonical(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def lww(timestamp: Callable[[Any], Any] = lambda value: value[0]) -> MergeFunction:
    """Last writer wins: the value with the greater ``timestamp(value)``.

    Equal timestamps are broken by the canonical JSON (or repr) of the
    values, so every replica picks the same winner. A removal (absent) loses
    to any write.
    """

    def merge(base: Any, ours: Any, theirs: Any) -> Merged[Any] | Conflicting:
        trivial = default(base, ours, theirs)
        if isinstance(trivial, Merged):
            return trivial
        if ours is ABSENT:
            return Merged(theirs)
        if theirs is ABSENT:
            return Merged(ours)
        try:
            key_ours = (timestamp(ours), _canonical(ours))
            key_theirs = (timestamp(theirs), _canonical(theirs))
            return Merged(ours if key_ours >= key_theirs else theirs)
        except (TypeError, IndexError, KeyError) as error:
            return Conflicting(f"register values have no comparable timestamp: {error}")

    return merge


# ---------------------------------------------------------------- sets and maps


def _as_set(value: Any) -> frozenset[Any] | None:
    if value is ABSENT:
        return frozenset()
    if isinstance(value, set | frozenset | list | tuple):
        try:
            return frozenset(value)
        except TypeError:
            return None
    return None


def set_union(base: Any, ours: Any, theirs: Any) -> Merged[Any] | Conflicting:
    """Sets (or lists used as sets): keep both sides' additions and removals.

    Lists come back sorted (by canonical form) so replicas agree byte for byte.
    """
    trivial = default(base, ours, theirs)
    if isinstance(trivial, Merged):
        return trivial
    sets = [_as_set(value) for value in (base, ours, theirs)]
    if any(value is None for value in sets):
        return Conflicting("set merge needs sets or lists of hashable values")
    base_set, ours_set, theirs_set = sets
    assert base_set is not None and ours_set is not None and theirs_set is not None
    if ours is ABSENT and theirs is ABSENT:
        return Merged(ABSENT)
    result = (base_set & ours_set & theirs_set) | (ours_set - base_set) | (theirs_set - base_set)
    shape = ours if ours is not ABSENT else theirs
    if isinstance(shape, list | tuple):
        ordered = sorted(result, key=_canonical)
        return Merged(type(shape)(ordered) if isinstance(shape, tuple) else ordered)
    return Merged(type(shape)(result) if isinstance(shape, frozenset) else set(result))


def map_of(inner: MergeFunction = default) -> MergeFunction:
    """Dictionaries merged key by key with ``inner``."""

    def merge(base: Any, ours: Any, theirs: Any) -> Merged[Any] | Conflicting:
        trivial = default(base, ours, theirs)
        if isinstance(trivial, Merged):
            return trivial
        if ours is ABSENT or theirs is ABSENT:
            return Conflicting("one side removed the map the other changed")
        base_map: Any = {} if base is ABSENT else base
        if not all(isinstance(value, Mapping) for value in (base_map, ours, theirs)):
            return Conflicting("map merge needs dictionaries")
        result: dict[Any, Any] = {}
        reasons: list[str] = []
        for key in sorted(set(base_map) | set(ours) | set(theirs), key=_canonical):
            outcome = inner(
                base_map.get(key, ABSENT), ours.get(key, ABSENT), theirs.get(key, ABSENT)
            )
            if isinstance(outcome, Conflicting):
                reasons.append(f"{key!r}: {outcome.why}")
            elif outcome.value is not ABSENT:
                result[key] = outcome.value
        if reasons:
            return Conflicting("; ".join(reasons))
        return Merged(result)

    return merge


def json_object(base: Any, ours: Any, theirs: Any) -> Merged[Any] | Conflicting:
    """JSON values: objects merged key by key, recursively; anything else
    by :func:`default`."""
    trivial = default(base, ours, theirs)
    if isinstance(trivial, Merged):
        return trivial
    if (
        isinstance(ours, dict)
        and isinstance(theirs, dict)
        and (base is ABSENT or isinstance(base, dict))
    ):
        return map_of(json_object)(base, ours, theirs)
    return trivial


# ---------------------------------------------------------------- combinators


def option(inner: MergeFunction) -> MergeFunction:
    """Use ``inner`` only when all three values exist; otherwise :func:`default`."""

    def merge(base: Any, ours: Any, theirs: Any) -> Merged[Any] | Conflicting:
        if any(value is ABSENT for value in (base, ours, theirs)):
            return default(base, ours, theirs)
        return inner(base, ours, theirs)

    return merge


def first_of(*functions: MergeFunction) -> MergeFunction:
    """Try each function in turn; the first that does not conflict wins."""

    def merge(base: Any, ours: Any, theirs: Any) -> Merged[Any] | Conflicting:
        reasons: list[str] = []
        for function in functions:
            outcome = function(base, ours, theirs)
            if isinstance(outcome, Merged):
                return outcome
            reasons.append(outcome.why)
        return Conflicting(" / ".join(reasons) or "no merge function")

    return merge


def mapped(
    inner: MergeFunction, into: Callable[[Any], Any], back: Callable[[Any], Any]
) -> MergeFunction:
    """Merge values through a view: ``into`` before ``inner``, ``back`` after."""

    def convert(value: Any) -> Any:
        return ABSENT if value is ABSENT else into(value)

    def merge(base: Any, ours: Any, theirs: Any) -> Merged[Any] | Conflicting:
        outcome = inner(convert(base), convert(ours), convert(theirs))
        if isinstance(outcome, Conflicting) or outcome.value is ABSENT:
            return outcome
        return Merged(back(outcome.value))

    return merge


def by_path(
    rules: Mapping[tuple[str, ...], MergeFunction], fallback: MergeFunction = default
) -> Callable[[tuple[str, ...]], MergeFunction]:
    """Choose a merge function by the longest matching path prefix."""
    ordered = sorted(rules.items(), key=lambda item: -len(item[0]))

    def choose(path: tuple[str, ...]) -> MergeFunction:
        for prefix, function in ordered:
            if path[: len(prefix)] == prefix:
                return function
        return fallback

    return choose
