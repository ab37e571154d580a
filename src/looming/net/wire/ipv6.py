"""IPv6 headers (RFC 8200) and their extension-header chain.

:func:`parse` splits the fixed 40-byte header from what follows;
:func:`walk` then walks the extension headers (hop-by-hop options, routing,
fragment, destination options) up to the upper-layer protocol, bounded in
count and bytes so that a hostile chain costs a fixed amount of work.  A
problem the receiver must answer with an ICMPv6 Parameter Problem raises
:class:`ExtensionHeaderProblem`, a :class:`~looming.errors.Malformed` that
carries the code and pointer the answer needs.

Also here: the IPv6 pseudo-header sum (RFC 8200 section 8.1), solicited-node
multicast addresses (RFC 4291 section 2.7.1) and the Ethernet multicast
mapping (RFC 2464 section 7).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address

from looming.bounded import Memo
from looming.devices.net import MacAddress
from looming.errors import Malformed

HEADER_LENGTH = 40
MAX_PAYLOAD_LENGTH = 65535
# A chain longer than this is refused.  RFC 8200's recommended order has at
# most six extension headers; RFC 7112 wants the whole chain inside the
# first fragment, which on a minimum-MTU link leaves 1280 - 40 bytes.
MAX_EXTENSION_HEADERS = 8
MAX_CHAIN_LENGTH = 1240

_FIXED = struct.Struct("!IHBB16s16s")
_FRAGMENT = struct.Struct("!BBHI")

_Buffer = bytes | bytearray | memoryview


class NextHeader(enum.IntEnum):
    """Next Header values this module knows."""

    HOP_BY_HOP = 0
    TCP = 6
    UDP = 17
    ROUTING = 43
    FRAGMENT = 44
    ESP = 50
    AUTHENTICATION = 51
    ICMPV6 = 58
    NO_NEXT_HEADER = 59
    DESTINATION_OPTIONS = 60


class OptionType(enum.IntEnum):
    PAD1 = 0
    PADN = 1
    JUMBO_PAYLOAD = 0xC2
    ROUTER_ALERT = 5


class UnrecognisedOption(enum.IntEnum):
    """What a node does with an option it does not know: the two high bits
    of its type (RFC 8200 section 4.2)."""

    SKIP = 0
    DISCARD = 1
    DISCARD_AND_REPORT = 2
    DISCARD_AND_REPORT_UNLESS_MULTICAST = 3


class ExtensionHeaderProblem(Malformed):
    """A chain the receiver drops and answers with an ICMPv6 Parameter
    Problem: ``code`` (0 erroneous field, 1 unrecognised Next Header) and
    ``pointer``, the offset of the bad byte from the start of the IPv6
    header."""

    def __init__(self, message: str, code: int, pointer: int) -> None:
        super().__init__(message)
        self.code = code
        self.pointer = pointer


_ipv6: Memo[bytes, IPv6Address] = Memo(4096)
_ipv6_get = _ipv6.get
_ipv6_put = _ipv6.put


def ipv6_address(raw: bytes) -> IPv6Address:
    """The address for 16 bytes in network order, memoised like IPv4's
    (bounded: emptied when full; a hit is one dict lookup)."""
    address = _ipv6_get(raw)
    if address is None:
        address = _ipv6_put(raw, IPv6Address(raw))
    return address


@dataclass(frozen=True, slots=True)
class Ipv6Header:
    """The fixed IPv6 header; the payload length is the payload's."""

    source: IPv6Address
    destination: IPv6Address
    next_header: int
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0


def parse(buf: _Buffer) -> tuple[Ipv6Header, memoryview]:
    """Check and split one IPv6 packet; link-layer padding after the payload
    length is dropped.  Jumbograms (payload length 0 with a Jumbo Payload
    option) are not supported: the payload is then empty."""
    view = memoryview(buf)
    if len(view) < HEADER_LENGTH:
        raise Malformed(f"IPv6 packet of {len(view)} bytes is shorter than a header")
    first, payload_length, next_header, hop_limit, source, destination = _FIXED.unpack_from(view)
    if first >> 28 != 6:
        raise Malformed(f"IP version {first >> 28}, expected 6")
    if HEADER_LENGTH + payload_length > len(view):
        raise Malformed(
            f"IPv6 payload length {payload_length} exceeds the {len(view) - 40} bytes received"
        )
    header = Ipv6Header(
        ipv6_address(source),
        ipv6_address(destination),
        next_header,
        hop_limit,
        (first >> 20) & 0xFF,
        first & 0xFFFFF,
    )
    return header, view[HEADER_LENGTH : HEADER_LENGTH + payload_length]


def emit_header(header: Ipv6Header, payload_length: int) -> bytes:
    """The 40 header bytes for a payload of this length."""
    if payload_length > MAX_PAYLOAD_LENGTH:
        raise ValueError(f"IPv6 payload of {payload_length} bytes exceeds 65535 (no jumbograms)")
    if not 0 <= header.flow_label <= 0xFFFFF:
        raise ValueError(f"flow label {header.flow_label} does not fit 20 bits")
    first = 6 << 28 | header.traffic_class << 20 | header.flow_label
    return _FIXED.pack(
        first,
        payload_length,
        header.next_header,
        header.hop_limit,
        header.source.packed,
        header.destination.packed,
    )


