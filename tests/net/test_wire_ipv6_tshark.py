"""tshark (Wireshark's dissectors, written by no one here) decodes a pcap of
the IPv6, ICMPv6, Neighbor Discovery and MLDv2 frames looming emits: every
checksum good, no malformed packet, and the fields it reads are the ones
looming wrote."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from ipaddress import IPv6Address
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.devices.net import MacAddress
from looming.net.wire import ethernet, icmpv6, ipv6, mld, ndp
from tests.net.test_wire_ipv6 import chains, link_local, mld_records, nd_messages

pytestmark = pytest.mark.skipif(
    shutil.which("tshark") is None, reason="tshark is installed by scripts/system-deps.sh"
)

GOOD, BAD = "1", "0"  # Wireshark's checksum status values
SOURCE_MAC = MacAddress("02:00:00:00:00:01")
FIELDS = [
    "icmpv6.type",
    "icmpv6.checksum.status",
    "_ws.malformed",
    "icmpv6.nd.ns.target_address",
    "icmpv6.nd.na.target_address",
    "icmpv6.nd.rd.target_address",
    "icmpv6.nd.ra.router_lifetime",
    "icmpv6.opt.type",
    "icmpv6.opt.linkaddr",
    "icmpv6.opt.prefix",
    "icmpv6.opt.mtu",
    "icmpv6.opt.rdnss",
    "icmpv6.mldr.mar.multicast_address",
    "icmpv6.mldr.mar.record_type",
    "ipv6.nxt",
    "ipv6.hopopts.nxt",
    "ipv6.dstopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.fraghdr.ident",
    "ipv6.routing.type",
]
NEXT_HEADER_FIELDS = {
    0: "ipv6.hopopts.nxt",
    60: "ipv6.dstopts.nxt",
    43: "ipv6.routing.nxt",
    44: "ipv6.fraghdr.nxt",
}


def frame(packet: bytes, destination: IPv6Address) -> bytes:
    mac = ipv6.multicast_mac(destination) if destination.is_multicast else SOURCE_MAC
    header = ethernet.EthernetHeader(mac, SOURCE_MAC, 0x86DD)
    return ethernet.emit(header, packet)


def decode(frames: list[bytes], tmp_path: Path) -> list[dict[str, list[str]]]:
    capture = tmp_path / "ipv6.pcap"
    with capture.open("wb") as handle:
        writer = dpkt.pcap.Writer(handle)
        for index, data in enumerate(frames):
            writer.writepkt(data, ts=index)
    arguments = ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;"]
    for field in FIELDS:
        arguments += ["-e", field]
    # Wireshark reassembles fragments by default: keep each one as sent.
    options = ["-o", "ipv6.defragment:FALSE"]
    output = subprocess.run(
        ["tshark", "-n", *options, "-r", str(capture), *arguments],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in output.splitlines()]
    assert len(rows) == len(frames)
    return [
        {name: value.split(";") if value else [] for name, value in zip(FIELDS, row, strict=True)}
        for row in rows
    ]


def expected_options(message: ndp.NdMessage) -> dict[str, list[str]]:
    kinds, macs, prefixes, mtus, servers = [], [], [], [], []
    for option in message.options:
        encoded = ndp.emit_options([option])
        kinds.append(str(encoded[0]))
        if isinstance(option, ndp.SourceLinkLayerAddress | ndp.TargetLinkLayerAddress):
            macs.append(str(option.mac))
        elif isinstance(option, ndp.PrefixInformation):
            prefixes.append(str(option.prefix))
        elif isinstance(option, ndp.Mtu):
            mtus.append(str(option.mtu))
        elif isinstance(option, ndp.RecursiveDnsServers):
            servers += [str(server) for server in option.servers]
    return {
        "icmpv6.opt.type": kinds,
        "icmpv6.opt.linkaddr": macs,
        "icmpv6.opt.prefix": prefixes,
        "icmpv6.opt.mtu": mtus,
        "icmpv6.opt.rdnss": servers,
    }


def target_field(message: ndp.NdMessage) -> str | None:
    if isinstance(message, ndp.NeighborSolicitation):
        return "icmpv6.nd.ns.target_address"
    if isinstance(message, ndp.NeighborAdvertisement):
        return "icmpv6.nd.na.target_address"
    if isinstance(message, ndp.Redirect):
        return "icmpv6.nd.rd.target_address"
    return None


def interpreted_only(message: ndp.NdMessage) -> ndp.NdMessage:
    """Without the options Wireshark would read as something else: random
    unknown types collide with SEND and 6LoWPAN options, and a redirected
    header of arbitrary bytes is no IPv6 packet."""
    kept = tuple(
        option
        for option in message.options
        if not isinstance(option, ndp.UnknownOption | ndp.RedirectedHeader)
    )
    return dataclasses.replace(message, options=kept)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(
        st.tuples(nd_messages.map(interpreted_only), link_local), min_size=30, max_size=30
    )
)
def test_tshark_decodes_neighbor_discovery(
    messages: list[tuple[ndp.NdMessage, IPv6Address]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    destination = ipv6.ALL_NODES
    frames = []
    for message, source in messages:
        packet = ndp.emit(message, source, destination)
        header = ipv6.Ipv6Header(source, destination, 58, hop_limit=ndp.HOP_LIMIT)
        frames.append(frame(ipv6.emit(header, packet), destination))
    # A control: the same first frame with its checksum broken must be seen
    # as bad, or "good" above would prove nothing.
    broken = bytearray(frames[0])
    broken[14 + 40 + 2] ^= 0xFF
    *decoded, control = decode([*frames, bytes(broken)], tmp_path_factory.mktemp("nd"))
    assert control["icmpv6.checksum.status"] == [BAD]
    for (message, _), row in zip(messages, decoded, strict=True):
        assert row["_ws.malformed"] == [], (message, row)
        assert row["icmpv6.checksum.status"] == [GOOD], (message, row)
        assert row["icmpv6.type"] == [str(ndp.emit(message, A, B)[0])]
        if (field := target_field(message)) is not None:
            assert [IPv6Address(a) for a in row[field]] == [message.target]  # type: ignore[union-attr]
        if isinstance(message, ndp.RouterAdvertisement):
            assert row["icmpv6.nd.ra.router_lifetime"] == [str(message.router_lifetime)]
        for name, values in expected_options(message).items():
            got = row[name]
            if name in ("icmpv6.opt.prefix", "icmpv6.opt.rdnss"):
                got = [str(IPv6Address(a)) for a in got]
            assert got == values, (name, message, row)


A = IPv6Address("fe80::1")
B = IPv6Address("fe80::2")


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reports=st.lists(st.lists(mld_records, min_size=1, max_size=4), min_size=10, max_size=10),
    chain_list=st.lists(
        chains().map(lambda c: [experimental(h) for h in c]), min_size=20, max_size=20
    ),
)
def test_tshark_decodes_mld_reports_echo_and_extension_chains(
    reports: list[list[mld.AddressRecord]],
    chain_list: list[list[ipv6.ExtensionHeader]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    frames = [
        frame(mld.emit_packet(mld.Report(tuple(records)), A), ipv6.ALL_MLDV2_ROUTERS)
        for records in reports
    ]
    echoes = []
    for index, chain in enumerate(chain_list):
        # An echo request behind each chain; behind a fragment header sits
        # the first fragment of one (offset 0) or raw bytes.
        relinked = [*chain[:-1], _ending_in_icmpv6(chain[-1])] if chain else []
        echo = icmpv6.emit(icmpv6.Icmpv6Header.echo(128, 7, index), b"looming", A, B)
        first = ipv6.kind_of(relinked[0]) if relinked else 58
        packet = ipv6.emit(ipv6.Ipv6Header(A, B, first), ipv6.emit_chain(relinked) + echo)
        frames.append(frame(packet, B))
        echoes.append(relinked)
    decoded = decode(frames, tmp_path_factory.mktemp("mld"))
    for records, row in zip(reports, decoded[: len(reports)], strict=True):
        assert row["_ws.malformed"] == []
        assert row["icmpv6.checksum.status"] == [GOOD]
        groups = row["icmpv6.mldr.mar.multicast_address"]
        assert [IPv6Address(g) for g in groups] == [r.group for r in records]
        assert row["icmpv6.mldr.mar.record_type"] == [str(r.type) for r in records]
    for chain, row in zip(echoes, decoded[len(reports) :], strict=True):
        assert row["_ws.malformed"] == [], (chain, row)
        assert row["ipv6.nxt"] == [str(ipv6.kind_of(chain[0]) if chain else 58)]
        for kind, name in NEXT_HEADER_FIELDS.items():
            expected = [str(h.next_header) for h in chain if ipv6.kind_of(h) == kind]
            assert row[name] == expected, (chain, row)
        fragment = chain[-1] if chain and isinstance(chain[-1], ipv6.FragmentHeader) else None
        if fragment is None or fragment.offset == 0:
            assert row["icmpv6.type"] == ["128"], (chain, row)
        if fragment is None or fragment.is_atomic:
            # Wireshark verifies no checksum inside a fragment it has not
            # reassembled.
            assert row["icmpv6.checksum.status"] == [GOOD], (chain, row)
        if fragment is not None:
            assert row["ipv6.fraghdr.ident"] == [f"0x{fragment.identification:08x}"]


def _ending_in_icmpv6(last: ipv6.ExtensionHeader) -> ipv6.ExtensionHeader:
    return dataclasses.replace(last, next_header=58)


def experimental(header: ipv6.ExtensionHeader) -> ipv6.ExtensionHeader:
    """The header with its option and routing types moved to the values RFC
    4727 sets aside for experiments (keeping each option's action bits), so
    that Wireshark does not read random bytes as a Jumbo Payload, a Home
    Address or a segment list."""
    if isinstance(header, ipv6.RoutingHeader):
        return dataclasses.replace(header, routing_type=253 + header.routing_type % 2)
    if isinstance(header, ipv6.OptionsHeader):
        options = tuple(ipv6.Option(0x1E | o.type & 0xE0, o.data) for o in header.options)
        return dataclasses.replace(header, options=options)
    return header
