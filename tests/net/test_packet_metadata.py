"""What the layers hand each other: the interface's capabilities, the
received-packet record IPv4 gives to ICMP, UDP and TCP, and the per-frame
checksum flag, instead of attributes probed or left on a layer."""

from __future__ import annotations

import ast
import asyncio
import struct
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import dpkt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.devices.flow import Flow
from looming.devices.net import (
    Capabilities,
    FrameHandler,
    MacAddress,
    Network,
    NetworkStats,
    ReceivedPacket,
)
from looming.devices.stack import TcpFlow
from looming.net.ethernet import EthernetLayer
from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.net.wire import icmp, ipv4
from looming.net.wire.checksum import ones_complement_sum
from tests.net.test_memory import A, B, pair, settle

IPV4 = st.integers(0, 2**32 - 1).map(IPv4Address)
IPV6 = st.integers(0, 2**128 - 1).map(IPv6Address)


def received(source: IPv4Address, destination: IPv4Address, protocol: int) -> ReceivedPacket:  # type: ignore[type-arg]
    return ReceivedPacket(source, destination, protocol, 64, 0, False, b"")


@given(IPV4, IPV4, st.integers(0, 255), st.integers(0, 0xFFFF))
def test_the_ipv4_pseudo_header_sum_is_that_of_rfc_9293s_layout(
    source: IPv4Address, destination: IPv4Address, protocol: int, length: int
) -> None:
    layout = source.packed + destination.packed + struct.pack("!xBH", protocol, length)
    assert received(source, destination, protocol).pseudo_header_sum(length) == (
        ones_complement_sum(layout)
    )


@given(IPV6, IPV6, st.integers(0, 255), st.integers(0, 0xFFFF))
def test_the_ipv6_pseudo_header_sum_is_that_of_rfc_8200s_layout(
    source: IPv6Address, destination: IPv6Address, protocol: int, length: int
) -> None:
    layout = source.packed + destination.packed + struct.pack("!I3xB", length, protocol)
    packet = ReceivedPacket(source, destination, protocol, 64, 0, False, b"")
    assert packet.pseudo_header_sum(length) == ones_complement_sum(layout)


def test_capabilities_that_contradict_themselves_are_refused() -> None:
    with pytest.raises(ValueError, match="finish checksums"):
        Capabilities(segmentation=65535)
    with pytest.raises(ValueError, match="not above the MTU"):
        Capabilities(mtu=9000, tx_checksum=True, segmentation=9000)
    with pytest.raises(ValueError, match="minimum of 68"):
        Capabilities(mtu=60)
    offloading = Capabilities(mtu=1500, rx_checksum=True, tx_checksum=True, segmentation=65535)
    assert offloading.segmentation == 65535


class ClaimsToSegment:
    """A Network whose capabilities promise segmentation it cannot do."""

    mac = MacAddress("02:00:00:00:00:09")
    mtu = 1500
    capabilities = Capabilities(mtu=1500, tx_checksum=True, segmentation=65535)

    def stats(self) -> NetworkStats:
        return NetworkStats()

    async def write(self, frame: bytes) -> None:
        pass

    async def listen(self, handler: FrameHandler) -> None:
        pass

    async def disconnect(self) -> None:
        pass


def test_an_interface_declaring_segmentation_must_offer_it() -> None:
    network: Network = ClaimsToSegment()
    with pytest.raises(TypeError, match="no write_segmented"):
        EthernetLayer(network)


def test_ethernet_takes_the_mtu_from_the_capabilities() -> None:
    port = MemorySwitch().port(mtu=1400)
    assert EthernetLayer(port).mtu == port.capabilities.mtu == 1400


def run(body: Callable[[DirectStack, DirectStack], Awaitable[None]]) -> None:
    async def main() -> None:
        _, a, b = await pair()
        try:
            await body(a, b)
        finally:
            await a.disconnect()
            await b.disconnect()

    asyncio.run(main())


def probe(stack: DirectStack, protocol: int) -> list[tuple[ReceivedPacket[IPv4Address], bytes]]:
    seen: list[tuple[ReceivedPacket[IPv4Address], bytes]] = []
    stack.ipv4.register(protocol, lambda packet, payload: seen.append((packet, payload)))
    return seen


