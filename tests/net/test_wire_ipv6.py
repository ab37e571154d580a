"""IPv6, ICMPv6, Neighbor Discovery and MLDv2 wire formats: parse(emit(x))
== x, parse of arbitrary bytes raises nothing but Malformed, and dpkt (which
no one here wrote) agrees with both directions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.devices.net import MacAddress
from looming.errors import Malformed
from looming.net.wire import icmpv6, ipv6, mld, ndp
from looming.net.wire.checksum import internet_checksum

macs = st.binary(min_size=6, max_size=6).map(MacAddress)
addresses = st.integers(0, 2**128 - 1).map(IPv6Address)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
A = IPv6Address("fe80::1")
B = IPv6Address("fe80::2")

ipv6_headers = st.builds(
    ipv6.Ipv6Header,
    source=addresses,
    destination=addresses,
    next_header=u8,
    hop_limit=u8,
    traffic_class=u8,
    flow_label=st.integers(0, 0xFFFFF),
)


@given(ipv6_headers, st.binary(max_size=300), st.binary(max_size=20))
def test_ipv6_round_trip(header: ipv6.Ipv6Header, payload: bytes, padding: bytes) -> None:
    parsed, rest = ipv6.parse(ipv6.emit(header, payload) + padding)
    assert parsed == header
    assert bytes(rest) == payload


@given(
    ipv6_headers.filter(lambda h: h.next_header not in ipv6.EXTENSION_KINDS | {50, 51, 135}),
    st.binary(max_size=300),
)
def test_dpkt_reads_what_looming_emits(header: ipv6.Ipv6Header, payload: bytes) -> None:
    theirs = dpkt.ip6.IP6(ipv6.emit(header, payload))
    assert theirs.v == 6
    assert theirs.src == header.source.packed and theirs.dst == header.destination.packed
    assert (theirs.fc, theirs.flow, theirs.hlim) == (
        header.traffic_class,
        header.flow_label,
        header.hop_limit,
    )
    assert theirs.plen == len(payload)


def reference_pseudo_sum(src: IPv6Address, dst: IPv6Address, protocol: int, length: int) -> int:
    data = src.packed + dst.packed + length.to_bytes(4, "big") + bytes(3) + bytes((protocol,))
    return ~internet_checksum(data) & 0xFFFF


@given(addresses, addresses, u8, u32)
def test_pseudo_header_sum_matches_the_byte_definition(
    src: IPv6Address, dst: IPv6Address, protocol: int, length: int
) -> None:
    got = ipv6.pseudo_header_sum(src, dst, protocol, length)
    expected = reference_pseudo_sum(src, dst, protocol, length)
    # 0 and 0xFFFF are the same one's-complement number.
    assert got % 0xFFFF == expected % 0xFFFF


options = st.lists(
    st.builds(
        ipv6.Option,
        type=st.integers(2, 0xFF),
        data=st.binary(max_size=40),
    ),
    max_size=4,
).map(tuple)
routing_headers = st.builds(
    ipv6.RoutingHeader,
    next_header=u8,
    routing_type=u8,
    segments_left=st.just(0),
    data=st.integers(0, 6).map(lambda n: bytes(4 + 8 * n)),
)
fragment_headers = st.builds(
    ipv6.FragmentHeader,
    next_header=u8,
    offset=st.integers(0, 0x1FFF).map(lambda n: n * 8),
    more_fragments=st.booleans(),
    identification=u32,
)


UPPER_LAYERS = [n for n in range(256) if n not in ipv6.EXTENSION_KINDS | {50, 51, 135}]


@st.composite
def chains(draw: st.DrawFn) -> list[ipv6.ExtensionHeader]:
    """A valid chain: hop-by-hop only first, a fragment header only last,
    each header's Next Header naming the one after it."""
    kinds: list[ipv6.ExtensionHeader] = []
    if draw(st.booleans()):
        kinds.append(
            draw(st.builds(ipv6.OptionsHeader, kind=st.just(0), next_header=u8, options=options))
        )
    destination_options = st.builds(ipv6.OptionsHeader, st.just(60), u8, options)
    middle = st.one_of(destination_options, routing_headers)
    kinds += draw(st.lists(middle, max_size=4))
    if draw(st.booleans()):
        kinds.append(draw(fragment_headers))
    upper = draw(st.sampled_from(UPPER_LAYERS))
    linked: list[ipv6.ExtensionHeader] = []
    for index, header in enumerate(kinds):
        following = ipv6.kind_of(kinds[index + 1]) if index + 1 < len(kinds) else upper
        linked.append(_relinked(header, following))
    return linked


