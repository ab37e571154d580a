"""Stacks linked by the in-memory switch: every layer end to end without
root, faults injected, and random bytes thrown at the whole stack."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Interface

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.devices.net import MacAddress
from looming.devices.stack import Datagram, Stack, Udp
from looming.errors import AddressInUse, NoRoute
from looming.net.arp import NeighbourLimits
from looming.net.dns import ResolverTimeout
from looming.net.ethernet import TokenBucket
from looming.net.netif.memory import LinkFaults, MemorySwitch
from looming.net.stack import DirectStack
from looming.net.wire import dns, ethernet, ipv4, tcp, udp
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime

A = IPv4Interface("10.0.0.1/24")
B = IPv4Interface("10.0.0.2/24")


async def settle(turns: int = 200) -> None:
    """Let every frame in flight on the switch arrive: deliveries are loop
    callbacks, so turns of the loop (not wall-clock time) are what they need."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def pair(
    switch: MemorySwitch | None = None,
) -> tuple[MemorySwitch, DirectStack, DirectStack]:
    switch = switch or MemorySwitch()
    common = {"time": UnixTime(), "clock": UnixClock()}
    a = await DirectStack.connect(switch.port(), random=UnixRandom(1), address=A, **common)
    b = await DirectStack.connect(switch.port(), random=UnixRandom(2), address=B, **common)
    return switch, a, b


def run(body: Callable[[DirectStack, DirectStack], Awaitable[None]], **faults: float) -> None:
    async def main() -> None:
        switch = MemorySwitch(random=UnixRandom(99), faults=LinkFaults(**faults))
        _, a, b = await pair(switch)
        try:
            await body(a, b)
        finally:
            await a.disconnect()
            await b.disconnect()

    asyncio.run(main())


def test_direct_stack_implements_the_device_protocols() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        assert isinstance(a, Stack)
        assert isinstance(a.udp, Udp)
        assert a.addresses() == [A]

    run(body)


def test_ping_and_udp_with_fragments_between_two_stacks() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        assert await a.ping(B.ip) < 1
        received: asyncio.Queue[Datagram] = asyncio.Queue()
        await b.udp.bind(53, received.put_nowait)
        for size in (0, 1472, 1473, 20000, 65507):
            await a.udp.send(B.ip, 53, bytes(size), source_port=4000)
            got = await asyncio.wait_for(received.get(), 2)
            assert len(got.data) == size
            assert (got.source, got.source_port, got.destination_port) == ("10.0.0.1", 4000, 53)
        with pytest.raises(AddressInUse):
            await b.udp.bind(53, received.put_nowait)

    run(body)


def test_sending_to_ourselves_loops_back() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        received: asyncio.Queue[Datagram] = asyncio.Queue()
        await a.udp.bind(9, received.put_nowait)
        await a.udp.send(A.ip, 9, b"me")
        assert (await asyncio.wait_for(received.get(), 1)).data == b"me"

    run(body)


def test_routing_needs_a_gateway_and_arp_queues_are_bounded() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        with pytest.raises(NoRoute):
            await a.udp.send("192.168.7.7", 9, b"far away")
        a.arp.limits = NeighbourLimits(
            requests=1, request_interval_ns=200_000_000, queue_per_neighbour=4
        )
        started = asyncio.get_running_loop().time()
        for _ in range(10):
            await a.udp.send("10.0.0.77", 9, b"?")  # queued, never waited for
        assert asyncio.get_running_loop().time() - started < 0.1
        assert a.counters()["arp.queue_full"] == 6
        assert a.arp.table.queued == 4
        await asyncio.sleep(0.3)
        assert a.counters()["arp.unresolved"] == 1
        assert a.counters()["arp.unresolved_dropped"] == 4
        assert a.arp.table.queued == 0
        # Remembered as failed: the next datagrams ask once more, with a
        # single request, and are held meanwhile (a bounded queue).
        for _ in range(10):
            await a.udp.send("10.0.0.77", 9, b"?")
        assert a.counters()["arp.failed_neighbour_retried"] == 1
        assert a.counters()["arp.tx_request"] == 2
        assert a.arp.table.queued == 4

    run(body)


def test_gateway_route_uses_the_gateway_mac() -> None:
    async def main() -> None:
        switch = MemorySwitch()
        seen: list[bytes] = []
        common = {"time": UnixTime(), "clock": UnixClock()}
        gateway = await DirectStack.connect(
            switch.port(), random=UnixRandom(1), address=A, **common
        )
        client = await DirectStack.connect(
            switch.port(), random=UnixRandom(2), address=B, gateway=A.ip, **common
        )
        gateway.ethernet.register(0x0800, lambda src, dst, payload, verified: seen.append(payload))
        await client.udp.send("192.168.7.7", 9, b"via the gateway")
        await settle()
        header, _ = ipv4.parse(seen[0])
        assert header.destination == IPv4Address("192.168.7.7")
        await gateway.disconnect()
        await client.disconnect()

    asyncio.run(main())


