"""Buggify: rare paths forced, in simulation only, at seed-drawn moments.

A library marks a place where something legal but rare may happen - a
short read, an ACK sent late, a record split in two - with one line::

    from looming.sim.buggify import buggify

    if buggify("tcp.delay_ack"):
        ...  # take the rare path

Outside a simulation run (and in a run whose scenario leaves buggify off,
the default) ``buggify`` is one global read and returns False. In a run with
``Scenario(buggify=True)`` (or ``looming sim run --buggify``) each named
point is switched on or off once per run from the seed (on with probability
:data:`ENABLED_CHANCE`, as FoundationDB's ``BUGGIFY`` does), and a point
that is on fires at each hit with its own seed-drawn probability (or the
``chance`` the call gives). Every firing goes into the run's trace, and the
draws depend only on the seed, the point's name and how many times it was
hit, so a seed replays its firings exactly.

This module imports nothing but the standard library's ``hashlib`` and
``_thread``, so protocol cores (which may not import ``asyncio``, ``time``,
``random``, ...) can use it.
"""

from __future__ import annotations

import _thread
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# The chance a point is switched on for a run (FoundationDB uses 1/4 too).
ENABLED_CHANCE = 0.25
# The per-hit chance of a point switched on is drawn from this range.
FIRE_CHANCES = (0.05, 0.5)


def _unit(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts`` (not on the process)."""
    text = ":".join(str(part) for part in parts).encode("utf-8", "surrogateescape")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class BuggifyRun:
    """The buggify state of one simulation run: which points are on, how
    often each fires, how many times each was hit and fired."""

    def __init__(self, seed: int, record: Callable[[str], None]) -> None:
        self.seed = seed
        self._record = record
        self.thread = _thread.get_ident()
        # name -> per-hit chance of firing (0.0 for a point switched off)
        self.chances: dict[str, float] = {}
        self.hits: dict[str, int] = {}
        self.fired: dict[str, int] = {}

    def chance_of(self, name: str) -> float:
        """The per-hit chance of ``name``, decided on its first hit."""
        chance = self.chances.get(name)
        if chance is None:
            if _unit(self.seed, "buggify on", name) < ENABLED_CHANCE:
                low, high = FIRE_CHANCES
                chance = low + (high - low) * _unit(self.seed, "buggify chance", name)
                self._record(f"on {name} (fires {chance:.0%} of hits)")
            else:
                chance = 0.0
            self.chances[name] = chance
        return chance

    def hit(self, name: str, chance: float | None) -> bool:
        point_chance = self.chance_of(name)
        if point_chance == 0.0:
            return False
        count = self.hits.get(name, 0) + 1
        self.hits[name] = count
        wanted = point_chance if chance is None else chance
        if _unit(self.seed, "buggify hit", name, count) >= wanted:
            return False
        self.fired[name] = self.fired.get(name, 0) + 1
        self._record(f"fire {name} (hit {count})")
        return True


_active: BuggifyRun | None = None


def buggify(name: str, chance: float | None = None) -> bool:
    """True when the rare path named ``name`` should be taken now.

    Always False outside a simulation run with buggify on, and in any
    thread but the one running the simulation. ``name`` is dotted, area
    first (``"tcp.delay_ack"``); ``chance`` overrides the point's seed-drawn
    per-hit probability (the point must still be switched on for the run).
    """
    run = _active
    if run is None or run.thread != _thread.get_ident():
        return False
    return run.hit(name, chance)


def active() -> BuggifyRun | None:
    """The running simulation's buggify state, if buggify is on."""
    return _active


@contextmanager
def buggified(seed: int, record: Callable[[str], None]) -> Iterator[BuggifyRun]:
    """Buggify on for the duration of the block (one simulation run)."""
    global _active
    if _active is not None:
        raise RuntimeError("buggify is already on: one simulation run at a time per process")
    run = BuggifyRun(seed, record)
    _active = run
    try:
        yield run
    finally:
        _active = None
