"""Wire formats: parse(emit(x)) == x, and parse of arbitrary bytes raises
nothing but Malformed."""

from __future__ import annotations

import random
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.devices.net import MacAddress
from looming.errors import Malformed
from looming.net.wire import arp, dhcp, dns, ethernet, icmp, ipv4, tcp, udp
from looming.net.wire.checksum import internet_checksum, pseudo_header_sum

macs = st.binary(min_size=6, max_size=6).map(MacAddress)
addresses = st.integers(0, 2**32 - 1).map(IPv4Address)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def reference_checksum(data: bytes, initial: int = 0) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = initial
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total > 0xFFFF:
        total = (total >> 16) + (total & 0xFFFF)
    return ~total & 0xFFFF


@given(st.binary(max_size=3000), st.integers(0, 0x3FFFF))
def test_checksum_matches_the_word_by_word_definition(data: bytes, initial: int) -> None:
    assert internet_checksum(data, initial) == reference_checksum(data, initial)


def test_long_checksums_match_the_word_by_word_definition() -> None:
    # Buffers past a few kilobytes take the folding path (TSO-sized segments).
    generator = random.Random(1071)
    sizes = [4095, 4096, 4097, 4098, 8191, 9000, 65535, 65536, 65600]
    for size in sizes + [generator.randrange(4000, 70000) for _ in range(20)]:
        data = generator.randbytes(size)
        for initial in (0, 1, 0xFFFF, generator.randrange(0x40000)):
            assert internet_checksum(data, initial) == reference_checksum(data, initial)
    for data in (b"\xff" * 5001, bytes(5000), b"\xff\xff" * 3000 + b"\x00\x01"):
        for initial in (0, 1, 0xFFFE, 0xFFFF):
            assert internet_checksum(data, initial) == reference_checksum(data, initial)


def test_checksum_of_rfc1071_example() -> None:
    # RFC 1071 section 3: the sum of these words is 0xddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert internet_checksum(data) == ~0xDDF2 & 0xFFFF


def test_checksum_edges() -> None:
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(bytes(6)) == 0xFFFF
    assert internet_checksum(b"\xff\xff\xff\xff") == 0
    assert internet_checksum(b"\x00\x01", 0xFFFE) == 0


def test_pseudo_header_sum() -> None:
    total = pseudo_header_sum(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), 17, 20)
    assert total == 0x0A00 + 0x0001 + 0x0A00 + 0x0002 + 17 + 20


ethernet_headers = st.builds(
    ethernet.EthernetHeader,
    destination=macs,
    source=macs,
    ethertype=st.integers(0x0600, 0xFFFF).filter(lambda t: t not in (0x8100, 0x88A8)),
    vlan_tag=st.none() | u16,
)


@given(ethernet_headers, st.binary(max_size=100))
def test_ethernet_round_trip(header: ethernet.EthernetHeader, payload: bytes) -> None:
    parsed, rest = ethernet.parse(ethernet.emit(header, payload))
    assert parsed == header and bytes(rest) == payload


arp_packets = st.builds(
    arp.ArpPacket,
    operation=st.sampled_from([1, 2]),
    sender_mac=macs,
    sender_ip=addresses,
    target_mac=macs,
    target_ip=addresses,
)


@given(arp_packets)
def test_arp_round_trip(packet: arp.ArpPacket) -> None:
    assert arp.parse(arp.emit(packet))[0] == packet


ipv4_headers = st.builds(
    ipv4.Ipv4Header,
    source=addresses,
    destination=addresses,
    protocol=u8,
    ttl=u8,
    identification=u16,
    dont_fragment=st.booleans(),
    more_fragments=st.booleans(),
    fragment_offset=st.integers(0, 0x1FFF).map(lambda o: o * 8),
    tos=u8,
    options=st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
)


@given(ipv4_headers, st.binary(max_size=200))
def test_ipv4_round_trip(header: ipv4.Ipv4Header, payload: bytes) -> None:
    parsed, rest = ipv4.parse(ipv4.emit(header, payload) + b"\x00" * 3)  # link padding
    assert parsed == header and bytes(rest) == payload


def test_ipv4_rejects_a_bad_checksum() -> None:
    header = ipv4.Ipv4Header(IPv4Address("1.2.3.4"), IPv4Address("5.6.7.8"), 17)
    packet = bytearray(ipv4.emit(header, b"data"))
    packet[8] ^= 1
    with pytest.raises(Malformed, match="checksum"):
        ipv4.parse(packet)


@given(st.builds(icmp.IcmpHeader, type=u8, code=u8, rest=u32), st.binary(max_size=200))
def test_icmp_round_trip(header: icmp.IcmpHeader, payload: bytes) -> None:
    parsed, rest = icmp.parse(icmp.emit(header, payload))
    assert parsed == header and bytes(rest) == payload


@given(st.builds(udp.UdpHeader, u16, u16), st.binary(max_size=300), addresses, addresses)
def test_udp_round_trip_with_checksum(
    header: udp.UdpHeader, payload: bytes, source: IPv4Address, destination: IPv4Address
) -> None:
    datagram = udp.emit(header, payload, source, destination)
    assert datagram[6:8] != b"\x00\x00"  # zero is sent as 0xFFFF
    parsed, rest = udp.parse(datagram, source, destination)
    assert parsed == header and bytes(rest) == payload


