"""The stack-wide TCP limits (connections, receive memory) between two
direct stacks on the in-memory switch."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface

import pytest

from looming.devices.stack import TcpFlow
from looming.errors import ConnectionTimeout
from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime

A = IPv4Interface("10.0.0.1/24")
B = IPv4Interface("10.0.0.2/24")


async def limited_pair(**limits: int) -> tuple[DirectStack, DirectStack]:
    switch = MemorySwitch()
    common = {"time": UnixTime(), "clock": UnixClock()}
    server = await DirectStack.connect(
        switch.port(), random=UnixRandom(1), address=A, **common, **limits
    )
    client = await DirectStack.connect(switch.port(), random=UnixRandom(2), address=B, **common)
    return server, client


def test_connections_past_the_limit_are_dropped_and_counted() -> None:
    async def main() -> None:
        server, client = await limited_pair(max_connections=3)
        held: list[TcpFlow] = []
        release = asyncio.Event()

        async def hold(flow: TcpFlow) -> None:
            held.append(flow)
            await release.wait()

        await server.tcp.listen(80, hold)
        flows = [await client.tcp.connect(A.ip, 80, timeout=1) for _ in range(3)]
        with pytest.raises(ConnectionTimeout):
            await client.tcp.connect(A.ip, 80, timeout=0.3)
        assert server.counters()["tcp.connection_limit_dropped"] >= 1
        assert server.tcp.connection_count == 3
        release.set()
        for flow in flows:
            await flow.close()
        await server.disconnect()
        await client.disconnect()

    asyncio.run(main())


def test_receive_memory_stays_within_the_stack_limit() -> None:
    limit = 256 * 1024

    async def main() -> None:
        server, client = await limited_pair(memory_limit=limit)
        start_reading = asyncio.Event()
        received: dict[int, int] = {}
        peak = 0

        async def slow_reader(flow: TcpFlow) -> None:
            await start_reading.wait()
            total = 0
            while data := await flow.read():
                total += len(data)
            received[flow.remote_address[1]] = total

        await server.tcp.listen(80, slow_reader)
        flows = [await client.tcp.connect(A.ip, 80, timeout=1) for _ in range(4)]
        size = 512 * 1024  # each as much as a window: together 8x the limit

        async def send(flow: TcpFlow) -> None:
            await flow.write(b"z" * size)
            await flow.shutdown()

        senders = [asyncio.ensure_future(send(flow)) for flow in flows]
        for _ in range(40):
            await asyncio.sleep(0.02)
            peak = max(peak, server.counters()["tcp.receive_memory"])
        assert 0 < peak <= limit
        start_reading.set()
        await asyncio.wait_for(asyncio.gather(*senders), 30)
        for _ in range(500):
            if len(received) == 4:
                break
            await asyncio.sleep(0.02)
        assert sorted(received.values()) == [size] * 4
        assert server.counters()["tcp.receive_memory"] == 0
        for flow in flows:
            await flow.close()
        await server.disconnect()
        await client.disconnect()

    asyncio.run(main())


def test_a_path_that_silently_drops_large_segments_is_found_out() -> None:
    """RFC 2923's black hole: nothing over 1000 bytes gets through and no
    ICMP error says so; after three timeouts TCP tries smaller segments."""

    async def main() -> None:
        server, client = await limited_pair()
        network = client.network
        send = network.write

        async def narrow(frame: bytes) -> None:
            if len(frame) <= 1000:
                await send(frame)

        network.write = narrow  # type: ignore[method-assign]
        totals: list[int] = []

        async def count(flow: TcpFlow) -> None:
            total = 0
            while data := await flow.read():
                total += len(data)
            totals.append(total)

        await server.tcp.listen(80, count)
        flow = await client.tcp.connect(A.ip, 80, timeout=1)
        await flow.write(b"q" * 100_000)
        await flow.shutdown()
        for _ in range(400):
            if totals:
                break
            await asyncio.sleep(0.02)
        assert totals == [100_000]
        counters = client.counters()
        assert counters["tcp.black_hole_mss_lowered"] == 1
        assert flow.connection.path_mss <= 1000 - 40
        await flow.close()
        await server.disconnect()
        await client.disconnect()

    asyncio.run(main())