def _relinked(header: ipv6.ExtensionHeader, next_header: int) -> ipv6.ExtensionHeader:
    return dataclasses.replace(header, next_header=next_header)


@given(chains(), st.binary(max_size=100))
def test_extension_chain_round_trip(chain: list[ipv6.ExtensionHeader], payload: bytes) -> None:
    first = ipv6.kind_of(chain[0]) if chain else 17
    walked = ipv6.walk(first, ipv6.emit_chain(chain) + payload)
    assert list(walked.headers) == chain
    assert bytes(walked.payload) == payload
    assert walked.protocol == (chain[-1].next_header if chain else 17)


@given(chains(), st.binary(max_size=100))
def test_dpkt_walks_the_same_chain(chain: list[ipv6.ExtensionHeader], payload: bytes) -> None:
    first = ipv6.kind_of(chain[0]) if chain else 59
    header = ipv6.Ipv6Header(A, B, first)
    theirs = dpkt.ip6.IP6(ipv6.emit(header, ipv6.emit_chain(chain) + payload))
    kinds = [ipv6.kind_of(h) for h in chain]
    # dpkt keeps one header per kind: compare only chains without repeats.
    if len(set(kinds)) == len(kinds):
        assert {k for k, ext in theirs.extension_hdrs.items() if ext is not None} == set(kinds)
        for ours in chain:
            ext = theirs.extension_hdrs[ipv6.kind_of(ours)]
            assert ext.nxt == ours.next_header
            if isinstance(ours, ipv6.FragmentHeader):
                assert (ext.frag_off * 8, ext.m_flag, ext.id) == (
                    ours.offset,
                    int(ours.more_fragments),
                    ours.identification,
                )
            elif isinstance(ours, ipv6.RoutingHeader):
                assert (ext.type, ext.segs_left) == (ours.routing_type, 0)
            else:
                assert ext.length == len(ipv6.emit_extension(ours))


@given(u8, st.integers(0, 0x1FFF), st.booleans(), u32, st.binary(max_size=50))
def test_looming_walks_a_fragment_header_dpkt_builds(
    upper: int, units: int, more: bool, identification: int, payload: bytes
) -> None:
    theirs = dpkt.ip6.IP6FragmentHeader(nxt=upper, id=identification)
    theirs.frag_off, theirs.m_flag = units, int(more)
    walked = ipv6.walk(ipv6.NextHeader.FRAGMENT, bytes(theirs) + payload)
    assert walked.fragment == ipv6.FragmentHeader(upper, units * 8, more, identification)
    assert walked.protocol == upper and bytes(walked.payload) == payload


def test_type_0_routing_header_with_segments_left_is_refused() -> None:
    rh0 = b"\x11\x02\x00\x01" + bytes(4) + IPv6Address("2001:db8::1").packed
    with pytest.raises(ipv6.ExtensionHeaderProblem) as problem:
        ipv6.walk(ipv6.NextHeader.ROUTING, rh0)
    assert (problem.value.code, problem.value.pointer) == (0, 42)
    # With no segments left it is ignored, as an unrecognised type is.
    ignored = ipv6.walk(ipv6.NextHeader.ROUTING, rh0[:3] + b"\x00" + rh0[4:] + b"data")
    assert ignored.protocol == 17 and bytes(ignored.payload) == b"data"


def test_hop_by_hop_after_another_header_is_refused() -> None:
    chain = ipv6.emit_chain([ipv6.OptionsHeader(60, 0), ipv6.OptionsHeader(0, 59)])
    with pytest.raises(ipv6.ExtensionHeaderProblem) as problem:
        ipv6.walk(60, chain)
    assert (problem.value.code, problem.value.pointer) == (1, 40)