@pytest.mark.parametrize("faults", [{"loss": 0.2}, {"duplicate": 0.3, "reorder": 0.3}])
def test_fragmented_datagrams_survive_reordering_and_duplication(
    faults: dict[str, float],
) -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        received: list[bytes] = []
        await b.udp.bind(7, lambda d: received.append(d.data))
        a.arp.cache.learn(B.ip, b.ethernet.mac, a.time.now_ns())
        payloads = [bytes([i]) * 6000 for i in range(50)]
        for payload in payloads:
            await a.udp.send(B.ip, 7, payload)
        await settle()
        # Whatever arrives is whole and correct; nothing is duplicated twice.
        assert received
        assert all(r in payloads for r in received)
        if "loss" not in faults:
            assert set(received) == set(payloads)

    run(body, **faults)


def test_corrupted_frames_are_counted_and_dropped() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        received: list[bytes] = []
        await b.udp.bind(7, lambda d: received.append(d.data))
        a.arp.cache.learn(B.ip, b.ethernet.mac, a.time.now_ns())
        for i in range(200):
            await a.udp.send(B.ip, 7, bytes([i]) * 100)
        await settle()
        counters = b.counters()
        dropped = sum(v for k, v in counters.items() if "malformed" in k or "not_for_us" in k)
        assert dropped > 0
        assert all(r == r[:1] * 100 for r in received)

    run(body, corrupt=0.5)


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(st.binary(max_size=200), max_size=20), tails=st.binary(max_size=64))
def test_random_frames_never_break_the_stack(frames: list[bytes], tails: bytes) -> None:
    async def main() -> None:
        switch = MemorySwitch()
        port = switch.port()
        stack = await DirectStack.connect(
            port, time=UnixTime(), clock=UnixClock(), random=UnixRandom(5), address=A
        )
        mac = stack.ethernet.mac
        for raw in frames:
            # Raw bytes, and the same bytes behind plausible Ethernet/IPv4
            # headers so they reach the deeper parsers.
            stack.ethernet.input(raw)
            header = ethernet.EthernetHeader(mac, MacAddress(bytes(6)), 0x0800)
            for protocol in (1, 17, 6, 99):
                packet = ipv4.emit(ipv4.Ipv4Header(B.ip, A.ip, protocol), raw + tails)
                stack.ethernet.input(ethernet.emit(header, packet))
            stack.ethernet.input(ethernet.emit(ethernet.EthernetHeader(mac, mac, 0x0806), raw))
        await asyncio.sleep(0)
        assert stack.ethernet.counters["handler_error"] == 0, stack.ethernet.last_handler_error
        await stack.disconnect()

    asyncio.run(main())


def test_slow_udp_handlers_are_bounded() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        never = asyncio.Event()

        async def stuck(datagram: Datagram) -> None:
            await never.wait()

        await b.udp.bind(7, stuck)
        b.udp.max_handler_tasks = 50
        a.arp.cache.learn(B.ip, b.ethernet.mac, a.time.now_ns())
        for _ in range(200):
            await a.udp.send(B.ip, 7, b"work")
        await settle()
        assert b.counters()["udp.rx_datagrams"] == 200
        assert b.counters()["udp.handler_backlog_full"] == 150

    run(body)


def test_vlan_tagged_frames_are_tolerated() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        received: list[Datagram] = []
        await b.udp.bind(7, received.append)
        datagram = udp.emit(udp.UdpHeader(1000, 7), b"tagged", A.ip, B.ip)
        packet = ipv4.emit(ipv4.Ipv4Header(A.ip, B.ip, 17), datagram)
        header = ethernet.EthernetHeader(b.ethernet.mac, a.ethernet.mac, 0x0800, vlan_tag=42)
        b.ethernet.input(ethernet.emit(header, packet) + bytes(10))  # with link padding
        assert [d.data for d in received] == [b"tagged"]

    run(body)


def test_forged_sources_are_dropped_and_partial_datagrams_time_out() -> None:
    class FastTime(UnixTime):
        """Sleeps a thousandth of what is asked, so a 30 s timeout passes fast."""

        def __init__(self) -> None:
            self.offset_ns = 0

        def now_ns(self) -> int:
            return super().now_ns() + self.offset_ns

        async def sleep_ns(self, duration_ns: int) -> None:
            self.offset_ns += duration_ns
            await asyncio.sleep(0)

    async def main() -> None:
        switch = MemorySwitch()
        stack = await DirectStack.connect(
            switch.port(), time=FastTime(), clock=UnixClock(), random=UnixRandom(1), address=A
        )
        mac = stack.ethernet.mac
        header = ethernet.EthernetHeader(mac, MacAddress(bytes(6)), 0x0800)
        for forged in (A.ip, IPv4Address("224.0.0.1"), IPv4Address("255.255.255.255")):
            packet = ipv4.emit(ipv4.Ipv4Header(forged, A.ip, 17), bytes(8))
            stack.ethernet.input(ethernet.emit(header, packet))
        assert stack.counters()["ipv4.martian_source"] == 3
        first = ipv4.Ipv4Header(B.ip, A.ip, 17, identification=9, more_fragments=True)
        stack.ethernet.input(ethernet.emit(header, ipv4.emit(first, bytes(1480))))
        assert stack.ipv4.reassembler.held_bytes == 1480
        for _ in range(10):
            await asyncio.sleep(0)
        assert stack.ipv4.reassembler.held_bytes == 0
        assert stack.counters()["reassembly.timed_out"] == 1
        await stack.disconnect()

    asyncio.run(main())


