"""Objects received from the network wait in a quarantine until checked.

As git's receive-pack does (``tmp_objdir``), objects a push or a fetch
brings are written to a separate object folder, ``objects/incoming-*``,
that sees the repository's own objects through ``info/alternates`` (so
thin packs complete and ancestry can be walked). Only when what arrived
passes the checks (:func:`bad_tree_entry`: git fsck's rules for tree
entries) and the caller accepts it does :meth:`Quarantine.migrate` move it
into the repository, packs data first and index last; otherwise
:meth:`Quarantine.discard` deletes it, and the repository is exactly as it
was.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from looming.store.names import key_rule

PREFIX = "incoming-"
STALE_S = 3600.0


def _fsync_dir(path: str) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class Quarantine:
    """A dulwich object store in ``objects/incoming-*`` of ``objects_dir``."""

    def __init__(self, objects_dir: str) -> None:
        from dulwich.object_store import DiskObjectStore

        self.objects_dir = objects_dir
        self.path = tempfile.mkdtemp(prefix=PREFIX, dir=objects_dir)
        self.store: Any = DiskObjectStore.init(self.path)
        self.store.add_alternate_path(os.path.abspath(objects_dir))

    def _loose(self) -> Iterator[tuple[str, str]]:
        """(folder, name) of each loose object in the quarantine."""
        for folder in sorted(os.listdir(self.path)):
            full = os.path.join(self.path, folder)
            if len(folder) == 2 and os.path.isdir(full):
                for name in sorted(os.listdir(full)):
                    yield folder, name

    def objects(self) -> Iterator[Any]:
        """Every object received (packed and loose), parsed."""
        for pack in list(self.store.packs):
            yield from pack.iterobjects()
        for folder, name in self._loose():
            yield self.store[(folder + name).encode()]

    def trees(self) -> Iterator[Any]:
        """Every tree received, parsed (and whatever loose object could be
        one): the packs' entry headers tell which, so a large blob is never
        inflated in memory for this."""
        from dulwich.objects import Tree

        for pack in list(self.store.packs):
            for object_id in _packed_trees(pack):
                yield pack[object_id]
        for folder, name in self._loose():
            obj = self.store[(folder + name).encode()]
            if isinstance(obj, Tree):
                yield obj

    def migrate(self) -> None:
        """Move everything received into the repository's object folder."""
        source = os.path.join(self.path, "pack")
        target = os.path.join(self.objects_dir, "pack")
        for pack in list(self.store.packs):
            pack.close()
        names = [n for n in os.listdir(source) if not n.startswith("tmp_")]
        for name in sorted(names, key=lambda n: (n.endswith(".idx"), n)):
            with open(os.path.join(source, name), "rb") as file:
                os.fsync(file.fileno())
            os.replace(os.path.join(source, name), os.path.join(target, name))
        _fsync_dir(target)
        for folder, name in self._loose():
            destination = os.path.join(self.objects_dir, folder)
            os.makedirs(destination, exist_ok=True)
            os.replace(os.path.join(self.path, folder, name), os.path.join(destination, name))
            _fsync_dir(destination)

    def discard(self) -> None:
        for pack in list(self.store.packs):
            pack.close()
        shutil.rmtree(self.path, ignore_errors=True)


_TREE, _OFS_DELTA, _REF_DELTA = 2, 6, 7


def _packed_trees(pack: Any) -> Iterator[bytes]:
    """The hex ids of the trees in a dulwich pack, and of any object whose
    type its headers do not tell (a delta against an object outside it),
    found by following each delta's base through the entry headers."""
    offsets = {name: offset for name, offset, _crc in pack.index.iterentries()}
    kinds: dict[int, int | None] = {}
    with (
        open(pack.data.path, "rb") as file,
        mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data,
    ):
        for name, offset in offsets.items():
            if _kind_at(data, offset, offsets, kinds) in (_TREE, None):
                yield name.hex().encode()


def _kind_at(
    data: Any, offset: int, offsets: dict[bytes, int], kinds: dict[int, int | None]
) -> int | None:
    """The object type of the pack entry at ``offset`` (a delta's is its
    base's), or None when its base is not in the pack."""
    chain: list[int] = []
    kind: int | None = None
    while offset not in kinds:
        chain.append(offset)
        kind = (data[offset] >> 4) & 7
        position = offset
        while data[position] & 0x80:  # the size's bytes
            position += 1
        position += 1
        if kind == _OFS_DELTA:
            byte = data[position]
            distance = byte & 0x7F
            while byte & 0x80:
                position += 1
                byte = data[position]
                distance = ((distance + 1) << 7) | (byte & 0x7F)
            offset -= distance
        elif kind == _REF_DELTA:
            base = offsets.get(bytes(data[position : position + 20]))
            if base is None:
                kind = None
                break
            offset = base
        else:
            break
        if len(chain) > 10_000 or not 0 <= offset < len(data):
            kind = None  # a loop or nonsense: let the full parse judge it
            break
    else:
        kind = kinds[offset]
    for seen in chain:
        kinds[seen] = kind
    return kind


def bad_tree_entry(objects: Iterator[Any]) -> str | None:
    """The first tree entry among ``objects`` git's fsck would refuse, described."""
    from dulwich.objects import Tree

    for obj in objects:
        if isinstance(obj, Tree):
            for entry in obj.iteritems():
                name = entry.path.decode("utf-8", "surrogateescape")
                rule = key_rule(name)
                if rule is not None:
                    return f"tree {obj.id.decode()} has entry {name!r}: {rule}"
    return None


def reclaim(objects_dir: str, now: float, older_than_s: float = STALE_S) -> int:
    """Delete quarantine folders a killed process left (untouched for
    ``older_than_s``; a younger one may be another process's push or fetch
    in progress). How many were deleted."""
    reclaimed = 0
    try:
        names = os.listdir(objects_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        path = os.path.join(objects_dir, name)
        if not name.startswith(PREFIX) or not os.path.isdir(path):
            continue
        try:
            if now - os.stat(path).st_mtime < older_than_s:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        reclaimed += 1
    return reclaimed