def test_a_chain_that_never_ends_is_malformed() -> None:
    # Destination options headers naming one another up to the packet's end.
    endless = ipv6.emit_extension(ipv6.OptionsHeader(60, 60)) * 8000
    with pytest.raises(Malformed, match="more than 8"):
        ipv6.walk(60, endless)
    with pytest.raises(Malformed, match="runs past"):
        ipv6.walk(60, endless[:40])
    big = ipv6.OptionsHeader(60, 60, (ipv6.Option(0x1E, bytes(250)),) * 3)
    with pytest.raises(Malformed, match="longer than 1240"):
        ipv6.walk(60, ipv6.emit_chain([big, big]))


def test_an_option_running_past_its_header_is_a_parameter_problem() -> None:
    with pytest.raises(ipv6.ExtensionHeaderProblem) as problem:
        ipv6.walk(60, b"\x3b\x00\x1e\x09" + bytes(4))
    assert problem.value.pointer == 43


def test_solicited_node_and_multicast_mac() -> None:
    address = IPv6Address("2001:db8::abcd:1234:5678")
    group = ipv6.solicited_node(address)
    assert group == IPv6Address("ff02::1:ff34:5678")
    assert ipv6.is_solicited_node(group) and not ipv6.is_solicited_node(address)
    assert str(ipv6.multicast_mac(group)) == "33:33:ff:34:56:78"
    assert str(ipv6.multicast_mac(ipv6.ALL_NODES)) == "33:33:00:00:00:01"
    with pytest.raises(ValueError):
        ipv6.multicast_mac(address)
    mac = MacAddress("52:54:00:12:34:56")
    assert ipv6.link_local_from_mac(mac) == IPv6Address("fe80::5054:ff:fe12:3456")


icmpv6_headers = st.builds(icmpv6.Icmpv6Header, type=u8, code=u8, rest=u32)


@given(icmpv6_headers, st.binary(max_size=300), addresses, addresses)
def test_icmpv6_round_trip(
    header: icmpv6.Icmpv6Header, payload: bytes, src: IPv6Address, dst: IPv6Address
) -> None:
    parsed, rest = icmpv6.parse(icmpv6.emit(header, payload, src, dst), src, dst)
    assert parsed == header
    assert bytes(rest) == payload


def test_icmpv6_checksum_covers_the_pseudo_header() -> None:
    message = icmpv6.emit(icmpv6.Icmpv6Header.echo(128, 7, 1), b"ping", A, B)
    icmpv6.parse(message, A, B)
    with pytest.raises(Malformed, match="checksum"):
        icmpv6.parse(message, A, IPv6Address("fe80::3"))
    with pytest.raises(Malformed, match="checksum"):
        icmpv6.parse(message[:-1] + b"\x00", A, B)


def dpkt_icmp6_body(kind: int, rest: int, payload: bytes) -> Any:
    """The dpkt object for an ICMPv6 body of this type."""
    I6 = dpkt.icmp6.ICMP6
    if kind in (128, 129):
        return I6.Echo(id=rest >> 16, seq=rest & 0xFFFF, data=payload)
    if kind == 2:
        return I6.TooBig(mtu=rest, data=payload)
    if kind == 4:
        return I6.ParamProb(ptr=rest, data=payload)
    error = {1: I6.Unreach, 3: I6.TimeExceed}[kind]
    return error(pad=rest, data=payload)


@given(st.sampled_from([1, 2, 3, 4, 128, 129]), u8, u32, st.binary(max_size=200))
def test_icmpv6_against_dpkt_both_ways(kind: int, code: int, rest: int, payload: bytes) -> None:
    # dpkt builds, fills in the checksum, and looming reads it...
    theirs = dpkt.ip6.IP6(
        src=A.packed,
        dst=B.packed,
        nxt=58,
        hlim=64,
        data=dpkt.icmp6.ICMP6(type=kind, code=code, data=dpkt_icmp6_body(kind, rest, payload)),
    )
    theirs.plen = len(theirs.data)
    header, body = ipv6.parse(bytes(theirs))
    message, rest_bytes = icmpv6.parse(body, header.source, header.destination)
    assert message == icmpv6.Icmpv6Header(kind, code, rest)
    assert bytes(rest_bytes) == payload
    # ... and looming's checksum is the one dpkt computes.
    ours = icmpv6.emit(icmpv6.Icmpv6Header(kind, code, rest), payload, A, B)
    decoded = dpkt.ip6.IP6(ipv6.emit(ipv6.Ipv6Header(A, B, 58), ours)).data
    assert isinstance(decoded, dpkt.icmp6.ICMP6)
    assert (decoded.type, decoded.code) == (kind, code)
    ours_sum = decoded.sum
    decoded.sum = 0
    recomputed = dpkt.ip6.IP6(src=A.packed, dst=B.packed, nxt=58, data=decoded)
    recomputed.plen = len(decoded)
    bytes(recomputed)
    assert recomputed.data.sum == ours_sum


