"""Randomness, from the host's generator or a seeded deterministic stream."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Random(Protocol):
    """A source of random bytes and integers.

    When constructed with a seed, an implementation is a deterministic stream:
    the same seed gives the same sequence of results for the same calls. A
    seeded stream is for tests and simulation, never for key material.
    """

    @property
    def seeded(self) -> bool:
        """Whether this generator is a deterministic, seeded stream."""
        ...

    def bytes(self, n: int) -> bytes:
        """``n`` random bytes (``n >= 0``)."""
        ...

    def randint(self, low: int, high: int) -> int:
        """A uniformly distributed integer with ``low <= result <= high``."""
        ...

    def random(self) -> float:
        """A uniformly distributed float in ``[0.0, 1.0)``."""
        ...
