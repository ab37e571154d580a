"""Router discovery, SLAAC and duplicate address detection against the
Linux kernel acting as a router in a namespace, with dnsmasq sending the
Router Advertisements (``--enable-ra``), and tshark decoding what looming
sent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest

from looming.net.netif.pcap import PcapNetwork
from looming.net.slaac import stable_interface_id
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.dnsmasq_run import dnsmasq_command
from tests.net.kernel import KernelPeer
from tests.net.test_ipv6_kernel import kernel_link_local, without_dad

pytestmark = pytest.mark.root

PREFIX = IPv6Network("fd77:0:0:1::/64")
ROUTER_ADDRESS = IPv6Address("fd77:0:0:1::1")
BEYOND = IPv6Address("fd78::1")  # on the router's loopback: reached through it
SECRET = bytes(range(16))

TCP_ECHO_CLIENT = r"""
import hashlib, socket, sys
c = socket.create_connection((sys.argv[1], 7007), timeout=5)
peer = c.getpeername()[0]
data = bytes(i % 249 for i in range(300_000))
c.sendall(data)
c.shutdown(socket.SHUT_WR)
back = b""
while chunk := c.recv(65536):
    back += chunk
print(hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest(), peer)
"""


def dnsmasq_ra_argv(peer: KernelPeer, state: Path) -> list[str]:
    return dnsmasq_command(
        peer,
        state,
        "--port=0",
        f"--dhcp-leasefile={state / 'leases'}",
        "--enable-ra",
        f"--dhcp-range={PREFIX.network_address},ra-only,64,1h",
        f"--ra-param={peer.tap_name},mtu:1400,10,600",
        f"--dhcp-option=option6:dns-server,[{ROUTER_ADDRESS}]",
    )


def make_router(peer: KernelPeer) -> None:
    """The namespace forwards IPv6, holds ROUTER_ADDRESS on the link and
    BEYOND behind it."""
    without_dad(peer)
    peer.sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    peer.sh("ip", "-6", "addr", "add", f"{ROUTER_ADDRESS}/64", "dev", peer.tap_name, "nodad")
    peer.sh("ip", "-6", "addr", "add", f"{BEYOND}/128", "dev", "lo")


def slaac_address(mac: bytes, dad_counter: int) -> IPv6Address:
    interface_id = stable_interface_id(PREFIX, bytes(mac), b"", dad_counter, SECRET)
    return IPv6Address(int(PREFIX.network_address) | interface_id)


@asynccontextmanager
async def router_and_stack(
    peer: KernelPeer, state: Path, *, pcap: str | None = None, before_ra: object = None
) -> AsyncIterator[DirectStack]:
    """The namespace as a router with dnsmasq advertising (already running
    when looming solicits), and looming's stack on the TAP."""
    without_dad(peer)  # before the TAP moves in: its link-local usable at once
    tap = await peer.open_tap()
    make_router(peer)
    if callable(before_ra):
        before_ra(tap.mac)
    server = await peer.exec(*dnsmasq_ra_argv(peer, state))
    stack = None
    try:
        assert server.stderr is not None
        while b"router advertisement on" not in await asyncio.wait_for(
            server.stderr.readline(), 10
        ):
            pass
        network = tap if pcap is None else PcapNetwork(tap, pcap, UnixClock())
        stack = await DirectStack.connect(
            network,
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(5),
            address=peer.stack_address,
            ipv6=True,
            slaac_secret=SECRET,
        )
        yield stack
    finally:
        server.terminate()
        await server.wait()
        if stack is not None:
            await stack.disconnect()
        else:
            await tap.disconnect()