def test_error_quote_fits_a_minimum_mtu_packet() -> None:
    quoted = icmpv6.error_quote(bytes(5000))
    error = icmpv6.emit(icmpv6.Icmpv6Header(1, 4), quoted, A, B)
    assert ipv6.HEADER_LENGTH + len(error) == icmpv6.MIN_MTU


unicast = addresses.filter(lambda a: not a.is_multicast)
link_local = st.integers(0, 2**64 - 1).map(lambda n: IPv6Address((0xFE80 << 112) | n))
nd_options = st.one_of(
    macs.map(ndp.SourceLinkLayerAddress),
    macs.map(ndp.TargetLinkLayerAddress),
    st.builds(
        ndp.PrefixInformation,
        prefix=addresses,
        prefix_length=st.integers(0, 128),
        on_link=st.booleans(),
        autonomous=st.booleans(),
        valid_lifetime=u32,
        preferred_lifetime=u32,
    ),
    u32.map(ndp.Mtu),
    st.builds(ndp.RecursiveDnsServers, u32, st.lists(addresses, min_size=1, max_size=3).map(tuple)),
    st.integers(0, 4).map(lambda n: ndp.RedirectedHeader(bytes(range(8 * n)))),
    st.builds(
        ndp.UnknownOption,
        type=u8.filter(lambda t: t not in (1, 2, 3, 4, 5, 25)),
        data=st.integers(0, 3).map(lambda n: bytes(6 + 8 * n)),
    ),
)
nd_option_lists = st.lists(nd_options, max_size=5).map(tuple)
nd_messages = st.one_of(
    st.builds(ndp.RouterSolicitation, nd_option_lists),
    st.builds(
        ndp.RouterAdvertisement,
        current_hop_limit=u8,
        managed=st.booleans(),
        other=st.booleans(),
        router_lifetime=u16,
        reachable_time=u32,
        retransmit_timer=u32,
        options=nd_option_lists,
        preference=st.integers(0, 3),
    ),
    st.builds(ndp.NeighborSolicitation, unicast, nd_option_lists),
    st.builds(
        ndp.NeighborAdvertisement,
        unicast,
        st.booleans(),
        st.booleans(),
        st.booleans(),
        nd_option_lists,
    ),
    st.builds(ndp.Redirect, link_local, unicast, nd_option_lists),
)


@given(nd_messages, link_local, link_local)
def test_nd_round_trip(message: ndp.NdMessage, src: IPv6Address, dst: IPv6Address) -> None:
    emitted = ndp.emit(message, src, dst)
    assert ndp.parse(emitted, src, dst, hop_limit=255) == message


def nd_bytes(message: ndp.NdMessage, src: IPv6Address = A, dst: IPv6Address = B) -> bytes:
    return ndp.emit(message, src, dst)


def test_nd_from_off_link_is_refused() -> None:
    solicitation = nd_bytes(ndp.NeighborSolicitation(B))
    assert ndp.parse(solicitation, A, B, hop_limit=255) == ndp.NeighborSolicitation(B)
    with pytest.raises(Malformed, match="hop limit 254"):
        ndp.parse(solicitation, A, B, hop_limit=254)


UNSPECIFIED = IPv6Address("::")
GLOBAL = IPv6Address("2001:db8::1")
MAC = MacAddress("02:00:00:00:00:01")

