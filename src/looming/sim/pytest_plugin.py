"""The pytest plugin: scenario tests in virtual time, swept over seeds.

::

    import looming.sim

    @looming.sim.scenario(duration=30.0)
    async def test_ping(world: looming.sim.World) -> None:
        a = world.add_host("a", ipv4="10.0.0.1/24")
        world.add_host("b", ipv4="10.0.0.2/24")
        stack = await a.stack()
        world.check(await stack.ping("10.0.0.2") < 0.1, "b answers")

Each such test runs once per seed: ``--sim-seed N`` picks one, ``--sim-seeds
A..B`` sweeps a range, and without either the decorator's ``seeds`` (by
default just 1) are used. A failure names the seed and the command that
replays it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from looming.sim.network import LinkSpec
    from looming.sim.world import World

# Loaded by pytest for every test run of the project: imports of the
# simulator wait until a scenario test runs.

ScenarioTest = Callable[["World"], Awaitable[None]]
_MARK = "_looming_sim_scenario"
_SEEDS = pytest.StashKey["list[int] | None"]()


def scenario(
    test: ScenarioTest | None = None,
    *,
    duration: float = 60.0,
    link: LinkSpec | None = None,
    seeds: Sequence[int] = (1,),
    buggify: bool = False,
) -> Any:
    """Make ``async def test_...(world)`` a simulation test (usable with or
    without arguments); ``buggify=True`` lets looming.sim.buggify points fire."""

    def decorate(driver: ScenarioTest) -> Callable[[int], None]:
        def run_test(sim_seed: int) -> None:
            from looming.sim.network import LinkSpec
            from looming.sim.spec import Scenario
            from looming.sim.world import run

            declared = Scenario(
                driver.__name__, duration=duration, link=link or LinkSpec(), buggify=buggify
            )
            declared.driver = driver
            result = run(declared, sim_seed, artifacts={})
            if result.ok:
                return
            replay = (
                f"replay: pytest '{driver.__module__.replace('.', '/')}.py::"
                f"{driver.__name__}' --sim-seed {sim_seed}"
            )
            if result.error is not None:
                # The driver's own exception, so pytest shows its assertion.
                result.error.add_note(f"scenario {driver.__name__}, seed {sim_seed}; {replay}")
                raise result.error
            failures = "\n".join(f"  {f}" for f in result.failures)
            raise AssertionError(
                f"scenario {driver.__name__} failed with seed {sim_seed}:\n{failures}\n{replay}"
            )

        run_test.__name__ = driver.__name__
        run_test.__qualname__ = driver.__qualname__
        run_test.__doc__ = driver.__doc__
        run_test.__module__ = driver.__module__
        setattr(run_test, _MARK, tuple(seeds))
        return run_test

    if test is not None:
        return decorate(test)
    return decorate


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("looming-sim", "looming simulation scenarios")
    group.addoption(
        "--sim-seed", type=int, default=None, help="run @looming.sim.scenario tests with this seed"
    )
    group.addoption(
        "--sim-seeds",
        default=None,
        metavar="A..B",
        help="run @looming.sim.scenario tests once per seed from A to B",
    )


def pytest_configure(config: pytest.Config) -> None:
    one = config.getoption("--sim-seed", None)
    sweep = config.getoption("--sim-seeds", None)
    if one is not None and sweep is not None:
        raise pytest.UsageError("give --sim-seed or --sim-seeds, not both")
    chosen: list[int] | None = None
    if sweep is not None:
        from looming.errors import UsageError
        from looming.sim.cli import parse_seed_range

        try:
            chosen = list(parse_seed_range(sweep))
        except UsageError as error:
            raise pytest.UsageError(str(error)) from None
    elif one is not None:
        if one < 0:
            raise pytest.UsageError(f"--sim-seed: {one} is negative; seeds are 0 or more")
        chosen = [one]
    config.stash[_SEEDS] = chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    declared = getattr(metafunc.function, _MARK, None)
    if declared is None or "sim_seed" not in metafunc.fixturenames:
        return
    chosen = metafunc.config.stash.get(_SEEDS, None)
    if chosen is None:
        chosen = list(declared)
    metafunc.parametrize("sim_seed", chosen, ids=[f"seed{s}" for s in chosen])
