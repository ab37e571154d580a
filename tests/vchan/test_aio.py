"""vchan flows on asyncio: the Flow interface, no busy waiting, peer death."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import time

import pytest

from looming.devices import Flow
from looming.errors import Closed, ConnectionRefused, ConnectionReset
from looming.unix.time import UnixTime
from looming.vchan import aio, layout
from looming.vchan import listener as ports
from looming.vchan.errors import VchanCorrupt, VchanError
from tests.vchan.helpers import fork_child, kill_child, wait_child


async def async_pair(
    read_min: int = 1024, write_min: int = 1024
) -> tuple[aio.VchanFlow, aio.VchanFlow]:
    listener = await aio.listen(
        "apair", "p", read_min=read_min, write_min=write_min, time=UnixTime()
    )
    accepting = asyncio.create_task(listener.accept())
    client = await aio.connect("apair", "p", time=UnixTime())
    return await accepting, client


def test_full_duplex_in_one_loop_through_small_rings() -> None:
    async def main() -> None:
        server, client = await async_pair()
        assert isinstance(server, Flow) and isinstance(client, Flow)
        payload_up = random.Random(1).randbytes(400_000)
        payload_down = random.Random(2).randbytes(300_000)

        async def pump(flow: aio.VchanFlow, data: bytes) -> None:
            for start in range(0, len(data), 7000):
                await flow.write(data[start : start + 7000])

        async def drain(flow: aio.VchanFlow, total: int) -> bytes:
            received = bytearray()
            while len(received) < total:
                chunk = await flow.read()
                assert chunk
                received += chunk
            return bytes(received)

        results = await asyncio.gather(
            pump(client, payload_up),
            pump(server, payload_down),
            drain(server, len(payload_up)),
            drain(client, len(payload_down)),
        )
        assert results[2] == payload_up and results[3] == payload_down
        await client.close()
        assert await server.read() == b""
        await server.close()

    asyncio.run(main())


def test_packet_mode_and_sizes() -> None:
    async def main() -> None:
        server, client = await async_pair(read_min=1023, write_min=2047)
        assert client.buffer_space() == 1024
        sender = asyncio.create_task(client.send(b"A" * 1000))
        assert await server.recv(1000) == b"A" * 1000
        await sender
        # A packet larger than the free space waits for all of it.
        await client.send(b"B" * 600)
        late = asyncio.create_task(client.send(b"C" * 600))
        await asyncio.sleep(0.01)
        assert not late.done()
        assert server.data_ready() == 600
        assert await server.recv(600) == b"B" * 600
        await late
        assert await server.recv(600) == b"C" * 600
        await server.close()
        assert await client.recv(10) == b""
        await client.close()

    asyncio.run(main())


def test_a_waiting_reader_does_not_burn_the_cpu() -> None:
    async def main() -> None:
        server, client = await async_pair()
        started = time.process_time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await server.read()
        used = time.process_time() - started
        # A few safety re-checks at most: far below a polling loop's 0.5 s.
        assert used < 0.1, f"idle wait used {used:.3f} s of CPU"
        await client.write(b"wake")
        assert await server.read() == b"wake"
        await server.close()
        await client.close()

    asyncio.run(main())


def test_shutdown_stops_writing_but_not_reading() -> None:
    async def main() -> None:
        server, client = await async_pair()
        await client.shutdown()
        with pytest.raises(Closed):
            await client.write(b"x")
        await server.write(b"still here")
        assert await client.read() == b"still here"
        await client.close()
        await client.close()
        await server.close()

    asyncio.run(main())


def test_connect_waits_for_the_server_to_appear() -> None:
    async def main() -> None:
        with pytest.raises(ConnectionRefused):
            await aio.connect("late", "p", time=UnixTime())
        connecting = asyncio.create_task(
            aio.connect("late", "p", wait_for_server=10, time=UnixTime())
        )
        await asyncio.sleep(0.05)
        listener = await aio.listen("late", "p", read_min=1024, write_min=1024, time=UnixTime())
        server = await listener.accept()
        client = await connecting
        await client.write(b"hi")
        assert await server.read() == b"hi"
        await client.close()
        await server.close()

    asyncio.run(main())


def test_processes_exchange_and_a_killed_peer_is_noticed() -> None:
    listener = ports.listen("async", "kv", read_min=65536, write_min=65536, time=UnixTime())
    data = random.Random(5).randbytes(2_000_000)

    def child() -> None:
        async def run() -> None:
            flow = await aio.connect("async", "kv", time=UnixTime())
            digest = hashlib.sha256()
            received = 0
            while received < len(data):
                chunk = await flow.read()
                digest.update(chunk)
                received += len(chunk)
            await flow.write(digest.digest())
            while True:  # keep writing until killed
                await flow.write(b"z" * 1000)

        asyncio.run(run())

    pid = fork_child(child)
    try:

        async def main() -> None:
            server = await aio.AsyncListener(listener).accept()
            await server.write(data)
            assert await server.recv(32) == hashlib.sha256(data).digest()
            assert await server.read()
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(ConnectionReset, match="died"):
                while True:
                    assert await server.read()
            await server.close()

        asyncio.run(main())
    finally:
        kill_child(pid)
        assert wait_child(pid) == -signal.SIGKILL


def test_a_corrupt_peer_fails_the_waiting_reader_and_releases_the_loop() -> None:
    async def main() -> None:
        server, client = await async_pair()
        server_fds = {server.endpoint.wait_fd, server.endpoint.control_fd}
        reading = asyncio.create_task(server.read())
        await asyncio.sleep(0.01)
        assert not reading.done()
        # The client scribbles an impossible producer index and kicks.
        layout.write_u32(client.endpoint._view, layout.LEFT_PROD, 5000)
        client.endpoint._notifier.kick()
        with pytest.raises(VchanCorrupt, match="more than the 1024-byte ring holds"):
            await reading
        assert not server.is_open()
        with pytest.raises(VchanError, match="closed after an error"):
            await server.read()
        # The loop no longer watches the closed endpoint's descriptors.
        watched = asyncio.get_running_loop()._selector.get_map()  # type: ignore[attr-defined]
        assert not server_fds & set(watched)
        assert await client.read() == b""  # the server's close reached the client
        await client.close()

    asyncio.run(main())