def emit(header: Ipv6Header, payload: _Buffer) -> bytes:
    return emit_header(header, len(payload)) + bytes(payload)


def pseudo_header_sum(src: IPv6Address, dst: IPv6Address, protocol: int, length: int) -> int:
    """The uninverted sum of the IPv6 pseudo-header (RFC 8200 section 8.1)
    that TCP, UDP and ICMPv6 checksums cover, to pass as ``initial`` to
    :func:`~looming.net.wire.checksum.internet_checksum`."""
    # 2**16 = 1 (mod 0xFFFF): a 128-bit address is congruent to the sum of
    # its eight 16-bit words, and so is the 32-bit length to its two.
    total = int(src) + int(dst) + length + protocol
    folded = total % 0xFFFF
    return 0xFFFF if folded == 0 and total else folded


# --- extension headers -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """A TLV option of a hop-by-hop or destination options header (padding
    is not kept: :func:`emit_extension` pads)."""

    type: int
    data: bytes = b""

    @property
    def unrecognised_action(self) -> UnrecognisedOption:
        return UnrecognisedOption(self.type >> 6)

    @property
    def may_change_en_route(self) -> bool:
        return bool(self.type & 0x20)


@dataclass(frozen=True, slots=True)
class OptionsHeader:
    """Hop-by-hop options (``kind`` 0) or destination options (``kind`` 60)."""

    kind: int
    next_header: int
    options: tuple[Option, ...] = ()


@dataclass(frozen=True, slots=True)
class RoutingHeader:
    """A routing header; ``data`` is what follows Segments Left (4 bytes
    plus a multiple of 8).  looming implements no routing type."""

    next_header: int
    routing_type: int
    segments_left: int
    data: bytes = bytes(4)


@dataclass(frozen=True, slots=True)
class FragmentHeader:
    """``offset`` is in bytes (a multiple of 8)."""

    next_header: int
    offset: int
    more_fragments: bool
    identification: int

    @property
    def is_atomic(self) -> bool:
        """Offset 0 and no more fragments (RFC 6946): a whole packet."""
        return self.offset == 0 and not self.more_fragments


ExtensionHeader = OptionsHeader | RoutingHeader | FragmentHeader
EXTENSION_KINDS = frozenset({0, 43, 44, 60})


def parse_options(data: memoryview, base: int) -> tuple[Option, ...]:
    """The TLV options in ``data`` (the header after its first two bytes),
    padding dropped; ``base`` is data's offset in the packet, for pointers."""
    options: list[Option] = []
    offset = 0
    while offset < len(data):
        kind = data[offset]
        if kind == OptionType.PAD1:
            offset += 1
            continue
        if offset + 2 > len(data) or offset + 2 + data[offset + 1] > len(data):
            raise ExtensionHeaderProblem(
                f"IPv6 option {kind} runs past its header", 0, base + offset + 1
            )
        end = offset + 2 + data[offset + 1]
        if kind != OptionType.PADN:
            options.append(Option(kind, bytes(data[offset + 2 : end])))
        offset = end
    return tuple(options)


def _emit_options(options: Iterable[Option]) -> bytes:
    body = bytearray()
    for option in options:
        if option.type in (OptionType.PAD1, OptionType.PADN):
            raise ValueError("padding options are added by emit_extension, not given")
        if len(option.data) > 255:
            raise ValueError(f"IPv6 option data of {len(option.data)} bytes exceeds 255")
        body += bytes((option.type, len(option.data))) + option.data
    pad = -(len(body) + 2) % 8
    if pad == 1:
        body.append(OptionType.PAD1)
    elif pad:
        body += bytes((OptionType.PADN, pad - 2)) + bytes(pad - 2)
    return bytes(body)


