"""Seed-drawn order of same-instant events and seed-drawn fault schedules."""

from __future__ import annotations

import random

import looming.sim
from looming.sim import World
from looming.sim.spec import Crash, Hold, Isolate, Partition, Pause, Release, Restart
from looming.sim.swarm import Swarm, draw
from looming.sim.world import run


def _ties(shuffle: bool) -> tuple[looming.sim.Scenario, list[list[int]]]:
    orders: list[list[int]] = []
    scenario = looming.sim.Scenario("ties", duration=10.0, shuffle_ties=shuffle)

    @scenario.main
    async def drive(world: World) -> None:
        order: list[int] = []
        for number in range(6):
            world.after(1.0, lambda number=number: order.append(number))
        await world.sleep(2.0)
        orders.append(order)
        world.note(f"order {order}")

    return scenario, orders


def test_same_instant_timers_run_in_an_order_drawn_from_the_seed() -> None:
    scenario, orders = _ties(True)
    results = [run(scenario, seed, artifacts={}) for seed in (1, 1, *range(2, 9))]
    assert all(r.ok for r in results)
    assert orders[0] == orders[1]  # the same seed, the same order
    assert all(sorted(order) == list(range(6)) for order in orders)
    assert len({tuple(order) for order in orders}) >= 3  # seeds explore orders
    assert results[0].digest == results[1].digest


def test_without_shuffling_same_instant_timers_run_in_the_order_set() -> None:
    scenario, orders = _ties(False)
    for seed in range(1, 6):
        assert run(scenario, seed, artifacts={}).ok
    assert orders == [list(range(6))] * 5


def _swarm_scenario() -> looming.sim.Scenario:
    scenario = looming.sim.Scenario("swarm", duration=60.0)
    for name in ("a", "b", "c"):
        scenario.host(name)
    scenario.swarm(["a", "b"], start=1.0, end=50.0, max_rate=0.5)

    @scenario.main
    async def drive(world: World) -> None:
        await world.sleep(55.0)

    return scenario


def test_a_swarm_draws_its_schedule_from_the_seed() -> None:
    scenario = _swarm_scenario()
    results = {seed: run(scenario, seed, artifacts={}) for seed in range(1, 11)}
    again = run(scenario, 3, artifacts={})
    assert again.digest == results[3].digest
    kinds_lines = []
    for result in results.values():
        assert result.ok, result.failures
        (kinds,) = [e for e in result.events if " swarm kinds on: " in e]
        kinds_lines.append(kinds.split(" swarm ", 1)[1])
        planned = [e for e in result.events if " swarm at t=" in e]
        applied = [e for e in result.events if " fault apply " in e]
        # Every planned fault is applied at its time, and nothing else.
        assert [p.rsplit(": ", 1)[1] for p in planned] == [
            a.split(" fault apply ", 1)[1] for a in applied
        ]
    assert len(set(kinds_lines)) == len(kinds_lines)  # ten seeds, ten different mixes
    assert any("crash" not in line for line in kinds_lines)  # swarm: not every kind is on
    assert sum(e.count(" fault apply crash") for r in results.values() for e in r.events) > 0


def test_swarm_faults_never_overlap_on_a_node() -> None:
    swarm = Swarm(("a", "b", "c"), 0.0, 100.0, max_rate=1.0)
    everyone = ["a", "b", "c", "d"]
    for seed in range(200):
        schedule = draw(swarm, everyone, random.Random(seed))
        until: dict[str, float] = {}
        for when, fault in schedule.faults:
            assert 0.0 <= when <= 100.0
            if isinstance(fault, (Restart, Release)):
                continue  # the end of a crash or hold
            if isinstance(fault, (Partition, Isolate)):
                targets = everyone
                length = fault.duration
            else:
                assert isinstance(fault, (Crash, Pause, Hold))
                targets = [fault.node]
                length = getattr(fault, "duration", None) or 0.0
            for name in targets:
                assert until.get(name, 0.0) <= when, (seed, schedule.faults)
                until[name] = when + (length or 0.0)
            if isinstance(fault, (Crash, Hold)):
                ends = [w for w, f in schedule.faults if w > when and f.nodes() == [fault.node]]
                until[fault.node] = ends[0]
