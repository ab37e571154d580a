"""A ``--net direct`` unikernel given a TAP name the kernel would refuse
stops with one line and exit code 2 (bad user input); a TAP it cannot have
because another process holds it stops with one line and exit code 1 (a
runtime failure), neither with a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from looming.errors import DeviceError, UsageError
from looming.net.netif.memory import MemorySwitch
from looming.net.netif.tap import TapNetwork, name_problem
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.direct.unikernel import build_direct
from tests.net.kernel import have_root, sh, unique_suffix

BAD_NAMES = ["averyveryverylongtapname0", "lm/bad", "lm:bad", "lm bad", "..", ""]


def run_echo(app: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = subprocess.run(
        [sys.executable, "-m", "looming.cli", "run", *argv],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    return result.returncode, result.stderr.strip().splitlines()


@pytest.fixture(scope="module")
def echo_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_direct("echo", tmp_path_factory.mktemp("audit-exit"))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_tap_name_is_bad_input(name: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    with pytest.raises(UsageError) as refused:
        asyncio.run(TapNetwork.connect(name))
    assert str(refused.value) == problem
    assert isinstance(refused.value, DeviceError)  # what callers caught before
    assert name_problem("tap0") is None and name_problem("x" * 15) is None


def test_bad_tap_names_exit_2_with_one_line(echo_app: Path) -> None:
    for name in BAD_NAMES[:3]:
        code, lines = run_echo(echo_app, "--interface", name)
        assert code == 2, (name, lines)
        assert len(lines) == 1 and "TAP name" in lines[0], lines
    # The same from the environment.
    env = {**os.environ, "LOOMING_INTERFACE": "lm bad"}
    code, lines = run_echo(echo_app, env=env)
    assert code == 2 and len(lines) == 1 and "not a valid interface name" in lines[0], lines


@pytest.mark.root
def test_a_busy_tap_exits_1_with_one_line(echo_app: Path) -> None:
    if not have_root():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root)")
    name = f"lmx{unique_suffix()}"
    try:
        holder = asyncio.run(TapNetwork.connect(name))
        try:
            code, lines = run_echo(echo_app, "--interface", name)
        finally:
            asyncio.run(holder.disconnect())
        assert code == 1, lines
        assert len(lines) == 1 and f"TAP device {name!r} is busy" in lines[0], lines
    finally:
        sh("ip", "link", "del", name, check=False)


BAD_IPV4 = [
    (["--ipv4", "10.1.1.1/24", "--ipv4-gateway", "10.9.9.9"], "--ipv4-gateway 10.9.9.9"),
    (["--ipv4", "10.1.1.1/24", "--ipv4-gateway", "10.1.1.1"], "--ipv4-gateway 10.1.1.1"),
    (["--ipv4", "10.1.1.0/24"], "the network's own or broadcast address"),
    (["--ipv4", "10.1.1.255/24"], "the network's own or broadcast address"),
    (["--ipv4", "224.0.0.1/24"], "not an address an interface can hold"),
    (["--ipv4", "127.0.0.2/8"], "not an address an interface can hold"),
]


@pytest.mark.parametrize(("keys", "message"), BAD_IPV4)
def test_the_stack_refuses_ipv4_settings_that_cannot_work(keys: list[str], message: str) -> None:
    address = IPv4Interface(keys[1])
    gateway = IPv4Address(keys[3]) if len(keys) > 2 else None

    async def main() -> None:
        port = MemorySwitch().port()
        with pytest.raises(UsageError) as refused:
            await DirectStack.connect(
                port, time=UnixTime(), clock=UnixClock(), random=UnixRandom(1),
                address=address, gateway=gateway,
            )  # fmt: skip
        assert message in str(refused.value)

    asyncio.run(main())


def test_good_ipv4_settings_pass() -> None:
    async def main() -> None:
        for address, gateway in (("10.1.1.1/24", "10.1.1.254"), ("10.1.1.1/31", None),
                                 ("10.1.1.0/31", "10.1.1.1"), ("10.1.1.7/32", None)):  # fmt: skip
            stack = await DirectStack.connect(
                MemorySwitch().port(), time=UnixTime(), clock=UnixClock(), random=UnixRandom(1),
                address=IPv4Interface(address),
                gateway=IPv4Address(gateway) if gateway else None,
            )  # fmt: skip
            await stack.disconnect()

    asyncio.run(main())


@pytest.mark.root
def test_bad_ipv4_keys_exit_2_with_one_line(echo_app: Path) -> None:
    if not have_root():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root)")
    for keys, message in BAD_IPV4[:3]:
        name = f"lmx{unique_suffix()}"
        try:
            code, lines = run_echo(echo_app, "--interface", name, *keys)
        finally:
            sh("ip", "link", "del", name, check=False)
        assert code == 2, (keys, lines)
        assert len(lines) == 1 and message in lines[0], (keys, lines)
