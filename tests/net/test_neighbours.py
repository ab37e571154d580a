"""The IPv6 neighbour cache (RFC 4861 7.3), without I/O: its states step
by step, and a hypothesis state machine checking that every packet is sent,
queued or counted, and that the bounds hold whatever the network does; then
two IPv6 stacks on the in-memory switch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from looming.devices.net import MacAddress, ReceivedPacket
from looming.devices.stack import Datagram, TcpFlow
from looming.errors import ConnectionTimeout
from looming.net.ipv6 import Ipv6Layer
from looming.net.neighbours import NeighbourCache, NeighbourSettings, NeighbourState
from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.net.wire import icmpv6, ipv6, ndp
from looming.net.wire import udp as wire_udp
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.test_memory import A, B, settle

S = 1_000_000_000
PEER = IPv6Address("fe80::1")
MAC = MacAddress("02:00:00:00:00:01")
OTHER_MAC = MacAddress("02:00:00:00:00:02")


def test_a_neighbour_goes_through_rfc_4861s_states() -> None:
    cache = NeighbourCache()
    assert cache.send(PEER, b"one", 0) == (None, (PEER, None))  # multicast solicitation
    assert cache.send(PEER, b"two", 1) == (None, None)  # queued behind it
    assert cache.state(PEER) is NeighbourState.INCOMPLETE
    released = cache.advertised(PEER, MAC, solicited=True, override=True, now=2)
    assert released == [(MAC, b"one"), (MAC, b"two")]
    assert cache.state(PEER) is NeighbourState.REACHABLE
    assert cache.send(PEER, b"three", 3) == (MAC, None)
    assert cache.on_timer(30 * S + 2) == [] and cache.state(PEER) is NeighbourState.STALE
    assert cache.send(PEER, b"four", 31 * S) == (MAC, None)  # used while stale
    assert cache.state(PEER) is NeighbourState.DELAY
    assert cache.next_deadline_ns() == 36 * S
    assert cache.on_timer(36 * S) == [(PEER, MAC)]  # a unicast probe
    assert cache.state(PEER) is NeighbourState.PROBE
    assert cache.on_timer(37 * S) == [(PEER, MAC)]
    assert cache.on_timer(38 * S) == [(PEER, MAC)]
    assert cache.on_timer(39 * S) == [] and cache.state(PEER) is None  # gone
    assert cache.counters["unreachable"] == 1


def test_a_silent_neighbour_is_asked_three_times_then_forgotten() -> None:
    cache = NeighbourCache()
    cache.send(PEER, b"lost", 0)
    assert cache.on_timer(1 * S) == [(PEER, None)]
    assert cache.on_timer(2 * S) == [(PEER, None)]
    assert cache.on_timer(3 * S) == [] and cache.state(PEER) is None
    assert cache.counters["unresolved_dropped"] == 1


def test_an_advertisement_without_override_does_not_move_a_known_neighbour() -> None:
    cache = NeighbourCache()
    cache.send(PEER, b"x", 0)
    cache.advertised(PEER, MAC, solicited=True, override=False, now=0)
    cache.advertised(PEER, OTHER_MAC, solicited=False, override=False, now=1)
    assert cache.mac(PEER) == MAC and cache.state(PEER) is NeighbourState.STALE
    cache.advertised(PEER, OTHER_MAC, solicited=False, override=True, now=2)
    assert cache.mac(PEER) == OTHER_MAC
    # Advertisements nobody asked about create nothing (RFC 4861 7.2.5).
    cache.advertised(IPv6Address("fe80::9"), MAC, solicited=True, override=True, now=3)
    assert cache.state(IPv6Address("fe80::9")) is None


ADDRESSES = [IPv6Address(f"fe80::{i}") for i in range(1, 7)]
BOUNDS = NeighbourSettings(
    max_neighbours=4, max_incomplete=3, queue_bytes=250, total_queue_bytes=500, max_unsolicited=2
)


class CacheMachine(RuleBasedStateMachine):
    """Every packet handed to the cache is transmitted, still queued, or
    counted as dropped; the bounds hold."""

    def __init__(self) -> None:
        super().__init__()
        self.cache = NeighbourCache(BOUNDS)
        self.now = 0
        self.handed = 0
        self.transmitted = 0

    @rule(address=st.sampled_from(ADDRESSES), size=st.integers(1, 300))
    def send(self, address: IPv6Address, size: int) -> None:
        self.handed += 1
        mac, _ = self.cache.send(address, bytes(size), self.now)
        self.transmitted += mac is not None

    @rule(
        address=st.sampled_from(ADDRESSES),
        mac=st.sampled_from([MAC, OTHER_MAC, None]),
        solicited=st.booleans(),
        override=st.booleans(),
    )
    def advertise(
        self, address: IPv6Address, mac: MacAddress | None, solicited: bool, override: bool
    ) -> None:
        released = self.cache.advertised(
            address, mac, solicited=solicited, override=override, now=self.now
        )
        self.transmitted += len(released)

    @rule(address=st.sampled_from(ADDRESSES), mac=st.sampled_from([MAC, OTHER_MAC]))
    def solicit_us(self, address: IPv6Address, mac: MacAddress) -> None:
        in_use = {
            a
            for a, e in self.cache._entries.items()
            if e.state in (NeighbourState.REACHABLE, NeighbourState.DELAY, NeighbourState.PROBE)
        }
        self.transmitted += len(self.cache.solicited_by(address, mac, self.now))
        # RFC 4861 7.2.3's entries for neighbours that spoke first never
        # push out one in use.
        assert in_use <= set(self.cache._entries)

    @rule(seconds=st.integers(0, 40))
    def wait(self, seconds: int) -> None:
        self.now += seconds * S
        self.cache.on_timer(self.now)

    @invariant()
    def every_packet_is_accounted_for(self) -> None:
        counters = self.cache.counters
        queued = sum(len(e.queue) for e in self.cache._entries.values())
        dropped = (
            counters["queue_overflow_dropped"]
            + counters["unresolved_dropped"]
            + counters["incomplete_evicted"]
            + counters["queue_total_dropped"]
            + counters["failed_neighbour_dropped"]
            + counters["resolution_limited"]
        )
        assert self.handed == self.transmitted + queued + dropped

    @invariant()
    def bounded(self) -> None:
        entries = self.cache._entries.values()
        incomplete = [e for e in entries if e.state is NeighbourState.INCOMPLETE]
        assert len(incomplete) <= BOUNDS.max_incomplete
        assert len(entries) <= BOUNDS.max_neighbours + BOUNDS.max_incomplete
        held = [sum(map(len, e.queue)) for e in entries]
        assert all(size == e.queued_bytes for size, e in zip(held, entries, strict=True))
        assert all(size <= BOUNDS.queue_bytes for size in held)
        assert sum(held) == self.cache.queued_bytes <= BOUNDS.total_queue_bytes
        assert all(not e.queue for e in entries if e.state is not NeighbourState.INCOMPLETE)
        unsolicited = [e for e in entries if e.unsolicited]
        assert len(unsolicited) <= BOUNDS.max_unsolicited
        assert all(e.state is NeighbourState.STALE for e in unsolicited)


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


async def ipv6_pair() -> tuple[DirectStack, DirectStack]:
    switch = MemorySwitch()
    common = {"time": UnixTime(), "clock": UnixClock(), "ipv6": True}
    a = await DirectStack.connect(switch.port(), random=UnixRandom(1), address=A, **common)
    b = await DirectStack.connect(switch.port(), random=UnixRandom(2), address=B, **common)
    return a, b


def run(body: Callable[[DirectStack, DirectStack, Ipv6Layer, Ipv6Layer], Awaitable[None]]) -> None:
    async def main() -> None:
        a, b = await ipv6_pair()
        assert a.ipv6 is not None and b.ipv6 is not None
        try:
            await body(a, b, a.ipv6, b.ipv6)
        finally:
            await a.disconnect()
            await b.disconnect()

    asyncio.run(main())


def test_two_stacks_ping_and_talk_udp_over_link_local_ipv6() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        assert await a.ping(b6.link_local, timeout=1) < 1
        received: asyncio.Queue[Datagram] = asyncio.Queue()
        await b.udp.bind(53, received.put_nowait)
        await a.udp.send(b6.link_local, 53, b"hello over ipv6")
        datagram = await asyncio.wait_for(received.get(), 1)
        assert datagram.data == b"hello over ipv6"
        assert datagram.source == str(a6.link_local)

    run(body)


def test_tcp_between_two_stacks_over_link_local_ipv6() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        async def echo(flow: TcpFlow) -> None:
            while data := await flow.read():
                await flow.write(data)

        await b.tcp.listen(7, echo, host="::")
        flow = await a.tcp.connect(b6.link_local, 7, timeout=2)
        assert flow.remote_address == (str(b6.link_local), 7)
        data = bytes(i % 249 for i in range(200_000))
        await flow.write(data)
        await flow.shutdown()
        echoed = b""
        while chunk := await flow.read():
            echoed += chunk
        assert echoed == data
        assert b.counters()["tcp.segments_in"] > 100
        assert "ipv4.rx_datagrams" not in b.counters()  # all of it over IPv6

    run(body)


def packet_too_big(
    a: DirectStack,
    b: DirectStack,
    mtu: int,
    source: IPv6Address,
    tcp: bytes = bytes(40),
    protocol: int = 6,
) -> None:
    """A Packet Too Big from b's address to a, quoting a packet from
    ``source`` whose TCP (or ``protocol``'s) header starts with ``tcp``."""
    assert a.ipv6 is not None and b.ipv6 is not None
    a_ll, b_ll = a.ipv6.link_local, b.ipv6.link_local
    quoted = ipv6.emit_header(ipv6.Ipv6Header(source, b_ll, protocol), 1400) + tcp
    message = icmpv6.emit(icmpv6.Icmpv6Header(2, 0, mtu), quoted, b_ll, a_ll)
    packet = ipv6.emit(ipv6.Ipv6Header(b_ll, a_ll, 58, 64), message)
    a.ethernet.input(bytes(a.ethernet.mac) + bytes(b.ethernet.mac) + b"\x86\xdd" + packet)


def test_packet_too_big_quoting_udp_needs_a_port_bound_here() -> None:
    """RFC 5927 4.1 for UDP: a Packet Too Big quoting a datagram must name a
    port we send from, or a blind forger could lower any path to 1280."""

    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        binding = await a.udp.bind(5353, lambda datagram: None)
        unbound = (4000).to_bytes(2, "big") + (53).to_bytes(2, "big") + bytes(4)
        packet_too_big(a, b, 1300, a6.link_local, unbound, protocol=17)
        assert a6.mtu(b6.link_local) == 1460
        assert a.counters()["udp.icmp_no_binding"] == 1
        bound = (5353).to_bytes(2, "big") + (53).to_bytes(2, "big") + bytes(4)
        packet_too_big(a, b, 1300, a6.link_local, bound, protocol=17)
        assert a6.mtu(b6.link_local) == 1260
        assert len(binding.errors) == 1 and binding.errors[0].next_hop_mtu == 1300
        assert "ipv6.pmtu_unchecked" not in a.counters()

    run(body)


def test_packet_too_big_lowers_the_path_mtu_and_the_tcp_mss() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        async def echo(flow: TcpFlow) -> None:
            while data := await flow.read():
                await flow.write(data)

        await b.tcp.listen(7, echo)
        flow = await a.tcp.connect(b6.link_local, 7, timeout=2)
        conn = flow.connection
        assert conn.path_mss == 1440
        port = flow.local_address[1]
        ours = (
            port.to_bytes(2, "big")
            + (7).to_bytes(2, "big")
            + (conn.snd_una & 0xFFFFFFFF).to_bytes(4, "big")
        )
        packet_too_big(a, b, 1300, IPv6Address("fe80::99"), ours)  # quotes a packet not ours
        assert conn.path_mss == 1440
        # RFC 5927, as for IPv4's "fragmentation needed": a blind forgery
        # (other ports, or a sequence number not in flight) changes nothing.
        blind = (1).to_bytes(2, "big") + (2).to_bytes(2, "big") + (0xDEADBEEF).to_bytes(4, "big")
        packet_too_big(a, b, 1300, a6.link_local, blind)
        stale = ours[:4] + ((conn.snd_una + 10**6) & 0xFFFFFFFF).to_bytes(4, "big")
        packet_too_big(a, b, 1300, a6.link_local, stale)
        assert a6.mtu(b6.link_local) == 1460 and conn.path_mss == 1440
        packet_too_big(a, b, 1300, a6.link_local, ours)
        assert a6.mtu(b6.link_local) == 1260 and conn.path_mss == 1240
        packet_too_big(a, b, 500, a6.link_local, ours)  # never below IPv6's 1280
        assert a6.mtu(b6.link_local) == 1240 and conn.path_mss == 1220
        counters = a.counters()
        assert counters["ipv6.packet_too_big_not_ours"] == 1
        assert counters["tcp.icmp_no_connection"] == 1
        assert counters["tcp.icmp_out_of_window"] == 1
        assert counters["ipv6.pmtu_lowered"] == 2 and counters["tcp.icmp_mss_lowered"] == 2
        # From now on the path takes nothing larger, and the echo still works.
        network = a.network
        send = network.write

        async def narrow(frame: bytes) -> None:
            assert len(frame) <= 14 + 1280, len(frame)
            await send(frame)

        network.write = narrow  # type: ignore[method-assign]
        data = bytes(i % 247 for i in range(100_000))
        await flow.write(data)
        await flow.shutdown()
        echoed = b""
        while chunk := await flow.read():
            echoed += chunk
        assert echoed == data

    run(body)


def test_unresolvable_neighbours_do_not_delay_one_that_answers() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        for i in range(200):
            await a6.write(IPv6Address(f"fe80::dead:{i:x}"), 17, b"nobody home")
        counters = a6.neighbours.counters
        # A burst of new resolutions, then 256 a second, as ARP: the rest
        # dropped (a few more may start as the budget refills meanwhile).
        limited = counters["resolution_limited"]
        assert 200 - 48 <= limited <= 200 - 32
        assert await a.ping(b6.link_local, timeout=1) < 1  # asked for: not limited
        assert len(a6.neighbours) <= 200 - limited + 1

    run(body)


def test_forged_neighbour_discovery_is_dropped() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        target = b6.link_local
        # Once a's link-local address has been probed (a claim during the
        # probe is a duplicate, tests/net/test_ipv6_link_local_dad.py)...
        await asyncio.sleep(1.05)
        # An advertisement claiming a's own address, and one sent from off
        # link (hop limit 64, not 255): both counted, neither believed.
        for claimed, hop_limit in ((a6.link_local, 255), (target, 64)):
            advert = ndp.NeighborAdvertisement(
                claimed, override=True, options=(ndp.TargetLinkLayerAddress(OTHER_MAC),)
            )
            header = ipv6.Ipv6Header(target, a6.link_local, 58, hop_limit)
            packet = ipv6.emit(header, ndp.emit(advert, target, a6.link_local))
            a.ethernet.input(bytes(a.ethernet.mac) + bytes(OTHER_MAC) + b"\x86\xdd" + packet)
        counters = a.counters()
        assert counters["ipv6.advert_for_our_address"] == 1
        assert counters["ipv6.icmpv6_malformed"] == 1
        assert a6.neighbours.state(target) is None
        await settle()

    run(body)


def test_an_unanswered_ping_times_out_after_the_solicitations() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        with pytest.raises(ConnectionTimeout):
            await a.ping(IPv6Address("fe80::beef"), timeout=0.2)
        assert a.counters()["ipv6.tx_solicit"] == 1

    run(body)


def test_a_closed_port_answers_with_a_quoting_port_unreachable() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        await a.ping(b6.link_local, timeout=1)  # both resolved first
        errors: list[tuple[ReceivedPacket[IPv6Address], bytes]] = []
        a6.register(58, lambda packet, payload: errors.append((packet, payload)))
        await a.udp.send(b6.link_local, 5999, b"x" * 2000, source_port=4444)  # two fragments
        for _ in range(20):
            await settle()
        ((packet, message),) = errors
        assert (packet.source, packet.destination) == (b6.link_local, a6.link_local)
        header, quoted = icmpv6.parse(message, packet.source, packet.destination)
        assert (header.type, header.code) == (1, 4)
        # The reassembled datagram's header (next header UDP, its whole
        # length), then as much of the datagram as fits.
        whole = ipv6.emit_header(ipv6.Ipv6Header(a6.link_local, b6.link_local, 17), 2008)
        assert bytes(quoted[:40]) == whole
        assert len(quoted) == 1232  # RFC 4443: what a 1280-byte packet holds
        assert bytes(quoted[40:44]) == (4444).to_bytes(2, "big") + (5999).to_bytes(2, "big")
        assert bytes(quoted[48:]) == b"x" * (1232 - 48)

    run(body)


def fragment_frame(
    to: DirectStack, source: IPv6Address, offset: int, more: bool, data: bytes, *, nh: int = 17
) -> bytes:
    header = ipv6.Ipv6Header(source, to.ipv6.link_local, ipv6.NextHeader.FRAGMENT)  # type: ignore[union-attr]
    extension = ipv6.emit_extension(ipv6.FragmentHeader(nh, offset, more, 77))
    packet = ipv6.emit(header, extension + data)
    return bytes(to.ethernet.mac) + bytes(OTHER_MAC) + b"\x86\xdd" + packet


def test_udp_larger_than_the_mtu_crosses_in_fragments() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        received: asyncio.Queue[Datagram] = asyncio.Queue()
        await b.udp.bind(9, received.put_nowait)
        payload = bytes(i % 253 for i in range(5000))
        await a.udp.send(b6.link_local, 9, payload)
        assert (await asyncio.wait_for(received.get(), 1)).data == payload
        assert a.counters()["ipv6.tx_fragments"] == 4
        assert b.counters()["reassembly6.reassembled"] == 1

    run(body)


def test_hostile_fragments_are_dropped() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        source = a6.link_local
        # Overlapping pieces (RFC 5722): the whole datagram goes.
        b.ethernet.input(fragment_frame(b, source, 0, True, bytes(16)))
        b.ethernet.input(fragment_frame(b, source, 8, False, bytes(16)))
        # Pieces disagreeing on the next header never make a whole.
        b.ethernet.input(fragment_frame(b, source, 0, True, bytes(16), nh=17))
        b.ethernet.input(fragment_frame(b, source, 16, False, bytes(16), nh=58))
        counters = b.counters()
        assert counters["reassembly6.overlap_dropped"] == 1
        assert "reassembly6.reassembled" not in counters
        assert "ipv6.rx_packets" not in counters
        # A flood of first pieces that never complete stays bounded.
        for i in range(500):
            frame = fragment_frame(b, IPv6Address(f"fe80::f:{i:x}"), 0, True, bytes(1024))
            b.ethernet.input(frame)
        reassembler = b6.reassembler
        assert len(reassembler) <= reassembler.max_datagrams
        assert reassembler.held_bytes <= reassembler.max_bytes
        await settle()

    run(body)


def test_an_atomic_fragment_is_taken_as_the_whole_packet() -> None:
    """RFC 6946 section 4: a fragment header with offset 0 and M clear
    holds a whole packet, processed as one, apart from any reassembly of
    other fragments with the same identification."""

    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        received: asyncio.Queue[Datagram] = asyncio.Queue()
        await b.udp.bind(9, received.put_nowait)
        source = a6.link_local
        # A first piece of identification 77 is pending: the atomic fragment
        # with the same identification must not join it.
        b.ethernet.input(fragment_frame(b, source, 0, True, bytes(16)))
        data = b"whole in one"
        udp = wire_udp.emit(wire_udp.UdpHeader(4000, 9), data, source, b6.link_local)  # type: ignore[arg-type]
        b.ethernet.input(fragment_frame(b, source, 0, False, udp))
        datagram = await asyncio.wait_for(received.get(), 1)
        assert datagram.data == data and datagram.source == str(source)
        counters = b.counters()
        assert counters["ipv6.rx_atomic_fragments"] == 1
        assert len(b6.reassembler) == 1  # the pending piece is untouched

    run(body)


@settings(max_examples=150, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=160), min_size=1, max_size=12),
    types=st.lists(st.sampled_from([128, 129, 133, 134, 135, 136, 137, 1, 2]), min_size=1),
)
def test_random_ipv6_input_is_counted_never_raised(bodies: list[bytes], types: list[int]) -> None:
    """Random bytes behind plausible IPv6 headers (extension headers,
    fragments, UDP, and ICMPv6 with a right checksum, so that Neighbor
    Discovery parses them) are counted and dropped, never raised."""

    async def main() -> None:
        a, b = await ipv6_pair()
        assert b.ipv6 is not None
        ours, theirs = b.ipv6.link_local, IPv6Address("fe80::1234")
        for i, body in enumerate(bodies):
            frames = [body]
            for next_header in (0, 17, 43, 44, 60, 99):
                header = ipv6.Ipv6Header(theirs, ours, next_header, 255)
                frames.append(ipv6.emit(header, body))
            kind = types[i % len(types)]
            message = icmpv6.emit(icmpv6.Icmpv6Header(kind, 0, len(body)), body, theirs, ours)
            frames.append(ipv6.emit(ipv6.Ipv6Header(theirs, ours, 58, 255), message))
            for packet in frames:
                b.ethernet.input(bytes(b.ethernet.mac) + bytes(OTHER_MAC) + b"\x86\xdd" + packet)
        await settle(20)
        assert b.ethernet.counters["handler_error"] == 0, b.ethernet.last_handler_error
        await a.disconnect()
        await b.disconnect()

    asyncio.run(main())
