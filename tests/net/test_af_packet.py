"""looming on an AF_PACKET socket bound to one end of a veth pair whose
other end is the kernel's, in a namespace."""

from __future__ import annotations

import asyncio
import re

import pytest

from looming.devices.stack import Datagram
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
