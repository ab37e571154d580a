"""A virtual-time asyncio event loop: the heart of the simulator.

:class:`VirtualEventLoop` is an :class:`asyncio.BaseEventLoop` that never
touches the outside world. Its clock is a number it owns: when no callback
is ready, time jumps straight to the earliest timer. Ready callbacks run in
the order they were scheduled, and timers with equal deadlines run in an
order drawn from the run's seed (or in the order they were set, for a loop
made without a seed), so a run is a pure function of its inputs and the
seed explores the orders asyncio allows. When nothing is ready and no timer is set,
nothing can ever happen again: the loop raises :class:`SimDeadlock` naming
every task still waiting.

Callbacks scheduled on behalf of a simulated node pass through that node's
:class:`Gate`, which is how a node is paused (its callbacks wait) or crashed
(its callbacks are dropped) without the node's code knowing.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
import os
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

# The gate of the node whose code is running; None for the scenario itself.
CURRENT_GATE: contextvars.ContextVar[Gate | None] = contextvars.ContextVar(
    "looming_sim_gate", default=None
)

# Idle periods longer than this still jump in one step (asyncio caps a
# select() timeout at one day; virtual time needs no cap, but keeping
# BaseEventLoop's computation unchanged is simpler).
NS_PER_S = 1_000_000_000


class SimDeadlock(RuntimeError):
    """Nothing is ready and no timer is set, so nothing can happen again."""

    def __init__(self, now: float, blocked: list[str]) -> None:
        self.now = now
        self.blocked = blocked
        super().__init__(
            f"deadlock at t={now:.6f} s: nothing is ready and no timer is set, so no task "
            f"can ever wake up. {len(blocked)} task(s) are waiting:\n{_by_node(blocked)}"
        )


def _by_node(blocked: list[str]) -> str:
    """Task lines ("node/task-N: ...") grouped under the node they belong to."""
    groups: dict[str, list[str]] = {}
    for line in blocked:
        name = line.partition(":")[0]
        owner = name.rpartition("/task-")[0] or "scenario"
        groups.setdefault(owner, []).append(f"    {line}")
    lines = []
    for owner, entries in groups.items():
        who = "the scenario" if owner == "scenario" else f"node {owner}"
        lines.append(f"  {who} ({len(entries)} task{'s' if len(entries) > 1 else ''}):")
        lines.extend(entries)
    return "\n".join(lines) or "  (no tasks)"


class Gate:
    """Decides whether a node's callbacks run now, later, or never."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.alive = True
        self.paused = False
        self.deferred: list[tuple[Callable[..., object], tuple[Any, ...], contextvars.Context]] = []
        self.dropped = 0
        self.tasks: dict[int, asyncio.Task[Any]] = {}

    def __call__(self, callback: Callable[..., object], *args: Any) -> None:
        if not self.alive:
            self.dropped += 1
            return
        if self.paused:
            self.deferred.append((callback, args, contextvars.copy_context()))
            return
        callback(*args)

    def context(self) -> contextvars.Context:
        """A fresh context in which code runs as this node."""
        ctx = contextvars.Context()
        ctx.run(CURRENT_GATE.set, self)
        return ctx


class _OrderedTimer(asyncio.TimerHandle):
    """A timer ordered by (deadline, order of scheduling)."""

    __slots__ = ("_order", "_tie", "watchdog")

    def __init__(
        self,
        when: float,
        tie: int,
        order: int,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None,
    ) -> None:
        super().__init__(when, callback, args, loop, context)
        self._tie = tie
        self._order = order
        # A watchdog (a run's deadline) is not something a task waits for.
        self.watchdog = False

    def __lt__(self, other: _OrderedTimer) -> bool:  # type: ignore[override]
        # Called for every heap operation: no tuples, no isinstance.
        mine: float = self._when  # type: ignore[attr-defined]  # set by TimerHandle
        theirs: float = other._when  # type: ignore[attr-defined]
        if mine != theirs:
            return mine < theirs
        if self._tie != other._tie:
            return self._tie < other._tie
        return self._order < other._order