INVALID_ND = [
    ("ra-from-global", ndp.RouterAdvertisement(), GLOBAL, ipv6.ALL_NODES),
    ("redirect-from-global", ndp.Redirect(A, GLOBAL), GLOBAL, B),
    ("redirect-to-multicast", ndp.Redirect(A, ipv6.ALL_NODES), A, B),
    ("redirect-to-global-target", ndp.Redirect(GLOBAL, IPv6Address("2001:db8::2")), A, B),
    ("ns-multicast-target", ndp.NeighborSolicitation(ipv6.ALL_NODES), A, B),
    ("dad-not-to-solicited-node", ndp.NeighborSolicitation(B), UNSPECIFIED, B),
    (
        "dad-with-source-mac",
        ndp.NeighborSolicitation(B, (ndp.SourceLinkLayerAddress(MAC),)),
        UNSPECIFIED,
        ipv6.solicited_node(B),
    ),
    (
        "rs-from-unspecified-with-mac",
        ndp.RouterSolicitation((ndp.SourceLinkLayerAddress(MAC),)),
        UNSPECIFIED,
        ipv6.ALL_ROUTERS,
    ),
    ("na-multicast-target", ndp.NeighborAdvertisement(ipv6.ALL_NODES), A, B),
    ("solicited-na-to-multicast", ndp.NeighborAdvertisement(A, solicited=True), A, ipv6.ALL_NODES),
]


@pytest.mark.parametrize(
    ("name", "message", "src", "dst"), INVALID_ND, ids=[case[0] for case in INVALID_ND]
)
def test_rfc4861_validity_checks(
    name: str, message: ndp.NdMessage, src: IPv6Address, dst: IPv6Address
) -> None:
    with pytest.raises(Malformed):
        ndp.parse(ndp.emit(message, src, dst), src, dst)


def test_nd_valid_corner_cases_are_accepted() -> None:
    dad = ndp.NeighborSolicitation(B)
    assert (
        ndp.parse(
            nd_bytes(dad, UNSPECIFIED, ipv6.solicited_node(B)), UNSPECIFIED, ipv6.solicited_node(B)
        )
        == dad
    )
    unsolicited = ndp.NeighborAdvertisement(A, override=True)
    assert ndp.parse(nd_bytes(unsolicited, A, ipv6.ALL_NODES), A, ipv6.ALL_NODES) == unsolicited
    same = ndp.Redirect(GLOBAL, GLOBAL)
    assert ndp.parse(nd_bytes(same), A, B) == same


def raw_nd(kind: int, code: int, body: bytes) -> bytes:
    return icmpv6.emit(icmpv6.Icmpv6Header(kind, code), body, A, B)


def test_malformed_nd_options_and_lengths() -> None:
    target = B.packed
    cases = [
        raw_nd(135, 1, target),  # non-zero code
        raw_nd(135, 0, target[:8]),  # shorter than the fixed part
        raw_nd(135, 0, target + b"\x01\x00" + bytes(6)),  # option of length 0
        raw_nd(135, 0, target + b"\x01\x02" + bytes(6)),  # runs past the end
        raw_nd(135, 0, target + b"\x01\x02" + bytes(14)),  # a 16-byte MAC option
        raw_nd(134, 0, bytes(8) + b"\x03\x01" + bytes(6)),  # 8-byte prefix option
        raw_nd(134, 0, bytes(8) + b"\x19\x01" + bytes(6)),  # RDNSS without a server
        raw_nd(134, 0, bytes(8) + b"\x03\x04\x81" + bytes(29)),  # prefix length 129
        raw_nd(135, 0, target + b"\x0e\x01" + bytes(6) * 1 + b"\x0e\x01" * 400),
        raw_nd(135, 0, target + b"\x0e\x01\x00\x00\x00\x00\x00\x00" * 65),  # too many
    ]
    for message in cases:
        with pytest.raises(Malformed):
            ndp.parse(message, A, B)


multicast = st.integers(0, 2**120 - 1).map(lambda n: IPv6Address((0xFF << 120) | n))
mld_records = st.builds(
    mld.AddressRecord,
    type=st.integers(1, 6),
    group=multicast,
    sources=st.lists(addresses, max_size=3).map(tuple),
    auxiliary=st.integers(0, 3).map(lambda n: bytes(range(4 * n))),
)
mld_messages = st.one_of(
    st.builds(mld.Report, st.lists(mld_records, max_size=5).map(tuple)),
    st.builds(
        mld.Query,
        u16,
        multicast | st.just(IPv6Address("::")),
        st.just(1),
        st.just(False),
        st.just(0),
        st.just(0),
        st.just(()),
    ),
    st.builds(
        mld.Query,
        u16,
        multicast | st.just(IPv6Address("::")),
        st.just(2),
        st.booleans(),
        st.integers(0, 7),
        u8,
        st.lists(addresses, max_size=3).map(tuple),
    ),
)


