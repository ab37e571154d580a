"""``looming sim shrink``: faults as text, delta debugging, and the planted
bug of examples/scenarios/dedup_crash.py found, shrunk and replayed."""

from __future__ import annotations

import random
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import looming.sim
from looming.errors import UsageError
from looming.sim import World
from looming.sim.cli import sweep_outcomes
from looming.sim.shrink import (
    Override,
    Shrinker,
    ddmin,
    format_fault,
    format_faults,
    group_faults,
    parse_fault,
    parse_faults,
    signature,
)
from looming.sim.spec import (
    Crash,
    Heal,
    Hold,
    Isolate,
    Partition,
    Pause,
    Release,
    Restart,
    Resume,
    load_scenario,
)
from looming.sim.swarm import Swarm, draw
from looming.sim.world import fault_schedule, prepare, run
from tests.sim.conftest import run_looming

EVERY_KIND = [
    (0.5, Crash("server")),
    (2.25, Restart("server", keep_state=False)),
    (3.0, Restart("server", keep_state=True)),
    (4.0, Pause("a", 1.5)),
    (4.5, Pause("a")),
    (5.0, Resume("a")),
    (6.0, Partition(("a", "b"), ("c",), True, 2.0)),
    (6.5, Partition(("a",), ("b", "c"), False, None)),
    (7.0, Isolate("b", 0.75)),
    (7.5, Isolate("b")),
    (8.0, Heal()),
    (9.0, Hold("c")),
    (9.5, Release("c", drop=True)),
    (9.75, Release("c", drop=False)),
    (1 / 3, Crash("node_2-x")),
]


def test_every_fault_kind_reads_back_as_written() -> None:
    for when, fault in EVERY_KIND:
        assert parse_fault(format_fault(when, fault)) == (when, fault)
    assert parse_faults(format_faults(EVERY_KIND)) == EVERY_KIND
    assert parse_faults(format_faults([])) == [] == parse_faults("none")


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.randoms())
def test_drawn_swarm_schedules_read_back_exactly(end: float, rng: random.Random) -> None:
    swarm = Swarm(("a", "b"), 0.0, 1.0 + end % 1000, max_rate=2.0)
    schedule = draw(swarm, ["a", "b", "c"], rng).faults
    assert parse_faults(format_faults(schedule)) == schedule


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.randoms())
def test_drawn_disk_faults_read_back_exactly(end: float, rng: random.Random) -> None:
    from looming.sim.swarm import KINDS

    swarm = Swarm(("a",), 0.0, 1.0 + end % 1000, kinds=(*KINDS, "disk"), max_rate=2.0)
    schedule = draw(swarm, ["a", "b"], rng).faults
    assert parse_faults(format_faults(schedule)) == schedule


def test_disk_faults_with_every_setting_read_back_exactly() -> None:
    from looming.sim import DiskFault, DiskFaults
    from looming.sim.network import Exponential, Fixed, Uniform

    for faults, duration in [
        (DiskFaults(), None),
        (DiskFaults(lost_writes=0.25, torn_writes=1.0, read_errors=1 / 3), 2.5),
        (DiskFaults(corruption=0.01, slow_io=0.5, slow=Exponential(0.1, 0.02)), None),
        (DiskFaults(latency=Uniform(0.001, 0.01)), 0.1),
        (DiskFaults(latency=Fixed(0.002)), None),
    ]:
        timed = (1.5, DiskFault("server", faults, duration))
        assert parse_fault(format_fault(*timed)) == timed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1:disk:a:lost=0.5", "not NAME=VALUE"),
        ("1:disk:a:lost_writes=2", "probability"),
        ("1:disk:a:lost_writes=often", "not a probability"),
        ("1:disk:a:latency=normal/1/2", "fixed/S"),
        ("1:disk:a:latency=uniform/1", "does not fit uniform"),
        ("1:disk:a:latency=uniform/2/1", "low <= high"),
    ],
)
def test_malformed_disk_faults_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=re.escape(says)):
        parse_faults(text)


