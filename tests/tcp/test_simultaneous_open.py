"""Simultaneous open (RFC 9293 section 3.5, figure 7) with the Linux kernel.

Both ends connect to each other's port at once and neither listens.  Over a
TAP the two SYNs cross only by luck, so the test makes them cross: the
interface holds looming's frames to the kernel's port until looming has
answered the kernel's SYN, then sends them in order: looming's SYN first
(the kernel, in SYN-SENT, moves to SYN-RECEIVED and answers with a SYN-ACK),
then looming's SYN-ACK.  Each side thus sees a SYN, then a SYN-ACK, which is
the exchange of figure 7 on both ends.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace

import pytest

from looming.devices.net import Capabilities, FrameHandler, MacAddress, Network, NetworkStats
from looming.net.stack import DirectStack
from looming.net.tcp import State
from looming.net.wire import ethernet, ipv4
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK, SYN
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.kernel import KernelPeer

pytestmark = pytest.mark.root

KERNEL_PORT = 5151

# The kernel's end: bound to KERNEL_PORT, it connects to looming's port
# (argv[1]) without listening, then talks.
KERNEL_CONNECTOR = r"""
import socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("10.77.0.1", int(sys.argv[2])))
sock.settimeout(20)
sock.connect(("10.77.0.2", int(sys.argv[1])))
sock.sendall(b"hello from the kernel")
print(sock.recv(100).decode(), flush=True)
sock.close()
"""


def tcp_flags_and_ports(frame: bytes) -> tuple[int, int, int] | None:
    """(flags, source port, destination port) of a TCP frame, else None."""
    try:
        _, packet = ethernet.parse(frame)
        header, segment = ipv4.parse(packet)
        if header.protocol != 6:
            return None
        tcp, _ = wire.parse(segment)
    except Exception:
        return None
    return tcp.flags, tcp.src_port, tcp.dst_port


class CrossingNetwork:
    """A Network that holds looming's TCP frames to ``port`` until it has
    sent a SYN-ACK there, and records the flags of TCP frames from it."""

    def __init__(self, inner: Network, port: int) -> None:
        self.inner = inner
        self.port = port
        self.holding = True
        self.held: list[bytes] = []
        self.first_syn = asyncio.get_running_loop().create_future()
        self.sent: list[int] = []
        self.received: list[int] = []

    @property
    def mac(self) -> MacAddress:
        return self.inner.mac

    @property
    def mtu(self) -> int:
        return self.inner.mtu

    @property
    def capabilities(self) -> Capabilities:
        # Held frames go through write() only: no segmentation offload.
        return replace(self.inner.capabilities, tx_checksum=False, segmentation=0)

    def stats(self) -> NetworkStats:
        return self.inner.stats()

    async def write(self, frame: bytes) -> None:
        parsed = tcp_flags_and_ports(frame)
        if parsed is None or parsed[2] != self.port:
            await self.inner.write(frame)
            return
        flags, source_port, _ = parsed
        self.sent.append(flags)
        if not self.holding:
            await self.inner.write(frame)
            return
        self.held.append(frame)
        if flags & (SYN | ACK) == SYN and not self.first_syn.done():
            self.first_syn.set_result(source_port)
        if flags & (SYN | ACK) == SYN | ACK:
            # looming has taken the kernel's SYN: let both out, SYN first.
            self.holding = False
            for held in self.held:
                await self.inner.write(held)
            self.held.clear()

    async def listen(self, handler: FrameHandler) -> None:
        def observe(frame: bytes, checksum_verified: bool = False, /) -> None:
            parsed = tcp_flags_and_ports(frame)
            if parsed is not None and parsed[1] == self.port:
                self.received.append(parsed[0])
            handler(frame, checksum_verified)

        await self.inner.listen(observe)

    async def disconnect(self) -> None:
        await self.inner.disconnect()


def test_simultaneous_open_with_the_kernel(kernel_peer: KernelPeer) -> None:
    async def main() -> None:
        tap = await kernel_peer.open_tap()
        crossing = CrossingNetwork(tap, KERNEL_PORT)
        stack = await DirectStack.connect(
            crossing,
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(5),
            address=kernel_peer.stack_address,
            gateway=kernel_peer.peer_address,
        )
        try:
            connecting = asyncio.ensure_future(
                stack.tcp.connect(kernel_peer.peer_address, KERNEL_PORT, timeout=20)
            )
            our_port = await asyncio.wait_for(crossing.first_syn, 10)
            kernel = await kernel_peer.python(KERNEL_CONNECTOR, str(our_port), str(KERNEL_PORT))
            flow = await connecting
            assert flow.state is State.ESTABLISHED
            assert await flow.read() == b"hello from the kernel"
            await flow.write(b"hello from looming")
            out, err = await asyncio.wait_for(kernel.communicate(), 20)
            assert kernel.returncode == 0, err.decode()
            assert out.decode().strip() == "hello from looming"
            await flow.close()
        finally:
            await stack.disconnect()
        syn, syn_ack = SYN, SYN | ACK
        # Each side sent a bare SYN and then a SYN-ACK: figure 7 on both ends.
        assert [f & (SYN | ACK) for f in crossing.sent[:2]] == [syn, syn_ack], crossing.sent
        assert [f & (SYN | ACK) for f in crossing.received[:2]] == [syn, syn_ack], crossing.received

    assert sys.platform == "linux"
    asyncio.run(main())