def test_udp_rejects_a_bad_checksum() -> None:
    source, destination = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    datagram = bytearray(udp.emit(udp.UdpHeader(1, 2), b"hello", source, destination))
    datagram[-1] ^= 0x40
    with pytest.raises(Malformed, match="checksum"):
        udp.parse(datagram, source, destination)


dhcp_options = st.lists(st.tuples(st.integers(1, 254), st.binary(max_size=300)), max_size=6).map(
    tuple
)
dhcp_messages = st.builds(
    dhcp.DhcpMessage,
    op=st.sampled_from([1, 2]),
    xid=u32,
    client_mac=macs,
    options=dhcp_options,
    secs=u16,
    flags=u16,
    client_address=addresses,
    your_address=addresses,
    server_address=addresses,
    relay_address=addresses,
    hops=u8,
)


@given(dhcp_messages)
def test_dhcp_round_trip(message: dhcp.DhcpMessage) -> None:
    parsed = dhcp.parse(dhcp.emit(message))
    # Values longer than 255 bytes travel as repeated options (RFC 3396):
    # compare the concatenated values per option code.
    assert parsed.op == message.op and parsed.xid == message.xid
    assert parsed.client_mac == message.client_mac
    assert (parsed.your_address, parsed.flags, parsed.hops) == (
        message.your_address,
        message.flags,
        message.hops,
    )
    for code, _ in message.options:
        assert parsed.option(code) == message.option(code)


labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
dns_records = st.builds(
    dns.DnsRecord,
    name=names,
    type=st.sampled_from([1, 16, 28]),
    klass=st.just(1),
    ttl=u32,
    data=st.binary(max_size=40),
)
dns_messages = st.builds(
    dns.DnsMessage,
    id=u16,
    flags=u16,
    questions=st.lists(st.builds(dns.DnsQuestion, name=names, type=u16, klass=u16), max_size=2).map(
        tuple
    ),
    answers=st.lists(dns_records, max_size=3).map(tuple),
    authorities=st.lists(dns_records, max_size=2).map(tuple),
    additionals=st.lists(dns_records, max_size=2).map(tuple),
)


@given(dns_messages)
def test_dns_round_trip(message: dns.DnsMessage) -> None:
    assert dns.parse(dns.emit(message)) == message


def test_dns_compression_loop_is_malformed() -> None:
    # One question whose name is a pointer to itself.
    message = bytes.fromhex("1234 0100 0001 0000 0000 0000 c00c 0001 0001".replace(" ", ""))
    with pytest.raises(Malformed):
        dns.parse(message)


PARSERS: list[tuple[str, Callable[[bytes], Any]]] = [
    ("ethernet", ethernet.parse),
    ("arp", arp.parse),
    ("ipv4", ipv4.parse),
    ("icmp", icmp.parse),
    ("udp", lambda b: udp.parse(b, IPv4Address("1.2.3.4"), IPv4Address("5.6.7.8"))),
    ("dhcp", dhcp.parse),
    ("dns", dns.parse),
]


@pytest.mark.parametrize(("name", "parse"), PARSERS, ids=[name for name, _ in PARSERS])
@settings(max_examples=400)
@given(data=st.binary(max_size=600))
def test_parsers_raise_only_malformed(
    name: str, parse: Callable[[bytes], Any], data: bytes
) -> None:
    try:
        parse(data)
    except Malformed:
        pass


@settings(max_examples=300)
@given(st.binary(min_size=240, max_size=400), st.integers(0, 200))
def test_dhcp_parser_on_nearly_valid_messages(noise: bytes, cut: int) -> None:
    valid = dhcp.emit(dhcp.DhcpMessage(op=2, xid=1, client_mac=MacAddress(bytes(6))))
    data = valid[:236] + dhcp.MAGIC_COOKIE + noise[cut:]
    try:
        dhcp.parse(data)
    except Malformed:
        pass


@settings(max_examples=300)
@given(st.binary(min_size=12, max_size=300))
def test_dns_parser_on_messages_with_plausible_counts(noise: bytes) -> None:
    data = noise[:4] + bytes.fromhex("0001000100000000") + noise[12:]
    try:
        dns.parse(data)
    except Malformed:
        pass


def test_a_partial_tcp_checksum_finishes_to_the_full_one() -> None:
    src, dst = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    header = tcp.TcpHeader(1234, 80, 7, 9, tcp.ACK, 512)
    for size in (0, 1, 1460, 5000, 60000):
        payload = random.Random(size).randbytes(size)
        full = tcp.emit(header, payload, src=src, dst=dst)
        partial = tcp.emit(header, payload, src=src, dst=dst, partial_checksum=True)
        assert int.from_bytes(partial[16:18], "big") == pseudo_header_sum(src, dst, 6, len(full))
        assert tcp.checksum_ok(tcp.finish_checksum(partial), src, dst)
        assert tcp.finish_checksum(partial)[18:] == full[18:]
