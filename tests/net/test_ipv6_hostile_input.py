"""Hostile input to IPv6 (and the reassembly it shares with IPv4): what a
peer sends may cost bounded time and memory and is counted, never lets it
take over what others rely on (issue #16)."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address

from looming.devices.net import EthernetHandler, MacAddress
from looming.devices.stack import Datagram
from looming.net.ethernet import EthernetLayer, TokenBucket
from looming.net.ipv6 import Ipv6Layer
from looming.net.neighbours import NeighbourCache, NeighbourSettings, NeighbourState
from looming.net.netif.memory import MemorySwitch
from looming.net.reassembly import Reassembler
from looming.net.stack import DirectStack
from looming.net.wire import ipv6, ndp
from looming.net.wire import udp as wire_udp
from tests.net.test_memory import settle
from tests.net.test_neighbours import fragment_frame, run

S = 1_000_000_000


def test_an_empty_middle_fragment_drops_its_datagram() -> None:
    """Linux discards a datagram one of whose pieces is empty: such a
    piece has no meaning but to probe how a reassembler differs."""
    for source in (IPv4Address("10.0.0.1"), IPv6Address("fe80::1")):
        reassembler = Reassembler()
        key = (source, source, 17, 5)
        assert reassembler.add_piece(key, 0, True, bytes(24), 0, 0xFFFF) is None
        assert reassembler.add_piece(key, 24, True, b"", 0, 0xFFFF) is None
        assert key not in reassembler
        assert reassembler.add_piece(key, 24, False, bytes(16), 0, 0xFFFF) is None
        assert reassembler.counters["bad_fragment"] == 1
        assert "reassembled" not in reassembler.counters


class _CountingReassembler(Reassembler):
    """Counts the membership tests made of it: the work per fragment."""

    lookups = 0

    def __contains__(self, key: object) -> bool:
        self.lookups += 1
        return super().__contains__(key)


def test_a_first_fragment_storm_costs_constant_work_per_fragment() -> None:
    """Each first fragment of a new packet is kept (for the Time Exceeded
    its timeout sends) bounded by the reassembler; once full, keeping one
    must not look at every key kept (a storm of 60,000 such fragments
    stalled an IPv6 connection for 0.7 s)."""

    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        reassembler = _CountingReassembler()
        b6.reassembler = reassembler
        b6._reassembly_bucket.burst = 10**6  # every fragment reaches reassembly
        b6._reassembly_bucket._tokens = 10**6
        count = 2_000
        for i in range(count):
            source = IPv6Address(f"fe80::f:{i:x}")
            b.ethernet.input(fragment_frame(b, source, 0, True, bytes(64)))
        assert len(reassembler) == reassembler.max_datagrams
        assert reassembler.counters["evicted"] == count - reassembler.max_datagrams
        assert reassembler.lookups <= 4 * count, reassembler.lookups
        kept = b6._first_fragments
        assert len(kept) <= 2 * reassembler.max_datagrams + 1
        # The newest are still there for their Time Exceeded.
        source = IPv6Address(f"fe80::f:{count - 1:x}")
        newest = (source.packed, b6.link_local.packed, 17, 77)
        assert newest in kept

    run(body)


def solicitation_frame(to: DirectStack, source: IPv6Address, mac: MacAddress) -> bytes:
    """A Neighbor Solicitation for ``to``'s link-local address from
    ``source``, with its link-layer address option."""
    assert to.ipv6 is not None
    target = to.ipv6.link_local
    group = ipv6.solicited_node(target)
    message = ndp.NeighborSolicitation(target, (ndp.SourceLinkLayerAddress(mac),))
    header = ipv6.Ipv6Header(source, group, 58, 255)
    packet = ipv6.emit(header, ndp.emit(message, source, group))
    return bytes(ipv6.multicast_mac(group)) + bytes(mac) + b"\x86\xdd" + packet


def test_solicitations_from_new_sources_never_push_out_neighbours_in_use() -> None:
    """RFC 4861 7.2.3: a solicitation carrying a link-layer address makes
    its sender a STALE neighbour; a flood of them from new sources replaces
    only such entries, within a bound, never a neighbour in use."""
    settings = NeighbourSettings(max_neighbours=64, max_unsolicited=16, new_burst=64)
    cache = NeighbourCache(settings)
    used = [IPv6Address(f"fe80::a:{i:x}") for i in range(40)]
    for address in used:
        cache.send(address, b"x", 0)
        cache.advertised(address, MacAddress(bytes(6)), solicited=True, override=True, now=0)
    for i in range(10_000):
        mac = MacAddress(b"\x02\x99" + i.to_bytes(4, "big"))
        cache.solicited_by(IPv6Address(f"fe80::9:{i:x}"), mac, 1)
    assert all(cache.state(a) is NeighbourState.REACHABLE for a in used)
    assert len(cache) == 40 + 16
    assert cache.counters["unsolicited_evicted"] == 10_000 - 16
    # One that spoke first and is then used is no longer replaceable.
    talker = IPv6Address(f"fe80::9:{9_999:x}")
    assert cache.send(talker, b"reply", 2)[0] is not None
    for i in range(100):
        cache.solicited_by(IPv6Address(f"fe80::8:{i:x}"), MacAddress(bytes(6)), 3)
    assert cache.state(talker) is NeighbourState.DELAY


def test_solicitations_beyond_the_burst_are_dropped_before_icmpv6_is_parsed() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        burst = b6._solicit_bucket.burst
        for i in range(burst + 500):
            mac = MacAddress(b"\x02\x99" + i.to_bytes(4, "big"))
            b.ethernet.input(solicitation_frame(b, IPv6Address(f"fe80::9:{i:x}"), mac))
        counters = b.counters()
        # A few more may be let through as the bucket refills meanwhile.
        assert 400 <= counters["ipv6.solicit_policed"] <= 500
        assert counters["ipv6.rx_solicit"] == burst + 500 - counters["ipv6.solicit_policed"]
        await settle()

    run(body)


def test_a_solicitation_flood_never_queues_in_front_of_upper_layer_packets() -> None:
    """What the layers above write leaves at once, as over IPv4: the
    stack's own replies wait in bounded queues of their own (before, one
    queue of 1,024 held both, and a flood of solicitations held a TCP
    segment behind every reply, or dropped it)."""

    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        assert await b.ping(a6.link_local, timeout=1) < 1  # a is resolved
        b6._solicit_bucket.burst = 10**6  # let the whole flood in
        b6._solicit_bucket._tokens = 10**6
        for i in range(3_000):
            mac = MacAddress(b"\x02\x99" + i.to_bytes(4, "big"))
            b.ethernet.input(solicitation_frame(b, IPv6Address(f"fe80::9:{i:x}"), mac))
        sent: list[bytes] = []
        network = b.network
        write = network.write

        async def record(frame: bytes) -> None:
            sent.append(frame)
            await write(frame)

        network.write = record  # type: ignore[method-assign]
        await b6.write(a6.link_local, 17, b"\x00\x07\x00\x07\x00\x0d\x00\x00after")
        assert sent and sent[0].endswith(b"after")
        counters = b.counters()
        assert counters["ipv6.tx_nd_backlog_dropped"] > 0  # replies bounded...
        assert "ipv6.tx_released_backlog_dropped" not in counters  # ...by kind
        assert len(b6.neighbours) <= b6.neighbours.settings.max_neighbours
        await settle()

    run(body)


class _StoppedClock:
    now = 0

    def now_ns(self) -> int:
        return self.now


def _tcp(flags: int) -> bytes:
    """A 20-byte TCP header (checksum left zero: the policer reads flags only)."""
    return (
        (1000).to_bytes(2, "big") + (80).to_bytes(2, "big") + bytes(9) + bytes([flags]) + bytes(6)
    )


def _ipv4_with_option(segment: bytes) -> bytes:
    """IPv4 carrying ``segment`` with a 4-byte option (IHL 6): NOPs."""
    header = bytes([0x46, 0, 0, 24 + len(segment), 0, 0, 0, 0, 64, 6, 0, 0])
    return header + bytes([10, 0, 0, 1, 10, 0, 0, 2]) + b"\x01\x01\x01\x01" + segment


def _ipv6(segment: bytes) -> bytes:
    header = ipv6.Ipv6Header(IPv6Address("fd00::1"), IPv6Address("fd00::2"), 6)
    return ipv6.emit(header, segment)


def _collect(into: list[bytes]) -> EthernetHandler:
    def handler(source: MacAddress, destination: MacAddress, payload: bytes, ok: bool) -> None:
        into.append(payload)

    return handler


def test_syns_with_ipv4_options_or_over_ipv6_are_policed_too() -> None:
    """The SYN policer read the TCP flags only of IPv4 without options:
    5,000 IPv6 SYNs (or IPv4 ones with one NOP option) from unresolvable
    sources went through whole and stalled connections 36-306 ms."""
    for ethertype, wrap in ((b"\x08\x00", _ipv4_with_option), (b"\x86\xdd", _ipv6)):
        ethernet = EthernetLayer(
            MemorySwitch().port(),
            time=_StoppedClock(),  # type: ignore[arg-type]
            syn_rate=1000,
            syn_burst=100,
        )
        # Segments of no known flow have a budget of their own (test_flood_policy).
        ethernet.policy.stray = TokenBucket(0, 1000, 0)
        delivered: list[bytes] = []
        ethernet.register(int.from_bytes(ethertype, "big"), _collect(delivered))
        head = bytes(ethernet.mac) + bytes(6) + ethertype
        syn, syn_ack, ack = (head + wrap(_tcp(flags)) for flags in (0x02, 0x12, 0x10))
        for _ in range(300):
            ethernet.input(syn)
            ethernet.input(syn_ack)
            ethernet.input(ack)
        assert ethernet.counters["syn_policed"] == 200
        assert len(delivered) == 100 + 300 + 300


def test_an_unresolvable_neighbour_is_asked_at_most_once_a_second() -> None:
    """As ARP does: after a failed round of three, a packet for the
    neighbour starts a single solicitation, never more than one a second
    (RFC 1122 2.3.2.1), so a host arriving there later is not locked out."""
    cache = NeighbourCache(NeighbourSettings(failed_lifetime_ns=20 * S))
    peer = IPv6Address("fd00::99")
    solicitations = [cache.send(peer, b"syn-ack", 0)[1]]
    for tenth in range(1, 600):
        solicitations += cache.on_timer(tenth * S // 10)
        solicitations.append(cache.send(peer, b"syn-ack again", tenth * S // 10)[1])
    asked = [s for s in solicitations if s is not None]
    # Three at 0, 1 and 2 s, failed at 3 s; then one a second from 3 to 59 s.
    assert len(asked) == 3 + 57
    assert cache.counters["failed_neighbour_retried"] == 57
    # A solicitation from it says it is there after all.
    cache.solicited_by(peer, MacAddress(bytes(6)), 61 * S)
    assert cache.send(peer, b"now", 62 * S)[0] is not None


def test_new_resolutions_are_budgeted_as_arps_are() -> None:
    """A flood of packets to new on-link addresses (SYN-ACKs to spoofed
    sources) starts a burst of resolutions, then 256 a second: not one
    multicast solicitation per packet."""
    cache = NeighbourCache()
    started = 0
    for i in range(2_000):
        # 2,000 packets over one second.
        _, solicitation = cache.send(IPv6Address(f"fd00::5:{i:x}"), b"syn-ack", i * S // 2_000)
        started += solicitation is not None
    assert 32 + 256 - 2 <= started <= 32 + 256
    assert cache.counters["resolution_limited"] == 2_000 - started
    # A ping is asked for: never limited.
    assert cache.send(IPv6Address("fd00::6"), b"echo", S, explicit=True)[1] is not None


def test_fragments_starting_new_reassemblies_beyond_the_rate_are_dropped_unparsed() -> None:
    """A storm of first fragments, each of a new packet (60,000 stalled an
    IPv6 connection 0.25-0.5 s even at constant work each), is policed
    before parsing; pieces of packets being reassembled always get in."""

    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        received: asyncio.Queue[Datagram] = asyncio.Queue()
        await b.udp.bind(9, received.put_nowait)
        bucket = b6._reassembly_bucket
        bucket.rate = 0  # no refill while the test runs: exact counts
        burst = bucket.burst
        source = a6.link_local
        # The first piece of a datagram that will complete, then the storm.
        udp = wire_udp.emit(wire_udp.UdpHeader(4000, 9), bytes(40), source, b6.link_local)  # type: ignore[arg-type]
        b.ethernet.input(fragment_frame(b, source, 0, True, udp[:24]))
        for i in range(burst + 3_000):
            b.ethernet.input(fragment_frame(b, IPv6Address(f"fe80::f:{i:x}"), 0, True, bytes(64)))
        policed = b.counters()["ipv6.fragment_policed"]
        assert policed == 3_000 + 1  # the burst, less the real datagram's piece
        # The storm evicted the datagram's first piece (the oldest gives
        # way): sent again with one token left, then the last piece with
        # none, which joins a reassembly under way and is never policed.
        bucket._tokens = 1.0
        b.ethernet.input(fragment_frame(b, source, 0, True, udp[:24]))
        assert bucket._tokens < 1.0
        b.ethernet.input(fragment_frame(b, source, 24, False, udp[24:]))
        datagram = await asyncio.wait_for(received.get(), 1)
        assert datagram.data == bytes(40)
        assert b.counters()["ipv6.fragment_policed"] == policed

    run(body)
