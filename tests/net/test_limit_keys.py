"""The direct stack's limit keys: bad values are refused with one line and
exit code 2, by ``looming configure``, by a built unikernel's command line
and environment, and by ``DirectStack.connect``; all with one validator."""

from __future__ import annotations

import asyncio
import sys
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from looming import runtime
from looming.errors import UsageError
from looming.net import limits
from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.net.tcp.config import CONGESTION_CONTROLS
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.config.tooling import copy_example, looming

SPECS = [
    runtime.KeySpec("tcp_max_connections", "int", 10000, ""),
    runtime.KeySpec("tcp_memory_limit", "int", 256 * 1024 * 1024, ""),
    runtime.KeySpec("tcp_congestion", "str", "cubic", ""),
]
BAD = [
    ("--tcp-max-connections", "-5"),
    ("--tcp-memory-limit", "-1"),
    ("--tcp-memory-limit", "1000"),
    ("--tcp-congestion", "bbr"),
]


def test_the_congestion_names_are_tcps() -> None:
    assert limits.CONGESTION_CONTROLS == CONGESTION_CONTROLS


@pytest.mark.parametrize(("option", "value"), BAD)
def test_a_unikernel_refuses_a_bad_limit_with_exit_code_2(
    option: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[bool] = []

    async def start(keys: runtime.Keys, devices: object) -> None:
        started.append(True)

    monkeypatch.setattr(sys, "argv", ["echo-unix.pyz", option, value])
    with pytest.raises(SystemExit) as stopped:
        runtime.main("echo", SPECS, start)  # type: ignore[arg-type]
    assert stopped.value.code == 2
    assert not started
    message = capsys.readouterr().err.splitlines()[0]
    assert message.startswith(f"echo: {option}: ") and "Traceback" not in message


@pytest.mark.parametrize(("option", "value"), BAD)
def test_a_bad_limit_from_the_environment_is_refused(option: str, value: str) -> None:
    variable = "LOOMING_" + option[2:].replace("-", "_").upper()
    with pytest.raises(runtime.UsageError, match=variable):
        runtime.parse_keys(SPECS, [], {variable: value})


def test_good_limits_pass() -> None:
    keys = runtime.parse_keys(
        SPECS,
        [
            "--tcp-max-connections",
            "0",
            "--tcp-memory-limit",
            "65536",
            "--tcp-congestion",
            "newreno",
        ],
    )
    assert (keys.tcp_max_connections, keys.tcp_memory_limit) == (0, 65536)
    assert keys.tcp_congestion == "newreno"


@pytest.mark.parametrize(
    "limits_given",
    [{"max_connections": -5}, {"memory_limit": -1}, {"congestion_control": "bbr"}],
)
def test_the_stack_refuses_bad_limits_as_bad_input(limits_given: dict[str, object]) -> None:
    async def main() -> None:
        await DirectStack.connect(
            MemorySwitch().port(),
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(1),
            address=IPv4Interface("10.0.0.1/24"),
            **limits_given,  # type: ignore[arg-type]
        )

    with pytest.raises(UsageError, match="--tcp-"):
        asyncio.run(main())


def test_configure_refuses_bad_limits(tmp_path: Path) -> None:
    app = copy_example("echo", tmp_path)
    args = ("configure", "-t", "unix", "--net", "direct")
    for option, value in BAD:
        done = looming(app, *args, option, value, check=False)
        assert done.returncode == 2, (option, done.stderr)
        assert option in done.stderr and "Traceback" not in done.stderr
    looming(app, *args, "--tcp-congestion", "newreno", "--tcp-max-connections", "3")
