"""What a running direct stack logs about its counters: a rate-limited
warning when a limit bites, every nonzero counter at shutdown and on
SIGUSR1."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from contextlib import AsyncExitStack

import pytest

from looming import runtime
from looming.errors import ConnectionTimeout
from looming.net import stack as stack_module
from looming.net.counter_log import LimitWarnings, nonzero
from tests.net.test_limits import A, limited_pair

DROPS = "tcp.connection_limit_dropped"


def test_a_limit_is_warned_of_at_once_then_once_an_interval() -> None:
    warnings = LimitWarnings(interval_s=60)
    assert warnings.check({DROPS: 0}, 0.0) == []
    (first,) = warnings.check({DROPS: 3}, 1.0)
    assert "connection limit" in first and "3 since start" in first
    assert warnings.check({DROPS: 50}, 30.0) == []  # within the interval: quiet
    (second,) = warnings.check({DROPS: 80}, 61.0)
    assert "77 in the last 60 s (80 in all" in second
    assert warnings.check({DROPS: 80}, 500.0) == []  # nothing new
    both = warnings.check({DROPS: 81, "tcp.memory_limit_dropped": 1}, 501.0)
    assert len(both) == 2 and "memory limit" in both[1]


def test_nonzero_counters_on_one_line() -> None:
    assert nonzero({"b.y": 2, "a.x": 1, "c.z": 0}) == "a.x=1 b.y=2"
    assert nonzero({"c.z": 0}) == "all zero"


def test_the_stack_warns_when_its_connection_limit_bites(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack_module, "_LIMIT_CHECK_S", 0.05)
    caplog.set_level(logging.INFO, logger="looming.net.stack")

    async def main() -> None:
        server, client = await limited_pair(max_connections=1)
        hold = asyncio.Event()

        async def handler(flow: object) -> None:
            await hold.wait()

        await server.tcp.listen(80, handler)
        flow = await client.tcp.connect(A.ip, 80, timeout=1)
        with pytest.raises(ConnectionTimeout):
            await client.tcp.connect(A.ip, 80, timeout=0.2)
        await asyncio.sleep(0.2)
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1 and "connection limit reached" in warned[0].getMessage()
        hold.set()
        await flow.close()
        await server.disconnect()
        await client.disconnect()

    asyncio.run(main())
    shutdown = [r.getMessage() for r in caplog.records if "at shutdown" in r.getMessage()]
    assert any(f"{DROPS}=" in line for line in shutdown)


def test_sigusr1_logs_the_counters_of_a_running_unikernel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="looming.net.stack")

    async def start(keys: runtime.Keys, devices: AsyncExitStack) -> None:
        server, client = await limited_pair()
        assert await client.ping(A.ip) > 0
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.05)
        await server.disconnect()
        await client.disconnect()

    assert asyncio.run(runtime._run(start, runtime.Keys({}))) == 0
    reports = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stack")]
    assert any("icmp." in line and "at shutdown" not in line for line in reports), reports
