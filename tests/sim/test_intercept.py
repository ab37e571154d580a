"""The standard library's time and randomness inside a run: redirected to
the node's devices (or the scenario's), refused where they cannot be, and
real again outside the run and in other threads."""

from __future__ import annotations

import datetime
import os
import random
import secrets
import threading
import time
import uuid
from typing import Any

import pytest

import looming.sim
from looming.sim import World
from looming.sim.devices import EPOCH_NS
from looming.sim.intercept import HostAccessError, active
from looming.sim.world import run


def _sample() -> dict[str, Any]:
    return {
        "time": time.time(),
        "time_ns": time.time_ns(),
        "monotonic": time.monotonic(),
        "perf": time.perf_counter_ns(),
        "urandom": os.urandom(8).hex(),
        "token": secrets.token_hex(8),
        "below": secrets.randbelow(10**9),
        "uuid4": str(uuid.uuid4()),
        "global": random.random(),
        "unseeded": random.Random().random(),
        "system": random.SystemRandom().random(),
        "now": datetime.datetime.fromtimestamp(time.time(), datetime.UTC).timestamp(),
        "strftime": time.strftime("%Y-%m-%d %H:%M:%S"),
        "active": active(),
    }


def _scenario(
    samples: list[dict[str, Any]], devices: list[tuple[int, int]]
) -> looming.sim.Scenario:
    scenario = looming.sim.Scenario("stdlib", duration=30.0)
    scenario.host("a", skew_s=2.0, drift_ppm=0.0)

    @scenario.main
    async def drive(world: World) -> None:
        await world.sleep(1.5)
        samples.append(_sample())

        async def as_node(stack: Any) -> None:
            await world.sleep(0.25)
            samples.append(_sample())
            from looming.sim.node import CURRENT_NODE

            incarnation = CURRENT_NODE.get()
            assert incarnation is not None
            devices.append((incarnation.clock.now_ns(), incarnation.time.now_ns()))

        await world.node("a").run(as_node)

    return scenario


def test_time_and_randomness_come_from_the_seed_and_virtual_time() -> None:
    samples: list[dict[str, Any]] = []
    devices: list[tuple[int, int]] = []
    scenario = _scenario(samples, devices)
    results = [run(scenario, seed, artifacts={}) for seed in (4, 4, 5)]
    assert all(r.ok for r in results), [r.failures for r in results]
    driver, node, driver2, node2, driver5, node5 = samples
    # The same seed: every value the same, in a different run.
    assert driver == driver2 and node == node2
    # Another seed: different random values (time is the same virtual time).
    for key in ("urandom", "token", "below", "uuid4", "global", "unseeded", "system"):
        assert driver[key] != driver5[key] and node[key] != node5[key], key
        assert driver[key] != node[key], key
    # The scenario reads virtual time; the node reads its own skewed clock.
    assert driver["time"] == pytest.approx(EPOCH_NS / 1e9 + 1.5)
    assert driver["monotonic"] == pytest.approx(1.5)
    clock_ns, time_ns = devices[0]
    assert node["time_ns"] == clock_ns
    assert node["time"] == pytest.approx(EPOCH_NS / 1e9 + 2.0 + node_elapsed(node, driver))
    assert node["perf"] == time_ns
    assert node["now"] == pytest.approx(node["time"], abs=1e-6)
    assert driver["active"] and node["active"]
    expected = datetime.datetime.fromtimestamp(EPOCH_NS / 1e9 + 1.5, datetime.UTC)
    assert driver["strftime"] == expected.strftime("%Y-%m-%d %H:%M:%S")


def node_elapsed(node: dict[str, Any], driver: dict[str, Any]) -> float:
    # The node's clock has skew 2 s and no drift; its sample is 0.25 s after
    # the driver's plus however long the node took to start (virtual).
    return float(node["time"] - EPOCH_NS / 1e9 - 2.0)


def test_everything_is_real_again_after_the_run_and_in_other_threads() -> None:
    before_state = random.getstate()
    seen_in_thread: list[float] = []
    scenario = looming.sim.Scenario("threads", duration=10.0)

    @scenario.main
    async def drive(world: World) -> None:
        worker = threading.Thread(target=lambda: seen_in_thread.append(time.time()))
        worker.start()
        worker.join()
        world.note(f"virtual {time.time()}")

    real_before = time.time()
    result = run(scenario, 1, artifacts={})
    assert result.ok, result.failures
    # The other thread read the host's clock, not the virtual one.
    assert abs(seen_in_thread[0] - real_before) < 60
    assert abs(time.time() - real_before) < 60
    assert random.getstate() == before_state
    assert type(datetime.datetime) is type and type(datetime.date) is type
    assert not active()
    assert len(os.urandom(16)) == 16


REFUSED: dict[str, Any] = {
    "time.sleep(0.5)": lambda: time.sleep(0.5),
    "time.process_time()": lambda: time.process_time(),
    "uuid.uuid1()": lambda: uuid.uuid1(),
}


@pytest.mark.parametrize("named", sorted(REFUSED))
def test_what_cannot_be_virtual_is_refused_naming_the_call_site(named: str) -> None:
    scenario = looming.sim.Scenario("refused", duration=10.0)
    scenario.host("a")

    async def bad(stack: Any) -> None:
        REFUSED[named]()

    @scenario.main
    async def drive(world: World) -> None:
        try:
            await world.node("a").run(bad)
        except HostAccessError as error:
            world.note(f"refused: {error}")
            raise

    result = run(scenario, 1, artifacts={})
    assert not result.ok
    (failure,) = result.failures
    assert named in failure and "HostAccessError" in failure
    refused = next(e for e in result.events if "refused:" in e)
    assert f"{__file__}:" in refused and "(in <lambda>)" in refused
    # Outside a run the real functions work.
    time.sleep(0)
    assert time.process_time() >= 0


def test_hash_seeded_global_generator_is_seeded_per_run() -> None:
    draws: list[list[float]] = []
    scenario = looming.sim.Scenario("global", duration=10.0)

    @scenario.main
    async def drive(world: World) -> None:
        random.seed()  # no argument: would read the host's entropy
        draws.append([random.random() for _ in range(3)])

    run(scenario, 9, artifacts={})
    run(scenario, 9, artifacts={})
    assert draws[0] == draws[1]


def test_work_for_threads_runs_inline_as_the_node_in_virtual_time() -> None:
    import asyncio

    import anyio.to_thread

    seen: list[tuple[str, int, float]] = []
    scenario = looming.sim.Scenario("threads-inline", duration=10.0)
    scenario.host("a", skew_s=0.0, drift_ppm=0.0)

    def blocking(label: str) -> int:
        seen.append((label, threading.get_ident(), time.time()))
        return len(label)

    @scenario.main
    async def drive(world: World) -> None:
        async def as_node(stack: Any) -> None:
            await world.sleep(1.0)
            assert await asyncio.to_thread(blocking, "asyncio") == 7
            assert await anyio.to_thread.run_sync(blocking, "anyio") == 5

        await world.node("a").run(as_node)

    result = run(scenario, 1, artifacts={})
    assert result.ok, result.failures
    here = threading.get_ident()
    assert [(label, ident) for label, ident, _ in seen] == [("asyncio", here), ("anyio", here)]
    assert all(stamp >= EPOCH_NS / 1e9 + 1.0 and stamp < EPOCH_NS / 1e9 + 2 for *_, stamp in seen)
    # Outside a run anyio's threads are real threads again.
    assert anyio.run(anyio.to_thread.run_sync, threading.get_ident) != here
