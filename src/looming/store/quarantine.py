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
