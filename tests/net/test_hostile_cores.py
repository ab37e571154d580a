"""Sans-I/O cores under hostile input: fragment reassembly, IPv4 options and
the neighbour table."""

from __future__ import annotations

import asyncio
import itertools
from ipaddress import IPv4Address, IPv4Interface

import dpkt
from hypothesis import given
from hypothesis import strategies as st

from looming.net.arp import ArpCache, NeighbourLimits, NeighbourTable
from looming.net.ethernet import EthernetLayer
from looming.net.ipv4 import options_problem
from looming.net.netif.memory import MemorySwitch
from looming.net.reassembly import Reassembler
from looming.net.stack import DirectStack
from looming.net.wire.ipv4 import Ipv4Header
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime

SRC = IPv4Address("10.0.0.1")
DST = IPv4Address("10.0.0.2")


def fragment(offset: int, data: bytes, more: bool, ident: int = 1) -> Ipv4Header:
    return Ipv4Header(
        source=SRC,
        destination=DST,
        protocol=17,
        identification=ident,
        more_fragments=more,
        fragment_offset=offset,
    )


@st.composite
def fragmented(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A payload and its fragments (8-byte aligned cuts), shuffled."""
    units = draw(st.integers(2, 40))
    payload = draw(st.binary(min_size=units * 8 - 7, max_size=units * 8))
    cuts = sorted(draw(st.sets(st.integers(1, units - 1), min_size=1, max_size=8)))
    edges = [0, *(c * 8 for c in cuts), len(payload)]
    pieces = [(a, payload[a:b]) for a, b in itertools.pairwise(edges) if a < b]
    return payload, draw(st.permutations(pieces))


def feed(reassembler: Reassembler, payload_length: int, pieces: list[tuple[int, bytes]]) -> list:
    results = []
    for offset, data in pieces:
        more = offset + len(data) < payload_length
        results.append(reassembler.add(fragment(offset, data, more), data, 0))
    return results


@given(fragmented())
def test_fragments_in_any_order_reassemble_exactly(case: tuple[bytes, list]) -> None:
    payload, pieces = case
    reassembler = Reassembler()
    results = feed(reassembler, len(payload), pieces)
    assert results[-1] == payload
    assert all(r is None for r in results[:-1])
    assert reassembler.held_bytes == 0 and len(reassembler) == 0


@given(fragmented(), st.data())
def test_any_conflicting_overlap_drops_the_datagram(
    case: tuple[bytes, list], data: st.DataObject
) -> None:
    payload, pieces = case
    # A forged fragment overlapping the payload somewhere, with other bytes.
    start = data.draw(st.integers(0, (len(payload) - 1) // 8)) * 8
    length = data.draw(st.integers(1, len(payload) - start))
    forged = bytes(b ^ 0xFF for b in payload[start : start + length])
    if start + length < len(payload):
        length = max(8, length // 8 * 8)
        forged = bytes(b ^ 0xFF for b in payload[start : start + length])
    # It comes after a genuine piece it overlaps and before the datagram is
    # whole (a forgery that arrives first and only fills a hole cannot be told).
    overlapped = next(
        i for i, (o, d) in enumerate(pieces) if o < start + len(forged) and start < o + len(d)
    )
    if overlapped == len(pieces) - 1:
        pieces.insert(0, pieces.pop())
        overlapped = 0
    pieces.insert(overlapped + 1, (start, forged))
    reassembler = Reassembler()
    results = feed(reassembler, len(payload), pieces)
    assert payload not in results and forged not in results
    assert all(r is None for r in results)
    assert reassembler.counters["overlap_dropped"] >= 1


def test_a_fragment_past_the_end_is_inconsistent() -> None:
    reassembler = Reassembler()
    assert reassembler.add(fragment(16, b"x" * 8, False), b"x" * 8, 0) is None
    assert reassembler.add(fragment(24, b"y" * 8, True), b"y" * 8, 0) is None
    assert reassembler.counters["inconsistent"] == 1
    assert reassembler.held_bytes == 0


def test_source_route_options_are_refused() -> None:
    assert options_problem(b"\x83\x07\x04\x0a\x00\x00\x01\x00") == "source_route_dropped"
    assert options_problem(b"\x01\x89\x07\x04\x0a\x00\x00\x01") == "source_route_dropped"
    assert options_problem(b"\x07\x07\x04\x00\x00\x00\x00\x00") is None  # record route
    assert options_problem(b"\x01\x01\x01\x00") is None
    assert options_problem(b"\x07\x30\x04\x00") == "bad_options"  # runs past the end
    assert options_problem(b"\x07\x01\x00\x00") == "bad_options"


def test_neighbour_table_is_bounded_and_remembers_failures() -> None:
    limits = NeighbourLimits(
        requests=2,
        request_interval_ns=10,
        queue_per_neighbour=2,
        queue_total=5,
        max_incomplete=3,
        failed_lifetime_ns=100,
    )
    table = NeighbourTable(ArpCache(), limits)
    frame = ((0x0800, b"x", None),)
    neighbours = [IPv4Address(f"10.0.1.{i}") for i in range(1, 6)]
    for address in neighbours:
        for _ in range(3):
            table.enqueue(address, frame, 0)
    assert len(table.incomplete) == 3
    assert table.queued <= 5
    assert table.counters["queue_full"] == 4  # a full queue drops its oldest
    assert table.counters["queue_total_full"] == 2  # all queues full: the newest goes
    assert table.counters["incomplete_evicted"] > 0
    again, failed = table.on_timer(10)
    assert sorted(again) == neighbours[2:]
    again, failed = table.on_timer(20)
    assert again == [] and sorted(failed) == neighbours[2:]
    assert table.queued == 0 and not table.incomplete
    assert table.has_failed(neighbours[2], 50)
    assert not table.has_failed(neighbours[2], 120)
    assert table.counters["tx_request"] == 5 + 3


def test_new_resolutions_beyond_the_budget_are_dropped_not_broadcast() -> None:
    """A flood from unused on-link addresses (spoofed SYNs, each answered)
    must not become as many ARP broadcasts: a burst, then a rate."""
    limits = NeighbourLimits(new_burst=4, new_per_second=100, max_incomplete=64)
    table = NeighbourTable(ArpCache(), limits)
    frame = ((0x0800, b"x", None),)
    started = [table.enqueue(IPv4Address(f"10.0.2.{i}"), frame, 0) for i in range(1, 11)]
    assert started == [True] * 4 + [False] * 6
    assert len(table.incomplete) == 4 and table.queued == 4
    assert table.counters["resolution_limited"] == 6
    assert table.counters["tx_request"] == 4
    # A neighbour already being resolved still queues; an explicit query is
    # never limited.
    assert not table.enqueue(IPv4Address("10.0.2.1"), frame, 0)
    assert table.queued == 5
    assert table.enqueue(IPv4Address("10.0.3.1"), None, 0)
    # 10 ms at 100 a second: one more.
    later = [table.enqueue(IPv4Address(f"10.0.4.{i}"), frame, 10_000_000) for i in (1, 2)]
    assert later == [True, False]
    assert table.counters["resolution_limited"] == 7


def test_path_mtu_reports_are_clamped_stepped_and_only_lower() -> None:
    async def main() -> None:
        stack = await DirectStack.connect(
            MemorySwitch().port(),
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(1),
            address=IPv4Interface("10.0.0.1/24"),
        )
        ipv4 = stack.ipv4
        far = IPv4Address("10.0.0.9")
        assert ipv4.mtu(far) == 1480
        assert ipv4.lower_path_mtu(far, 1600, 1500) is None  # never raised
        assert ipv4.lower_path_mtu(far, 68, 1500) == 552  # a forger's tiny MTU: clamped
        assert ipv4.mtu(far) == 532
        other = IPv4Address("10.0.0.8")
        assert ipv4.lower_path_mtu(other, 0, 1500) == 1492  # no MTU given: next plateau
        assert ipv4.lower_path_mtu(other, 0, 1492) == 1006
        assert ipv4.mtu(IPv4Address("10.0.0.7")) == 1480  # per destination
        assert stack.counters()["ipv4.pmtu_lowered"] == 3
        await stack.disconnect()

    asyncio.run(main())


class StoppedClock:
    """Time that moves only when told (only now_ns is used here)."""

    def __init__(self) -> None:
        self.now = 0

    def now_ns(self) -> int:
        return self.now


def test_syns_beyond_the_rate_are_dropped_before_parsing() -> None:
    clock = StoppedClock()
    ethernet = EthernetLayer(MemorySwitch().port(), time=clock, syn_rate=1000, syn_burst=100)  # type: ignore[arg-type]
    delivered: list[bytes] = []
    ethernet.register(
        0x0800, lambda source, destination, payload, verified: delivered.append(payload)
    )

    def frame(flags: int) -> bytes:
        segment = dpkt.tcp.TCP(sport=1000, dport=80, flags=flags)
        packet = ipv4_frame(segment)
        return bytes(ethernet.mac) + bytes(6) + b"\x08\x00" + packet

    syn, ack = frame(dpkt.tcp.TH_SYN), frame(dpkt.tcp.TH_ACK)
    # A segment we sent on the ACKs' connection (addresses and ports swapped).
    reply = ack[:26] + ack[30:34] + ack[26:30] + ack[36:38] + ack[34:36] + ack[38:]
    ethernet.policy.sent(reply)
    for _ in range(300):
        ethernet.input(syn)
        ethernet.input(ack)  # segments of connections are never policed
    assert ethernet.counters["syn_policed"] == 200
    assert len(delivered) == 100 + 300
    clock.now += 50_000_000  # 50 ms: 50 more
    for _ in range(100):
        ethernet.input(syn)
    assert len(delivered) == 400 + 50
    assert ethernet.counters["syn_policed"] == 250


def ipv4_frame(segment: object) -> bytes:
    import socket

    return bytes(
        dpkt.ip.IP(
            src=socket.inet_aton("10.0.0.9"), dst=socket.inet_aton("10.0.0.1"), p=6, data=segment
        )
    )
