"""Typed access to a backend's objects, with LRU caches of parsed objects."""

from __future__ import annotations

import bisect
from collections import OrderedDict
from typing import TYPE_CHECKING

from looming.bounded import LruMemo
from looming.errors import Malformed
from looming.store.errors import CorruptObject, MissingObject
from looming.store.objects import (
    BLOB,
    COMMIT,
    MODE_EXECUTABLE,
    MODE_FILE,
    MODE_GITLINK,
    MODE_SYMLINK,
    MODE_TREE,
    TREE,
    Commit,
    ObjectId,
    encode_tree,
    encode_tree_entry,
    parse_tree,
    tree_sort_key,
)

if TYPE_CHECKING:  # annotations only: a Backend takes locks, a merge reads no files
    from looming.store.backend import Backend

TreeEntries = dict[bytes, tuple[int, ObjectId]]

EMPTY_TREE_ID = bytes.fromhex("4b825dc642cb6eb9a060e54bf8d69288fbee4904")

# Trees with at least this many entries keep their encoding as sorted
# chunks, so changing a few entries does not re-sort and re-encode them all
# (from 8 entries on that is cheaper: 8% fewer instructions per commit of
# ten keys into folders of up to 30, counted with callgrind).
BIG_TREE = 8
# Bodies of encoded trees up to this many bytes are kept with them (see
# EncodedTree.joined): some memory for a join of every entry per version.
KEEP_JOINED = 16384

# What encode_tree_entry puts before an entry's name, by mode.
_ENTRY_PREFIX = {
    mode: (b"40000" if mode == MODE_TREE else b"%o" % mode) + b" "
    for mode in (MODE_TREE, MODE_FILE, MODE_EXECUTABLE, MODE_SYMLINK, MODE_GITLINK)
}


class EncodedTree:
    """A tree's encoding as parallel sorted lists of sort keys and entry bytes."""

    __slots__ = ("chunks", "joined", "keys")

    def __init__(self, keys: list[bytes], chunks: list[bytes]) -> None:
        self.keys = keys
        self.chunks = chunks
        # The chunks joined (the tree's body), kept for trees up to
        # KEEP_JOINED bytes: a version that only adds an entry at the end
        # (a new key sorting last, the usual case for growing folders) is
        # then one concatenation, not a join of every entry again.
        self.joined: bytes | None = None

    @staticmethod
    def build(entries: TreeEntries) -> EncodedTree:
        ordered = sorted(
            (tree_sort_key(name, mode), encode_tree_entry(name, mode, oid))
            for name, (mode, oid) in entries.items()
        )
        return EncodedTree([key for key, _ in ordered], [chunk for _, chunk in ordered])

    def edit(self, old: TreeEntries, new: TreeEntries, names: set[bytes]) -> None:
        """Change ``names`` from ``old`` to ``new`` in place: the caller owns
        this encoding (taken out of the cache, see :meth:`ObjectDb.take_encoded`),
        so its lists are not copied for every version of the tree."""
        keys = self.keys
        chunks = self.chunks
        joined = self.joined
        bisect_left = bisect.bisect_left
        for name in names:
            before = old.get(name)
            after = new.get(name)
            if before == after:
                continue
            if after is not None:
                # tree_sort_key and encode_tree_entry, inlined (a call each per name).
                mode = after[0]
                key = name + b"/" if mode == MODE_TREE else name
                prefix = _ENTRY_PREFIX.get(mode) or b"%o " % mode
                chunk = b"".join((prefix, name, b"\0", after[1]))
                if before is not None and before[0] == mode:
                    # The same kind of entry with a new id: its place is unchanged.
                    at = bisect_left(keys, key)
                    if at < len(keys) and keys[at] == key:
                        chunks[at] = chunk
                        joined = None
                        continue
            if before is not None:
                old_key = tree_sort_key(name, before[0])
                at = bisect_left(keys, old_key)
                if at < len(keys) and keys[at] == old_key:
                    del keys[at]
                    del chunks[at]
                    joined = None
            if after is not None:
                at = bisect_left(keys, key)
                joined = joined + chunk if joined is not None and at == len(keys) else None
                keys.insert(at, key)
                chunks.insert(at, chunk)
        self.joined = joined

    def body(self) -> bytes:
        joined = self.joined
        if joined is None:
            joined = b"".join(self.chunks)
        self.joined = joined if len(joined) <= KEEP_JOINED else None
        return joined


