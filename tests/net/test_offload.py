"""The TAP with virtio-net headers: the kernel hands looming unfinished
checksums and 64 KB TSO segments, which arrive whole and correct."""

from __future__ import annotations

import asyncio
import hashlib
import sys

import pytest

from looming.devices.stack import Datagram, TcpFlow
from looming.net.netif.tap import TapNetwork
from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer
from tests.net.test_kernel import SIZES, UDP_CLIENT

pytestmark = pytest.mark.root

TCP_SENDER = """
import hashlib, random, socket, sys
data = random.Random(7).randbytes(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.sendall(data)
c.shutdown(socket.SHUT_WR)
assert c.recv(100) == hashlib.sha256(data).hexdigest().encode()
print(hashlib.sha256(data).hexdigest())
"""


def test_tso_segments_from_the_kernel_arrive_whole(kernel_peer: KernelPeer) -> None:
    size = 8 * 1024 * 1024

    async def body(stack: DirectStack) -> None:
        digest: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def receive(flow: TcpFlow) -> None:
            hasher = hashlib.sha256()
            while data := await flow.read():
                hasher.update(data)
            await flow.write(hasher.hexdigest().encode())
            await flow.close()
            digest.set_result(hasher.hexdigest())

        await stack.tcp.listen(6000, receive)
        out = await kernel_peer.exec_output(
            sys.executable, "-c", TCP_SENDER, str(kernel_peer.stack_address.ip), "6000", str(size)
        )
        assert out.strip() == await asyncio.wait_for(digest, 10)
        tap = stack.network
        assert isinstance(tap, TapNetwork) and tap.offload
        assert tap.checksums_completed > 0
        # Far fewer frames than 1460-byte segments: TSO super-frames came in.
        assert tap.stats().rx_packets < size // 1460 // 2

    kernel_peer.run(body, offload=True)


def test_udp_and_ping_with_partial_checksums(kernel_peer: KernelPeer) -> None:
    async def body(stack: DirectStack) -> None:
        async def echo(datagram: Datagram) -> None:
            await stack.udp.send(
                datagram.source, datagram.source_port, datagram.data, source_port=7000
            )

        await stack.udp.bind(7000, echo)
        out = await kernel_peer.exec_output(
            sys.executable, "-c", UDP_CLIENT, str(kernel_peer.stack_address.ip), "7000", *SIZES
        )
        assert out.split("\n")[:-1] == [f"ok {size}" for size in SIZES]
        ping = await kernel_peer.exec_output(
            "ping", "-c", "3", "-i", "0.2", "-s", "3000", str(kernel_peer.stack_address.ip)
        )
        assert " 0% packet loss" in ping
        assert stack.counters().get("udp.malformed", 0) == 0

    kernel_peer.run(body, offload=True)
