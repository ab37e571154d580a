"""looming's IPv6 layer against the Linux kernel over a TAP in a network
namespace: ``ping -6`` both ways, neighbour discovery both ways, UDP over
IPv6 with the kernel's sockets, and what a tshark makes of the capture."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from looming.devices.stack import Datagram, TcpFlow
from looming.net.neighbours import NeighbourState
from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer

pytestmark = pytest.mark.root

UDP_CLIENT = r"""
import socket, sys
address, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3)
for size in (1, 512, 1400):
    data = bytes(i % 251 for i in range(size))
    s.sendto(data, socket.getaddrinfo(address, port, socket.AF_INET6)[0][4])
    reply, sender = s.recvfrom(2048)
    assert reply == data[::-1], (size, len(reply))
print("ok", flush=True)
"""

UDP_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 5306))
print("ready", flush=True)
s.settimeout(5)
data, sender = s.recvfrom(2048)
s.sendto(data.upper(), sender)
print(len(data), flush=True)
"""


def without_dad(peer: KernelPeer) -> None:
    """The kernel's link-local address usable at once (no duplicate address
    detection delay) for the TAP that moves into the namespace."""
    for scope in ("all", "default"):
        peer.sh("sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0")


def kernel_link_local(peer: KernelPeer) -> IPv6Address:
    shown = peer.sh("ip", "-6", "-o", "addr", "show", "dev", peer.tap_name, "scope", "link")
    return IPv6Address(shown.split("inet6 ")[1].split("/")[0])


