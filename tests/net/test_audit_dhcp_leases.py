"""Leases after the first, against dnsmasq in the kernel peer's namespace:
losing the lease is logged as a warning with the address, and every new
lease (another address, or the same one regained after a loss) is printed
and logged as the first is; renewals of the lease held are quiet. The
stack's clock is moved forward to run the two-minute leases out."""

from __future__ import annotations

import asyncio
import logging
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.dnsmasq_run import dnsmasq_command
from tests.net.kernel import KernelPeer
from tests.net.test_dnsmasq import until

pytestmark = pytest.mark.root


class ShiftedTime(UnixTime):
    """The host's time, plus what the test moves it forward by."""

    def __init__(self) -> None:
        self.offset_ns = 0

    def now_ns(self) -> int:
        return super().now_ns() + self.offset_ns


def dhcp_server(peer: KernelPeer, state: Path, first: int) -> list[str]:
    return dnsmasq_command(
        peer,
        state,
        "--no-ping",
        "--port=0",
        f"--dhcp-leasefile={state / 'leases'}",
        f"--dhcp-range=10.77.0.{first},10.77.0.{first + 9},255.255.255.0,2m",
        f"--dhcp-option=option:router,{peer.peer_address}",
        f"--dhcp-option=option:dns-server,10.77.0.{first}",
    )


async def serve_leases(peer: KernelPeer, tmp_path: Path, first: int) -> asyncio.subprocess.Process:
    """dnsmasq leasing 10.77.0.FIRST to FIRST+9, once it is ready."""
    state = tmp_path / str(first)
    state.mkdir()
    server = await peer.exec(*dhcp_server(peer, state, first))
    assert server.stderr is not None
    while b"DHCP, IP range" not in await asyncio.wait_for(server.stderr.readline(), 10):
        pass
    return server


async def stop(server: asyncio.subprocess.Process) -> None:
    server.terminate()
    await server.wait()


def test_lost_and_new_leases_are_reported(
    kernel_peer: KernelPeer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO, logger="looming.net.dhcp")
    time = ShiftedTime()

    async def serve(first: int) -> asyncio.subprocess.Process:
        return await serve_leases(kernel_peer, tmp_path, first)

    def reports() -> list[str]:
        return [line for line in capsys.readouterr().err.splitlines() if "DHCP: address" in line]

    async def run_out_the_lease(stack: DirectStack) -> None:
        assert stack.dhcp is not None
        counters = stack.dhcp.client.counters
        expired = counters["lease_expired"]
        time.offset_ns += 125 * 1_000_000_000  # past the end of a 2-minute lease
        stack.dhcp._wake.set()
        await until(lambda: counters["lease_expired"] == expired + 1, 5)

    async def main() -> None:
        tap = await kernel_peer.open_tap()
        server = await serve(50)
        stack = await DirectStack.connect(
            tap, time=time, clock=UnixClock(), random=UnixRandom(5), dhcp=True, dhcp_timeout=20
        )
        try:
            assert stack.dhcp is not None and stack.lease is not None
            first = stack.lease.interface
            assert first.ip <= IPv4Address("10.77.0.59")
            assert stack.resolver.servers == [IPv4Address("10.77.0.50")]
            assert reports() == [
                f"looming: DHCP: address {first} from {kernel_peer.peer_address}, "
                f"gateway {kernel_peer.peer_address}, lease 120 s"
            ]
            # Renewing the lease held: nothing new to report.
            stack.dhcp.renew()
            client = stack.dhcp.client
            await until(lambda: client.counters["rx_ack"] == 2, 10)
            assert reports() == []
            # The server goes, another with other addresses comes; the lease ends.
            await stop(server)
            server = await serve(150)
            caplog.clear()
            await run_out_the_lease(stack)
            [lost] = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert str(first) in lost.getMessage() and "lost" in lost.getMessage()
            await until(lambda: stack.addresses() != [], 10)
            [second] = stack.addresses()
            assert isinstance(second.ip, IPv4Address) and second.ip >= IPv4Address("10.77.0.150")
            [printed] = reports()
            assert f"DHCP: address {second} from" in printed
            # The stack holds the new lease, and its DNS server.
            assert stack.lease is not None and stack.lease.interface == second
            assert stack.resolver.servers == [IPv4Address("10.77.0.150")]
            granted = stack.lease.bound_ns
            assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
                printed.removeprefix("looming: ")
            ]
            # The lease ends again; the same server hands the same address back.
            caplog.clear()
            await run_out_the_lease(stack)
            assert any(str(second) in r.getMessage() for r in caplog.records)
            await until(lambda: stack.addresses() != [], 10)
            assert stack.addresses() == [second]
            assert stack.lease is not None and stack.lease.bound_ns > granted
            [again] = reports()
            assert f"DHCP: address {second} from" in again
        finally:
            await stack.disconnect()
            await stop(server)

    asyncio.run(main())
