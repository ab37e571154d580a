"""Key-value stores: read-only (``KvRo``) and read-write (``KvRw``).

Keys are ``/``-separated paths such as ``"css/site.css"``; a leading ``/`` is
ignored. A key holds either a value or, as a prefix of other keys, a
dictionary. Names are never ``""``, ``"."`` or ``".."``.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable


class EntryKind(enum.Enum):
    """What a key names."""

    VALUE = "value"
    DICTIONARY = "dictionary"


@runtime_checkable
class KvRo(Protocol):
    """A read-only key-value store."""

    async def exists(self, key: str) -> EntryKind | None:
        """What ``key`` names, or ``None`` when it names nothing."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole value under ``key``.

        Raises :class:`~looming.errors.KeyNotFound` when there is none and
        :class:`~looming.errors.NotAValue` when ``key`` is a dictionary.
        """
        ...

    async def get_partial(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the value from ``offset``.

        Shorter than ``length`` (possibly empty) only at the end of the value.
        """
        ...

    async def size(self, key: str) -> int:
        """The length of the value under ``key`` in bytes."""
        ...

    async def list(self, prefix: str = "") -> list[tuple[str, EntryKind]]:
        """The direct children of the dictionary ``prefix``, sorted by name."""
        ...

    async def digest(self, key: str) -> str:
        """A stable hex digest of the value (or of a dictionary's listing).

        Equal contents give equal digests, so it serves as an HTTP ETag.
        """
        ...

    async def last_modified(self, key: str) -> float:
        """POSIX time of the last change of ``key`` (0.0 when unknown)."""
        ...


@runtime_checkable
class KvRw(KvRo, Protocol):
    """A read-write key-value store."""

    async def set(self, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``, creating parent dictionaries."""
        ...

    async def remove(self, key: str) -> None:
        """Remove the value or whole dictionary under ``key`` (no error if absent)."""
        ...

    async def rename(self, source: str, dest: str) -> None:
        """Move the value or dictionary at ``source`` to ``dest``."""
        ...
