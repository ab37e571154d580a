"""Paths in the store: tuples of names, checked once at the edge."""

from __future__ import annotations

from collections.abc import Iterable

from looming.store.errors import InvalidPath

Path = tuple[str, ...]

_FORBIDDEN_NAMES = frozenset({".", "..", ".git"})


def check_name(name: str) -> str:
    if not isinstance(name, str):
        raise InvalidPath(f"path name {name!r} is not a string")
    if not name:
        raise InvalidPath("a path name is empty; use names like ('a', 'b') or 'a/b'")
    if "/" in name or "\0" in name:
        raise InvalidPath(f"path name {name!r} holds '/' or NUL; split it into names")
    if name in _FORBIDDEN_NAMES:
        raise InvalidPath(f"path name {name!r} is reserved by Git")
    return name


def to_path(path: str | Iterable[str]) -> Path:
    """``"a/b"``, ``("a", "b")`` or ``["a", "b"]`` to ``("a", "b")``.

    A string is split on ``/`` and one leading or trailing ``/`` is ignored;
    the empty path (``""`` or ``()``) names the root.
    """
    if isinstance(path, str):
        text = path.strip("/")
        names: tuple[str, ...] = tuple(text.split("/")) if text else ()
    else:
        names = tuple(path)
    for name in names:
        check_name(name)
    return names


def show_path(path: Path) -> str:
    return "/".join(path) if path else "/"


def has_prefix(path: Path, prefix: Path) -> bool:
    return path[: len(prefix)] == prefix
