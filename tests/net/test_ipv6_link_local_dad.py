"""Duplicate address detection for the link-local address (RFC 4862 5.4)
against the Linux kernel over TAP: looming probes it at start without
waiting; when the kernel already holds it, looming stops answering for it
and says so; otherwise the kernel reaches it as before."""

from __future__ import annotations

import asyncio

import pytest

from looming.net.stack import DirectStack
from looming.net.wire.ipv6 import link_local_from_mac
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.kernel import KernelPeer
from tests.net.test_ipv6_kernel import without_dad

pytestmark = pytest.mark.root


async def held_by_kernel(peer: KernelPeer, address: str) -> None:
    """Wait until the kernel holds ``address`` for good. Even with ``nodad``
    an address stays tentative until the kernel deems the link ready, which
    its link-state work does apart from ``ip link set up`` (it batches such
    events when many links change); a probe arriving meanwhile would make
    the kernel give up its own address instead of defending it, and the
    test's premise would not hold."""
    for _ in range(100):
        shown = peer.sh("ip", "-6", "-o", "addr", "show", "dev", peer.tap_name)
        line = next((row for row in shown.splitlines() if f" {address}/" in row), "")
        if line and "tentative" not in line:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the kernel never held {address} for good: {shown}")


async def start(peer: KernelPeer, *, taken: bool) -> DirectStack:
    tap = await peer.open_tap()
    if taken:  # the kernel holds looming's link-local address first
        ours = link_local_from_mac(tap.mac)
        peer.sh("ip", "-6", "addr", "add", f"{ours}/64", "dev", peer.tap_name, "nodad")
        await held_by_kernel(peer, str(ours))
    return await DirectStack.connect(
        tap,
        time=UnixTime(),
        clock=UnixClock(),
        random=UnixRandom(3),
        address=peer.stack_address,
        ipv6=True,
        slaac=False,
    )


def test_a_link_local_address_another_node_holds_is_not_used(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def main() -> None:
        stack = await start(kernel_peer, taken=True)
        try:
            assert stack.ipv6 is not None
            for _ in range(60):  # the kernel's answer to the probe, within 3 s
                if stack.counters().get("ipv6.link_local_duplicate"):
                    break
                await asyncio.sleep(0.05)
            counters = stack.counters()
            assert counters["ipv6.tx_link_local_probe"] == 1
            assert counters["ipv6.link_local_duplicate"] == 1
            assert stack.ipv6.link_local not in stack.ipv6.addresses()
            # IPv4 is untouched.
            out = await kernel_peer.exec_output(
                "ping", "-c", "1", "-W", "2", str(kernel_peer.stack_address.ip)
            )
            assert "1 received" in out, out
        finally:
            await stack.disconnect()

    asyncio.run(main())


def test_a_free_link_local_address_is_probed_once_and_kept(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def main() -> None:
        stack = await start(kernel_peer, taken=False)
        try:
            assert stack.ipv6 is not None
            ours = stack.ipv6.link_local
            # In use at once (start-up does not wait), and still after the probe's second.
            for wait in (0.0, 1.2):
                await asyncio.sleep(wait)
                target = f"{ours}%{kernel_peer.tap_name}"
                out = await kernel_peer.exec_output("ping", "-6", "-c", "1", "-W", "2", target)
                assert "1 received" in out, out
            counters = stack.counters()
            assert counters["ipv6.tx_link_local_probe"] == 1
            assert "ipv6.link_local_duplicate" not in counters
            assert ours in stack.ipv6.addresses()
        finally:
            await stack.disconnect()

    asyncio.run(main())