class WeightedCache:
    """An LRU of encoded trees bounded by their total number of entries."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.weight = 0
        self._items: OrderedDict[ObjectId, EncodedTree] = OrderedDict()

    def get(self, key: ObjectId) -> EncodedTree | None:
        value = self._items.get(key)
        if value is not None:
            try:
                self._items.move_to_end(key)
            except KeyError:
                pass
        return value

    def take(self, key: ObjectId) -> EncodedTree | None:
        """Remove and return the encoding of ``key``, if held."""
        value = self._items.pop(key, None)
        if value is not None:
            self.weight -= len(value.keys)
        return value

    def put(self, key: ObjectId, value: EncodedTree) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.weight -= len(old.keys)
        self._items[key] = value
        self.weight += len(value.keys)
        while self.weight > self.capacity and len(self._items) > 1:
            _key, evicted = self._items.popitem(last=False)
            self.weight -= len(evicted.keys)


class ObjectDb:
    """Blobs, trees and commits by id over a backend, cached once parsed."""

    def __init__(
        self, backend: Backend, *, tree_cache: int = 4096, blob_cache: int = 65536
    ) -> None:
        self.backend = backend
        self._trees: LruMemo[ObjectId, TreeEntries] = LruMemo(tree_cache)
        self._blobs: LruMemo[ObjectId, bytes] = LruMemo(blob_cache)
        self._commits: LruMemo[ObjectId, Commit] = LruMemo(4096)
        self._encoded = WeightedCache(400_000)

    def _read(self, object_id: ObjectId, expected: str) -> bytes:
        kind, body = self.backend.read(object_id)
        if kind != expected:
            raise CorruptObject(object_id.hex(), f"is a {kind}, expected a {expected}")
        return body

    def tree(self, object_id: ObjectId) -> TreeEntries:
        """The entries of a tree; shared with the cache, so never mutate it."""
        entries = self._trees.get(object_id)
        if entries is None:
            if object_id == EMPTY_TREE_ID:
                entries = {}
            else:
                try:
                    entries = parse_tree(self._read(object_id, TREE))
                except MissingObject:
                    raise MissingObject(object_id.hex(), "tree") from None
                except Malformed as error:
                    raise CorruptObject(object_id.hex(), str(error)) from None
            self._trees.put(object_id, entries)
        return entries

    def blob(self, object_id: ObjectId) -> bytes:
        data = self._blobs.get(object_id)
        if data is None:
            try:
                data = self._read(object_id, BLOB)
            except MissingObject:
                raise MissingObject(object_id.hex(), "blob") from None
            self._blobs.put(object_id, data)
        return data

    def commit(self, object_id: ObjectId) -> Commit:
        commit = self._commits.get(object_id)
        if commit is None:
            try:
                body = self._read(object_id, COMMIT)
            except MissingObject:
                raise MissingObject(object_id.hex(), "commit") from None
            try:
                commit = Commit.parse(body)
            except Malformed as error:
                raise CorruptObject(object_id.hex(), str(error)) from None
            self._commits.put(object_id, commit)
        return commit

    def take_encoded(self, object_id: ObjectId) -> EncodedTree | None:
        """The sorted encoding of a big tree, for the caller to edit in place:
        taken out of the cache (remembered again under the edited tree's id,
        see :meth:`write_tree_encoded`), or rebuilt from its entries."""
        encoded = self._encoded.take(object_id)
        if encoded is None:
            entries = self.tree(object_id)
            if len(entries) < BIG_TREE:
                return None
            encoded = EncodedTree.build(entries)
        return encoded

    def remember_encoded(self, object_id: ObjectId, encoded: EncodedTree) -> None:
        self._encoded.put(object_id, encoded)

    def write_blob(self, data: bytes) -> ObjectId:
        object_id = self.backend.write(BLOB, data)
        self._blobs.put(object_id, data)
        return object_id

    def write_tree(self, entries: TreeEntries) -> ObjectId:
        object_id = self.backend.write(TREE, encode_tree(entries))
        self._trees.put(object_id, entries)
        return object_id

    def write_tree_encoded(
        self,
        entries: TreeEntries,
        body: bytes,
        previous: ObjectId | None = None,
        encoded: EncodedTree | None = None,
    ) -> ObjectId:
        """Write a tree already encoded as ``body`` (its sorted encoding
        ``encoded`` remembered, when given, for editing the next version)."""
        object_id = self.backend.write(TREE, body)
        if previous is not None and previous != EMPTY_TREE_ID and previous != object_id:
            self.backend.note_delta_base(object_id, previous)
        self._trees.put(object_id, entries)
        if encoded is not None:
            self._encoded.put(object_id, encoded)
        return object_id

    def write_commit(self, commit: Commit) -> ObjectId:
        if commit.tree == EMPTY_TREE_ID:
            # Trees read as empty without it, but git needs the object.
            self.backend.write(TREE, b"")
        object_id = self.backend.write(COMMIT, commit.encode())
        self._commits.put(object_id, commit)
        return object_id