def test_icmp_errors_are_rate_limited() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        a.arp.cache.learn(B.ip, b.ethernet.mac, a.time.now_ns())
        b.arp.cache.learn(A.ip, a.ethernet.mac, b.time.now_ns())
        b.icmp.errors_per_second = 0  # only the burst: independent of timing
        # Datagrams to closed ports pass the link's policy (this is ICMP's limit).
        b.ethernet.policy.stray = TokenBucket(0, 1000, 0)
        for _ in range(300):
            await a.udp.send(B.ip, 9, b"closed port")
        await settle()
        counters = b.counters()
        assert counters["udp.no_listener"] == 300
        assert counters["icmp.tx_unreachable"] == 50
        assert counters["icmp.tx_error_rate_limited"] == 250
        assert a.counters()["icmp.rx_error"] == counters["icmp.tx_unreachable"]

    run(body)


def test_arp_entries_are_refreshed_before_they_lapse() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        await a.ping(B.ip)
        assert a.counters()["arp.tx_request"] == 1
        lifetime = a.arp.cache.lifetime_ns
        # Age the entry into the last tenth of its life, then use it.
        a.arp.cache.learn(B.ip, b.ethernet.mac, a.time.now_ns() - lifetime * 95 // 100)
        await a.ping(B.ip)
        await settle()
        assert a.counters()["arp.tx_request"] == 2
        assert not a.arp.cache.expires_soon(B.ip, a.time.now_ns())

    run(body)


def test_dns_resolver_matches_answers_and_gives_up_in_time() -> None:
    async def body(a: DirectStack, b: DirectStack) -> None:
        async def server(query: Datagram) -> None:
            message = dns.parse(query.data)
            question = message.questions[0]
            if question.name == "silent.lm":
                return
            # A stray answer with the wrong id first: it must be ignored.
            wrong = dns.DnsMessage(id=message.id ^ 1, flags=0x8180, questions=(question,))
            await b.udp.send(query.source, query.source_port, dns.emit(wrong), source_port=53)
            alias = dns.DnsRecord(question.name, dns.DnsType.CNAME, 1, 60, dns.encode_name("t.lm"))
            target = dns.DnsRecord("t.lm", dns.DnsType.A, 1, 60, bytes([10, 0, 0, 99]))
            answer = dns.DnsMessage(
                id=message.id, flags=0x8180, questions=(question,), answers=(alias, target)
            )
            await b.udp.send(query.source, query.source_port, dns.emit(answer), source_port=53)

        await b.udp.bind(53, server)
        a.resolver.servers = [B.ip]
        a.resolver.timeout_s = 0.1
        assert await a.resolve("www.lm") == [IPv4Address("10.0.0.99")]
        assert a.counters()["dns.mismatched"] == 1
        with pytest.raises(ResolverTimeout):
            await a.resolve("silent.lm")
        assert a.counters()["dns.timeout"] == 3
        assert await a.resolve("10.1.2.3") == [IPv4Address("10.1.2.3")]

    run(body)


def test_a_partial_tcp_checksum_is_finished_when_nothing_offloads_it() -> None:
    # The TCP layer leaves multi-segment packets with only the pseudo-header
    # sum for an offloading interface; without one the IPv4 layer cuts it
    # into segments of segment_size with finished checksums (the switch),
    # or finishes its checksum (our own address: no wire, no MSS).
    async def body(a: DirectStack, b: DirectStack) -> None:
        arrived: asyncio.Queue[tuple[IPv4Address, IPv4Address, bytes]] = asyncio.Queue()
        for stack in (a, b):
            stack.ipv4.register(
                6,
                lambda packet, segment: arrived.put_nowait(
                    (packet.source, packet.destination, segment)
                ),
            )
        header = tcp.TcpHeader(40000, 80, 1, 1, tcp.ACK, 1000)
        for destination in (B.ip, A.ip):
            segment = tcp.emit(
                header, bytes(3000), src=A.ip, dst=destination, partial_checksum=True
            )
            assert not tcp.checksum_ok(segment, A.ip, destination)
            await a.ipv4.write(destination, 6, segment, segment_size=1000)
            pieces = 3 if destination == B.ip else 1
            for index in range(pieces):
                src, dst, received = await asyncio.wait_for(arrived.get(), 1)
                assert (src, dst) == (A.ip, destination)
                assert tcp.checksum_ok(received, src, dst)
                parsed, data = tcp.parse(received)
                assert parsed.seq == 1 + index * 3000 // pieces
                assert len(data) == 3000 // pieces

    run(body)
