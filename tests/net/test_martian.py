"""Datagrams from sources that cannot send (martians) are dropped and
counted before any protocol sees them: no answer ever goes to a loopback,
broadcast or multicast address (RFC 1122 3.2.1.3, RFC 4291), nor to a
frame whose Ethernet source is a group address. The oracle is
``ipaddress``'s classification, not the layers' own code."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.devices.net import MacAddress
from looming.net.arp import ArpLayer
from looming.net.ethernet import EthernetLayer
from looming.net.ipv6 import Ipv6Layer
from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.net.wire import arp as wire_arp
from looming.net.wire import icmpv6, ipv4, ndp
from looming.net.wire import ipv6 as wire6
from looming.unix.time import UnixTime
from tests.net.test_neighbours import run
from tests.net.test_tcp_fast_paths import LOCAL, Delivery, _ipv4_layer

THIS_NETWORK = IPv4Network("0.0.0.0/8")


def ipv4_martian(source: IPv4Address) -> bool:
    return (
        source.is_loopback
        or source.is_multicast
        or source.is_reserved  # 240.0.0.0/4, 255.255.255.255 among them
        or source in THIS_NETWORK
        or source in (LOCAL.network.broadcast_address, LOCAL.ip)
    )


IPV4_SOURCES = st.one_of(
    st.integers(0, 0xFFFFFFFF).map(IPv4Address),
    st.sampled_from(
        ["0.0.0.0", "0.1.2.3", "127.0.0.1", "127.255.255.254", "224.0.0.1", "239.1.1.1",
         "240.0.0.1", "254.255.255.255", "255.255.255.255", "10.0.0.255", "10.0.0.0",
         "10.0.0.1", "10.0.0.2", "10.0.0.254", "8.8.8.8", "169.254.1.1", "1.0.0.0"]
    ).map(IPv4Address),
)  # fmt: skip
DESTINATIONS = st.sampled_from(["10.0.0.2", "10.0.0.255", "255.255.255.255"]).map(IPv4Address)


@given(st.lists(st.tuples(IPV4_SOURCES, DESTINATIONS, st.booleans()), min_size=1, max_size=8))
def test_ipv4_martian_sources_are_dropped_and_counted(
    datagrams: list[tuple[IPv4Address, IPv4Address, bool]],
) -> None:
    """Every datagram from a martian source is counted and none reaches
    TCP, through the fast path (bytes) or the general one (a fragment)."""
    delivered: list[Delivery] = []
    layer = _ipv4_layer(delivered)
    for source, destination, fragment in datagrams:
        header = ipv4.Ipv4Header(
            source=source, destination=destination, protocol=6, identification=7
        )
        if fragment:  # a whole datagram in one fragment: the general path
            header = ipv4.Ipv4Header(
                source=source, destination=destination, protocol=6, identification=7,
                fragment_offset=0, more_fragments=False, options=b"\x01\x01\x01\x00",
            )  # fmt: skip
        layer.input(ipv4.emit(header, bytes(20)))
    martians = sum(ipv4_martian(source) for source, _, _ in datagrams)
    assert layer.counters["martian_source"] == martians
    assert len(delivered) == len(datagrams) - martians
    assert all(not ipv4_martian(packet[0]) for packet in delivered)  # type: ignore[arg-type]


def test_ipv4_frames_from_a_group_ethernet_source_are_dropped() -> None:
    delivered: list[Delivery] = []
    layer = _ipv4_layer(delivered)
    packet = ipv4.emit(
        ipv4.Ipv4Header(source=IPv4Address("10.0.0.1"), destination=LOCAL.ip, protocol=6),
        bytes(20),
    )
    ours = MacAddress(b"\x02\x00\x00\x00\x00\x02")
    for group in (b"\xff" * 6, b"\x01\x00\x5e\x00\x00\x01", b"\x33\x33\x00\x00\x00\x01"):
        layer._on_frame(MacAddress(group), ours, packet, False)
    assert delivered == [] and layer.counters["martian_mac_source"] == 3
    layer._on_frame(MacAddress(b"\x02\x00\x00\x00\x00\x07"), ours, packet, False)
    assert len(delivered) == 1


def ipv6_martian(source: IPv6Address) -> bool:
    return (
        source.is_multicast
        or source.is_loopback
        or source.is_unspecified
        or source.ipv4_mapped is not None
    )


IPV6_SOURCES = st.one_of(
    st.integers(0, 2**128 - 1).map(IPv6Address),
    st.sampled_from(
        ["::", "::1", "::2", "ff02::1", "ff05::2", "::ffff:10.0.0.1", "::ffff:0:0", "fe80::9",
         "fd88::1", "2001:db8::1", "::10.0.0.1", "64:ff9b::a00:1"]
    ).map(IPv6Address),
)  # fmt: skip


def echo_request(source: IPv6Address, destination: IPv6Address) -> bytes:
    header = icmpv6.Icmpv6Header.echo(icmpv6.Icmpv6Type.ECHO_REQUEST, 5, 1)
    message = icmpv6.emit(header, b"martian", source, destination)
    return wire6.emit(wire6.Ipv6Header(source, destination, 58), message)


@settings(max_examples=25, deadline=None)
@given(st.lists(IPV6_SOURCES, min_size=1, max_size=8))
def test_ipv6_martian_sources_are_dropped_and_counted(sources: list[IPv6Address]) -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        before = b6.counters.copy()
        for source in sources:
            b6.input(echo_request(source, b6.link_local))
        martians = sum(ipv6_martian(source) for source in sources)
        counters = b6.counters
        assert counters["martian_source"] - before["martian_source"] == martians
        delivered = counters["rx_echo_request"] - before["rx_echo_request"]
        assert delivered == len(sources) - martians

    run(body)


def test_duplicate_address_detection_still_reaches_neighbour_discovery() -> None:
    """A Neighbor Solicitation from the unspecified address (RFC 4862
    5.4.2) is the one packet from :: that is processed: here, one for our
    link-local address while it is still tentative, which makes us give it
    up as a duplicate; an echo request from :: is a martian."""

    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        unspecified = IPv6Address(0)
        target = b6.link_local
        group = IPv6Address("ff02::1:ff00:0") + (int(target) & 0xFFFFFF)
        solicitation = ndp.emit(ndp.NeighborSolicitation(target), unspecified, group)
        before = b6.counters.copy()
        b6.input(echo_request(unspecified, target))
        b6.input(wire6.emit(wire6.Ipv6Header(unspecified, group, 58, 255), solicitation))
        counters = b6.counters
        assert counters["martian_source"] - before["martian_source"] == 1
        assert counters["rx_echo_request"] == before["rx_echo_request"]
        assert target not in b6.addresses()  # given up: DAD saw a duplicate

    run(body)


def test_ipv6_frames_from_a_group_ethernet_source_are_dropped() -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        packet = echo_request(a6.link_local, b6.link_local)
        ours = MacAddress(b.ethernet.mac)
        before = b6.counters.copy()
        b6._on_frame(MacAddress(b"\x33\x33\x00\x00\x00\x01"), ours, packet, False)
        b6._on_frame(MacAddress(b"\xff" * 6), ours, packet, False)
        assert b6.counters["martian_mac_source"] == 2
        assert b6.counters["rx_echo_request"] == before["rx_echo_request"]

    run(body)


def test_arp_from_a_group_ethernet_address_is_neither_learned_nor_answered() -> None:
    """A request for our address from a group Ethernet source, or naming a
    group address as the sender's: no binding (it would send a neighbour's
    traffic to every host) and no reply; the same request from a unicast
    address is answered."""
    ethernet = EthernetLayer(MemorySwitch().port(MacAddress(b"\x02\x00\x00\x00\x00\x02")))
    arp = ArpLayer(ethernet, UnixTime())
    arp.set_addresses([LOCAL.ip], announce=False)
    unicast, group = MacAddress(b"\x02\x00\x00\x00\x00\x07"), MacAddress(b"\xff" * 6)
    neighbour = IPv4Address("10.0.0.7")

    def request(sender_mac: MacAddress) -> bytes:
        return wire_arp.emit(
            wire_arp.ArpPacket(
                wire_arp.ArpOperation.REQUEST, sender_mac, neighbour, MacAddress(bytes(6)), LOCAL.ip
            )
        )

    arp._on_frame(group, ethernet.mac, request(unicast), False)
    arp._on_frame(unicast, ethernet.mac, request(group), False)
    arp._on_frame(MacAddress(b"\x01\x00\x5e\x00\x00\x01"), ethernet.mac, request(group), False)
    assert arp.counters["martian_mac_source"] == 3
    assert neighbour not in arp.cache and arp.counters["tx_reply"] == 0
    arp._on_frame(unicast, ethernet.mac, request(unicast), False)
    assert arp.cache.lookup(neighbour, UnixTime().now_ns()) == unicast
    assert arp.counters["tx_reply"] == 1
