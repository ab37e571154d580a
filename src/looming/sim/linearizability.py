"""A linearizability checker for key-value histories.

A scenario's driver records what its clients did, each operation with the
virtual time it was invoked and the time it returned (or that it never
returned: a timeout, a crash). The history is linearizable when every key
behaves like one atomic register: some order of the operations agrees with
real time (an operation that returned before another was invoked comes
first) and with what each read saw and each compare-and-set answered.
Operations that never returned may have taken effect at any time after
they were invoked, or not at all.

    history = sim.History(world)
    op = history.invoke("client1", "cas", "k", value=2, expected=1)
    ...
    history.ok(op, swapped)        # or history.unknown(op), history.failed(op)
    world.check(history.check(), "the store is linearizable")

Linearizability is local (Herlihy and Wing), so keys are checked one at a
time. Each key is a depth-first search over which operation takes effect
next, memoised on (operations done, register value) as in Wing and Gong's
algorithm with Lowe's memoisation: fine for the few hundred operations per
key a scenario makes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from looming.sim.world import World

Kind = Literal["read", "write", "cas"]
KINDS = ("read", "write", "cas")


@dataclass
class Op:
    """One client operation on one key.

    ``value``: what a write writes, or what a cas writes when it swaps.
    ``expected``: what a cas compares with. ``result``: what a read returned
    (None for an absent key), or whether a cas swapped. ``returned`` is None
    for an operation whose outcome is unknown.
    """

    client: Hashable
    kind: Kind
    key: Hashable
    invoked: float
    returned: float | None = None
    value: Hashable = None
    expected: Hashable = None
    result: Hashable = None

    def describe(self) -> str:
        if self.kind == "read":
            what = f"read {self.key!r} -> {self.result!r}"
        elif self.kind == "write":
            what = f"write {self.key!r} = {self.value!r}"
        else:
            outcome = "?" if self.returned is None else self.result
            what = f"cas {self.key!r} {self.expected!r} -> {self.value!r}: {outcome}"
        end = "never returned" if self.returned is None else f"{self.returned:.6f}"
        return f"{self.client}: {what} [{self.invoked:.6f}, {end}]"


@dataclass
class Verdict:
    """The checker's answer: true when linearizable, with why not otherwise."""

    ok: bool
    message: str
    key: Hashable = None
    stuck: list[Op] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.message


def _apply(op: Op, state: Hashable) -> tuple[bool, Hashable]:
    """(whether ``op`` may take effect in ``state``, the state after it)."""
    if op.kind == "read":
        return op.result == state, state
    if op.kind == "write":
        return True, op.value
    if op.returned is None:  # a cas whose answer nobody saw
        return True, op.value if state == op.expected else state
    if op.result:
        return state == op.expected, op.value
    return state != op.expected, state


def _check_key(ops: list[Op], initial: Hashable) -> tuple[bool, list[Op]]:
    """(linearizable, the operations that could not go next at the deepest point)."""
    # A read nobody saw the answer of constrains nothing.
    ops = [op for op in ops if not (op.kind == "read" and op.returned is None)]
    ops.sort(key=lambda op: op.invoked)
    count = len(ops)
    ends = [math.inf if op.returned is None else op.returned for op in ops]
    complete = 0
    for index, op in enumerate(ops):
        if op.returned is not None:
            complete |= 1 << index
    seen: set[tuple[int, Hashable]] = set()
    deepest: list[Any] = [-1, []]

    def search(done: int, state: Hashable) -> bool:
        if done & complete == complete:
            return True
        if (done, state) in seen:
            return False
        seen.add((done, state))
        # An operation may go next unless another one not yet done returned
        # before it was invoked: it was invoked by the earliest such return.
        horizon = min(ends[i] for i in range(count) if not done >> i & 1)
        candidates = [i for i in range(count) if not done >> i & 1 and ops[i].invoked <= horizon]
        depth = bin(done).count("1")
        if depth > deepest[0]:
            deepest[0], deepest[1] = depth, [ops[i] for i in candidates]
        for i in candidates:
            allowed, after = _apply(ops[i], state)
            if allowed and search(done | 1 << i, after):
                return True
        return False

    ok = search(0, initial)
    return ok, deepest[1]


def check_history(ops: Iterable[Op], initial: Hashable = None) -> Verdict:
    """Whether ``ops`` (on any number of keys) is linearizable, each key a
    register starting at ``initial`` (None: absent)."""
    by_key: dict[Hashable, list[Op]] = {}
    for op in ops:
        if op.kind not in KINDS:
            raise ValueError(f"unknown operation {op.kind!r}: use one of {', '.join(KINDS)}")
        by_key.setdefault(op.key, []).append(op)
    for key, key_ops in by_key.items():
        ok, stuck = _check_key(key_ops, initial)
        if not ok:
            listing = "; ".join(op.describe() for op in stuck)
            return Verdict(
                False,
                f"key {key!r} is not linearizable: no order of its {len(key_ops)} operations "
                f"agrees with real time and an atomic register; at the deepest point none "
                f"of these could go next: {listing}",
                key,
                stuck,
            )
    total = sum(len(v) for v in by_key.values())
    return Verdict(True, f"{total} operations on {len(by_key)} keys are linearizable")


class History:
    """Client operations recorded by a driver, timed in virtual seconds."""

    def __init__(
        self, world: World | None = None, *, now: Callable[[], float] | None = None
    ) -> None:
        if now is None:
            if world is None:
                raise ValueError("History needs a world or a now() function")
            running = world

            def now() -> float:
                return running.now

        self._now: Callable[[], float] = now
        self.ops: list[Op] = []

    def invoke(
        self,
        client: Hashable,
        kind: Kind,
        key: Hashable,
        *,
        value: Hashable = None,
        expected: Hashable = None,
    ) -> Op:
        """Record that ``client`` starts an operation; finish it with
        :meth:`ok`, :meth:`failed` or :meth:`unknown`."""
        if kind not in KINDS:
            raise ValueError(f"unknown operation {kind!r}: use one of {', '.join(KINDS)}")
        op = Op(client, kind, key, self._now(), None, value, expected)
        self.ops.append(op)
        return op

    def ok(self, op: Op, result: Hashable = None) -> None:
        """The operation returned ``result`` (a read's value, a cas's success)."""
        op.returned = self._now()
        op.result = bool(result) if op.kind == "cas" else result

    def failed(self, op: Op) -> None:
        """The operation certainly did not take effect (e.g. refused before sending)."""
        self.ops.remove(op)

    def unknown(self, op: Op) -> None:
        """No answer (a timeout, a crash): it may or may not have taken effect."""
        op.returned = None

    def check(self, initial: Hashable = None) -> Verdict:
        return check_history(self.ops, initial)
