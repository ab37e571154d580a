"""The tls device over the socket stack on IPv6: a certificate for the
address ::1 (an IP SAN) verified by looming's client given [::1] and by
Python's ssl given ::1, on one dual-stack listener."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from looming.devices import TcpFlow
from looming.errors import LoomingError
from looming.tls.device import TlsStack
from looming.unix.clock import UnixClock
from looming.unix.kv import DirectoryKv
from looming.unix.random import UnixRandom
from looming.unix.socket_stack import SocketStack
from tests.tls.pki import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki(tmp_path_factory.mktemp("v6-pki"))
    pki.leaf("both", ec.generate_private_key(ec.SECP256R1()), ["::1", "127.0.0.1"])
    pki.leaf("v4", ec.generate_private_key(ec.SECP256R1()), ["127.0.0.1", "localhost"])
    return pki


def store_of(pki: Pki, label: str, directory: Path) -> Path:
    directory.mkdir()
    leaf = pki.leaves[label]
    shutil.copy(leaf.cert_path, directory / "server.pem")
    shutil.copy(leaf.key_path, directory / "server.key")
    shutil.copy(pki.ca_path, directory / "ca.pem")
    return directory


async def python_client(host: str, port: int, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    try:
        writer.write(b"hi")
        await writer.drain()
        return await reader.read(200)
    finally:
        writer.close()


def test_ip_san_verified_over_ipv6_by_looming_and_python(pki: Pki, tmp_path: Path) -> None:
    store = store_of(pki, "both", tmp_path / "tls")

    async def scenario() -> list[bytes]:
        kv = DirectoryKv(store)
        stack = await TlsStack.connect(SocketStack("::"), kv, UnixRandom(), UnixClock())

        async def answer(flow: TcpFlow) -> None:
            data = await flow.read()
            await flow.write(data + b" " + flow.remote_address[0].encode())

        listener = await stack.tcp.listen(0, answer)
        replies = []
        try:
            for target in ("[::1]", "::1", "127.0.0.1"):
                flow = await stack.tcp.connect(target, listener.port, timeout=10)
                await flow.write(b"hello")
                replies.append(await flow.read())
                await flow.close()
            for host in ("::1", "127.0.0.1"):
                replies.append(await python_client(host, listener.port, store / "ca.pem"))
        finally:
            await listener.close()
            await stack.disconnect()
        return replies

    replies = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert replies == [
        b"hello ::1",
        b"hello ::1",
        b"hello 127.0.0.1",
        b"hi ::1",
        b"hi 127.0.0.1",
    ]


def test_a_certificate_without_the_ipv6_address_is_refused(pki: Pki, tmp_path: Path) -> None:
    """Served a certificate for 127.0.0.1 and localhost only, a client that
    dialled [::1] refuses it: the address it verifies is the one it dialled."""
    store = store_of(pki, "v4", tmp_path / "tls")

    async def scenario() -> None:
        stack = await TlsStack.connect(
            SocketStack("::"), DirectoryKv(store), UnixRandom(), UnixClock()
        )

        async def answer(flow: TcpFlow) -> None:
            await flow.write(b"should not arrive")

        listener = await stack.tcp.listen(0, answer)
        try:
            flow = await stack.tcp.connect("127.0.0.1", listener.port, timeout=10)
            assert await flow.read() == b"should not arrive"
            await flow.close()
            with pytest.raises(LoomingError, match=r"certificate|name|address"):
                await stack.tcp.connect("[::1]", listener.port, timeout=10)
        finally:
            await listener.close()
            await stack.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 30))