class _VirtualSelector:
    """Stands where BaseEventLoop expects a selector: waiting is jumping."""

    def __init__(self, loop: VirtualEventLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        loop = self._loop
        if timeout is None:
            raise SimDeadlock(loop.time(), loop.describe_tasks())
        if timeout > 0:
            scheduled: list[_OrderedTimer] = loop._scheduled  # type: ignore[attr-defined]  # BaseEventLoop's heap
            head = scheduled[0]
            if head.watchdog and all(t.watchdog or t.cancelled() for t in scheduled):
                # Only deadlines are left: no task can wake before them, ever.
                raise SimDeadlock(loop.time(), loop.describe_tasks())
            loop._advance_to(head.when())
        return []

    def close(self) -> None:
        pass


class VirtualEventLoop(asyncio.BaseEventLoop):
    """An event loop in virtual time, with no real I/O, threads or clocks."""

    def __init__(self, tie_seed: int | None = None) -> None:
        super().__init__()
        # With a seed, timers due at the same instant run in an order drawn
        # from it (asyncio promises no order); without, in the order set.
        self._ties = random.Random(tie_seed) if tie_seed is not None else None
        self._now = 0.0
        self._clock_resolution = 1e-9
        self._selector = _VirtualSelector(self)
        self._timer_order = itertools.count()
        self._task_order = itertools.count()
        self.set_exception_handler(self._report_exception)
        self.garbage_reports: list[str] = []

    # -- time -----------------------------------------------------------

    def time(self) -> float:
        return self._now

    def now_ns(self) -> int:
        """Virtual nanoseconds since the start of the run."""
        return round(self._now * NS_PER_S)

    def _advance_to(self, when: float) -> None:
        if when > self._now:
            self._now = when
            # BaseEventLoop runs timers due before now + resolution; far from
            # zero a nanosecond is below a float's step, so widen it to one step.
            self._clock_resolution = max(1e-9, 2 * math.ulp(when))

    # -- scheduling ----------------------------------------------------

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        gate = context.get(CURRENT_GATE) if context is not None else CURRENT_GATE.get()
        if gate is not None:
            return super().call_soon(gate, callback, *args, context=context)
        return super().call_soon(callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()  # type: ignore[attr-defined]  # BaseEventLoop internal
        gate = context.get(CURRENT_GATE) if context is not None else CURRENT_GATE.get()
        if gate is not None:
            callback, args = gate, (callback, *args)
        tie = self._ties.getrandbits(32) if self._ties is not None else 0
        timer = _OrderedTimer(when, tie, next(self._timer_order), callback, args, self, context)
        heapq.heappush(self._scheduled, timer)  # type: ignore[attr-defined]  # BaseEventLoop's heap
        timer._scheduled = True  # type: ignore[attr-defined]  # as BaseEventLoop.call_at does
        return timer

    def call_watchdog(
        self, when: float, callback: Callable[..., object], *args: Any
    ) -> asyncio.TimerHandle:
        """A deadline: fires at ``when`` like a timer, but when only
        deadlines are left the loop reports a deadlock instead of waiting."""
        timer = self.call_at(when, callback, *args, context=contextvars.Context())
        assert isinstance(timer, _OrderedTimer)
        timer.watchdog = True
        return timer

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # one thread: nothing to wake

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> Any:  # type: ignore[override]
        """Run ``func`` now, on this thread, as the caller (node) that asked:
        a simulation runs no threads, so work handed to an executor (as
        ``asyncio.to_thread`` does) happens inline, in virtual time, and the
        returned future is already done."""
        future = self.create_future()
        try:
            result = func(*args)
        except Exception as error:
            future.set_exception(error)
        else:
            future.set_result(result)
        return future

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "the simulator asks no host resolver: getaddrinfo is not available; "
            "use the node's stack to resolve names"
        )

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "the simulator asks no host resolver: getnameinfo is not available; "
            "use the node's stack to resolve names"
        )

    def _report_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "destroyed but it is pending" in message or "never retrieved" in message:
            # Found by the garbage collector, whose timing is not part of the
            # run: kept aside, never in the trace.
            self.garbage_reports.append(message)
            return
        self.default_exception_handler(context)

    # -- tasks ----------------------------------------------------------

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, _T],
        *,
        name: object = None,
        context: contextvars.Context | None = None,
        **kwargs: Any,
    ) -> asyncio.Task[_T]:
        # Made here rather than by a task factory: asyncio passes a factory
        # different arguments on each version (3.13.0 renames its task to
        # "None" afterwards), and deadlock reports list tasks by these names.
        self._check_closed()  # type: ignore[attr-defined]  # BaseEventLoop internal
        return self._make_task(self, coro, name=name, context=context, **kwargs)

    def _make_task(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        order = next(self._task_order)
        context = kwargs.get("context")
        gate = context.get(CURRENT_GATE) if context is not None else CURRENT_GATE.get()
        label = gate.label if gate is not None else "scenario"
        kwargs.setdefault("name", f"{label}/task-{order}")
        if kwargs["name"] is None:
            kwargs["name"] = f"{label}/task-{order}"
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        if gate is not None and not gate.alive:
            # Started by a crashed node's last words: it will never run.
            task._log_destroy_pending = False  # type: ignore[attr-defined]  # not a leak
            coro.close()
            return task
        if gate is not None:
            gate.tasks[order] = task
            task.add_done_callback(lambda _t: gate.tasks.pop(order, None))
        return task

    def describe_tasks(self) -> list[str]:
        """Every pending task, grouped by the node it belongs to, with where
        it waits and on what, in creation order."""
        tasks = sorted(
            (
                t
                for t in asyncio.all_tasks(self)
                if not t.done() and getattr(t.get_coro(), "cr_frame", True) is not None
            ),
            key=lambda t: _order_of(t.get_name()),
        )
        return [f"{task.get_name()}: {_waiting(task)}" for task in tasks]

    def run_in_context(
        self, coro: Coroutine[Any, Any, _T], context: contextvars.Context
    ) -> asyncio.Task[_T]:
        return self.create_task(coro, context=context)


def _waiting(task: asyncio.Task[Any]) -> str:
    """Where a suspended task waits (innermost frame, and the innermost one
    outside asyncio) and what it waits for."""
    frames = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    if not frames:
        return f"waiting in {task.get_coro()!r}"

    def place(frame: Any) -> str:
        code = frame.f_code
        name = getattr(code, "co_qualname", code.co_name)
        return f"{name} ({code.co_filename}:{frame.f_lineno})"

    where = place(frames[-1])
    own = [f for f in frames if f"{os.sep}asyncio{os.sep}" not in f.f_code.co_filename]
    if own and own[-1] is not frames[-1]:
        where += f" called from {place(own[-1])}"
    waiter = getattr(task, "_fut_waiter", None)
    if isinstance(waiter, asyncio.Task):
        what = f"task {waiter.get_name()}"
    elif waiter is not None:
        what = "a future nobody will complete"
    else:
        what = "nothing (it is about to run)"
    return f"waiting in {where} for {what}"


def _order_of(name: str) -> tuple[int, str]:
    head, _, number = name.rpartition("/task-")
    return (int(number), head) if number.isdigit() else (1 << 62, name)


def kill_tasks(gate: Gate) -> int:
    """Stop every task of a crashed node where it stands, without running it
    again: its coroutines are closed (their ``finally`` blocks run now, with
    the node already cut off) and asyncio is told not to mourn them."""
    gate.alive = False
    gate.paused = False
    gate.deferred.clear()
    killed = 0
    # Run their last words as the (now dead) node, so whatever they schedule
    # is dropped by the gate rather than run as the scenario.
    as_node = gate.context()
    for task in list(gate.tasks.values()):
        if task.done():
            continue
        task._log_destroy_pending = False  # type: ignore[attr-defined]  # a crash is not a leak
        coro = task.get_coro()
        try:
            if coro is not None:
                as_node.run(coro.close)
        except BaseException:  # the node is gone; its last words are not ours
            pass
        killed += 1
    gate.tasks.clear()
    return killed
