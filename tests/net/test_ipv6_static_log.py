"""A static IPv6 address is reported as static, once, at every log level:
never as "assigned by autoconfiguration" (SLAAC was not involved)."""

from __future__ import annotations

import asyncio
import logging
from ipaddress import IPv6Interface

import pytest

from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime

STATIC = IPv6Interface("fd88::2/64")


def test_a_static_address_is_logged_as_static_only(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    async def main() -> None:
        stack = await DirectStack.connect(
            MemorySwitch().port(), time=UnixTime(), clock=UnixClock(), random=UnixRandom(3),
            ipv4=False, ipv6=True, slaac=False, ipv6_address=STATIC,
        )  # fmt: skip
        await stack.disconnect()

    with caplog.at_level(logging.DEBUG, logger="looming"):
        asyncio.run(main())
    about = [r.getMessage() for r in caplog.records if str(STATIC.ip) in r.getMessage()]
    assert about, caplog.text
    assert all("autoconfiguration" not in m and "SLAAC" not in m for m in about), about
    assert all("static" in m for m in about), about
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert [m for m in info if str(STATIC.ip) in m] == [
        f"IPv6: address {STATIC.ip} assigned (static, no duplicate found)"
    ]
    assert f"{STATIC.ip} assigned (static" in capsys.readouterr().err
