"""Buggify points: they fire only in a simulation run with buggify on, as the
seed decides, and every firing is in the trace."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

import looming.sim
from looming.sim import World
from looming.sim.buggify import ENABLED_CHANCE, active, buggified, buggify
from looming.sim.spec import load_scenario
from looming.sim.world import prepare, run
from tests.sim.conftest import run_looming

POINTS = [f"test.point{number}" for number in range(60)]


def _calling_scenario(*, on: bool, seen: list[list[str]]) -> looming.sim.Scenario:
    """A scenario whose driver hits 60 points 20 times each."""
    scenario = looming.sim.Scenario("calls", duration=10.0, buggify=on)

    @scenario.main
    async def drive(world: World) -> None:
        fired = []
        for round_ in range(20):
            for name in POINTS:
                if buggify(name):
                    fired.append(f"{round_} {name}")
            await world.sleep(0.01)
        seen.append(fired)

    return scenario


def _fire_lines(events: list[str]) -> list[str]:
    return [e.split(" ", 1)[1] for e in events if " buggify " in e]


def test_outside_a_run_buggify_is_false_and_costs_nothing() -> None:
    assert active() is None
    assert not any(buggify(name) for name in POINTS for _ in range(50))


def test_points_fire_as_the_seed_says_and_the_trace_shows_each_firing() -> None:
    seen: list[list[str]] = []
    scenario = _calling_scenario(on=True, seen=seen)
    first, again, other = (run(scenario, seed, artifacts={}) for seed in (5, 5, 6))
    assert first.ok and again.ok and other.ok
    assert seen[0] and seen[0] == seen[1]  # the same seed, the same firings
    assert seen[0] != seen[2]
    assert first.digest == again.digest != other.digest
    fires = [line for line in _fire_lines(first.events) if " fire " in line]
    # Each firing the driver saw is one trace line, in the same order.
    assert [line.split()[3] for line in fires] == [entry.split()[1] for entry in seen[0]]
    assert all(line.startswith("buggify scenario fire test.point") for line in fires)
    # Per-point enabling: about a quarter of the points are on in a run, and
    # a point that is on fires on some of its hits, not all of them.
    on = {line.split()[3] for line in _fire_lines(first.events) if " on " in line}
    assert 0.05 < len(on) / len(POINTS) < 0.5
    assert {entry.split()[1] for entry in seen[0]} <= on
    counts = Counter(entry.split()[1] for entry in seen[0])
    assert any(count < 20 for count in counts.values())


def test_enabled_points_average_the_documented_chance() -> None:
    enabled = 0
    for seed in range(40):
        with buggified(seed, lambda _text: None) as state:
            enabled += sum(state.chance_of(name) > 0 for name in POINTS)
    share = enabled / (40 * len(POINTS))
    assert abs(share - ENABLED_CHANCE) < 0.04


def test_a_run_without_buggify_never_fires_and_its_trace_is_unchanged() -> None:
    seen: list[list[str]] = []
    calling = _calling_scenario(on=False, seen=seen)
    result = run(calling, 5, artifacts={})
    assert seen == [[]]
    assert not _fire_lines(result.events)
    assert not any("buggify" in e for e in result.events)
    # buggify=True from run() turns it on for a scenario that leaves it off.
    forced = run(calling, 5, artifacts={}, buggify=True)
    assert seen[1] and _fire_lines(forced.events)


def test_only_the_thread_running_the_simulation_sees_points_fire() -> None:
    elsewhere: list[bool] = []
    with buggified(1, lambda _text: None):
        assert any(buggify(name, chance=1.0) for name in POINTS)
        worker = threading.Thread(
            target=lambda: elsewhere.append(any(buggify(n, chance=1.0) for n in POINTS))
        )
        worker.start()
        worker.join()
        with pytest.raises(RuntimeError, match="already on"), buggified(2, lambda _text: None):
            pass
    assert elsewhere == [False]
    assert active() is None


def test_the_module_imports_no_simulation_machinery() -> None:
    code = (
        "import sys, looming.sim.buggify as b; "
        "bad = [m for m in ('asyncio', 'random', 'time', 'looming.sim.world') if m in sys.modules]; "
        "print(bad)"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "asyncio" not in imported and "random" not in imported
    assert "looming.sim.world" not in imported


def _points(events: list[str]) -> Counter[str]:
    return Counter(e.split()[4] for e in events if " buggify " in e and " fire " in e)


def test_library_points_fire_in_the_website_and_it_still_passes(app_copies: Path) -> None:
    scenario = load_scenario(app_copies / "scenarios" / "website.py")
    artifacts = prepare(scenario)
    fired: Counter[str] = Counter()
    for seed in range(1, 9):
        result = run(scenario, seed, artifacts=artifacts, buggify=True)
        assert result.ok, (seed, result.failures)
        fired += _points(result.events)
    assert {"tcp.short_read", "http.close_early"} <= set(fired)
    assert len({name for name in fired if name.startswith("tcp.")}) >= 2
    # Off by default: the same seed without buggify fires nothing.
    plain = run(scenario, 1, artifacts=artifacts)
    assert plain.ok and not _points(plain.events)


def test_tls_points_fire_in_the_https_website_and_it_still_passes(app_copies: Path) -> None:
    scenario = load_scenario(app_copies / "scenarios" / "https_website.py")
    artifacts = prepare(scenario)
    fired: Counter[str] = Counter()
    for seed in range(1, 7):
        result = run(scenario, seed, artifacts=artifacts, buggify=True)
        assert result.ok, (seed, result.failures)
        fired += _points(result.events)
    assert {name for name in fired if name.startswith("tls.")}


def test_the_store_retries_a_spurious_ref_change() -> None:
    from looming.store.repo import Repo
    from looming.unix.clock import UnixClock

    scenario = looming.sim.Scenario("store", duration=10.0, buggify=True)
    values: list[bytes] = []

    @scenario.main
    async def drive(world: World) -> None:
        store = Repo.memory(clock=UnixClock()).store()
        for number in range(200):
            store.set(["key"], b"%d" % number)
        values.append(store.get(["key"]))

    fired = 0
    for seed in range(1, 9):
        result = run(scenario, seed, artifacts={})
        assert result.ok, result.failures
        fired += _points(result.events)["store.ref_changed"]
    assert values == [b"199"] * 8
    assert fired > 0


@looming.sim.scenario(duration=5.0, buggify=True)
async def test_a_plugin_scenario_may_turn_buggify_on(world: World) -> None:
    fired = [name for _ in range(20) for name in POINTS if buggify(name)]
    assert fired, "no point fired in 1,200 hits"
    await world.sleep(0.1)


def test_a_buggified_run_replays_in_fresh_processes(app_copies: Path) -> None:
    scenario = str(app_copies / "scenarios" / "website.py")
    ran = run_looming(["sim", "run", scenario, "--seed", "2", "--buggify", "--no-pcap", "--trace"])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert " buggify server fire http.close_early" in ran.stdout
    checked = run_looming(["sim", "check", scenario, "--seed", "2", "--buggify"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "are identical" in checked.stdout
    digests = {line.split()[3] for line in checked.stdout.splitlines() if "digest" in line}
    assert digests == {
        next(line.split()[1] for line in ran.stdout.splitlines() if line.startswith("digest:"))
    }
