"""A serving port that takes many clients, and devices that outlive their peers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from looming.errors import ConnectionRefused, LoomingError
from looming.unix.time import UnixTime
from looming.vchan import aio
from looming.vchan.device import VchanDevice


def test_a_serving_port_takes_one_client_after_another_and_two_at_once(
    vchan_registry: Path,
) -> None:
    async def scenario() -> None:
        port = aio.ServingPort("server", "p", registry_dir=vchan_registry, time=UnixTime())
        await port.publish()

        async def both() -> tuple[aio.VchanFlow, aio.VchanFlow]:
            accepting = asyncio.ensure_future(port.accept())
            client = await aio.connect("server", "p", registry_dir=vchan_registry, time=UnixTime())
            return client, await accepting

        first_client, first = await both()
        # Published again at once: a second client connects while the first is served.
        second_client, second = await both()
        await first_client.write(b"one")
        await second_client.write(b"two")
        assert await first.read() == b"one" and await second.read() == b"two"
        await first.write(b"to one")
        assert await first_client.read() == b"to one"
        await first_client.close()
        assert await first.read() == b""  # the first left; the second goes on
        await second.write(b"to two")
        assert await second_client.read() == b"to two"
        third_client, third = await both()
        await third_client.write(b"three")
        assert await third.read() == b"three"
        assert port.accepted == 3
        for flow in (first, second, second_client, third, third_client):
            await flow.close()
        await port.close()

    asyncio.run(scenario())


def test_devices_reconnect_when_the_peer_comes_back(vchan_registry: Path) -> None:
    async def scenario() -> None:
        registry = str(vchan_registry)
        serving = asyncio.ensure_future(
            VchanDevice.connect("kv", name="store", registry=registry, time=UnixTime())
        )
        client = await VchanDevice.connect("kv", peer="store", registry=registry, time=UnixTime())
        server = await serving
        await client.write(b"hello")
        assert await server.read() == b"hello"

        # The server goes away: the client's next operations fail, each
        # telling the application, until the server is back.
        await server.close()
        with pytest.raises(LoomingError):
            await client.write(b"lost")
            await client.read()
        with pytest.raises(ConnectionRefused):
            await client.write(b"still down")
        serving = asyncio.ensure_future(
            VchanDevice.connect("kv", name="store", registry=registry, time=UnixTime())
        )
        await asyncio.sleep(0.05)
        await client.write(b"again")  # connects to the new server
        server = await serving
        assert await server.read() == b"again"
        assert client.connections == 2

        # The client goes away: the server's read says so, then the next
        # client is served on the same device.
        await client.close()
        assert await server.read() == b""
        reading = asyncio.ensure_future(server.read())  # accepts the next client
        other = await VchanDevice.connect("kv", peer="store", registry=registry, time=UnixTime())
        await other.write(b"next client")
        assert await reading == b"next client"
        assert server.connections == 2
        await other.close()
        await server.close()

    asyncio.run(scenario())
