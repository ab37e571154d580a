"""The TAP with virtio-net headers: the kernel hands looming unfinished
checksums and 64 KB TSO segments, which arrive whole and correct."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from ipaddress import IPv4Address

import pytest

from looming.devices.net import ReceivedPacket
from looming.devices.stack import Datagram, TcpFlow
from looming.net.netif.tap import TapNetwork
from looming.net.stack import DirectStack
from looming.net.wire import tcp
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


TCP_RECEIVER = """
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 6001)); s.listen(); print("ready", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while data := c.recv(1 << 16):
    n += len(data); h.update(data)
print(n, h.hexdigest(), flush=True)
"""


def test_one_tso_packet_reaches_the_kernel_as_segments(kernel_peer: KernelPeer) -> None:
    """A hand-made TCP connection, so the packet's size is not up to
    looming's TCP: one 60,000-byte packet crosses the TAP and the kernel
    receives it, cut into 1,448-byte segments with correct checksums."""
    payload = bytes((i * 13) & 0xFF for i in range(60000))

    async def body(stack: DirectStack) -> None:
        local, remote = stack.addresses()[0].ip, kernel_peer.peer_address
        segments: asyncio.Queue[tcp.TcpHeader] = asyncio.Queue()

        def on_segment(packet: ReceivedPacket[IPv4Address], data: bytes) -> None:
            segments.put_nowait(tcp.parse(data)[0])

        stack.ipv4.register(6, on_segment)  # looming's TCP stays out of this one

        async def send(flags: int, seq: int, ack: int, data: bytes = b"", **kw: int) -> None:
            header = tcp.TcpHeader(40000, 6001, seq, ack, flags, 65535, **kw)
            segment = tcp.emit(header, data, src=local, dst=remote)
            size = 1448 if len(segment) > 1480 else None
            await stack.ipv4.write(remote, 6, segment, segment_size=size)

        server = await kernel_peer.python(TCP_RECEIVER, str(remote))
        assert server.stdout is not None
        await server.stdout.readline()
        await send(tcp.SYN, 1000, 0, mss=1460)
        syn_ack = await asyncio.wait_for(segments.get(), 5)
        assert syn_ack.flags & tcp.SYN and syn_ack.ack == 1001
        peer_next = syn_ack.seq + 1
        await send(tcp.ACK, 1001, peer_next)
        assert stack.ipv4.segment_limit(remote) > len(payload) + 20
        await send(tcp.ACK | tcp.PSH, 1001, peer_next, payload)
        while (await asyncio.wait_for(segments.get(), 5)).ack < 1001 + len(payload):
            pass
        await send(tcp.FIN | tcp.ACK, 1001 + len(payload), peer_next)
        line = await asyncio.wait_for(server.stdout.readline(), 5)
        assert line.split() == [b"60000", hashlib.sha256(payload).hexdigest().encode()]
        tap = stack.network
        assert isinstance(tap, TapNetwork) and tap.segments_offloaded == 1
        assert stack.counters()["ipv4.tx_offloaded"] == 1
        await server.wait()

    kernel_peer.run(body, offload=True)