@given(mld_messages, link_local, multicast)
def test_mld_round_trip(
    message: mld.Report | mld.Query, src: IPv6Address, dst: IPv6Address
) -> None:
    assert mld.parse(mld.emit(message, src, dst), src, dst) == message


def test_mld_report_packet_joins_solicited_node_groups() -> None:
    groups = [ipv6.solicited_node(A), ipv6.solicited_node(GLOBAL)]
    packet = mld.emit_packet(mld.join(groups), A)
    header, payload = ipv6.parse(packet)
    assert (header.destination, header.hop_limit) == (ipv6.ALL_MLDV2_ROUTERS, 1)
    chain = ipv6.walk(header.next_header, payload)
    assert mld.has_router_alert(chain) and chain.protocol == ipv6.NextHeader.ICMPV6
    report = mld.parse(chain.payload, header.source, header.destination)
    assert isinstance(report, mld.Report)
    assert [(r.type, r.group) for r in report.records] == [
        (mld.RecordType.CHANGE_TO_EXCLUDE, g) for g in groups
    ]
    assert [r.type for r in mld.leave(groups).records] == [mld.RecordType.CHANGE_TO_INCLUDE] * 2


def test_malformed_mld() -> None:
    one = mld.emit(mld.join([ipv6.solicited_node(A)]), A, ipv6.ALL_MLDV2_ROUTERS)
    cases = [
        (mld.emit(mld.join([ipv6.solicited_node(A)]), GLOBAL, ipv6.ALL_MLDV2_ROUTERS), GLOBAL),
        (icmpv6.emit(icmpv6.Icmpv6Header(143, 0, 2), one[8:], A, ipv6.ALL_MLDV2_ROUTERS), A),
        (icmpv6.emit(icmpv6.Icmpv6Header(143, 0, 1), one[8:-1], A, ipv6.ALL_MLDV2_ROUTERS), A),
        (
            icmpv6.emit(
                icmpv6.Icmpv6Header(143, 0, 1),
                b"\x04\x00\x00\x00" + A.packed,
                A,
                ipv6.ALL_MLDV2_ROUTERS,
            ),
            A,
        ),
        (icmpv6.emit(icmpv6.Icmpv6Header(130, 0), bytes(18), A, ipv6.ALL_MLDV2_ROUTERS), A),
        (
            icmpv6.emit(
                icmpv6.Icmpv6Header(130, 0), bytes(18) + b"\x00\x05", A, ipv6.ALL_MLDV2_ROUTERS
            ),
            A,
        ),
    ]
    for message, source in cases:
        with pytest.raises(Malformed):
            mld.parse(message, source, ipv6.ALL_MLDV2_ROUTERS)


def _nd_header(data: bytes) -> icmpv6.Icmpv6Header:
    """One of the five ND types, chosen by the first byte."""
    return icmpv6.Icmpv6Header(133 + (data[0] % 5 if data else 0), 0)


PARSERS: list[tuple[str, Callable[[bytes], Any]]] = [
    ("ipv6", ipv6.parse),
    ("ipv6-chain", lambda b: ipv6.walk(b[0] if b else 0, b[1:])),
    ("ipv6-chain-dstopts", lambda b: ipv6.walk(60, b)),
    ("icmpv6", lambda b: icmpv6.parse(b, A, B)),
    ("nd", lambda b: ndp.decode(_nd_header(b), memoryview(b[1:]), A, B)),
    (
        "mld-report",
        lambda b: mld.decode(icmpv6.Icmpv6Header(143, 0, b[0] if b else 0), memoryview(b[1:]), A),
    ),
    ("mld-query", lambda b: mld.decode(icmpv6.Icmpv6Header(130, 0), memoryview(b), A)),
    ("nd-from-unspecified", lambda b: ndp.decode(_nd_header(b), memoryview(b[1:]), UNSPECIFIED, B)),
]


@pytest.mark.parametrize(("name", "parse"), PARSERS, ids=[name for name, _ in PARSERS])
@settings(max_examples=300)
@given(data=st.binary(max_size=600))
def test_parsers_raise_only_malformed(
    name: str, parse: Callable[[bytes], Any], data: bytes
) -> None:
    try:
        parse(data)
    except Malformed:
        pass
