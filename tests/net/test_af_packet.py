"""looming on an AF_PACKET socket bound to one end of a veth pair whose
other end is the kernel's, in a namespace."""

from __future__ import annotations

import asyncio
import re
from ipaddress import IPv6Interface

import pytest

from looming.devices.stack import Datagram, TcpFlow
from looming.net.netif.af_packet import PacketNetwork
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.kernel import KernelPeer, sh, unique_suffix
from tests.net.test_kernel import UDP_ECHO_SERVER

pytestmark = pytest.mark.root


def test_af_packet_on_a_veth_pair(kernel_peer: KernelPeer) -> None:
    suffix = unique_suffix()
    ours, theirs = f"lmva{suffix}", f"lmvb{suffix}"
    sh("ip", "link", "add", ours, "type", "veth", "peer", "name", theirs)
    try:
        sh("ip", "link", "set", theirs, "netns", kernel_peer.namespace)
        # No IPv6 chatter from the root namespace's end: it is looming's wire.
        sh("sysctl", "-qw", f"net.ipv6.conf.{ours}.disable_ipv6=1", check=False)
        sh("ip", "link", "set", ours, "up")
        kernel_peer.sh("ip", "addr", "add", f"{kernel_peer.peer_address}/24", "dev", theirs)
        kernel_peer.sh("ip", "link", "set", theirs, "up")
        # The kernel's end keeps checksum offload on: its TCP and UDP
        # packets reach looming unfinished, flagged in PACKET_AUXDATA.
        asyncio.run(exercise(kernel_peer, ours))
    finally:
        sh("ip", "link", "del", ours, check=False)


async def exercise(peer: KernelPeer, interface: str) -> None:
    network = await PacketNetwork.connect(interface)
    assert network.mtu == 1500
    stack = await DirectStack.connect(
        network,
        time=UnixTime(),
        clock=UnixClock(),
        random=UnixRandom(3),
        address=peer.stack_address,
    )
    try:
        assert await stack.ping(peer.peer_address) < 1
        out = await peer.exec_output(
            "ping", "-c", "3", "-i", "0.2", "-s", "3000", str(peer.stack_address.ip)
        )
        assert re.search(r" 0% packet loss", out), out
        server = await peer.python(UDP_ECHO_SERVER, str(peer.peer_address), "5000", "2")
        assert server.stdout is not None
        await server.stdout.readline()
        replies: asyncio.Queue[Datagram] = asyncio.Queue()
        binding = await stack.udp.bind(0, replies.put_nowait)
        for size in (10, 9000):
            payload = bytes(size % 251 for _ in range(size))
            await binding.send(peer.peer_address, 5000, payload)
            assert (await asyncio.wait_for(replies.get(), 5)).data == payload
        assert await asyncio.wait_for(server.wait(), 5) == 0
        assert network.checksums_completed > 0
        assert stack.counters().get("udp.malformed", 0) == 0
    finally:
        await stack.disconnect()


def test_partial_ipv6_checksums_are_completed_over_a_veth_pair(kernel_peer: KernelPeer) -> None:
    """The kernel's IPv6 TCP and UDP packets arrive with CHECKSUM_PARTIAL
    too (a VM's guest kernel hands them on so): looming completes them."""
    suffix = unique_suffix()
    ours, theirs = f"lmv6a{suffix}", f"lmv6b{suffix}"
    sh("ip", "link", "add", ours, "type", "veth", "peer", "name", theirs)
    try:
        sh("ip", "link", "set", theirs, "netns", kernel_peer.namespace)
        sh("sysctl", "-qw", f"net.ipv6.conf.{ours}.disable_ipv6=1", check=False)
        sh("ip", "link", "set", ours, "up")
        kernel_peer.sh("ip", "addr", "add", "fd00:7::1/64", "dev", theirs, "nodad")
        kernel_peer.sh("ip", "link", "set", theirs, "up")
        asyncio.run(exercise_ipv6(kernel_peer, ours))
    finally:
        sh("ip", "link", "del", ours, check=False)


TCP_ECHO_CLIENT = """
import socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
data = bytes(i % 251 for i in range(200_000))
sock.sendall(data)
sock.shutdown(socket.SHUT_WR)
back = b""
while len(back) < len(data):
    chunk = sock.recv(65536)
    if not chunk:
        break
    back += chunk
print("same" if back == data else f"differs: {len(back)} bytes")
"""


async def exercise_ipv6(peer: KernelPeer, interface: str) -> None:
    network = await PacketNetwork.connect(interface)
    stack = await DirectStack.connect(
        network,
        time=UnixTime(),
        clock=UnixClock(),
        random=UnixRandom(5),
        address=peer.stack_address,
        ipv6=True,
        ipv6_address=IPv6Interface("fd00:7::2/64"),
        slaac=False,
    )

    async def echo(flow: TcpFlow) -> None:
        while data := await flow.read():
            await flow.write(data)
        await flow.close()

    try:
        listener = await stack.tcp.listen(7007, echo)
        client = await peer.python(TCP_ECHO_CLIENT, "fd00:7::2", "7007")
        assert client.stdout is not None
        assert (await asyncio.wait_for(client.stdout.readline(), 30)).strip() == b"same"
        assert await asyncio.wait_for(client.wait(), 5) == 0
        assert network.checksums_completed > 0
        counters = stack.counters()
        assert counters.get("tcp.bad_checksum", 0) == 0, counters
        await listener.close()
    finally:
        await stack.disconnect()
