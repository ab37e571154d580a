"""Randomness: the host's CSPRNG, or a seeded deterministic stream."""

from __future__ import annotations

import hashlib
import os
import random as _random


class UnixRandom:
    """:class:`looming.devices.Random`.

    Without a seed, bytes come from ``os.urandom``. With a seed, every result
    is a deterministic function of the seed and the sequence of calls: bytes
    from SHA-256 in counter mode, numbers from a seeded Mersenne Twister.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._seed = seed
        self._counter = 0
        self._numbers = _random.Random(seed) if seed is not None else _random.SystemRandom()

    @property
    def seeded(self) -> bool:
        return self._seed is not None

    def bytes(self, n: int) -> bytes:
        if n < 0:
            raise ValueError(f"cannot produce {n} bytes: n must be >= 0")
        if self._seed is None:
            return os.urandom(n)
        out = bytearray()
        seed = self._seed.to_bytes(16, "big", signed=True)
        while len(out) < n:
            block = hashlib.sha256(seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
            out += block
        return bytes(out[:n])

    def randint(self, low: int, high: int) -> int:
        if high < low:
            raise ValueError(f"empty range: low={low} > high={high}")
        return self._numbers.randint(low, high)

    def random(self) -> float:
        return self._numbers.random()
