"""Where objects and refs live: the backend interface, and the in-memory
backend (the on-disk one is :mod:`looming.store.gitbackend`).

A backend stores encoded objects by id and refs by name. It knows nothing of
trees or merges; :mod:`looming.store.repo` builds those on top.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Protocol

from looming.store.errors import MissingObject, RefChanged
from looming.store.names import check_branch
from looming.store.objects import ObjectId, hash_object


def check_ref_name(name: str) -> str:
    """Refuse branch names git refuses (``git check-ref-format --branch``)."""
    return check_branch(name)


class Backend(Protocol):
    """Objects by id and refs by name, with compare-and-set on refs."""

    def read(self, object_id: ObjectId) -> tuple[str, bytes]: ...

    def contains(self, object_id: ObjectId) -> bool: ...

    def write(self, kind: str, body: bytes) -> ObjectId: ...

    def read_ref(self, name: str) -> ObjectId | None: ...

    def set_ref(self, name: str, old: ObjectId | None, new: ObjectId | None) -> None:
        """Move ``name`` from ``old`` to ``new`` (None: absent) or raise RefChanged."""
        ...

    def list_refs(self, prefix: str) -> dict[str, ObjectId]: ...

    def writer_lock(self) -> contextlib.AbstractContextManager[None]: ...

    def refs_version(self) -> object:
        """Something that changes whenever any ref may have changed."""
        ...

    def flush(self) -> None:
        """Make every written object durable (before a ref names it)."""
        ...

    def note_delta_base(self, object_id: ObjectId, base: ObjectId) -> None:
        """``object_id`` is a new version of ``base``: a good delta base on disk."""
        ...

    def close(self) -> None: ...


class MemoryBackend:
    """Objects and refs in dictionaries: fast, gone when the process ends."""

    def __init__(self) -> None:
        self._objects: dict[ObjectId, tuple[str, bytes]] = {}
        self._refs: dict[str, ObjectId] = {}
        self._lock = threading.RLock()
        self._version = 0
        self.head = "refs/heads/main"

    def read(self, object_id: ObjectId) -> tuple[str, bytes]:
        try:
            return self._objects[object_id]
        except KeyError:
            raise MissingObject(object_id.hex()) from None

    def contains(self, object_id: ObjectId) -> bool:
        return object_id in self._objects

    def write(self, kind: str, body: bytes) -> ObjectId:
        object_id = hash_object(kind, body)
        self._objects[object_id] = (kind, body)
        return object_id

    def read_ref(self, name: str) -> ObjectId | None:
        return self._refs.get(name)

    def set_ref(self, name: str, old: ObjectId | None, new: ObjectId | None) -> None:
        with self._lock:
            if self._refs.get(name) != old:
                raise RefChanged(f"{name} moved while updating it; retry")
            if new is None:
                self._refs.pop(name, None)
            else:
                self._refs[name] = new
            self._version += 1

    def list_refs(self, prefix: str) -> dict[str, ObjectId]:
        return {name: oid for name, oid in self._refs.items() if name.startswith(prefix)}

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        with self._lock:
            yield

    def refs_version(self) -> object:
        return self._version

    def flush(self) -> None:
        pass

    def note_delta_base(self, object_id: ObjectId, base: ObjectId) -> None:
        pass

    def iter_objects(self) -> Iterator[tuple[ObjectId, str, bytes]]:
        for oid, (kind, body) in list(self._objects.items()):
            yield oid, kind, body

    def close(self) -> None:
        pass
