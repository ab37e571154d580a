"""The linearizability checker against a brute-force one on small
histories, on histories linearizable by construction, and in a run."""

from __future__ import annotations

import itertools
from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

import looming.sim
from looming.sim import World
from looming.sim.linearizability import History, Op, check_history
from looming.sim.world import run


def _legal(order: list[Op], initial: Hashable) -> bool:
    state = initial
    for op in order:
        if op.kind == "read":
            if op.result != state:
                return False
        elif op.kind == "write":
            state = op.value
        elif op.returned is None:
            state = op.value if state == op.expected else state
        elif op.result:
            if state != op.expected:
                return False
            state = op.value
        elif state == op.expected:
            return False
    return True


def _respects_real_time(order: list[Op]) -> bool:
    for later_index, later in enumerate(order):
        for earlier in order[later_index + 1 :]:
            if earlier.returned is not None and earlier.returned < later.invoked:
                return False
    return True


def brute_force(ops: list[Op], initial: Hashable = None) -> bool:
    """Every key: some subset of the unanswered operations plus all answered
    ones, in some order, respects real time and register semantics."""
    for key in {op.key for op in ops}:
        mine = [op for op in ops if op.key == key]
        done = [op for op in mine if op.returned is not None]
        pending = [op for op in mine if op.returned is None]
        found = False
        for size in range(len(pending) + 1):
            for chosen in itertools.combinations(pending, size):
                for order in itertools.permutations(done + list(chosen)):
                    if _respects_real_time(list(order)) and _legal(list(order), initial):
                        found = True
                        break
                if found:
                    break
            if found:
                break
        if not found:
            return False
    return True


VALUES = st.sampled_from([None, 1, 2, 3])


@st.composite
def histories(draw: st.DrawFn) -> list[Op]:
    ops = []
    for client in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        invoked = draw(st.integers(0, 8))
        answered = draw(st.booleans() | st.just(True))
        returned = invoked + draw(st.integers(0, 4)) if answered else None
        result: Hashable = None
        if kind == "read":
            result = draw(VALUES)
        elif kind == "cas":
            result = draw(st.booleans())
        ops.append(
            Op(
                client,
                kind,
                draw(st.sampled_from(["x", "y"])),
                float(invoked),
                None if returned is None else float(returned),
                value=draw(VALUES) if kind != "read" else None,
                expected=draw(VALUES) if kind == "cas" else None,
                result=result,
            )
        )
    return ops


@settings(max_examples=400, deadline=None)
@given(histories())
def test_the_checker_agrees_with_brute_force(ops: list[Op]) -> None:
    verdict = check_history(ops)
    assert bool(verdict) == brute_force(ops), [op.describe() for op in ops]
    if not verdict:
        assert verdict.key is not None and "is not linearizable" in verdict.message


@st.composite
def linearizable_histories(draw: st.DrawFn) -> list[Op]:
    """Operations on one register, each taking effect at a point inside its
    interval; answers computed from that order, so linearizable by construction."""
    ops = []
    for client in range(draw(st.integers(1, 12))):
        point = draw(st.integers(0, 1000))
        start = point - draw(st.integers(0, 60))
        end = point + draw(st.integers(0, 60))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        ops.append((point, client, kind, start, end, draw(VALUES), draw(VALUES)))
    ops.sort()
    state: Hashable = None
    history = []
    for _point, client, kind, start, end, value, expected in ops:
        result: Hashable = None
        if kind == "read":
            result = state
        elif kind == "write":
            state = value
        else:
            result = state == expected
            if result:
                state = value
        lost = draw(st.integers(0, 9)) == 0 and kind != "read"
        history.append(
            Op(
                client,
                kind,
                "k",
                float(start),
                None if lost else float(end),
                value,
                expected,
                result,
            )
        )
    return history


@settings(max_examples=200, deadline=None)
@given(linearizable_histories())
def test_histories_linearizable_by_construction_are_accepted(ops: list[Op]) -> None:
    assert check_history(ops), [op.describe() for op in ops]


def test_a_stale_read_after_a_write_returned_is_refused() -> None:
    ops = [
        Op("a", "write", "k", 0.0, 1.0, value=1),
        Op("b", "read", "k", 2.0, 3.0, result=None),
    ]
    verdict = check_history(ops)
    assert not verdict
    assert "key 'k' is not linearizable" in str(verdict)
    assert "b: read 'k' -> None" in str(verdict)
    # Overlapping instead: the read may come first.
    ops[1].invoked = 0.5
    assert check_history(ops)


def test_a_history_recorded_in_a_run_is_checked_by_world_check() -> None:
    scenario = looming.sim.Scenario("register", duration=10.0)
    verdicts = []

    @scenario.main
    async def drive(world: World) -> None:
        register: dict[str, int] = {}
        history = History(world)

        async def client(name: str, lie: bool) -> None:
            for round_ in range(3):
                op = history.invoke(name, "write", "k", value=round_)
                await world.sleep(world.random.uniform(0.01, 0.1))
                register["k"] = round_
                history.ok(op)
                op = history.invoke(name, "read", "k")
                await world.sleep(world.random.uniform(0.01, 0.1))
                history.ok(op, 99 if lie and round_ == 2 else register.get("k"))

        import asyncio

        await asyncio.gather(client("c1", False), client("c2", world.seed == 2))
        verdict = history.check()
        verdicts.append(verdict)
        world.check(verdict, str(verdict))

    good = run(scenario, 1, artifacts={})
    bad = run(scenario, 2, artifacts={})
    assert good.ok, good.failures
    assert verdicts[0] and "12 operations on 1 keys are linearizable" in str(verdicts[0])
    assert not bad.ok and "read 'k' -> 99" in bad.failures[0]
