"""Disk faults that start (and end) at a time of the run: a fault of the
schedule, beside crashes and partitions, and the swarm's ``disk`` kind."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from looming.sim.disk import DiskFaults
from looming.sim.spec import Fault

if TYPE_CHECKING:
    from looming.sim.world import World


@dataclass(frozen=True)
class DiskFault(Fault):
    """From now on (for ``duration`` seconds, then as before) ``node``'s disk
    misbehaves as ``faults`` says."""

    node: str
    faults: DiskFaults
    duration: float | None = None

    def nodes(self) -> list[str]:
        return [self.node]

    def problems(self) -> list[str]:
        found = self.faults.problems()
        if self.duration is not None and self.duration <= 0:
            found.append(f"duration must be > 0, not {self.duration}")
        return found

    def apply(self, world: World) -> None:
        disk = world.node(self.node).disk
        before = disk.faults
        disk.faults = self.faults

        def restore() -> None:
            disk.faults = before
            world.trace.record("fault", f"disk {self.node} back to: {before.describe()}")

        if self.duration is not None:
            world.after(self.duration, restore)

    def describe(self) -> str:
        return f"disk {self.node}: {self.faults.describe()}"


# The most a swarm draws for each rate of its ``disk`` kind.
SWARM_MAXIMA = {
    "lost_writes": 1.0,
    "torn_writes": 0.5,
    "read_errors": 0.1,
    "corruption": 0.001,
    "slow_io": 0.2,
}


def draw_disk_faults(rng: random.Random) -> DiskFaults:
    """Disk faults for one window of a swarm: each rate on with probability
    one half (at least one), drawn uniformly up to its maximum."""
    names = [name for name in SWARM_MAXIMA if rng.random() < 0.5]
    if not names:
        names = [rng.choice(sorted(SWARM_MAXIMA))]
    rates: dict[str, object] = {name: rng.uniform(0.0, SWARM_MAXIMA[name]) for name in names}
    return DiskFaults().replace(**rates)
