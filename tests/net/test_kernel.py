"""looming's direct stack against the Linux kernel over a TAP device in a
network namespace: ICMP, ARP, UDP, fragmentation both ways, and tshark
decoding a capture of it all."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from looming.devices.stack import Datagram, TcpFlow
from looming.errors import HostUnreachable
from looming.net.arp import NeighbourLimits
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.kernel import KernelPeer

pytestmark = pytest.mark.root

# A kernel-side UDP echo server: answers every datagram, then exits after
# ``count`` of them (so the test can await its exit).
UDP_ECHO_SERVER = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
sock.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    data, peer = sock.recvfrom(65535)
    sock.sendto(data, peer)
"""

# A kernel-side UDP client: sends each size, expects the same bytes back.
UDP_CLIENT = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(5)
target = (sys.argv[1], int(sys.argv[2]))
for size in map(int, sys.argv[3:]):
    payload = bytes((i * 7 + size) & 0xFF for i in range(size))
    sock.sendto(payload, target)
    data, peer = sock.recvfrom(65535)
    assert data == payload and peer == target, (size, len(data), peer)
    print("ok", size, flush=True)
"""

SIZES = ["1", "100", "1472", "1473", "2961", "8000", "30000", "65507"]


def _payload(size: int) -> bytes:
    return bytes((i * 7 + size) & 0xFF for i in range(size))


def _loss(ping_output: str) -> str:
    match = re.search(r"(\d+(?:\.\d+)?)% packet loss", ping_output)
    assert match is not None, ping_output
    return match.group(1)


def _kernel_mac(peer: KernelPeer) -> str:
    out = peer.sh("ip", "-o", "link", "show", peer.tap_name)
    match = re.search(r"link/ether ([0-9a-f:]{17})", out)
    assert match is not None, out
    return match.group(1)


def test_kernel_pings_looming_small_fragmented_and_flood(kernel_peer: KernelPeer) -> None:
    address = str(kernel_peer.stack_address.ip)

    async def body(stack: DirectStack) -> None:
        small = await kernel_peer.exec_output("ping", "-c", "3", "-i", "0.2", address)
        assert _loss(small) == "0"
        big = await kernel_peer.exec_output("ping", "-c", "3", "-i", "0.2", "-s", "4000", address)
        assert _loss(big) == "0"
        assert "4008 bytes from" in big
        flood = await kernel_peer.exec_output("ping", "-f", "-c", "500", address)
        assert _loss(flood) == "0"
        counters = stack.counters()
        assert counters["icmp.rx_echo_request"] == 506
        assert counters["reassembly.reassembled"] == 3
        # The kernel learned our MAC when it resolved us.
        neighbours = await kernel_peer.exec_output("ip", "neigh", "show", address)
        assert str(stack.ethernet.mac) in neighbours

    kernel_peer.run(body)


def test_looming_pings_kernel_and_resolves_it_by_arp(kernel_peer: KernelPeer) -> None:
    async def body(stack: DirectStack) -> None:
        rtt = await stack.ping(kernel_peer.peer_address)
        assert 0 < rtt < 1
        rtt_big = await stack.ping(kernel_peer.peer_address, size=6000)
        assert 0 < rtt_big < 1
        now = stack.time.now_ns()
        learned = stack.arp.cache.lookup(kernel_peer.peer_address, now)
        assert learned is not None
        assert str(learned) == _kernel_mac(kernel_peer)
        stack.arp.limits = NeighbourLimits(requests=2, request_interval_ns=100_000_000)
        with pytest.raises(HostUnreachable):
            await stack.ping("10.77.0.200", timeout=0.3)  # nobody there: ARP fails
        assert stack.counters()["arp.unresolved"] == 1
        neighbours = await kernel_peer.exec_output("ip", "neigh", "show", "10.77.0.2")
        assert str(stack.ethernet.mac) in neighbours

    kernel_peer.run(body)


def test_udp_looming_to_kernel_echo_server_with_fragments(kernel_peer: KernelPeer) -> None:
    sizes = [int(s) for s in SIZES]

    async def body(stack: DirectStack) -> None:
        server = await kernel_peer.python(
            UDP_ECHO_SERVER, str(kernel_peer.peer_address), "5000", str(len(sizes))
        )
        assert server.stdout is not None
        assert (await server.stdout.readline()).strip() == b"ready"
        replies: asyncio.Queue[Datagram] = asyncio.Queue()
        binding = await stack.udp.bind(0, replies.put_nowait)
        for size in sizes:
            await binding.send(kernel_peer.peer_address, 5000, _payload(size))
            reply = await asyncio.wait_for(replies.get(), 5)
            assert reply.data == _payload(size), size
            assert (reply.source, reply.source_port) == (str(kernel_peer.peer_address), 5000)
        assert await asyncio.wait_for(server.wait(), 10) == 0
        assert stack.counters()["reassembly.reassembled"] >= 5

    kernel_peer.run(body)


def test_udp_kernel_client_to_looming_echo(kernel_peer: KernelPeer) -> None:
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

    kernel_peer.run(body)


def test_udp_to_closed_port_gets_port_unreachable(kernel_peer: KernelPeer) -> None:
    client = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(3)
sock.connect((sys.argv[1], 9))
sock.send(b"anyone?")
try:
    sock.recv(100)
except ConnectionRefusedError:
    print("refused")
"""

    async def body(stack: DirectStack) -> None:
        out = await kernel_peer.exec_output(
            sys.executable, "-c", client, str(kernel_peer.stack_address.ip)
        )
        assert out.strip() == "refused"
        assert stack.counters()["icmp.tx_unreachable"] == 1

    kernel_peer.run(body)


