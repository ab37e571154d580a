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
import warnings
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
        "datetime.now": datetime.datetime.now(datetime.UTC),
        "datetime.now naive": datetime.datetime.now(),
        "utcnow": _utcnow(),
        "datetime.today": datetime.datetime.today(),
        "date.today": datetime.date.today(),
        "clock_gettime_ns": time.clock_gettime_ns(time.CLOCK_REALTIME),
        "clock_gettime monotonic": time.clock_gettime(time.CLOCK_MONOTONIC),
        "strftime": time.strftime("%Y-%m-%d %H:%M:%S"),
        "active": active(),
    }


def _utcnow() -> datetime.datetime:
    with warnings.catch_warnings():  # deprecated since 3.12, still called by libraries
        warnings.simplefilter("ignore", DeprecationWarning)
        return datetime.datetime.utcnow()


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
    _check_datetimes(driver, EPOCH_NS + 1_500_000_000, 1_500_000_000)
    _check_datetimes(node, clock_ns, time_ns)


def _check_datetimes(sample: dict[str, Any], wall_ns: int, monotonic_ns: int) -> None:
    """datetime's clocks and clock_gettime read the same virtual instant as time.time."""
    utc = datetime.datetime.fromtimestamp(wall_ns // 10**9, datetime.UTC).replace(
        microsecond=wall_ns % 10**9 // 1000
    )
    assert sample["datetime.now"] == utc
    assert sample["datetime.now naive"] == utc.astimezone().replace(tzinfo=None)
    assert sample["utcnow"] == utc.replace(tzinfo=None)
    assert sample["datetime.today"] == sample["datetime.now naive"]
    assert sample["date.today"] == sample["datetime.now naive"].date()
    assert type(sample["datetime.now"]) is datetime.datetime
    assert type(sample["date.today"]) is datetime.date
    assert sample["clock_gettime_ns"] == wall_ns
    assert sample["clock_gettime monotonic"] == monotonic_ns / 1e9


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
        def read_clocks() -> None:
            seen_in_thread.append(time.time())
            seen_in_thread.append(datetime.datetime.now().timestamp())

        worker = threading.Thread(target=read_clocks)
        worker.start()
        worker.join()
        world.note(f"virtual {time.time()}")

    real_before = time.time()
    result = run(scenario, 1, artifacts={})
    assert result.ok, result.failures
    # The other thread read the host's clock, not the virtual one.
    assert abs(seen_in_thread[0] - real_before) < 60
    assert abs(seen_in_thread[1] - real_before) < 60
    assert abs(time.time() - real_before) < 60
    assert random.getstate() == before_state
    assert type(datetime.datetime) is type and type(datetime.date) is type
    # datetime's own methods again, answering the host's clock.
    assert type(datetime.datetime.__dict__["now"]).__name__ == "classmethod_descriptor"
    assert type(datetime.date.__dict__["today"]).__name__ == "classmethod_descriptor"
    assert abs(datetime.datetime.now().timestamp() - real_before) < 60
    assert abs(time.clock_gettime(time.CLOCK_REALTIME) - real_before) < 60
    assert not active()
    assert len(os.urandom(16)) == 16


REFUSED: dict[str, Any] = {
    "time.sleep(0.5)": lambda: time.sleep(0.5),
    "time.process_time()": lambda: time.process_time(),
    "uuid.uuid1()": lambda: uuid.uuid1(),
    "time.clock_gettime(2)": lambda: time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID),
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


def test_pydantic_models_with_datetime_fields_work_in_virtual_time() -> None:
    """Models defined before and during a run: datetime fields validate, their
    default factories read virtual time, and C-made values stay datetimes."""
    import pydantic

    class Before(pydantic.BaseModel):
        at: datetime.datetime
        day: datetime.date = pydantic.Field(default_factory=datetime.date.today)

    class Stamp(datetime.datetime):
        """A subclass, as pendulum and friends make: it inherits the redirection."""

    seen: list[Any] = []
    scenario = looming.sim.Scenario("pydantic", duration=10.0)
    scenario.host("a", skew_s=0.0, drift_ppm=0.0)

    @scenario.main
    async def drive(world: World) -> None:
        async def as_node(stack: Any) -> None:
            await world.sleep(3.0)

            class During(pydantic.BaseModel):
                at: datetime.datetime = pydantic.Field(
                    default_factory=lambda: datetime.datetime.now(datetime.UTC)
                )
                when: datetime.date

            parsed = During(when="2026-01-02")
            seen.extend([parsed, During.model_validate_json('{"when": "2026-01-03"}')])
            seen.append(Before(at="2026-02-03T04:05:06Z"))
            seen.append(Stamp.now(datetime.UTC))
            seen.append(During.model_json_schema()["properties"]["at"]["format"])

        await world.node("a").run(as_node)

    result = run(scenario, 1, artifacts={})
    assert result.ok, result.failures
    during, from_json, before, stamp, schema_format = seen
    # The node starts at virtual time 0 with no skew, then sleeps 3 s.
    virtual = datetime.datetime.fromtimestamp(EPOCH_NS / 1e9 + 3.0, datetime.UTC)
    assert during.at == from_json.at == virtual
    assert during.when == datetime.date(2026, 1, 2) and from_json.when == datetime.date(2026, 1, 3)
    assert isinstance(during.at, datetime.datetime) and type(during.when) is datetime.date
    assert before.at == datetime.datetime(2026, 2, 3, 4, 5, 6, tzinfo=datetime.UTC)
    assert before.day == virtual.astimezone().date()
    assert type(stamp) is Stamp and stamp == virtual
    assert schema_format == "date-time"
    # After the run: the same models, real time.
    assert abs(Before(at=virtual).day - datetime.date.today()) <= datetime.timedelta(days=1)


CROSS_PROCESS = """
import datetime, json, sys, time
import looming.sim
from looming.sim.world import run

scenario = looming.sim.Scenario("dates", duration=10.0)
scenario.host("a", skew_s=86400.0 * 3, drift_ppm=50.0)
seen = []

@scenario.main
async def drive(world):
    async def as_node(stack):
        for _ in range(3):
            await world.sleep(0.7)
            seen.append([
                datetime.datetime.now(datetime.UTC).isoformat(),
                datetime.datetime.utcnow().isoformat(),
                datetime.date.today().isoformat(),
                time.clock_gettime_ns(time.CLOCK_MONOTONIC),
            ])
    await world.node("a").run(as_node)

result = run(scenario, int(sys.argv[1]), artifacts={})
assert result.ok, result.failures
print(json.dumps(seen))
"""


def test_datetime_is_the_same_virtual_time_in_fresh_processes() -> None:
    import json
    import subprocess
    import sys

    outputs = []
    for hash_seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-W", "ignore::DeprecationWarning", "-c", CROSS_PROCESS, "7"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": hash_seed, "TZ": "UTC"},
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    # Three days of skew ahead of the simulation's epoch: not the host's date.
    epoch = datetime.datetime.fromtimestamp(EPOCH_NS / 1e9, datetime.UTC)
    first = datetime.datetime.fromisoformat(outputs[0][0][0])
    assert datetime.timedelta(days=3) < first - epoch < datetime.timedelta(days=3, seconds=5)
    assert [row[2] for row in outputs[0]] == [
        (epoch + datetime.timedelta(days=3)).date().isoformat()
    ] * 3
