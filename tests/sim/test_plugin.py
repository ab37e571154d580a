"""The pytest plugin: seeds from the command line, failures that say how to replay."""

from __future__ import annotations

import pytest

TESTS = """
import looming.sim


@looming.sim.scenario
async def test_ping(world):
    a = world.add_host("a", ipv4="10.0.0.1/24")
    world.add_host("b", ipv4="10.0.0.2/24")
    stack = await a.stack()
    assert await stack.ping("10.0.0.2", timeout=1.0) < 0.1


@looming.sim.scenario(seeds=(4, 5))
async def test_odd_seeds_fail(world):
    assert world.seed % 2 == 0, "odd seed"


def test_plain():
    assert True
"""


def test_default_seeds_come_from_the_decorator(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sim_example=TESTS)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_ping?seed1? PASSED*",
            "*test_odd_seeds_fail?seed4? PASSED*",
            "*test_odd_seeds_fail?seed5? FAILED*",
            "*scenario test_odd_seeds_fail, seed 5; replay: pytest*--sim-seed 5*",
        ]
    )


def test_sim_seeds_sweeps_a_range(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sim_example=TESTS)
    result = pytester.runpytest("-v", "--sim-seeds", "1..4")
    # test_ping x4, test_odd_seeds_fail passes on 2 and 4, test_plain once.
    result.assert_outcomes(passed=7, failed=2)


def test_sim_seed_picks_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sim_example=TESTS)
    result = pytester.runpytest("-v", "--sim-seed", "8")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_ping?seed8? PASSED*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sim-seeds", "9..3"], "*is not a range of seeds*"),
        (["--sim-seed", "2", "--sim-seeds", "1..2"], "*give --sim-seed or --sim-seeds, not both*"),
    ],
)
def test_bad_seed_options_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(test_sim_example=TESTS)
    result = pytester.runpytest(*args)
    assert result.ret != 0
    result.stderr.fnmatch_lines([message])
