"""TlsFlow over an arbitrary looming Flow (here an in-memory pipe), as a Flow itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from looming.devices.flow import Flow
from looming.errors import Closed
from looming.tls import TlsConfig, TlsFlow, TrustStore, tls_client, tls_server
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .pki import Pki


class PipeEnd:
    """One end of an in-memory Flow pair."""

    local_address: tuple[str, int] | None = None
    remote_address: tuple[str, int] | None = None

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.shut = False
        self.writes = 0

    async def read(self) -> bytes:
        return await self.inbox.get()

    async def write(self, data: bytes) -> None:
        if self.shut:
            raise Closed("pipe shut down")
        self.writes += 1
        await self.outbox.put(bytes(data))

    async def writev(self, buffers: Iterable[bytes]) -> None:
        await self.write(b"".join(buffers))

    async def shutdown(self) -> None:
        if not self.shut:
            self.shut = True
            await self.outbox.put(b"")

    async def close(self) -> None:
        await self.shutdown()


def pipe() -> tuple[PipeEnd, PipeEnd]:
    a: asyncio.Queue[bytes] = asyncio.Queue()
    b: asyncio.Queue[bytes] = asyncio.Queue()
    return PipeEnd(a, b), PipeEnd(b, a)


def test_tls_flow_over_memory_pipe(pki: Pki) -> None:
    async def main() -> tuple[TlsFlow, TlsFlow, bytes, bytes]:
        left, right = pipe()
        assert isinstance(left, Flow)
        client_task = asyncio.create_task(
            tls_client(
                left,
                TlsConfig(
                    trust=pki.trust, alpn_protocols=[b"x"], random=UnixRandom(), clock=UnixClock()
                ),
                server_name="localhost",
            )
        )
        server = await tls_server(
            right,
            TlsConfig(
                certificates=[pki.leaves["ed25519"].certified],
                alpn_protocols=[b"x"],
                random=UnixRandom(),
                clock=UnixClock(),
            ),
        )
        client = await client_task
        assert isinstance(client, Flow) and isinstance(server, Flow)
        await client.writev([b"a", b"b", b"c" * 40000])
        received = b""
        while len(received) < 40002:
            received += await server.read()
        await server.write(b"bye")
        await server.shutdown()
        with pytest.raises(Closed):
            await server.write(b"after shutdown")
        reply = await client.read()
        assert await client.read() == b""  # close_notify: a clean end of stream
        await client.close()
        assert await server.read() == b""
        await server.close()
        return client, server, received, reply

    client, server, received, reply = asyncio.run(main())
    assert received == b"ab" + b"c" * 40000 and reply == b"bye"
    assert client.alpn_protocol == server.alpn_protocol == b"x"
    assert client.export_keying_material("EXPORTER-flow", b"", 16) == server.export_keying_material(
        "EXPORTER-flow", b"", 16
    )


def test_system_trust_store_loads() -> None:
    store = TrustStore.system()
    assert len(store.anchors) > 10


def test_stalled_handshake_times_out(pki: Pki) -> None:
    from looming.errors import ConnectionTimeout

    async def main() -> None:
        left, right = pipe()
        await left.write(
            b"\x16\x03\x01\x00\x04\x01\x00\x01\x00"
        )  # a ClientHello that never finishes
        with pytest.raises(ConnectionTimeout):
            await tls_server(
                right,
                TlsConfig(
                    certificates=[pki.leaves["p256"].certified],
                    random=UnixRandom(),
                    clock=UnixClock(),
                ),
                handshake_timeout=0.2,
            )

    asyncio.run(main())
