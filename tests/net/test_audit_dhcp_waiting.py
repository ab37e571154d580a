"""A unikernel waiting for a DHCP lease says so.

With ``--dhcp`` and no server on the link, start-up printed nothing for
the whole wait (30 s) and then failed. Now, with no lease after a second,
it prints (and logs) that it waits and on which link, and a reminder
every WAIT_REMINDER_S seconds until the lease comes or the wait ends.
"""

from __future__ import annotations

import asyncio

import pytest

from looming.errors import DeviceError
from looming.net import dhcp
from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime


def test_waiting_for_a_lease_is_reported_and_repeated(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dhcp, "WAIT_NOTICE_S", 0.2)
    monkeypatch.setattr(dhcp, "WAIT_REMINDER_S", 0.3)

    async def main() -> None:
        with pytest.raises(DeviceError, match=r"no DHCP lease within 1\.0 s"):
            await DirectStack.connect(
                MemorySwitch().port(),
                time=UnixTime(),
                clock=UnixClock(),
                random=UnixRandom(1),
                dhcp=True,
                dhcp_timeout=1.0,
            )

    asyncio.run(main())
    lines = [line for line in capsys.readouterr().err.splitlines() if "waiting" in line]
    # At 0.2 s, then 0.5 and 0.8 s; at 1.0 s the wait ends.
    assert len(lines) == 3, lines
    assert all("DHCP: waiting for a lease on " in line and "of 1 s)" in line for line in lines)
