"""ICMP errors reach TCP and UDP (RFC 1122, RFC 5927, RFC 1191), with the
Linux kernel as the peer and forged errors sent from its namespace."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path

import dpkt
import pytest

from looming.devices.net import IpProtocol
from looming.devices.stack import Datagram
from looming.errors import ConnectionRefused, HostUnreachable
from looming.net.icmp import IcmpError
from looming.net.stack import DirectStack
from looming.net.tcp.layer import TcpStream
from tests.net.hostile import RAW_SEND, ethernet_frame, icmp_error
from tests.net.kernel import KernelPeer
from tests.net.test_hostile import kernel_mac, kernel_program

pytestmark = pytest.mark.root

# Accept one connection and count what arrives until EOF; print the count.
SINK = r"""
import socket
listener = socket.socket()
listener.bind(("10.77.0.1", 7200))
listener.listen(1)
print("listening", flush=True)
conn, _ = listener.accept()
total = 0
while chunk := conn.recv(65536):
    total += len(chunk)
print(total, flush=True)
"""


async def inject(peer: KernelPeer, stack: DirectStack, *packets: bytes) -> None:
    """Send IPv4 ``packets`` to looming from the namespace, then let them land."""
    mac = await kernel_mac(peer)
    frames = [ethernet_frame(stack.ethernet.mac, mac, packet).hex() for packet in packets]
    sender = await kernel_program(peer, RAW_SEND, peer.tap_name, *frames)
    assert await sender.wait() == 0
    await asyncio.sleep(0.1)


def tcp_first8(src_port: int, dst_port: int, seq: int) -> bytes:
    return struct.pack("!HHI", src_port, dst_port, seq & 0xFFFFFFFF)


def frag_needed(port: int, seq: int, mtu: int, dst_port: int = 7200) -> bytes:
    """A router's "fragmentation needed" for a segment of ours at ``seq``."""
    first8 = tcp_first8(port, dst_port, seq)
    return icmp_error("10.77.0.1", "10.77.0.2", 3, 4, "10.77.0.2", "10.77.0.1", 6, first8, mtu=mtu)


@contextmanager
def acks_lost(stack: DirectStack) -> Iterator[None]:
    """Linux's ACKs are lost on the way back during the block, so what
    looming sends stays unacknowledged."""
    stack.ipv4.register(IpProtocol.TCP, lambda packet, segment: None)
    try:
        yield
    finally:
        stack.ipv4.register(IpProtocol.TCP, stack.tcp.input)


async def forged_errors_are_ignored(
    peer: KernelPeer, stack: DirectStack, flow: TcpStream, port: int
) -> None:
    """A sequence number far from anything sent, other ports, a quoted
    datagram that was never ours: counted, and the path MSS kept."""
    conn = flow.connection
    mss_before = conn.path_mss
    una = conn.snd_una
    never_ours = icmp_error(
        "10.77.0.1",
        "10.77.0.2",
        3,
        4,
        "10.77.0.9",
        "10.77.0.1",
        6,
        tcp_first8(port, 7200, una),
        mtu=1000,
    )
    await inject(
        peer,
        stack,
        frag_needed(port, una + 1_000_000, 1000),
        frag_needed(port, una - 1, 1000),
        frag_needed(port + 1, una, 1000),
        never_ours,
    )
    counters = stack.counters()
    assert counters["tcp.icmp_out_of_window"] == 2
    assert counters["tcp.icmp_no_connection"] == 1
    assert counters["icmp.error_not_ours"] == 1
    assert conn.path_mss == mss_before


async def errors_about_data_in_flight_are_believed(
    peer: KernelPeer, stack: DirectStack, flow: TcpStream, port: int
) -> None:
    """A router reports a 1000-byte path for a 1500-byte datagram still
    unacknowledged: the path MSS falls. A soft error on an established
    connection changes nothing but the note."""
    conn = flow.connection
    with acks_lost(stack):
        flow.set_nodelay(True)
        await flow.write(b"b" * 50_000)
        await inject(peer, stack, frag_needed(port, conn.snd_una, 1000))
    assert stack.counters()["ipv4.pmtu_lowered"] == 1
    assert conn.path_mss == 1000 - 40
    with acks_lost(stack):
        await flow.write(b"d" * 3000)
        first8 = tcp_first8(port, 7200, conn.snd_una)
        await inject(
            peer,
            stack,
            icmp_error("10.77.0.1", "10.77.0.2", 3, 1, "10.77.0.2", "10.77.0.1", 6, first8),
        )
    assert "host unreachable" in (flow.soft_error or "")


