"""A direct stack's addresses with IPv6 (``Stack.addresses()``), IPv6 only
(``ipv4=False``) and dual-stack, on the in-memory switch: two stacks, one of
them IPv6 only, reaching each other over TCP by IPv6 while IPv4 goes
unanswered."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

import pytest

from looming.devices.stack import TcpFlow
from looming.errors import ConnectionTimeout, HostUnreachable, UsageError
from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime

DUAL4 = IPv4Interface("10.9.0.1/24")
DUAL6 = IPv6Interface("fd00:9::1/64")
ONLY6 = IPv6Interface("fd00:9::2/64")


async def stacks(switch: MemorySwitch) -> tuple[DirectStack, DirectStack]:
    common: dict[str, Any] = {
        "time": UnixTime(),
        "clock": UnixClock(),
        "ipv6": True,
        "slaac": False,
    }
    dual = await DirectStack.connect(
        switch.port(), random=UnixRandom(1), address=DUAL4, ipv6_address=DUAL6, **common
    )
    # IPv6 only: connect returns once the static address passed DAD.
    only = await DirectStack.connect(
        switch.port(), random=UnixRandom(2), ipv4=False, ipv6_address=ONLY6, **common
    )
    return dual, only


def test_ipv6_only_and_dual_stack_addresses_and_traffic() -> None:
    async def main() -> None:
        dual, only = await stacks(MemorySwitch())
        try:
            assert only.addresses() == [ONLY6]  # at once: the wait covered DAD
            assert dual.ipv6 is not None
            await dual.ipv6.wait_for_address(5)
            assert dual.addresses() == [DUAL4, DUAL6]

            async def hello(flow: TcpFlow) -> None:
                await flow.write(b"over IPv6")
                await flow.close()

            await only.tcp.listen(80, hello)
            flow = await dual.tcp.connect(ONLY6.ip, 80, timeout=5)
            assert await flow.read() == b"over IPv6"
            await flow.close()
            # The IPv6-only stack holds no IPv4 address: nothing answers ARP.
            with pytest.raises((HostUnreachable, ConnectionTimeout)):
                await dual.tcp.connect("10.9.0.2", 80, timeout=3)
            counters = only.counters()
            assert counters["arp.rx_request"] >= 1 and counters.get("arp.tx_reply", 0) == 0
        finally:
            await dual.disconnect()
            await only.disconnect()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"ipv6": True, "dhcp": True}, "takes no IPv4 address and no --dhcp"),
        ({"ipv6": True, "address": DUAL4}, "takes no IPv4 address and no --dhcp"),
        ({"ipv6": False}, "needs IPv6"),
    ],
)
def test_ipv6_only_refuses_ipv4_settings(keys: dict[str, Any], message: str) -> None:
    async def main() -> None:
        with pytest.raises(UsageError, match=message):
            await DirectStack.connect(
                MemorySwitch().port(),
                time=UnixTime(),
                clock=UnixClock(),
                random=UnixRandom(3),
                ipv4=False,
                **keys,
            )

    asyncio.run(main())