def test_slaac_from_dnsmasq_router_advertisements(kernel_peer: KernelPeer, tmp_path: Path) -> None:
    capture = tmp_path / "slaac.pcap"

    async def main() -> None:
        async with router_and_stack(kernel_peer, tmp_path, pcap=str(capture)) as stack:
            assert stack.ipv6 is not None and stack.ipv6.autoconf is not None
            address = await stack.ipv6.wait_for_address(15)
            # The RFC 7217 identifier for this prefix, MAC, secret, counter 0.
            assert address == slaac_address(stack.ethernet.mac, 0)
            autoconf = stack.ipv6.autoconf
            router = kernel_link_local(kernel_peer)
            assert autoconf.default_router(stack.time.now_ns()) == router
            assert list(autoconf.on_link) == [PREFIX]
            assert autoconf.mtu == 1400 and stack.ipv6.mtu(ROUTER_ADDRESS) == 1360
            assert stack.ipv6.dns_servers() == [ROUTER_ADDRESS]
            counters = stack.counters()
            assert counters["slaac.dad_started"] == 1 and counters["slaac.address_assigned"] == 1
            assert counters["ipv6.tx_dad_probe"] == 1
            # The kernel reaches the address and talks TCP to it.
            out = await kernel_peer.exec_output("ping", "-6", "-c", "3", "-i", "0.2", str(address))
            assert "3 received" in out, out
            await stack.tcp.listen(7007, echo)
            out = await kernel_peer.exec_output(sys.executable, "-c", TCP_ECHO_CLIENT, str(address))
            assert out.split() == ["True", str(address)]
            # Off-link: through the default router, from the SLAAC address.
            assert stack.ipv6.next_hop(BEYOND) == router
            assert stack.ipv6.source_for(BEYOND) == address
            assert await stack.ping(BEYOND, timeout=3) < 3

    asyncio.run(main())
    check_capture(capture)


async def echo(flow: object) -> None:
    from looming.devices.stack import TcpFlow

    assert isinstance(flow, TcpFlow)
    while chunk := await flow.read():
        await flow.write(chunk)
    await flow.shutdown()


def test_a_duplicate_makes_looming_pick_the_next_address(
    kernel_peer: KernelPeer, tmp_path: Path
) -> None:
    taken: list[IPv6Address] = []

    def occupy(mac: bytes) -> None:
        # The kernel already holds the address looming would form first.
        first = slaac_address(mac, 0)
        taken.append(first)
        kernel_peer.sh("ip", "-6", "addr", "add", f"{first}/128", "dev", kernel_peer.tap_name)

    async def main() -> None:
        async with router_and_stack(kernel_peer, tmp_path, before_ra=occupy) as stack:
            assert stack.ipv6 is not None
            address = await stack.ipv6.wait_for_address(15)
            assert address == slaac_address(stack.ethernet.mac, 1) != taken[0]
            assert taken[0] not in stack.ipv6.addresses()
            counters = stack.counters()
            assert counters["slaac.dad_duplicate"] == 1
            assert counters["slaac.dad_started"] == 2
            out = await kernel_peer.exec_output("ping", "-6", "-c", "2", "-i", "0.2", str(address))
            assert "2 received" in out, out

    asyncio.run(main())


def check_capture(capture: Path) -> None:
    """tshark decodes looming's Router Solicitation, DAD probe and MLDv2
    reports (and dnsmasq's advertisement) without expert errors."""
    fields = ["ipv6.src", "ipv6.dst", "icmpv6.type", "icmpv6.mldr.nb_mcast_records"]
    decoded = subprocess.run(
        ["tshark", "-r", str(capture), "-Y", "icmpv6", "-T", "fields"]
        + [arg for field in fields for arg in ("-e", field)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("\t") for line in decoded.stdout.splitlines()]
    types = {row[2] for row in rows}
    # RS, RA, DAD's NS and MLDv2 reports all decoded.
    assert {"133", "134", "135", "143"} <= types, decoded.stdout
    assert any(row[1] == "ff02::2" and row[2] == "133" for row in rows)
    assert any(
        row[0] == "::" and row[1].startswith("ff02::1:ff") and row[2] == "135" for row in rows
    )
    assert any(row[1] == "ff02::16" and row[2] == "143" and row[3] == "1" for row in rows)
    expert = subprocess.run(
        ["tshark", "-r", str(capture), "-z", "expert,error", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Errors" not in expert.stdout, expert.stdout