def test_tshark_decodes_a_capture_without_errors(kernel_peer: KernelPeer, tmp_path: Path) -> None:
    capture = tmp_path / "direct.pcap"

    async def body(stack: DirectStack) -> None:
        await stack.ping(kernel_peer.peer_address, size=3000)
        await kernel_peer.exec_output(
            "ping", "-c", "2", "-i", "0.2", "-s", "2000", str(kernel_peer.stack_address.ip)
        )
        server = await kernel_peer.python(
            UDP_ECHO_SERVER, str(kernel_peer.peer_address), "5000", "2"
        )
        assert server.stdout is not None
        await server.stdout.readline()
        replies: asyncio.Queue[Datagram] = asyncio.Queue()
        binding = await stack.udp.bind(0, replies.put_nowait)
        for size in (20, 5000):
            await binding.send(kernel_peer.peer_address, 5000, _payload(size))
            await asyncio.wait_for(replies.get(), 5)
        await server.wait()

    kernel_peer.run(body, pcap=str(capture))
    checks = [
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
    ]
    listing = subprocess.run(
        ["tshark", "-r", str(capture), *checks], capture_output=True, text=True, check=True
    ).stdout
    assert "ARP" in listing and "ICMP" in listing and "UDP" in listing
    bad = subprocess.run(
        [
            "tshark",
            "-r",
            str(capture),
            *checks,
            "-Y",
            '_ws.malformed || ip.checksum.status == "Bad" || udp.checksum.status == "Bad"'
            ' || icmp.checksum.status == "Bad" || _ws.expert.severity >= "error"',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert bad == "", bad
    # Reassembled by Wireshark too: the fragmented echo and UDP datagrams.
    fields = subprocess.run(
        ["tshark", "-r", str(capture), "-T", "fields", "-e", "udp.length", "-Y", "udp"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "5008" in fields


def test_gratuitous_arp_updates_the_kernels_stale_entry(kernel_peer: KernelPeer) -> None:
    async def main() -> None:
        tap = await kernel_peer.open_tap()
        address = str(kernel_peer.stack_address.ip)
        # The kernel believes our address lives at another MAC; Linux updates
        # an existing entry from a gratuitous ARP even with arp_accept off.
        kernel_peer.sh(
            "ip", "neigh", "replace", address, "lladdr", "02:11:11:11:11:11",
            "dev", kernel_peer.tap_name, "nud", "stale",
        )  # fmt: skip
        stack = await DirectStack.connect(
            tap,
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(4),
            address=kernel_peer.stack_address,
        )
        try:
            expected = str(stack.ethernet.mac)
            for _ in range(100):
                neighbours = await kernel_peer.exec_output("ip", "neigh", "show", address)
                if expected in neighbours:
                    break
                await asyncio.sleep(0.02)
            assert expected in neighbours
            assert stack.counters()["arp.tx_gratuitous"] == 1
        finally:
            await stack.disconnect()

    asyncio.run(main())


TCP_ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5005)); s.listen(); print("ready", flush=True)
c, _ = s.accept()
while data := c.recv(65536):
    c.sendall(data)
c.close()
"""

TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5006), timeout=10)
payload = bytes(range(256)) * 400
c.sendall(payload)
c.shutdown(socket.SHUT_WR)
received = b""
while data := c.recv(65536):
    received += data
assert received == payload[::-1], len(received)
print("ok", flush=True)
"""


def test_the_stack_carries_tcp_both_ways(kernel_peer: KernelPeer) -> None:
    async def body(stack: DirectStack) -> None:
        server = await kernel_peer.python(TCP_ECHO_SERVER, str(kernel_peer.peer_address))
        assert server.stdout is not None
        assert (await server.stdout.readline()).strip() == b"ready"
        flow = await stack.tcp.connect(kernel_peer.peer_address, 5005, timeout=5)
        payload = bytes(range(256)) * 300
        await flow.write(payload)
        await flow.shutdown()
        echoed = b""
        while data := await flow.read():
            echoed += data
        assert echoed == payload
        await flow.close()
        await server.wait()

        async def reverse(flow: TcpFlow) -> None:
            received = b""
            while data := await flow.read():
                received += data
            await flow.write(received[::-1])
            await flow.close()

        await stack.tcp.listen(5006, reverse)
        out = await kernel_peer.exec_output(
            sys.executable, "-c", TCP_CLIENT, str(kernel_peer.stack_address.ip)
        )
        assert out.strip() == "ok"
        assert stack.counters()["tcp.connections_accepted"] == 1

    kernel_peer.run(body)