def test_handlers_get_what_ipv4_knows_of_each_datagram() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        seen = probe(b, 253)  # RFC 3692's experimental protocol number
        await a.ipv4.write(B.ip, 253, b"x" * 100, ttl=17, tos=0xB9)
        await a.ipv4.write(B.ip, 253, bytes(range(256)) * 16, ttl=9)  # fragmented
        for _ in range(50):
            await settle()
            if len(seen) == 2:
                break
        (small, small_payload), (whole, whole_payload) = seen
        assert (small.source, small.destination, small.protocol) == (A.ip, B.ip, 253)
        assert (small.hop_limit, small.traffic_class, small.ecn) == (17, 0xB9, 1)
        assert small_payload == b"x" * 100 and not small.checksum_verified
        header, rest = ipv4.parse(small.header + small_payload)
        assert header.ttl == 17 and header.length == len(small.header) == 20
        assert bytes(rest) == small_payload
        # A reassembled datagram: the header of the whole, not of a fragment.
        assert whole_payload == bytes(range(256)) * 16
        header, rest = ipv4.parse(whole.header + whole_payload)
        assert not header.is_fragment and bytes(rest) == whole_payload
        assert whole.hop_limit == 9 and not whole.checksum_verified
        assert b.counters()["ipv4.rx_fragments"] == 3

    run(body)


def udp_frame(to: DirectStack, *, port: int, checksum: int | None, options: bytes = b"") -> bytes:
    datagram = dpkt.udp.UDP(sport=4000, dport=port, data=b"ping")
    datagram.ulen = len(datagram)
    packet = dpkt.ip.IP(src=A.ip.packed, dst=B.ip.packed, p=17, ttl=64, opts=options, data=datagram)
    packet.hl = 5 + len(options) // 4
    packet.len = len(packet)
    raw = bytes(packet)  # computes the checksums
    if checksum is not None:
        start = packet.hl * 4
        raw = raw[: start + 6] + checksum.to_bytes(2, "big") + raw[start + 8 :]
    return bytes(to.ethernet.mac) + bytes(MacAddress("02:00:00:00:00:77")) + b"\x08\x00" + raw


def test_the_interfaces_checksum_flag_reaches_udp_with_the_datagram() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        received: list[bytes] = []
        await b.udp.bind(7000, lambda datagram: received.append(datagram.data))
        b.ethernet.input(udp_frame(b, port=7000, checksum=0x1234))
        assert received == [] and b.counters()["udp.malformed"] == 1
        # The interface vouched for it (a vnet TAP did the sum): not summed again.
        b.ethernet.input(udp_frame(b, port=7000, checksum=0x1234), True)
        # No checksum at all is allowed over IPv4 (RFC 768).
        b.ethernet.input(udp_frame(b, port=7000, checksum=0))
        b.ethernet.input(udp_frame(b, port=7000, checksum=None))
        assert received == [b"ping"] * 3 and b.counters()["udp.malformed"] == 1

    run(body)


def test_an_icmp_error_quotes_the_header_as_it_arrived() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        errors = probe(a, 1)
        router_alert = b"\x94\x04\x00\x00"  # RFC 2113: an option that is kept
        frame = udp_frame(b, port=7001, checksum=None, options=router_alert)
        b.ethernet.input(frame)
        for _ in range(50):
            await settle()
            if errors:
                break
        ((_, message),) = errors
        header, quoted = icmp.parse(message)
        assert (header.type, header.code) == (3, 3)  # port unreachable
        sent = frame[14:]
        assert bytes(quoted) == sent[:24] + sent[24:32]  # with its option, then 8 bytes

    run(body)


def test_tcp_streams_are_flows_that_know_their_addresses() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        accepted: asyncio.Queue[TcpFlow] = asyncio.Queue()

        async def serve(flow: TcpFlow) -> None:
            await accepted.put(flow)
            await flow.read()

        await b.tcp.listen(80, serve)
        client = await a.tcp.connect(B.ip, 80, timeout=2)
        server = await asyncio.wait_for(accepted.get(), 2)
        for flow in (client, server):
            assert isinstance(flow, Flow)
        assert client.remote_address == server.local_address == (str(B.ip), 80)
        assert server.remote_address == client.local_address
        await client.close()

    run(body)


def test_the_tcp_shell_reaches_no_private_member_of_another_object() -> None:
    """TcpStream and TcpListener use their layer's and connection's public
    interface: no ``other._name`` anywhere in the shell."""
    source = Path(__file__).parents[2] / "src/looming/net/tcp/layer.py"
    reaches = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert reaches == []
