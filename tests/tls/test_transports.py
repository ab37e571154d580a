"""TlsFlow over looming's own transports: the direct TCP/IP stack and vchan.

Both tests run a full TLS 1.3 handshake (with ALPN and a client certificate),
move data larger than one record both ways, exchange a KeyUpdate and close
with close_notify, so every path of TlsFlow meets the underlying Flow.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from looming.devices.flow import Flow
from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.tls import TLS13, TlsConfig, TlsFlow, tls_client, tls_server
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from looming.vchan import aio as vchan
from looming.vchan.registry import REGISTRY_ENV
from looming.vchan.segment import SEGMENT_PREFIX, shm_dir

from .pki import Pki

CLIENT_ADDRESS = IPv4Interface("10.77.0.1/24")
SERVER_ADDRESS = IPv4Interface("10.77.0.2/24")
UPLOAD = random.Random(5).randbytes(150_000)


def configs(pki: Pki) -> tuple[TlsConfig, TlsConfig]:
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        alpn_protocols=[b"looming-test"],
        client_trust=pki.trust,
        require_client_certificate=True,
        random=UnixRandom(11),
        clock=UnixClock(),
    )
    client = TlsConfig(
        certificates=[pki.leaves["client-p256"].certified],
        trust=pki.trust,
        alpn_protocols=[b"looming-test"],
        random=UnixRandom(12),
        clock=UnixClock(),
    )
    return server, client


async def serve_digest(flow: Flow, config: TlsConfig) -> TlsFlow:
    """Server side: read until close_notify, answer with the SHA-256 of it all."""
    tls = await tls_server(flow, config)
    digest = hashlib.sha256()
    while chunk := await tls.read():
        digest.update(chunk)
    await tls.write(digest.digest())
    await tls.shutdown()
    return tls


async def upload_and_check(flow: Flow, config: TlsConfig) -> TlsFlow:
    tls = await tls_client(flow, config, server_name="localhost")
    assert tls.version == TLS13 and tls.alpn_protocol == b"looming-test"
    for start in range(0, len(UPLOAD), 50_000):
        await tls.write(UPLOAD[start : start + 50_000])
        await tls.key_update()
    await tls.shutdown()
    answer = b""
    while chunk := await tls.read():
        answer += chunk
    assert answer == hashlib.sha256(UPLOAD).digest()
    return tls


def test_tls_over_direct_stack_tcp_on_memory_switch(pki: Pki) -> None:
    server_config, client_config = configs(pki)

    async def main() -> None:
        switch = MemorySwitch(random=UnixRandom(3))
        common = {"time": UnixTime(), "clock": UnixClock()}
        server_stack = await DirectStack.connect(
            switch.port(), random=UnixRandom(1), address=SERVER_ADDRESS, **common
        )
        client_stack = await DirectStack.connect(
            switch.port(), random=UnixRandom(2), address=CLIENT_ADDRESS, **common
        )
        served: asyncio.Future[TlsFlow] = asyncio.get_running_loop().create_future()

        async def on_connection(flow: Flow) -> None:
            try:
                served.set_result(await serve_digest(flow, server_config))
            except BaseException as exc:
                served.set_exception(exc)
                raise

        try:
            await server_stack.tcp.listen(8443, on_connection)
            tcp = await client_stack.tcp.connect(SERVER_ADDRESS.ip, 8443, timeout=5)
            client = await asyncio.wait_for(upload_and_check(tcp, client_config), 60)
            server = await asyncio.wait_for(served, 10)
            assert server.peer_certificates[0] == pki.leaves["client-p256"].certified.chain[0]
            assert client.peer_certificates[0] == pki.leaves["p256"].certified.chain[0]
            await tcp.close()
        finally:
            await client_stack.disconnect()
            await server_stack.disconnect()

    asyncio.run(main())


@pytest.fixture
def vchan_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A registry directory of our own; segments we made are removed by name."""
    directory = Path(tempfile.mkdtemp(prefix="looming-tls-vchan-", dir="/tmp"))
    monkeypatch.setenv(REGISTRY_ENV, str(directory))
    mine = f"{SEGMENT_PREFIX}{os.getpid()}-"
    before = {n for n in os.listdir(shm_dir()) if n.startswith(mine)}
    try:
        yield directory
    finally:
        leaked = {n for n in os.listdir(shm_dir()) if n.startswith(mine)} - before
        for name in leaked:
            (shm_dir() / name).unlink(missing_ok=True)
        entries = os.listdir(directory)
        shutil.rmtree(directory, ignore_errors=True)
    assert not leaked and not entries, (leaked, entries)


def test_tls_over_vchan(pki: Pki, vchan_registry: Path) -> None:
    server_config, client_config = configs(pki)

    async def main() -> None:
        listener = await vchan.listen(
            "looming-tls", "tls", read_min=4096, write_min=4096, time=UnixTime()
        )
        try:
            accepting = asyncio.create_task(listener.accept())
            client_flow = await vchan.connect("looming-tls", "tls", time=UnixTime())
            server_flow = await accepting
        finally:
            await listener.close()
        try:
            server_task = asyncio.create_task(serve_digest(server_flow, server_config))
            client = await asyncio.wait_for(upload_and_check(client_flow, client_config), 60)
            server = await asyncio.wait_for(server_task, 10)
            assert server.alpn_protocol == b"looming-test" and not client.resumed
        finally:
            await client_flow.close()
            await server_flow.close()

    asyncio.run(main())