def emit_extension(header: ExtensionHeader) -> bytes:
    """The bytes of one extension header."""
    if isinstance(header, FragmentHeader):
        if header.offset % 8 or not 0 <= header.offset <= 0x1FFF * 8:
            raise ValueError(f"fragment offset {header.offset} is not a multiple of 8 below 65536")
        word = header.offset | int(header.more_fragments)
        return _FRAGMENT.pack(header.next_header, 0, word, header.identification)
    if isinstance(header, RoutingHeader):
        body = bytes((header.routing_type, header.segments_left)) + header.data
    else:
        if header.kind not in (NextHeader.HOP_BY_HOP, NextHeader.DESTINATION_OPTIONS):
            raise ValueError(f"options header kind {header.kind} is neither 0 nor 60")
        body = _emit_options(header.options)
    if (len(body) + 2) % 8 or len(body) + 2 > 2048:
        raise ValueError(f"extension header of {len(body) + 2} bytes: not 8k bytes up to 2048")
    return bytes((header.next_header, (len(body) + 2) // 8 - 1)) + body


def emit_chain(headers: Iterable[ExtensionHeader]) -> bytes:
    return b"".join(emit_extension(header) for header in headers)


def kind_of(header: ExtensionHeader) -> int:
    """The Next Header value that announces ``header``."""
    if isinstance(header, FragmentHeader):
        return NextHeader.FRAGMENT
    if isinstance(header, RoutingHeader):
        return NextHeader.ROUTING
    return header.kind


@dataclass(frozen=True, slots=True)
class Chain:
    """The extension headers walked, and where the upper layer starts:
    ``protocol`` is the last Next Header (59 means nothing follows).  When
    the chain holds a fragment header the walk stops after it: what
    follows is a fragment, to be walked again after reassembly."""

    headers: tuple[ExtensionHeader, ...]
    protocol: int
    payload: memoryview

    @property
    def fragment(self) -> FragmentHeader | None:
        last = self.headers[-1] if self.headers else None
        return last if isinstance(last, FragmentHeader) else None


def walk(next_header: int, payload: _Buffer, base: int = HEADER_LENGTH) -> Chain:
    """Walk the extension headers at the start of ``payload`` (announced by
    ``next_header``).  ``base`` is payload's offset in the packet, for the
    pointers of :class:`ExtensionHeaderProblem`.

    Refused: a hop-by-hop header anywhere but first (RFC 8200 section 4.3),
    a routing header of a type looming does not implement with segments
    left, among them type 0 (RFC 5095), a header or option running past the
    payload, more than MAX_EXTENSION_HEADERS headers or MAX_CHAIN_LENGTH
    bytes of them."""
    view = memoryview(payload)
    headers: list[ExtensionHeader] = []
    offset = 0
    # The Next Header field that announced the current header, for pointers.
    announced_at = 6 - base
    while next_header in EXTENSION_KINDS:
        if next_header == NextHeader.HOP_BY_HOP and headers:
            raise ExtensionHeaderProblem(
                "IPv6 hop-by-hop options header not first", 1, base + announced_at
            )
        if len(headers) >= MAX_EXTENSION_HEADERS:
            raise Malformed(f"IPv6 chain of more than {MAX_EXTENSION_HEADERS} extension headers")
        if offset + 8 > len(view):
            raise Malformed("IPv6 extension header chain runs past the packet")
        length = 8 if next_header == NextHeader.FRAGMENT else (view[offset + 1] + 1) * 8
        if offset + length > len(view):
            raise Malformed(f"IPv6 extension header of {length} bytes runs past the packet")
        if offset + length > MAX_CHAIN_LENGTH:
            raise Malformed(f"IPv6 extension headers longer than {MAX_CHAIN_LENGTH} bytes")
        header = _parse_extension(next_header, view[offset : offset + length], base + offset)
        headers.append(header)
        announced_at = offset
        offset += length
        next_header = header.next_header
        if isinstance(header, FragmentHeader):
            break
    return Chain(tuple(headers), next_header, view[offset:])


def _parse_extension(kind: int, data: memoryview, base: int) -> ExtensionHeader:
    if kind == NextHeader.FRAGMENT:
        next_header, _reserved, word, identification = _FRAGMENT.unpack_from(data)
        return FragmentHeader(next_header, word & 0xFFF8, bool(word & 1), identification)
    if kind == NextHeader.ROUTING:
        routing_type, segments_left = data[2], data[3]
        if segments_left:
            # RFC 8200 section 4.4 for an unrecognised type; RFC 5095 puts
            # type 0 among them.
            raise ExtensionHeaderProblem(
                f"IPv6 routing header type {routing_type} with {segments_left} segments left",
                0,
                base + 2,
            )
        return RoutingHeader(data[0], routing_type, segments_left, bytes(data[4:]))
    return OptionsHeader(kind, data[0], parse_options(data[2:], base + 2))


# --- addresses ---------------------------------------------------------------

ALL_NODES = IPv6Address("ff02::1")
ALL_ROUTERS = IPv6Address("ff02::2")
ALL_MLDV2_ROUTERS = IPv6Address("ff02::16")
UNSPECIFIED = IPv6Address("::")
_SOLICITED_NODE_PREFIX = int(IPv6Address("ff02::1:ff00:0"))


def solicited_node(address: IPv6Address) -> IPv6Address:
    """The solicited-node multicast group of ``address``: ff02::1:ffXX:XXXX
    with its low 24 bits."""
    return IPv6Address(_SOLICITED_NODE_PREFIX | int(address) & 0xFFFFFF)


def is_solicited_node(address: IPv6Address) -> bool:
    return int(address) & ~0xFFFFFF == _SOLICITED_NODE_PREFIX


def multicast_mac(address: IPv6Address) -> MacAddress:
    """The Ethernet destination for an IPv6 multicast group: 33:33 and the
    group's low 32 bits."""
    if not address.is_multicast:
        raise ValueError(f"{address} is not a multicast address")
    return MacAddress(b"\x33\x33" + address.packed[12:])


def link_local_from_mac(mac: MacAddress) -> IPv6Address:
    """fe80:: with the modified EUI-64 interface identifier of ``mac``
    (RFC 4291 appendix A)."""
    identifier = bytes((mac[0] ^ 0x02,)) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return IPv6Address(b"\xfe\x80" + bytes(6) + identifier)
