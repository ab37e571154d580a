"""Multicast Listener Discovery version 2 (RFC 3810): listener reports, and
queries (MLDv1 and MLDv2 forms) to answer.

A node joins its solicited-node groups by sending a report to ff02::16 with
hop limit 1 and a hop-by-hop Router Alert option (:func:`emit_packet`).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address

from looming.errors import Malformed
from looming.net.wire import icmpv6, ipv6
from looming.net.wire.icmpv6 import Icmpv6Header, Icmpv6Type
from looming.net.wire.ipv6 import ipv6_address

HOP_LIMIT = 1
ROUTER_ALERT_MLD = b"\x00\x00"  # Router Alert option value 0: MLD (RFC 2711)
_RECORD = struct.Struct("!BBH16s")
_QUERY_V2 = struct.Struct("!16sBBH")

_Buffer = bytes | bytearray | memoryview


class RecordType(enum.IntEnum):
    MODE_IS_INCLUDE = 1
    MODE_IS_EXCLUDE = 2
    CHANGE_TO_INCLUDE = 3
    CHANGE_TO_EXCLUDE = 4
    ALLOW_NEW_SOURCES = 5
    BLOCK_OLD_SOURCES = 6


@dataclass(frozen=True, slots=True)
class AddressRecord:
    """Listening to ``group``: joining with no source filter is
    CHANGE_TO_EXCLUDE with no sources; leaving is CHANGE_TO_INCLUDE with
    none.  ``auxiliary`` is a multiple of 4 bytes."""

    type: int
    group: IPv6Address
    sources: tuple[IPv6Address, ...] = ()
    auxiliary: bytes = b""


@dataclass(frozen=True, slots=True)
class Report:
    records: tuple[AddressRecord, ...]


@dataclass(frozen=True, slots=True)
class Query:
    """``group`` is :: for a general query.  An MLDv1 query (24 bytes) has
    ``version`` 1 and no sources; ``maximum_response_code`` is in ms for
    MLDv1 and the RFC 3810 5.1.3 code for MLDv2."""

    maximum_response_code: int
    group: IPv6Address
    version: int = 2
    suppress_router_processing: bool = False
    robustness: int = 2
    query_interval_code: int = 125
    sources: tuple[IPv6Address, ...] = ()


def join(groups: Iterable[IPv6Address]) -> Report:
    """The report a node sends when it starts listening to ``groups``."""
    return Report(tuple(AddressRecord(RecordType.CHANGE_TO_EXCLUDE, group) for group in groups))


def leave(groups: Iterable[IPv6Address]) -> Report:
    return Report(tuple(AddressRecord(RecordType.CHANGE_TO_INCLUDE, group) for group in groups))


def parse(buf: _Buffer, source: IPv6Address, destination: IPv6Address) -> Report | Query:
    """One MLD report or query, checksum verified.  RFC 3810 section 5:
    messages from a source that is neither link-local nor (for reports)
    :: are refused."""
    header, body = icmpv6.parse(buf, source, destination)
    return decode(header, body, source)


def decode(header: Icmpv6Header, body: memoryview, source: IPv6Address) -> Report | Query:
    if header.type == Icmpv6Type.MULTICAST_LISTENER_REPORT_V2:
        if not (source.is_link_local or source.is_unspecified):
            raise Malformed(f"MLDv2 report from {source}, neither link-local nor ::")
        return Report(_parse_records(body, header.rest & 0xFFFF))
    if header.type == Icmpv6Type.MULTICAST_LISTENER_QUERY:
        if not source.is_link_local:
            raise Malformed(f"MLD query from {source}, not link-local")
        return _parse_query(header, body)
    raise Malformed(f"ICMPv6 type {header.type} is not an MLD report or query")


def _parse_records(body: memoryview, count: int) -> tuple[AddressRecord, ...]:
    records: list[AddressRecord] = []
    offset = 0
    for _ in range(count):
        if offset + _RECORD.size > len(body):
            raise Malformed(f"MLDv2 report announces {count} records but holds fewer")
        kind, auxiliary_words, source_count, group = _RECORD.unpack_from(body, offset)
        offset += _RECORD.size
        end = offset + 16 * source_count + 4 * auxiliary_words
        if end > len(body):
            raise Malformed("MLDv2 address record runs past the report")
        group_address = ipv6_address(group)
        if not group_address.is_multicast:
            raise Malformed(f"MLDv2 record for {group_address}, not a multicast group")
        sources = _addresses(body, offset, source_count)
        offset += 16 * source_count
        records.append(AddressRecord(kind, group_address, sources, bytes(body[offset:end])))
        offset = end
    return tuple(records)


def _addresses(body: memoryview, offset: int, count: int) -> tuple[IPv6Address, ...]:
    return tuple(
        ipv6_address(bytes(body[i : i + 16])) for i in range(offset, offset + 16 * count, 16)
    )


def _parse_query(header: Icmpv6Header, body: memoryview) -> Query:
    if header.code != 0:
        raise Malformed(f"MLD query with code {header.code}")
    maximum = header.rest >> 16
    if len(body) == 16:
        return Query(
            maximum, ipv6_address(bytes(body)), version=1, robustness=0, query_interval_code=0
        )
    if len(body) < _QUERY_V2.size:
        raise Malformed(f"MLD query of {len(body) + 8} bytes: neither 24 nor at least 28")
    group, flags, interval, count = _QUERY_V2.unpack_from(body)
    if _QUERY_V2.size + 16 * count > len(body):
        raise Malformed(f"MLDv2 query announces {count} sources but holds fewer")
    group_address = ipv6_address(group)
    if not (group_address.is_unspecified or group_address.is_multicast):
        raise Malformed(f"MLD query for {group_address}, not a multicast group")
    return Query(
        maximum,
        group_address,
        2,
        bool(flags & 0x08),
        flags & 0x07,
        interval,
        _addresses(body, _QUERY_V2.size, count),
    )


def emit(message: Report | Query, source: IPv6Address, destination: IPv6Address) -> bytes:
    """The ICMPv6 message, checksummed for these addresses."""
    if isinstance(message, Query):
        return _emit_query(message, source, destination)
    if len(message.records) > 0xFFFF:
        raise ValueError(f"{len(message.records)} MLDv2 records do not fit one report")
    body = bytearray()
    for record in message.records:
        if len(record.auxiliary) % 4 or len(record.auxiliary) > 255 * 4:
            raise ValueError("MLDv2 auxiliary data must be 4k bytes, at most 1020")
        body += _RECORD.pack(
            record.type, len(record.auxiliary) // 4, len(record.sources), record.group.packed
        )
        body += b"".join(address.packed for address in record.sources) + record.auxiliary
    header = Icmpv6Header(Icmpv6Type.MULTICAST_LISTENER_REPORT_V2, 0, len(message.records))
    return icmpv6.emit(header, body, source, destination)


def _emit_query(query: Query, source: IPv6Address, destination: IPv6Address) -> bytes:
    header = Icmpv6Header(Icmpv6Type.MULTICAST_LISTENER_QUERY, 0, query.maximum_response_code << 16)
    if query.version == 1:
        return icmpv6.emit(header, query.group.packed, source, destination)
    flags = query.suppress_router_processing << 3 | query.robustness & 0x07
    body = _QUERY_V2.pack(query.group.packed, flags, query.query_interval_code, len(query.sources))
    body += b"".join(address.packed for address in query.sources)
    return icmpv6.emit(header, body, source, destination)


def emit_packet(report: Report, source: IPv6Address) -> bytes:
    """The whole IPv6 packet for a report: to ff02::16, hop limit 1, with
    the hop-by-hop Router Alert that RFC 3810 section 5 requires."""
    router_alert = ipv6.Option(ipv6.OptionType.ROUTER_ALERT, ROUTER_ALERT_MLD)
    hop_by_hop = ipv6.OptionsHeader(
        ipv6.NextHeader.HOP_BY_HOP, ipv6.NextHeader.ICMPV6, (router_alert,)
    )
    message = emit(report, source, ipv6.ALL_MLDV2_ROUTERS)
    header = ipv6.Ipv6Header(
        source, ipv6.ALL_MLDV2_ROUTERS, ipv6.NextHeader.HOP_BY_HOP, hop_limit=HOP_LIMIT
    )
    return ipv6.emit(header, ipv6.emit_extension(hop_by_hop) + message)


def has_router_alert(chain: ipv6.Chain) -> bool:
    """Whether a walked chain carries the MLD Router Alert, which a
    receiver of MLD messages checks with the hop limit of 1."""
    return any(
        isinstance(header, ipv6.OptionsHeader)
        and header.kind == ipv6.NextHeader.HOP_BY_HOP
        and ipv6.Option(ipv6.OptionType.ROUTER_ALERT, ROUTER_ALERT_MLD) in header.options
        for header in chain.headers
    )
