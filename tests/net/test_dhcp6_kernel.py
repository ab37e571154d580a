"""The DHCPv6 client against dnsmasq in the kernel peer's namespace: the
Router Advertisement's M flag starts it, dnsmasq leases an address from
its range, the kernel reaches it, renewing and rebinding keep it, and an
address duplicate address detection finds taken is declined."""

from __future__ import annotations

import asyncio
import subprocess
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest

from looming.net.dhcp6 import Dhcp6State
from looming.net.netif.pcap import PcapNetwork
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.dnsmasq_run import dnsmasq_command
from tests.net.kernel import KernelPeer
from tests.net.test_ipv6_kernel import without_dad

pytestmark = pytest.mark.root

PREFIX = IPv6Network("fd77:0:0:4::/64")
SERVER = IPv6Address("fd77:0:0:4::1")
LOW, HIGH = IPv6Address("fd77:0:0:4::100"), IPv6Address("fd77:0:0:4::1ff")


def dnsmasq_argv(peer: KernelPeer, state: Path) -> list[str]:
    return dnsmasq_command(
        peer,
        state,
        "--port=0",
        "--log-dhcp",
        f"--dhcp-leasefile={state / 'leases'}",
        "--enable-ra",
        f"--dhcp-range={LOW},{HIGH},64,2m",
        f"--dhcp-option=option6:dns-server,[{SERVER}]",
    )


async def until(predicate: object, seconds: float) -> None:
    assert callable(predicate)
    for _ in range(int(seconds * 20)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_stateful_address_from_dnsmasq(kernel_peer: KernelPeer, tmp_path: Path) -> None:
    log: list[str] = []
    capture = tmp_path / "dhcp6.pcap"

    async def drain(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            log.append(line.decode(errors="replace"))

    async def main() -> None:
        without_dad(kernel_peer)  # before the TAP moves in: its link-local usable at once
        tap = await kernel_peer.open_tap()
        network = PcapNetwork(tap, str(capture), UnixClock())
        kernel_peer.sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        kernel_peer.sh("ip", "-6", "addr", "add", f"{SERVER}/64", "dev", kernel_peer.tap_name)
        server = await kernel_peer.exec(*dnsmasq_argv(kernel_peer, tmp_path))
        assert server.stderr is not None
        drainer = asyncio.ensure_future(drain(server.stderr))
        stack = await DirectStack.connect(
            network,
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(13),
            address=kernel_peer.stack_address,
            ipv6=True,
        )
        try:
            await check(stack)
        finally:
            await stack.disconnect()
            server.terminate()
            await server.wait()
            drainer.cancel()

    async def check(stack: DirectStack) -> None:
        assert stack.ipv6 is not None and stack.ipv6.autoconf is not None
        address = await stack.ipv6.wait_for_address(20)
        assert LOW <= address <= HIGH, address
        assert stack.ipv6.autoconf.managed  # the M flag started DHCPv6
        # No SLAAC address: dnsmasq's prefix is on-link but not autonomous.
        assert [a for a in stack.ipv6.addresses() if not a.is_link_local] == [address]
        assert stack.ipv6.next_hop(SERVER) == SERVER  # on-link from the RA
        dhcp6 = stack.dhcp6
        assert dhcp6 is not None and dhcp6.client.lease is not None
        lease = dhcp6.client.lease
        assert lease.valid_lifetime == 120 and lease.dns_servers == (SERVER,)
        assert (lease.t1, lease.t2) == (60, 105)
        leases = (tmp_path / "leases").read_text()
        assert str(address) in leases
        duid = dhcp6.client.duid.hex(":")
        assert duid in leases, leases
        out = await kernel_peer.exec_output("ping", "-6", "-c", "2", "-i", "0.2", str(address))
        assert "2 received" in out, out
        # Renewing (with dnsmasq's server id) and rebinding (with any):
        # both answered and the address stays.
        client = dhcp6.client
        dhcp6.renew()
        assert client.state is Dhcp6State.RENEWING
        await until(lambda: client.counters["rx_reply"] >= 2, 10)
        assert client.state is Dhcp6State.BOUND
        dhcp6.rebind()
        assert client.state is Dhcp6State.REBINDING
        await until(lambda: client.counters["rx_reply"] >= 3, 10)
        assert client.state is Dhcp6State.BOUND and client.lease is not None
        assert client.lease.address == address and address in stack.ipv6.addresses()
        await check_decline(kernel_peer, stack, address)
        text = "".join(log)
        for kind in ("DHCPSOLICIT", "DHCPADVERTISE", "DHCPREQUEST", "DHCPRENEW", "DHCPREBIND"):
            assert kind in text, text
        assert f"DHCPDECLINE({kernel_peer.tap_name}) {dhcp6.client.duid.hex(':')}" in text

    asyncio.run(main())
    check_capture(capture)


async def check_decline(peer: KernelPeer, stack: DirectStack, address: IPv6Address) -> None:
    """The kernel takes the address; when the lease is applied again,
    duplicate address detection finds it, looming declines it to dnsmasq
    and gets another."""
    assert stack.ipv6 is not None and stack.dhcp6 is not None
    client = stack.dhcp6.client
    stack.ipv6.release_address(address)
    peer.sh("ip", "-6", "addr", "add", f"{address}/128", "dev", peer.tap_name, "nodad")
    stack.dhcp6.renew()
    await until(lambda: client.counters["declined"] == 1, 10)
    other = await stack.ipv6.wait_for_address(20)
    assert other != address and LOW <= other <= HIGH
    assert address not in stack.ipv6.addresses()
    assert client.lease is not None and client.lease.address == other


def check_capture(capture: Path) -> None:
    # tshark decodes what looming sent and received: Solicit, Advertise,
    # Request, Reply, Renew, Rebind, with no expert errors.
    decoded = subprocess.run(
        ["tshark", "-r", str(capture), "-Y", "dhcpv6", "-T", "fields", "-e", "dhcpv6.msgtype"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert {"1", "2", "3", "5", "6", "7", "9"} <= set(decoded.stdout.split()), decoded.stdout
    expert = subprocess.run(
        ["tshark", "-r", str(capture), "-z", "expert,error", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Errors" not in expert.stdout, expert.stdout
