"""The virtual-time loop: ordering, time jumps, gates and deadlock detection."""

from __future__ import annotations

import asyncio
import time

import pytest

from looming.sim.loop import Gate, SimDeadlock, VirtualEventLoop, kill_tasks


def run(coro_factory, loop: VirtualEventLoop | None = None):  # type: ignore[no-untyped-def]
    loop = loop or VirtualEventLoop()
    try:
        return loop.run_until_complete(coro_factory(loop))
    finally:
        loop.close()


def test_ready_callbacks_run_in_the_order_they_were_scheduled() -> None:
    order: list[int] = []

    async def main(loop: VirtualEventLoop) -> None:
        for i in range(100):
            loop.call_soon(order.append, i)
        await asyncio.sleep(0)

    run(main)
    assert order == list(range(100))


def test_equal_deadlines_run_in_the_order_they_were_set() -> None:
    order: list[int] = []

    async def main(loop: VirtualEventLoop) -> None:
        # Interleave two deadlines so a plain heap would mix them up.
        for i in range(200):
            loop.call_at(5.0 if i % 2 else 3.0, order.append, i)
        await asyncio.sleep(10)

    run(main)
    assert order == [i for i in range(200) if i % 2 == 0] + [i for i in range(200) if i % 2]


def test_time_jumps_to_the_next_timer_without_waiting() -> None:
    seen: list[float] = []

    async def main(loop: VirtualEventLoop) -> None:
        for _ in range(5):
            await asyncio.sleep(3600.0)
            seen.append(loop.time())
        await asyncio.sleep(365 * 86400.0)
        seen.append(loop.time())

    started = time.perf_counter()
    run(main)
    assert time.perf_counter() - started < 1.0
    assert seen[:5] == [3600.0, 7200.0, 10800.0, 14400.0, 18000.0]
    assert seen[5] == 18000.0 + 365 * 86400.0


def test_wait_for_timeouts_use_virtual_time() -> None:
    async def main(loop: VirtualEventLoop) -> float:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 42.0)
        return loop.time()

    assert run(main) == 42.0


def test_a_deadlock_names_every_waiting_task() -> None:
    async def stuck_forever(event: asyncio.Event) -> None:
        await event.wait()

    async def main(loop: VirtualEventLoop) -> None:
        event = asyncio.Event()
        loop.create_task(stuck_forever(event), name="waiter")
        await asyncio.sleep(2.5)
        await asyncio.Event().wait()

    with pytest.raises(SimDeadlock) as caught:
        run(main)
    error = caught.value
    assert error.now == 2.5
    assert len(error.blocked) == 2
    assert any("stuck_forever" in line and line.startswith("waiter") for line in error.blocked)
    assert any("main" in line for line in error.blocked)
    assert "deadlock at t=2.500000 s" in str(error)


def test_executor_work_runs_inline_and_no_host_resolver() -> None:
    import threading

    async def main(loop: VirtualEventLoop) -> None:
        here = threading.get_ident()
        assert await loop.run_in_executor(None, threading.get_ident) == here
        assert await asyncio.to_thread(lambda: threading.get_ident()) == here
        with pytest.raises(ZeroDivisionError):
            await loop.run_in_executor(None, lambda: 1 // 0)
        with pytest.raises(RuntimeError, match="asks no host resolver"):
            await loop.getaddrinfo("example.com", 80)

    run(main)


def test_a_paused_gate_defers_and_a_dead_gate_drops() -> None:
    ticks: list[tuple[str, float]] = []

    async def ticker(loop: VirtualEventLoop, label: str) -> None:
        while True:
            await asyncio.sleep(1.0)
            ticks.append((label, loop.time()))

    async def main(loop: VirtualEventLoop) -> None:
        gate = Gate("node")
        loop.create_task(ticker(loop, "node"), context=gate.context())
        await asyncio.sleep(2.5)
        gate.paused = True
        await asyncio.sleep(3.0)
        gate.paused = False
        deferred, gate.deferred = gate.deferred, []
        for callback, args, ctx in deferred:
            loop.call_soon(callback, *args, context=ctx)
        await asyncio.sleep(1.2)
        assert kill_tasks(gate) == 1
        await asyncio.sleep(10.0)

    run(main)
    # Ticks at 1 and 2; the one due at 3 waits for the resume at 5.5; then 6.5.
    assert ticks == [("node", 1.0), ("node", 2.0), ("node", 5.5), ("node", 6.5)]


def test_tasks_are_named_after_their_node_in_creation_order() -> None:
    async def main(loop: VirtualEventLoop) -> list[str]:
        gate = Gate("alpha")

        async def idle() -> None:
            await asyncio.sleep(1)

        first = loop.create_task(idle(), context=gate.context())
        second = loop.create_task(idle())
        await asyncio.gather(first, second)
        return [first.get_name(), second.get_name()]

    names = run(main)
    assert names[0].startswith("alpha/task-")
    assert names[1].startswith("scenario/task-")
    assert int(names[0].rpartition("-")[2]) < int(names[1].rpartition("-")[2])
