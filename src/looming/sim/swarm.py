"""Fault schedules drawn from the seed (swarm testing).

Beside faults at fixed times, a scenario may ask for a randomized schedule:

    SCENARIO.swarm(nodes=["server"], start=1.0, end=50.0)

Each seed then draws which fault kinds are switched on (each with
probability one half, at least one), a rate for each kind switched on, and
the times, targets and durations of its faults, as swarm testing (Groce et
al., 2012) does: a seed that leaves most kinds off explores deep into the
few that are on, where an even mix of everything would mask them. Faults
never overlap on a node, and network-wide faults (partitions) never
overlap each other, so every fault in the schedule happens as drawn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from looming.sim.spec import (
    Crash,
    Fault,
    Hold,
    Isolate,
    Partition,
    Pause,
    Release,
    Restart,
)

KINDS = ("crash", "pause", "partition", "isolate", "hold")
# Kinds a swarm draws only when asked for: "disk" (a window of disk faults).
EXTRA_KINDS = ("disk",)


@dataclass(frozen=True)
class Swarm:
    """How a seed draws a fault schedule.

    ``nodes``: which nodes faults may hit (partitions cut them from the
    scenario's other nodes). ``kinds``: which kinds the seed chooses among.
    ``max_rate``: the most faults per virtual second a kind may get (its rate
    is drawn uniformly up to it). ``min_down``/``max_down``: how long a fault
    lasts (a crashed node restarts, keeping its state or not as drawn).
    """

    nodes: tuple[str, ...]
    start: float
    end: float
    kinds: tuple[str, ...] = KINDS
    max_rate: float = 0.2
    min_down: float = 0.5
    max_down: float = 5.0

    def problems(self, known: list[str]) -> list[str]:
        found = []
        for node in self.nodes:
            if node not in known:
                found.append(
                    f"swarm names unknown node {node!r}; nodes: {', '.join(known) or 'none'}"
                )
        if not self.nodes:
            found.append("swarm: give at least one node faults may hit")
        for kind in self.kinds:
            if kind not in KINDS + EXTRA_KINDS:
                kinds = ", ".join(KINDS + EXTRA_KINDS)
                found.append(f"swarm: unknown fault kind {kind!r}; kinds: {kinds}")
        if not self.kinds:
            found.append("swarm: give at least one fault kind")
        if not 0 <= self.start < self.end:
            found.append(f"swarm: need 0 <= start < end, not {self.start}..{self.end}")
        if not self.max_rate > 0:
            found.append(f"swarm: max_rate must be > 0, not {self.max_rate}")
        if not 0 < self.min_down <= self.max_down:
            found.append(
                f"swarm: need 0 < min_down <= max_down, not {self.min_down}, {self.max_down}"
            )
        return found


@dataclass
class Schedule:
    """A drawn schedule: the kinds on, their rates, and the faults by time."""

    rates: dict[str, float]
    faults: list[tuple[float, Fault]] = field(default_factory=list)

    def describe(self) -> str:
        rates = ", ".join(f"{kind} {rate:.3f}/s" for kind, rate in self.rates.items())
        return f"kinds on: {rates}; {len(self.faults)} faults"


def draw(swarm: Swarm, everyone: list[str], rng: random.Random) -> Schedule:
    """The schedule ``rng`` (seeded from the run's seed) picks for ``swarm``."""
    kinds = [kind for kind in swarm.kinds if rng.random() < 0.5]
    if not kinds:
        kinds = [rng.choice(swarm.kinds)]
    schedule = Schedule({kind: rng.uniform(0.0, swarm.max_rate) for kind in kinds})
    events: list[tuple[float, str]] = []
    for kind, rate in schedule.rates.items():
        when = swarm.start
        while rate > 0:
            when += rng.expovariate(rate)
            if when >= swarm.end:
                break
            events.append((when, kind))
    events.sort()
    busy: dict[str, float] = {}  # node (or "network") -> free again at
    for when, kind in events:
        length = rng.uniform(swarm.min_down, swarm.max_down)
        if when + length > swarm.end:
            continue
        node = rng.choice(swarm.nodes)
        needs = ["network", *everyone] if kind in ("partition", "isolate") else [node]
        if kind == "disk":  # overlaps the node's crashes: that is when it matters
            needs = [f"{node}/disk"]
        if any(busy.get(name, 0.0) > when for name in needs):
            continue
        for name in needs:
            busy[name] = when + length
        schedule.faults.extend(_faults(kind, node, everyone, when, length, rng))
    schedule.faults.sort(key=lambda item: item[0])
    return schedule


def _faults(
    kind: str, node: str, everyone: list[str], when: float, length: float, rng: random.Random
) -> list[tuple[float, Fault]]:
    if kind == "crash":
        return [(when, Crash(node)), (when + length, Restart(node, keep_state=rng.random() < 0.5))]
    if kind == "pause":
        return [(when, Pause(node, length))]
    if kind == "disk":
        from looming.sim.diskfault import DiskFault, draw_disk_faults

        return [(when, DiskFault(node, draw_disk_faults(rng), length))]
    if kind == "isolate":
        return [(when, Isolate(node, length))]
    if kind == "hold":
        return [(when, Hold(node)), (when + length, Release(node, drop=rng.random() < 0.5))]
    others = tuple(name for name in everyone if name != node)
    if not others:
        return []
    return [(when, Partition((node,), others, rng.random() < 0.5, length))]
