"""Trees as the store sees them: read paths out of committed trees, and
build new trees by editing a copy-on-write overlay of an old one."""

from __future__ import annotations

import enum
from collections.abc import Iterator

from looming.store.objectdb import BIG_TREE, EMPTY_TREE_ID, EncodedTree, ObjectDb, TreeEntries
from looming.store.objects import (
    BLOB_MODES,
    MODE_FILE,
    MODE_TREE,
    ObjectId,
    encode_tree_entry,
    tree_sort_key,
)
from looming.store.path import Path


class Kind(enum.Enum):
    """What a path names in a tree."""

    CONTENTS = "contents"
    NODE = "node"


def _name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _text(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def lookup(db: ObjectDb, root: ObjectId, path: Path) -> tuple[int, ObjectId] | None:
    """The ``(mode, id)`` at ``path`` under the tree ``root``, or None."""
    if not path:
        return (MODE_TREE, root)
    entries = db.tree(root)
    last = len(path) - 1
    for index, name in enumerate(path):
        entry = entries.get(_name(name))
        if entry is None:
            return None
        if index == last:
            return entry
        if entry[0] != MODE_TREE:
            return None
        entries = db.tree(entry[1])
    return None


def list_tree(db: ObjectDb, tree_id: ObjectId) -> list[tuple[str, Kind]]:
    entries = db.tree(tree_id)
    return sorted(
        (_text(name), Kind.NODE if mode == MODE_TREE else Kind.CONTENTS)
        for name, (mode, _oid) in entries.items()
        if mode == MODE_TREE or mode in BLOB_MODES
    )


def walk_blobs(
    db: ObjectDb, tree_id: ObjectId, prefix: Path = ()
) -> Iterator[tuple[Path, ObjectId]]:
    """Every contents path under a tree with its blob id, in path order."""
    for name, (mode, oid) in sorted(db.tree(tree_id).items()):
        path = (*prefix, _text(name))
        if mode == MODE_TREE:
            yield from walk_blobs(db, oid, path)
        elif mode in BLOB_MODES:
            yield path, oid


def diff_trees(
    db: ObjectDb, old: ObjectId | None, new: ObjectId | None, prefix: Path = ()
) -> Iterator[tuple[Path, ObjectId | None, ObjectId | None]]:
    """Contents paths that differ between two trees: (path, old blob, new blob).

    Subtrees with equal ids are skipped without reading them.
    """
    if old == new:
        return
    old_entries = db.tree(old) if old is not None else {}
    new_entries = db.tree(new) if new is not None else {}
    for name in sorted(old_entries.keys() | new_entries.keys()):
        before = old_entries.get(name)
        after = new_entries.get(name)
        if before == after:
            continue
        path = (*prefix, _text(name))
        before_tree = before[1] if before is not None and before[0] == MODE_TREE else None
        after_tree = after[1] if after is not None and after[0] == MODE_TREE else None
        before_blob = before[1] if before is not None and before[0] != MODE_TREE else None
        after_blob = after[1] if after is not None and after[0] != MODE_TREE else None
        if before_blob != after_blob:
            yield path, before_blob, after_blob
        if before_tree != after_tree:
            yield from diff_trees(db, before_tree, after_tree, path)


class _Node:
    """One directory of a tree being edited: copied from its base on first write."""

    __slots__ = ("base_entries", "base_id", "children", "dirty", "entries", "owned", "touched")

    def __init__(self, entries: TreeEntries, base_id: ObjectId | None) -> None:
        self.entries = entries
        self.base_entries = entries
        self.owned = False
        self.base_id = base_id
        self.children: dict[bytes, _Node] = {}
        self.dirty = base_id is None
        # Names changed since ``base_id``, so big trees re-encode incrementally.
        self.touched: set[bytes] = set()

    def own(self, name: bytes) -> TreeEntries:
        if not self.owned:
            self.entries = dict(self.entries)
            self.owned = True
        self.dirty = True
        self.touched.add(name)
        return self.entries


class WorkTree:
    """A tree being edited: reads see the edits, ``write`` stores new trees.

    Only the directories on edited paths are copied; everything else is
    shared with the base tree by id.
    """

    def __init__(self, db: ObjectDb, base: ObjectId | None) -> None:
        self.db = db
        root_id = base if base is not None else EMPTY_TREE_ID
        self._root = _Node(db.tree(root_id), root_id)

    def _child(self, node: _Node, name: bytes, create: bool) -> _Node | None:
        child = node.children.get(name)
        if child is not None:
            return child
        entry = node.entries.get(name)
        if entry is not None and entry[0] == MODE_TREE:
            child = _Node(self.db.tree(entry[1]), entry[1])
        elif create:
            child = _Node({}, None)
        else:
            return None
        node.children[name] = child
        return child

    def _walk(self, path: Path, create: bool) -> _Node | None:
        node: _Node | None = self._root
        for name in path:
            assert node is not None
            node = self._child(node, _name(name), create)
            if node is None:
                return None
        return node

    def lookup(self, path: Path) -> tuple[int, ObjectId] | _Node | None:
        if not path:
            return self._root
        parent = self._walk(path[:-1], create=False)
        if parent is None:
            return None
        name = _name(path[-1])
        child = parent.children.get(name)
        if child is not None:
            return child
        entry = parent.entries.get(name)
        if entry is not None and entry[0] == MODE_TREE:
            return self._child(parent, name, create=False)
        return entry

    def get_blob(self, path: Path) -> ObjectId | None:
        found = self.lookup(path)
        if isinstance(found, tuple) and found[0] != MODE_TREE:
            return found[1]
        return None

    def list(self, path: Path) -> list[tuple[str, Kind]] | None:
        node = self.lookup(path)
        if not isinstance(node, _Node):
            return None
        names: list[tuple[str, Kind]] = []
        for name, (mode, _oid) in node.entries.items():
            child = node.children.get(name)
            if child is not None:
                if child.entries or child.children:
                    names.append((_text(name), Kind.NODE))
            elif mode == MODE_TREE:
                names.append((_text(name), Kind.NODE))
            elif mode in BLOB_MODES:
                names.append((_text(name), Kind.CONTENTS))
        for name, child in node.children.items():
            if name not in node.entries and (child.entries or child.children):
                names.append((_text(name), Kind.NODE))
        return sorted(names)

    def set_blob(self, path: Path, blob_id: ObjectId, mode: int = MODE_FILE) -> None:
        if not path:
            raise ValueError("the root is a directory; give a path with at least one name")
        self._set_entry(path, (mode, blob_id))

    def set_subtree(self, path: Path, tree_id: ObjectId | None) -> None:
        """Replace the directory at ``path`` (the root when empty) by a tree."""
        if not path:
            root_id = tree_id if tree_id is not None else EMPTY_TREE_ID
            self._root = _Node(self.db.tree(root_id), None)
            self._root.owned = False
            return
        if tree_id is None:
            self.remove(path)
        else:
            self._set_entry(path, (MODE_TREE, tree_id))

    def _set_entry(self, path: Path, entry: tuple[int, ObjectId]) -> None:
        node = self._root
        for name in path[:-1]:
            raw = name.encode("utf-8", "surrogateescape")
            existing = node.entries.get(raw)
            child = self._child(node, raw, create=True)
            assert child is not None
            if existing is not None and existing[0] != MODE_TREE:
                # A file becomes a directory.
                node.own(raw).pop(raw, None)
            node.dirty = True
            node = child
        raw = path[-1].encode("utf-8", "surrogateescape")
        node.children.pop(raw, None)
        if not node.owned:  # node.own(raw), inlined: a call per key saved
            node.entries = dict(node.entries)
            node.owned = True
        node.dirty = True
        node.touched.add(raw)
        node.entries[raw] = entry

    def remove(self, path: Path) -> bool:
        """Remove what ``path`` names; True when something was there."""
        if not path:
            existed = bool(self._root.entries) or bool(self._root.children)
            self._root = _Node({}, None)
            return existed
        trail: list[_Node] = []
        node: _Node | None = self._root
        for name in path[:-1]:
            assert node is not None
            trail.append(node)
            node = self._child(node, _name(name), create=False)
            if node is None:
                return False
        assert node is not None
        raw = _name(path[-1])
        had_child = node.children.pop(raw, None) is not None
        had_entry = raw in node.entries
        if had_entry:
            node.own(raw).pop(raw)
        if had_child and not had_entry:
            node.dirty = True
        for parent in trail:
            parent.dirty = True
        return had_entry or had_child

    def write(self) -> ObjectId:
        """Store every edited directory; the id of the root tree."""
        return self._write(self._root)

    def _write(self, node: _Node) -> ObjectId:
        if not node.dirty and not node.children:
            assert node.base_id is not None
            return node.base_id
        for name, child in node.children.items():
            child_id = self._write(child)
            if child_id == EMPTY_TREE_ID:
                if name in node.entries:
                    node.own(name).pop(name)
            else:
                entry = (MODE_TREE, child_id)
                if node.entries.get(name) != entry:
                    node.own(name)[name] = entry
        node.children.clear()
        if not node.dirty and node.base_id is not None:
            return node.base_id
        if not node.entries:
            node.base_id = EMPTY_TREE_ID
            node.dirty = False
            return EMPTY_TREE_ID
        body, encoded = self._encode(node)
        object_id = self.db.write_tree_encoded(node.entries, body, node.base_id, encoded)
        node.base_id = object_id
        node.base_entries = node.entries
        node.touched.clear()
        node.dirty = False
        # The cache now shares this dict: copy before the next edit.
        node.owned = False
        return object_id

    def _encode(self, node: _Node) -> tuple[bytes, EncodedTree | None]:
        entries = node.entries
        if len(entries) < BIG_TREE:
            # (sort key, encoded entry) pairs, sorted as tuples without a
            # key function (a call per entry); names are unique, so the
            # encoded halves are never compared.
            ordered = sorted(
                (tree_sort_key(name, mode), encode_tree_entry(name, mode, oid))
                for name, (mode, oid) in entries.items()
            )
            return b"".join([chunk for _key, chunk in ordered]), None
        encoded = None
        if node.base_id is not None and node.base_id != EMPTY_TREE_ID:
            encoded = self.db.take_encoded(node.base_id)
        if encoded is None:
            encoded = EncodedTree.build(entries)
        else:
            encoded.edit(node.base_entries, entries, node.touched)
        return encoded.body(), encoded
