"""Bounded memos: remember computed values without letting a peer grow memory.

Two policies, one interface (``get`` answers ``None`` for a key not held,
``put`` stores and returns the value, ``len`` never exceeds ``bound``):

- :class:`Memo` is emptied when full. For hot parse paths that see few
  distinct keys (addresses in headers, prepared response heads): a hit is
  one dict lookup (``get`` *is* the underlying dict's bound ``get``), and a
  peer cycling through keys costs time, never memory.
- :class:`LruMemo` forgets the least recently used entry. For values that
  are costly to rebuild (validated certificate chains), where which entry
  goes matters more than a method call per hit.

Values must not be ``None`` (a ``None`` from ``get`` means "not held").
Pure Python with no I/O, so protocol cores may use it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _checked_bound(bound: int) -> int:
    if bound < 1:
        raise ValueError(f"a memo's bound must be at least 1, not {bound}")
    return bound


class Memo(Generic[K, V]):
    """At most ``bound`` entries; storing one more when full empties it first."""

    __slots__ = ("_entries", "bound", "get")

    def __init__(self, bound: int) -> None:
        self.bound = _checked_bound(bound)
        self._entries: dict[K, V] = {}
        # The dict's own method: a hit costs what a plain dict's would.
        self.get: Callable[[K], V | None] = self._entries.get

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` (emptying the memo first if it is
        full and ``key`` is new) and return it."""
        entries = self._entries
        if len(entries) >= self.bound and key not in entries:
            entries.clear()
        entries[key] = value
        return value

    def get_or_make(self, key: K, make: Callable[[K], V]) -> V:
        """The value held for ``key``, else ``make(key)`` stored."""
        value = self._entries.get(key)
        if value is None:
            value = self.put(key, make(key))
        return value

    def clear(self) -> None:
        self._entries.clear()  # the same dict, so ``get`` stays bound to it

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


class LruMemo(Generic[K, V]):
    """At most ``bound`` entries; storing one more when full forgets the
    entry least recently stored or read."""

    __slots__ = ("_entries", "bound")

    def __init__(self, bound: int) -> None:
        self.bound = _checked_bound(bound)
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        entries = self._entries
        value = entries.get(key)
        if value is not None:
            try:
                entries.move_to_end(key)
            except KeyError:  # forgotten by another thread meanwhile: still a hit
                pass
        return value

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` as the most recent entry and return it."""
        entries = self._entries
        entries[key] = value
        try:
            entries.move_to_end(key)
            while len(entries) > self.bound:
                entries.popitem(last=False)
        except KeyError:  # another thread moved or emptied it meanwhile: harmless
            pass
        return value

    def get_or_make(self, key: K, make: Callable[[K], V]) -> V:
        """The value held for ``key``, else ``make(key)`` stored."""
        value = self.get(key)
        if value is None:
            value = self.put(key, make(key))
        return value

    def clear(self) -> None:
        self._entries.clear()

    def keys(self) -> list[K]:
        """The keys held, least recently used first."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries
