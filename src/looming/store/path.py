"""Paths in the store: tuples of names, checked once at the edge."""

from __future__ import annotations

from collections.abc import Iterable

from looming.store.names import check_key, check_key_name

Path = tuple[str, ...]


def check_name(name: str) -> str:
    """One key name, checked as git's fsck checks tree entries."""
    return check_key_name(name)


def to_path(path: str | Iterable[str]) -> Path:
    """``"a/b"``, ``("a", "b")`` or ``["a", "b"]`` to ``("a", "b")``.

    A string is split on ``/`` and one leading or trailing ``/`` is ignored;
    the empty path (``""`` or ``()``) names the root. Every name is checked
    by :func:`looming.store.names.check_key` (git's rules for tree entries).
    """
    return check_key(path)


def show_path(path: Path) -> str:
    return "/".join(path) if path else "/"


def has_prefix(path: Path, prefix: Path) -> bool:
    return path[: len(prefix)] == prefix
