"""Three-way merges of trees and commits, driven per path by merge functions.

The merge reads objects through an :class:`ObjectDb` and writes the merged
trees back; it makes no commits and touches no refs, so callers decide what
to do with the result and with the conflicts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from looming.store.contents import Codec
from looming.store.merge import ABSENT, Conflicting, MergeFunction
from looming.store.objectdb import EMPTY_TREE_ID, ObjectDb
from looming.store.objects import MODE_TREE, ObjectId
from looming.store.path import Path, show_path

Entry = tuple[int, ObjectId]
ChooseMerge = Callable[[Path], MergeFunction]

MAX_RECURSION = 8


@dataclass(frozen=True)
class Directory:
    """A conflict side that is a directory, not a value: its tree id."""

    tree_id: str


@dataclass(frozen=True)
class Conflict:
    """One path the merge could not decide. ``base``, ``ours`` and ``theirs``
    are the decoded values (:data:`ABSENT` when missing, :class:`Directory`
    for a directory), so neither side is ever lost."""

    path: Path
    base: Any
    ours: Any
    theirs: Any
    why: str

    def __str__(self) -> str:
        return f"{show_path(self.path)} ({self.why})"


@dataclass
class TreeMerge:
    """A merged root tree and the conflicts left in it (ours kept there)."""

    tree: ObjectId
    conflicts: list[Conflict]


class TreeMerger:
    def __init__(self, db: ObjectDb, codec: Codec[Any], choose: ChooseMerge) -> None:
        self.db = db
        self.codec = codec
        self.choose = choose

    def merge(self, base: ObjectId | None, ours: ObjectId, theirs: ObjectId) -> TreeMerge:
        conflicts: list[Conflict] = []
        tree = self._merge_trees(base, ours, theirs, (), conflicts)
        return TreeMerge(tree if tree is not None else EMPTY_TREE_ID, conflicts)

    def _side(self, entry: Entry | None) -> Any:
        if entry is None:
            return ABSENT
        mode, oid = entry
        if mode == MODE_TREE:
            return Directory(oid.hex())
        return self.codec.decode(self.db.blob(oid))

    def _merge_trees(
        self,
        base: ObjectId | None,
        ours: ObjectId | None,
        theirs: ObjectId | None,
        path: Path,
        conflicts: list[Conflict],
    ) -> ObjectId | None:
        if ours == theirs:
            return ours
        if ours == base:
            return theirs
        if theirs == base:
            return ours
        base_entries = self.db.tree(base) if base is not None else {}
        ours_entries = self.db.tree(ours) if ours is not None else {}
        theirs_entries = self.db.tree(theirs) if theirs is not None else {}
        result: dict[bytes, Entry] = {}
        for name in sorted(ours_entries.keys() | theirs_entries.keys() | base_entries.keys()):
            entry = self._merge_entry(
                base_entries.get(name),
                ours_entries.get(name),
                theirs_entries.get(name),
                (*path, name.decode("utf-8", "surrogateescape")),
                conflicts,
            )
            if entry is not None:
                result[name] = entry
        if not result:
            return None
        return self.db.write_tree(result)

    def _merge_entry(
        self,
        base: Entry | None,
        ours: Entry | None,
        theirs: Entry | None,
        path: Path,
        conflicts: list[Conflict],
    ) -> Entry | None:
        if ours == theirs:
            return ours
        if ours == base:
            return theirs
        if theirs == base:
            return ours
        ours_dir = ours is not None and ours[0] == MODE_TREE
        theirs_dir = theirs is not None and theirs[0] == MODE_TREE
        ours_file = ours is not None and not ours_dir
        theirs_file = theirs is not None and not theirs_dir
        if (ours_dir or ours is None) and (theirs_dir or theirs is None):
            base_tree = base[1] if base is not None and base[0] == MODE_TREE else None
            merged = self._merge_trees(
                base_tree,
                ours[1] if ours is not None else None,
                theirs[1] if theirs is not None else None,
                path,
                conflicts,
            )
            return (MODE_TREE, merged) if merged is not None else None
        if (ours_file or ours is None) and (theirs_file or theirs is None):
            return self._merge_contents(base, ours, theirs, path, conflicts)
        conflicts.append(
            Conflict(
                path,
                self._side(base),
                self._side(ours),
                self._side(theirs),
                "a file on one side is a directory on the other",
            )
        )
        return ours

    def _merge_contents(
        self,
        base: Entry | None,
        ours: Entry | None,
        theirs: Entry | None,
        path: Path,
        conflicts: list[Conflict],
    ) -> Entry | None:
        base_side = ABSENT if base is None or base[0] == MODE_TREE else self._side(base)
        try:
            ours_value = self._side(ours)
            theirs_value = self._side(theirs)
        except Exception as error:  # an undecodable blob is a conflict, not a crash
            conflicts.append(Conflict(path, base_side, ours, theirs, f"cannot decode: {error}"))
            return ours
        outcome = self.choose(path)(base_side, ours_value, theirs_value)
        if isinstance(outcome, Conflicting):
            conflicts.append(Conflict(path, base_side, ours_value, theirs_value, outcome.why))
            return ours if ours is not None else theirs
        if outcome.value is ABSENT:
            return None
        mode = ours[0] if ours is not None else theirs[0] if theirs is not None else 0o100644
        return (mode, self.db.write_blob(self.codec.encode(outcome.value)))


# ---------------------------------------------------------------- commit graph


def is_ancestor(db: ObjectDb, ancestor: ObjectId, descendant: ObjectId) -> bool:
    seen: set[ObjectId] = set()
    queue = deque([descendant])
    while queue:
        current = queue.popleft()
        if current == ancestor:
            return True
        if current in seen:
            continue
        seen.add(current)
        queue.extend(db.commit(current).parents)
    return False


def _ancestors(db: ObjectDb, start: ObjectId) -> set[ObjectId]:
    seen: set[ObjectId] = set()
    stack = [start]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(db.commit(current).parents)
    return seen


def lowest_common_ancestors(db: ObjectDb, a: ObjectId, b: ObjectId) -> list[ObjectId]:
    """The common ancestors of ``a`` and ``b`` that no other common ancestor
    descends from (one for ordinary histories, several for criss-crosses)."""
    of_a = _ancestors(db, a)
    if b in of_a:
        return [b]
    common: set[ObjectId] = set()
    seen: set[ObjectId] = set()
    stack = [b]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in of_a:
            common.add(current)
            continue
        stack.extend(db.commit(current).parents)
    lowest = [
        candidate
        for candidate in common
        if not any(other != candidate and is_ancestor(db, candidate, other) for other in common)
    ]
    return sorted(lowest)


def merge_commits(
    merger: TreeMerger, ours: ObjectId, theirs: ObjectId, depth: int = 0
) -> TreeMerge:
    """Merge the trees of two commits from their lowest common ancestors.

    Several ancestors (criss-cross) are first merged with each other into a
    virtual base, recursively up to :data:`MAX_RECURSION` levels; where the
    ancestors conflict among themselves the virtual base keeps the first
    ancestor's value, so the final merge decides between ours and theirs.
    """
    db = merger.db
    bases = lowest_common_ancestors(db, ours, theirs)
    base_tree: ObjectId | None
    if not bases:
        base_tree = None
    elif len(bases) == 1 or depth >= MAX_RECURSION:
        base_tree = db.commit(bases[0]).tree
    else:
        virtual_tree = merge_commits(merger, bases[0], bases[1], depth + 1).tree
        for other in bases[2:]:
            below = lowest_common_ancestors(db, bases[0], other)
            below_tree = db.commit(below[0]).tree if below else None
            virtual_tree = merger.merge(below_tree, virtual_tree, db.commit(other).tree).tree
        base_tree = virtual_tree
    return merger.merge(base_tree, db.commit(ours).tree, db.commit(theirs).tree)
