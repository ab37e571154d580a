"""Errors the store raises; each names the object, path or ref at fault."""

from __future__ import annotations

from looming.errors import LoomingError


class StoreError(LoomingError):
    """Base class of the store's errors."""


class InvalidPath(StoreError, ValueError):
    """A path with an empty name, or ``/``, NUL, ``.`` or ``..`` as a name."""


class InvalidName(StoreError, ValueError):
    """A key or branch name git would refuse; ``rule`` says which rule."""

    def __init__(self, name: object, rule: str) -> None:
        self.name = name
        self.rule = rule
        super().__init__(rule)


class InvalidKey(InvalidName, InvalidPath):
    """A key name git's fsck refuses as a tree entry (see looming.store.names)."""


class MissingObject(StoreError, KeyError):
    """An object the store needs is not in it."""

    def __init__(self, object_id: str, what: str = "object") -> None:
        self.object_id = object_id
        self.what = what
        super().__init__(object_id)

    def __str__(self) -> str:
        return f"missing {self.what} {self.object_id}: the repository is incomplete; fetch it again"


class CorruptObject(StoreError):
    """An object whose bytes do not hash to its name or do not parse."""

    def __init__(self, object_id: str, reason: str) -> None:
        self.object_id = object_id
        self.reason = reason
        super().__init__(f"corrupt object {object_id}: {reason}")


class BadRef(StoreError):
    """A ref file that does not hold an object id, or a bad branch name."""


class InvalidBranch(InvalidName, BadRef):
    """A branch name ``git check-ref-format --branch`` refuses."""

    def __init__(self, name: object, rule: str) -> None:
        super().__init__(name, f"{name!r} is not a valid branch name: {rule}")


class RefChanged(StoreError):
    """A compare-and-set on a ref lost: another writer moved it first."""


class RefLocked(StoreError):
    """A ref's ``.lock`` file stayed held by another process (git or
    looming) past the lock timeout."""


class NotARepository(StoreError):
    """The path holds no Git repository."""


class ReadOnlyStore(StoreError):
    """An update through a store bound to a detached commit."""


class MergeFailed(StoreError):
    """A merge has conflicts; ``conflicts`` lists them, nothing was committed."""

    def __init__(self, conflicts: list[object]) -> None:
        self.conflicts = conflicts
        names = ", ".join(str(c) for c in conflicts[:5])
        more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
        super().__init__(f"merge conflicts: {names}{more}")