def test_the_kernel_pings_looming_and_looming_pings_the_kernel(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        ours = stack.ipv6.link_local
        out = await kernel_peer.exec_output(
            "ping", "-6", "-c", "5", "-i", "0.05", "-W", "2", "-s", "1200",
            f"{ours}%{kernel_peer.tap_name}",
        )  # fmt: skip
        assert "5 received" in out, out
        counters = stack.counters()
        assert counters["ipv6.rx_solicit"] >= 1 and counters["ipv6.tx_advert"] >= 1
        assert counters["ipv6.rx_echo_request"] == 5
        theirs = kernel_link_local(kernel_peer)
        # The kernel's solicitation told us its MAC: known but unconfirmed.
        assert stack.ipv6.neighbours.state(theirs) in (NeighbourState.STALE, NeighbourState.DELAY)
        for _ in range(3):
            assert await stack.ping(theirs, timeout=2) < 2
        assert stack.counters()["ipv6.rx_echo_reply"] == 3

    kernel_peer.run(body, ipv6=True)


def test_pings_larger_than_the_mtu_are_fragmented_and_reassembled(
    kernel_peer: KernelPeer,
) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        ours = stack.ipv6.link_local
        out = await kernel_peer.exec_output(
            "ping", "-6", "-c", "3", "-i", "0.1", "-W", "2", "-s", "4000",
            f"{ours}%{kernel_peer.tap_name}",
        )  # fmt: skip
        assert "3 received" in out, out
        assert await stack.ping(kernel_link_local(kernel_peer), size=4000, timeout=2) < 2
        counters = stack.counters()
        # 4,048-byte ICMPv6 messages in three fragments each, both ways.
        assert counters["reassembly6.reassembled"] == 4
        assert counters["ipv6.rx_fragments"] == counters["ipv6.tx_fragments"] == 12

    kernel_peer.run(body, ipv6=True)


def test_looming_resolves_the_kernel_by_neighbour_solicitation(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        theirs = kernel_link_local(kernel_peer)
        assert stack.ipv6.neighbours.state(theirs) is None
        await stack.ping(theirs, timeout=2)
        # Asked by multicast, answered by a solicited advertisement.
        assert stack.ipv6.neighbours.state(theirs) is NeighbourState.REACHABLE
        assert stack.counters()["ipv6.tx_solicit"] == 1
        neighbours = kernel_peer.sh("ip", "-6", "neigh", "show", "dev", kernel_peer.tap_name)
        assert str(stack.ipv6.link_local) in neighbours  # and it learned us in return
        assert str(stack.network.mac) in neighbours

    kernel_peer.run(body, ipv6=True)


def test_udp_over_ipv6_with_the_kernels_sockets(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        udp = stack.udp

        async def reverse(datagram: Datagram) -> None:
            await udp.send(datagram.source, datagram.source_port, datagram.data[::-1])

        binding = await udp.bind(5305, reverse)
        target = f"{stack.ipv6.link_local}%{kernel_peer.tap_name}"
        out = await kernel_peer.exec_output(sys.executable, "-c", UDP_CLIENT, target, "5305")
        assert out.split() == ["ok"]
        await binding.close()
        # And the other way: looming's datagram to a kernel socket.
        server = await kernel_peer.python(UDP_SERVER)
        assert server.stdout is not None
        assert (await server.stdout.readline()).strip() == b"ready"
        replies: asyncio.Queue[Datagram] = asyncio.Queue()
        client = await udp.bind(0, replies.put_nowait)
        await client.send(kernel_link_local(kernel_peer), 5306, b"over ipv6")
        reply = await asyncio.wait_for(replies.get(), 5)
        assert reply.data == b"OVER IPV6"
        assert (await server.stdout.readline()).strip() == b"9"
        counters = stack.counters()
        assert counters["udp.rx_datagrams"] == 4 and "udp.malformed" not in counters

    kernel_peer.run(body, ipv6=True)


CLOSED_PORT_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(socket.getaddrinfo(sys.argv[1], 5999, socket.AF_INET6)[0][4])
s.send(b"anyone?")
try:
    s.recv(100)
except ConnectionRefusedError:
    print("refused", flush=True)
"""


def test_a_closed_udp_port_answers_with_icmpv6_port_unreachable(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        target = f"{stack.ipv6.link_local}%{kernel_peer.tap_name}"
        out = await kernel_peer.exec_output(sys.executable, "-c", CLOSED_PORT_CLIENT, target)
        # The kernel matched the error to its socket: the quote was right.
        assert out.split() == ["refused"]
        assert stack.counters()["ipv6.tx_unreachable"] == 1

    kernel_peer.run(body, ipv6=True)


TCP_SINK = r"""
import hashlib, socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind(("::", 6006))
s.listen()
print("ready", flush=True)
c, _ = s.accept()
digest, total = hashlib.sha256(), 0
while data := c.recv(65536):
    digest.update(data)
    total += len(data)
c.sendall(digest.hexdigest().encode())
c.close()
print(total, flush=True)
"""

TCP_SOURCE = r"""
import hashlib, socket, sys
c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
c.connect(socket.getaddrinfo(sys.argv[1], 6007, socket.AF_INET6)[0][4])
data = bytes(i % 251 for i in range(2_000_000))
c.sendall(data)
c.shutdown(socket.SHUT_WR)
answer = b""
while chunk := c.recv(65536):
    answer += chunk
print(answer.decode() == hashlib.sha256(data).hexdigest(), flush=True)
"""


def test_tcp_over_ipv6_both_ways_with_hash_checks(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        sink = await kernel_peer.python(TCP_SINK)
        assert sink.stdout is not None
        assert (await sink.stdout.readline()).strip() == b"ready"
        flow = await stack.tcp.connect(kernel_link_local(kernel_peer), 6006, timeout=3)
        # The MSS comes from the IPv6 MTU: 1500 - 40 - 20, less options.
        assert flow.connection.path_mss == 1440
        data = bytes(i % 253 for i in range(3_000_000))
        await flow.write(data)
        await flow.shutdown()
        answer = b""
        while chunk := await flow.read():
            answer += chunk
        assert answer.decode() == hashlib.sha256(data).hexdigest()
        assert (await sink.stdout.readline()).strip() == b"3000000"

        async def digest(flow: TcpFlow) -> None:
            hashed = hashlib.sha256()
            while chunk := await flow.read():
                hashed.update(chunk)
            await flow.write(hashed.hexdigest().encode())

        await stack.tcp.listen(6007, digest)
        target = f"{stack.ipv6.link_local}%{kernel_peer.tap_name}"
        out = await kernel_peer.exec_output(sys.executable, "-c", TCP_SOURCE, target)
        assert out.split() == ["True"]

    kernel_peer.run(body, ipv6=True)


def test_tshark_decodes_the_ipv6_capture(kernel_peer: KernelPeer, tmp_path: Path) -> None:
    without_dad(kernel_peer)
    capture = tmp_path / "ipv6.pcap"

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        await stack.ping(kernel_link_local(kernel_peer), timeout=2)

    kernel_peer.run(body, ipv6=True, pcap=str(capture))
    decoded = subprocess.run(
        ["tshark", "-r", str(capture), "-Y", "icmpv6", "-T", "fields", "-e", "icmpv6.type"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    types = decoded.stdout.split()
    # Solicitation, advertisement, echo request and reply, all well formed.
    assert {"135", "136", "128", "129"} <= set(types), decoded.stdout
    expert = subprocess.run(
        ["tshark", "-r", str(capture), "-z", "expert,error", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "Errors" not in expert.stdout, expert.stdout