def test_a_fault_kind_without_a_text_form_is_a_clear_error() -> None:
    @dataclass(frozen=True)
    class Flood(looming.sim.Fault):
        node: str

    with pytest.raises(UsageError, match="Flood fault cannot be written for --faults"):
        format_faults([(1.0, Crash("a")), (2.0, Flood("a"))])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("3:explode:server", "kinds: crash"),
        ("x:crash:server", "not a number"),
        ("-1:crash:server", "0 or more"),
        ("1:crash", "takes 1 to 1"),
        ("1:restart:server:maybe", "'keep' or 'lose'"),
        ("1:release:server:keep", "'drop' or 'deliver'"),
        ("1:partition:a:b:sideways", "'oneway' or 'both'"),
        ("1:pause:a:soon", "not a number"),
        ("1:crash::", "takes 1 to 1"),
    ],
)
def test_malformed_fault_lists_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=re.escape(says)):
        parse_faults(text)


@settings(max_examples=200)
@given(st.integers(1, 40), st.data())
def test_ddmin_finds_exactly_the_faults_that_matter(size: int, data: st.DataObject) -> None:
    units = list(range(size))
    needed = set(data.draw(st.sets(st.sampled_from(units), max_size=4)))
    calls: list[list[int]] = []

    def fails(chosen: list[int]) -> bool:
        calls.append(chosen)
        return needed <= set(chosen)

    found = ddmin(units, fails)
    assert set(found) == needed
    assert len(calls) <= 3 * max(1, len(needed)) * size  # never the 2**size subsets


def test_whole_faults_are_grouped_before_single_entries() -> None:
    schedule = [
        (1.0, Crash("s")),
        (1.5, Hold("t")),
        (2.0, Restart("s")),
        (2.5, Release("t")),
        (3.0, Partition(("s",), ("t",))),
        (3.5, Pause("t", 1.0)),
        (4.0, Heal()),
        (5.0, Restart("s")),
    ]
    assert group_faults(schedule) == [[0, 2], [1, 3], [4, 6], [5], [7]]


def test_numbers_do_not_make_a_different_failure() -> None:
    a = "check failed at t=9.081 s: no request applied twice (applied twice: client2-36)"
    b = "check failed at t=12.5 s: no request applied twice (applied twice: client1-7 c2-3)"
    assert signature(a) == signature(b)
    assert signature(a) != signature("the driver did not finish within the scenario's 9.0 s")


def _fragile() -> looming.sim.Scenario:
    """Fails when a crash of 'b' comes after t=4 (and 'c' is optional)."""
    scenario = looming.sim.Scenario("fragile", duration=20.0)
    for name in ("a", "b", "c"):
        scenario.host(name)
    scenario.optional("c")
    scenario.swarm(["a", "b"], kinds=["crash", "pause", "hold"], max_rate=1.0, end=15.0)

    @scenario.main
    async def drive(world: World) -> None:
        await world.sleep(4.0)
        before = world.node("b").incarnations
        await world.sleep(world.scenario.duration - 1.0 - world.now)
        late = world.node("b").incarnations - before
        world.check(not late, f"b never crashed after t=4 s ({late} times)")

    return scenario


def test_a_swarm_failure_shrinks_to_one_fault_without_the_optional_node() -> None:
    scenario = _fragile()
    failing = next(s for s in range(1, 100) if not run(scenario, s, artifacts={}).ok)
    lines: list[str] = []
    shrinker = Shrinker(scenario, failing, {}, say=lines.append)
    best = shrinker.shrink(Override())
    assert best is not None and best.schedule is not None
    assert len(fault_schedule(scenario, failing)) > 1
    assert [type(f) for _, f in best.schedule] in ([Crash], [Restart])
    assert best.without == ("c",)
    assert best.duration is not None and best.duration < 20.0
    replayed = run(best.apply(scenario), failing, artifacts={})
    assert not replayed.ok and "b never crashed after t=4 s" in replayed.failures[0]
    assert any("fails the same way" in line for line in lines)
    assert any("passes" in line for line in lines)


def test_a_passing_seed_has_nothing_to_shrink() -> None:
    scenario = _fragile()
    passing = next(s for s in range(1, 100) if run(scenario, s, artifacts={}).ok)
    lines: list[str] = []
    assert Shrinker(scenario, passing, {}, say=lines.append).shrink(Override()) is None
    assert lines == [f"seed {passing} passes: nothing to shrink"]