def looming_tcp_datagrams(capture: Path) -> list[tuple[int, bool, bool]]:
    """(length, DF, is a fragment) of each TCP datagram looming sent."""
    packets = []
    with capture.open("rb") as handle:
        for _, frame in dpkt.pcap.Reader(handle):
            ip = dpkt.ethernet.Ethernet(frame).data
            if isinstance(ip, dpkt.ip.IP) and ip.src == bytes([10, 77, 0, 2]) and ip.p == 6:
                packets.append((ip.len, bool(ip.df), bool(ip.mf or ip.offset)))
    return packets


def test_tcp_takes_only_errors_about_its_own_unacknowledged_data(
    kernel_peer: KernelPeer, tmp_path: Path
) -> None:
    capture = tmp_path / "looming.pcap"

    async def body(stack: DirectStack) -> None:
        sink = await kernel_program(kernel_peer, SINK)
        assert sink.stdout is not None
        assert (await sink.stdout.readline()).strip() == b"listening"
        flow = await stack.tcp.connect("10.77.0.1", 7200, timeout=5)
        port = flow.local_address[1]
        await flow.write(b"a" * 3000)
        await asyncio.sleep(0.1)
        await forged_errors_are_ignored(kernel_peer, stack, flow, port)
        await errors_about_data_in_flight_are_believed(kernel_peer, stack, flow, port)
        await flow.write(b"c" * 200_000)
        await flow.shutdown()
        total = int((await asyncio.wait_for(sink.stdout.readline(), 20)).strip())
        assert await sink.wait() == 0
        assert total == 256_000
        await flow.close()

    kernel_peer.run(body, pcap=str(capture))
    # After the path MTU fell, no TCP datagram from looming was over 1000
    # bytes; all carry DF but the fragments of segments cut before the
    # report and sent again after it.
    packets = looming_tcp_datagrams(capture)
    assert all(df or fragment for _, df, fragment in packets)
    assert max(length for length, _, _ in packets) > 1000  # before the report
    assert max(length for length, _, _ in packets[-100:]) <= 1000


def test_hard_errors_end_a_connection_still_opening(kernel_peer: KernelPeer) -> None:
    async def body(stack: DirectStack) -> None:
        async def opening(target: str, icmp_code: int) -> BaseException | None:
            attempt = asyncio.ensure_future(stack.tcp.connect(target, 80, timeout=3))
            await asyncio.sleep(0.05)
            ((key, conn),) = [
                (k, c) for k, c in stack.tcp._endpoint.connections.items() if str(k[2]) == target
            ]
            first8 = tcp_first8(key[1], 80, conn.iss)
            await inject(
                kernel_peer,
                stack,
                icmp_error("10.77.0.1", "10.77.0.2", 3, icmp_code, "10.77.0.2", target, 6, first8),
            )
            try:
                await asyncio.wait_for(attempt, 0.5)
            except (ConnectionRefused, HostUnreachable) as error:
                return error
            except TimeoutError:
                return None
            return None

        # The SYNs wait on ARP for addresses nobody holds; the errors come
        # from the "router" 10.77.0.1.
        refused = await opening("10.77.0.51", 3)  # port unreachable: hard
        assert isinstance(refused, ConnectionRefused)
        prohibited = await opening("10.77.0.52", 13)  # administratively filtered: hard
        assert isinstance(prohibited, HostUnreachable)
        assert "prohibited" in str(prohibited)
        soft = await opening("10.77.0.53", 1)  # host unreachable: soft, keeps trying
        assert soft is None
        counters = stack.counters()
        assert counters["tcp.icmp_hard_aborts"] == 2
        assert counters["tcp.icmp_soft_errors"] == 1

    kernel_peer.run(body)


def test_udp_gets_linux_port_unreachable(kernel_peer: KernelPeer) -> None:
    async def body(stack: DirectStack) -> None:
        errors: list[IcmpError] = []
        received: list[Datagram] = []
        binding = await stack.udp.bind(0, received.append, on_error=errors.append)
        other = await stack.udp.bind(0, received.append)
        await binding.send("10.77.0.1", 9999, b"anyone?")  # nothing listens: Linux answers
        for _ in range(50):
            if errors:
                break
            await asyncio.sleep(0.02)
        assert len(errors) == 1
        assert errors[0].code == 3 and errors[0].hard
        assert errors[0].reporter == IPv4Address("10.77.0.1")
        assert binding.errors[-1] is errors[0]
        assert not other.errors
        assert stack.counters()["udp.icmp_delivered"] == 1

    kernel_peer.run(body)
