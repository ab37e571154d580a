"""Host work the simulator does in a run's thread (building the artifact of a
node added mid-run) runs outside the interception: ``subprocess`` waits for
the build's smoke-import child by polling with ``time.sleep``, which a run
refuses, so a child that outlived its output used to fail the run."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from looming.config import build_smoke
from looming.sim import intercept
from looming.sim.spec import Scenario
from looming.sim.world import World, run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Closes its output, then lives on: communicate() sees the end of the pipes
# before the child has exited, so wait(timeout) polls with time.sleep.
LINGER = "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(0.2)\n"


def _lingering_child() -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", LINGER], capture_output=True, timeout=30)


def _run(driver: object, seed: int = 1) -> list[str]:
    scenario = Scenario("suspended", duration=10.0)
    scenario.driver = driver  # type: ignore[assignment]
    return run(scenario, seed, artifacts={}).failures


def test_a_run_refuses_the_wait_and_suspended_allows_it() -> None:
    seen: dict[str, object] = {}

    async def driver(world: World) -> None:
        with pytest.raises(intercept.HostAccessError, match=r"time\.sleep.*_wait"):
            _lingering_child()
        before = time.monotonic()
        state = random.getstate()
        with intercept.suspended():
            seen["inside"] = intercept.active()
            seen["returncode"] = _lingering_child().returncode
            random.random()
            random.seed()
        seen["after"] = intercept.active()
        seen["virtual"] = time.monotonic() == before == world.now
        seen["stream kept"] = random.getstate() == state

    assert _run(driver) == []
    assert seen == {
        "inside": False,
        "returncode": 0,
        "after": True,
        "virtual": True,
        "stream kept": True,
    }


def test_a_node_added_mid_run_is_built_outside_the_simulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flake's path, made certain: the smoke import's child outlives its
    output while the artifact of a node added by the driver is built."""
    app = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", app, ignore=shutil.ignore_patterns("_build", "dist"))
    monkeypatch.setattr(build_smoke, "_SMOKE_PROGRAM", build_smoke._SMOKE_PROGRAM + LINGER)
    consoles: list[list[str]] = []

    async def driver(world: World) -> None:
        node = world.add_node("hello", app, keys={"greetings": 1})
        await world.sleep(2.0)
        consoles.append(node.console)

    assert _run(driver) == []
    assert consoles == [["hello from looming (1/1)"]]


def _spin(seconds: float) -> None:
    end = intercept.real_monotonic() + seconds
    while intercept.real_monotonic() < end:
        pass


def test_the_watchdog_does_not_count_host_work() -> None:
    """Virtual time stands still while an artifact is built mid-run; that is
    not a stall (a big build on a loaded machine may take the watchdog's limit)."""

    async def building(world: World) -> None:
        with intercept.suspended():
            _spin(0.6)
            time.sleep(0.1)
        await world.sleep(1.0)

    async def spinning(world: World) -> None:
        _spin(0.6)

    for driver, stopped in [(building, False), (spinning, True)]:
        scenario = Scenario("watchdog", duration=10.0, watchdog_s=0.2)
        scenario.driver = driver  # type: ignore[assignment]
        failures = run(scenario, 1, artifacts={}).failures
        assert any("watchdog" in f for f in failures) == stopped, failures