def test_leaving_out_a_node_keeps_the_faults_of_the_others() -> None:
    scenario = _fragile()
    scenario.at(2.0, Crash("c"))
    scenario.at(3.0, Crash("a"))
    without = Override(without=("c",)).apply(scenario)
    assert [n.name for n in without.nodes] == ["a", "b"]
    assert without.faults == [(3.0, Crash("a"))]
    assert [swarm.nodes for swarm in without.swarms] == [("a", "b")]
    assert without.schedule is None and without.optional_nodes == []
    assert scenario.optional_nodes == ["c"] and len(scenario.nodes) == 3  # a copy


def test_overrides_name_only_optional_nodes() -> None:
    with pytest.raises(UsageError, match="not an optional node"):
        Override(without=("a",)).apply(_fragile())
    with pytest.raises(UsageError, match="unknown node 'z'"):
        Override(schedule=((1.0, Crash("z")),)).apply(_fragile())


# -- the planted bug --------------------------------------------------------------------


def _crashes(faults: list[tuple[float, looming.sim.Fault]]) -> int:
    """How many times the faults stop a node: a crash, or a restart of a
    node not crashed just before (a restart of a running node crashes it)."""
    count, down = 0, set()
    for _when, fault in faults:
        if isinstance(fault, Crash):
            count += 1
            down.add(fault.node)
        elif isinstance(fault, Restart):
            count += fault.node not in down
            down.discard(fault.node)
    return count


def test_the_planted_bug_is_found_shrunk_and_replayed(app_copies: Path) -> None:
    """A sweep of seeds 1..200 finds the duplicate-request table lost on a
    crash; shrink leaves at most one crash; the printed command replays it in
    a fresh process; the fixed variant passes every seed of the sweep."""
    scenarios = app_copies / "scenarios"
    planted = load_scenario(scenarios / "dedup_crash.py")
    outcomes = sweep_outcomes(planted, prepare(planted), range(1, 201), 1)
    found = next((o for o in outcomes if not o.ok), None)
    assert found is not None, "the sweep of seeds 1..200 did not find the planted bug"
    assert "applied twice" in (found.failure or "")
    seed = found.seed

    shrunk = run_looming(["sim", "shrink", str(scenarios / "dedup_crash.py"), "--seed", str(seed)])
    assert shrunk.returncode == 0, shrunk.stdout + shrunk.stderr
    replay = next(line for line in shrunk.stdout.splitlines() if line.startswith("replay: "))
    words = shlex.split(replay.removeprefix("replay: "))
    faults = parse_faults(words[words.index("--faults") + 1])
    assert _crashes(faults) <= 1 and len(faults) <= 2, faults
    assert "confirmed: the replay fails the same way in a fresh process" in shrunk.stdout
    assert "shrink: run " in shrunk.stdout  # progress while shrinking

    again = run_looming([*words[1:], "--no-pcap"])
    assert again.returncode == 1
    assert "applied twice" in again.stdout

    fixed = load_scenario(scenarios / "dedup_crash_fixed.py")
    outcomes = list(sweep_outcomes(fixed, prepare(fixed), range(1, 201), 2))
    assert all(o.ok for o in outcomes), [(o.seed, o.failure) for o in outcomes if not o.ok]


def test_shrink_on_the_command_line(app_copies: Path) -> None:
    scenario = str(app_copies / "scenarios" / "echo_crash.py")
    helped = run_looming(["sim", "shrink", "--help"])
    assert helped.returncode == 0 and "--max-runs" in helped.stdout
    for bad in (
        ["--max-runs", "0"],
        ["--faults", "1:explode:server"],
        ["--without", "server"],
        ["--seed", "-3"],
        ["--duration", "0"],
    ):
        done = run_looming(["sim", "shrink", scenario, *bad])
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert done.stderr.startswith("looming sim"), done.stderr
    missing = run_looming(["sim", "shrink", "no-such-scenario.py"])
    assert missing.returncode == 2 and "no scenario file" in missing.stderr
    passing = run_looming(["sim", "shrink", scenario, "--seed", "1", "--no-confirm"])
    assert passing.returncode == 1 and "nothing to shrink" in passing.stdout
    given = run_looming(
        ["sim", "run", scenario, "--seed", "1", "--no-pcap", "--faults", "none", "--trace"]
    )
    assert given.returncode == 1  # no crash: the server booted once, not twice
    assert "schedule given: 0 faults" in given.stdout
