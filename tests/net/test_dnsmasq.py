"""DHCP and DNS against dnsmasq running in the kernel peer's namespace."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from looming.net.dhcp import DhcpState
from looming.net.dns import NameNotFound
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.dnsmasq_run import dnsmasq_command
from tests.net.kernel import KernelPeer

pytestmark = pytest.mark.root


def dnsmasq_argv(peer: KernelPeer, state: Path) -> list[str]:
    return dnsmasq_command(
        peer,
        state,
        "--no-ping",
        "--log-dhcp",
        "--log-queries",
        f"--dhcp-leasefile={state / 'leases'}",
        "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,2m",
        f"--dhcp-option=option:router,{peer.peer_address}",
        f"--dhcp-option=option:dns-server,{peer.peer_address}",
        "--no-resolv",
        "--no-hosts",
        "--local=/lm/",
        "--host-record=service.lm,10.77.0.124",
        "--cname=www.lm,service.lm",
    )


async def until(predicate: object, seconds: float) -> None:
    assert callable(predicate)
    for _ in range(int(seconds * 20)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_dhcp_lease_renewal_and_dns_from_dnsmasq(kernel_peer: KernelPeer, tmp_path: Path) -> None:
    log: list[str] = []

    async def drain(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            log.append(line.decode(errors="replace"))

    async def main() -> None:
        tap = await kernel_peer.open_tap()
        server = await kernel_peer.exec(*dnsmasq_argv(kernel_peer, tmp_path))
        assert server.stderr is not None
        drainer = asyncio.ensure_future(drain(server.stderr))
        try:
            await until(lambda: any("IP range" in line for line in log), 10)
            stack = await DirectStack.connect(
                tap,
                time=UnixTime(),
                clock=UnixClock(),
                random=UnixRandom(11),
                dhcp=True,
                dhcp_timeout=20,
            )
            try:
                await check(stack)
            finally:
                await stack.disconnect()
        finally:
            server.terminate()
            await server.wait()
            drainer.cancel()

    async def check(stack: DirectStack) -> None:
        lease = stack.lease
        assert lease is not None
        address = lease.interface.ip
        assert IPv4Address("10.77.0.50") <= address <= IPv4Address("10.77.0.99")
        assert lease.interface.network == IPv4Interface("10.77.0.0/24").network
        assert lease.gateway == kernel_peer.peer_address
        assert lease.dns_servers == (kernel_peer.peer_address,)
        assert (lease.lease_s, lease.renew_s, lease.rebind_s) == (120, 60, 105)
        assert stack.addresses() == [lease.interface]
        # dnsmasq recorded the lease for our MAC.
        leases = (tmp_path / "leases").read_text()
        assert str(stack.ethernet.mac) in leases and str(address) in leases
        # The address works: the kernel reaches it.
        out = await kernel_peer.exec_output("ping", "-c", "2", "-i", "0.2", str(address))
        assert " 0% packet loss" in out

        assert await stack.resolve("service.lm") == [IPv4Address("10.77.0.124")]
        assert await stack.resolve("WWW.lm.") == [IPv4Address("10.77.0.124")]
        with pytest.raises(NameNotFound):
            await stack.resolve("missing.lm")

        # Renewing (unicast) and rebinding (broadcast) early: dnsmasq
        # acknowledges both and the address stays.
        assert stack.dhcp is not None
        client = stack.dhcp.client
        stack.dhcp.renew()
        assert client.state is DhcpState.RENEWING
        await until(lambda: client.counters["rx_ack"] >= 2, 10)
        assert client.state is DhcpState.BOUND
        stack.dhcp.rebind()
        assert client.state is DhcpState.REBINDING
        await until(lambda: client.counters["rx_ack"] >= 3, 10)
        assert client.state is DhcpState.BOUND
        assert stack.addresses() == [lease.interface]
        acks = [line for line in log if f"DHCPACK({kernel_peer.tap_name}) {address}" in line]
        assert len(acks) == 3, "".join(log)

    asyncio.run(main())
