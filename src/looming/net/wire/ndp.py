"""Neighbor Discovery messages and options (RFC 4861, RDNSS from RFC 8106).

:func:`parse` takes one ICMPv6 message with the addresses of the IPv6
header that carried it and applies the validity checks of RFC 4861
sections 6.1, 7.1 and 8.1 that need nothing but the packet; the hop limit
of 255 (proof that the sender is on-link) is checked when the caller passes
the hop limit, as the IPv6 layer does.  Link-layer address options are
Ethernet's (RFC 2464): 6 bytes in an 8-byte option.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv6Address

from looming.devices.net import MacAddress
from looming.errors import Malformed
from looming.net.wire import icmpv6
from looming.net.wire.icmpv6 import Icmpv6Header, Icmpv6Type
from looming.net.wire.ipv6 import ipv6_address, is_solicited_node

HOP_LIMIT = 255
# A message with more options than this is refused: a full 1500-byte RA
# holds fewer than 190 8-byte options, and none that looming sends needs 20.
MAX_OPTIONS = 64

_RA_BODY = struct.Struct("!II")
_PREFIX = struct.Struct("!BBIII16s")

_Buffer = bytes | bytearray | memoryview


class OptionType:
    SOURCE_LINK_LAYER_ADDRESS = 1
    TARGET_LINK_LAYER_ADDRESS = 2
    PREFIX_INFORMATION = 3
    REDIRECTED_HEADER = 4
    MTU = 5
    RECURSIVE_DNS_SERVER = 25


@dataclass(frozen=True, slots=True)
class SourceLinkLayerAddress:
    mac: MacAddress


@dataclass(frozen=True, slots=True)
class TargetLinkLayerAddress:
    mac: MacAddress


@dataclass(frozen=True, slots=True)
class PrefixInformation:
    """Lifetimes in seconds (0xFFFFFFFF is infinity)."""

    prefix: IPv6Address
    prefix_length: int
    on_link: bool
    autonomous: bool
    valid_lifetime: int
    preferred_lifetime: int


@dataclass(frozen=True, slots=True)
class Mtu:
    mtu: int


@dataclass(frozen=True, slots=True)
class RecursiveDnsServers:
    lifetime: int
    servers: tuple[IPv6Address, ...]


@dataclass(frozen=True, slots=True)
class RedirectedHeader:
    """As much of the redirected packet as fits; ``data`` is padded to a
    multiple of 8 bytes when emitted."""

    data: bytes


@dataclass(frozen=True, slots=True)
class UnknownOption:
    """An option looming does not interpret (RFC 4861 says: ignore it);
    ``data`` excludes type and length and is a multiple of 8 minus 2."""

    type: int
    data: bytes


NdOption = (
    SourceLinkLayerAddress
    | TargetLinkLayerAddress
    | PrefixInformation
    | Mtu
    | RecursiveDnsServers
    | RedirectedHeader
    | UnknownOption
)


@dataclass(frozen=True, slots=True)
class RouterSolicitation:
    options: tuple[NdOption, ...] = ()


@dataclass(frozen=True, slots=True)
class RouterAdvertisement:
    """``router_lifetime`` in seconds; ``reachable_time`` and
    ``retransmit_timer`` in milliseconds (0: unspecified)."""

    current_hop_limit: int = 64
    managed: bool = False
    other: bool = False
    router_lifetime: int = 1800
    reachable_time: int = 0
    retransmit_timer: int = 0
    options: tuple[NdOption, ...] = ()
    preference: int = 0  # RFC 4191: 1 high, 0 medium, 3 low (2 reserved)


@dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    target: IPv6Address
    options: tuple[NdOption, ...] = ()


@dataclass(frozen=True, slots=True)
class NeighborAdvertisement:
    target: IPv6Address
    router: bool = False
    solicited: bool = False
    override: bool = False
    options: tuple[NdOption, ...] = ()


@dataclass(frozen=True, slots=True)
class Redirect:
    target: IPv6Address
    destination: IPv6Address
    options: tuple[NdOption, ...] = ()


NdMessage = (
    RouterSolicitation
    | RouterAdvertisement
    | NeighborSolicitation
    | NeighborAdvertisement
    | Redirect
)

# Bytes after the 4-byte ICMPv6 type/code/checksum, before the options.
_FIXED_LENGTH = {
    Icmpv6Type.ROUTER_SOLICITATION: 4,
    Icmpv6Type.ROUTER_ADVERTISEMENT: 12,
    Icmpv6Type.NEIGHBOR_SOLICITATION: 20,
    Icmpv6Type.NEIGHBOR_ADVERTISEMENT: 20,
    Icmpv6Type.REDIRECT: 36,
}


def is_nd(type: int) -> bool:
    return type in _FIXED_LENGTH


def source_mac(message: NdMessage) -> MacAddress | None:
    """The sender's MAC from a Source Link-Layer Address option, if any."""
    for option in message.options:
        if isinstance(option, SourceLinkLayerAddress):
            return option.mac
    return None


def target_mac(message: NdMessage) -> MacAddress | None:
    for option in message.options:
        if isinstance(option, TargetLinkLayerAddress):
            return option.mac
    return None


# --- parsing -----------------------------------------------------------------


def parse(
    buf: _Buffer,
    source: IPv6Address,
    destination: IPv6Address,
    hop_limit: int | None = None,
) -> NdMessage:
    """One ICMPv6 Neighbor Discovery message, checksum and RFC 4861 validity
    checked; ``hop_limit`` (of the IPv6 header), when given, must be 255."""
    if hop_limit is not None and hop_limit != HOP_LIMIT:
        raise Malformed(f"Neighbor Discovery with hop limit {hop_limit}: sent from off-link")
    header, body = icmpv6.parse(buf, source, destination)
    return decode(header, body, source, destination)


def decode(
    header: Icmpv6Header, body: memoryview, source: IPv6Address, destination: IPv6Address
) -> NdMessage:
    """The message in an already checksummed ICMPv6 ``header`` and ``body``."""
    if not is_nd(header.type):
        raise Malformed(f"ICMPv6 type {header.type} is not Neighbor Discovery")
    if header.code != 0:
        raise Malformed(f"Neighbor Discovery type {header.type} with code {header.code}")
    fixed = _FIXED_LENGTH[Icmpv6Type(header.type)] - 4
    if len(body) < fixed:
        raise Malformed(f"Neighbor Discovery type {header.type} of {len(body) + 8} bytes: short")
    options = _parse_options(body[fixed:])
    message = _build(header, body, options)
    _check(message, source, destination)
    return message


def _build(header: Icmpv6Header, body: memoryview, options: tuple[NdOption, ...]) -> NdMessage:
    rest = header.rest
    if header.type == Icmpv6Type.ROUTER_SOLICITATION:
        return RouterSolicitation(options)
    if header.type == Icmpv6Type.ROUTER_ADVERTISEMENT:
        reachable, retransmit = _RA_BODY.unpack_from(body)
        flags = (rest >> 16) & 0xFF
        return RouterAdvertisement(
            current_hop_limit=rest >> 24,
            managed=bool(flags & 0x80),
            other=bool(flags & 0x40),
            router_lifetime=rest & 0xFFFF,
            reachable_time=reachable,
            retransmit_timer=retransmit,
            options=options,
            preference=(flags >> 3) & 3,
        )
    target = ipv6_address(bytes(body[0:16]))
    if header.type == Icmpv6Type.NEIGHBOR_SOLICITATION:
        return NeighborSolicitation(target, options)
    if header.type == Icmpv6Type.NEIGHBOR_ADVERTISEMENT:
        return NeighborAdvertisement(
            target, bool(rest & 1 << 31), bool(rest & 1 << 30), bool(rest & 1 << 29), options
        )
    return Redirect(target, ipv6_address(bytes(body[16:32])), options)


def _check(message: NdMessage, source: IPv6Address, destination: IPv6Address) -> None:
    unspecified = source.is_unspecified
    if isinstance(message, RouterSolicitation):
        if unspecified and source_mac(message) is not None:
            raise Malformed("Router Solicitation from :: with a source link-layer address")
    elif isinstance(message, RouterAdvertisement | Redirect):
        if not source.is_link_local:
            raise Malformed(f"Router Advertisement or Redirect from {source}, not link-local")
        if isinstance(message, Redirect):
            if message.destination.is_multicast:
                raise Malformed(f"Redirect for multicast destination {message.destination}")
            if not message.target.is_link_local and message.target != message.destination:
                raise Malformed(
                    f"Redirect to {message.target}: neither link-local nor the destination"
                )
    elif isinstance(message, NeighborSolicitation):
        if message.target.is_multicast:
            raise Malformed(f"Neighbor Solicitation for multicast target {message.target}")
        if unspecified and not is_solicited_node(destination):
            raise Malformed("Neighbor Solicitation from :: not to a solicited-node group")
        if unspecified and source_mac(message) is not None:
            raise Malformed("Neighbor Solicitation from :: with a source link-layer address")
    else:
        if message.target.is_multicast:
            raise Malformed(f"Neighbor Advertisement for multicast target {message.target}")
        if destination.is_multicast and message.solicited:
            raise Malformed("solicited Neighbor Advertisement sent to a multicast group")


def _parse_options(data: memoryview) -> tuple[NdOption, ...]:
    options: list[NdOption] = []
    offset = 0
    while offset < len(data):
        if len(options) >= MAX_OPTIONS:
            raise Malformed(f"Neighbor Discovery message with more than {MAX_OPTIONS} options")
        if offset + 2 > len(data):
            raise Malformed("Neighbor Discovery option truncated")
        kind, units = data[offset], data[offset + 1]
        if units == 0:
            raise Malformed(f"Neighbor Discovery option {kind} of length 0")
        end = offset + units * 8
        if end > len(data):
            raise Malformed(f"Neighbor Discovery option {kind} runs past the message")
        options.append(_parse_option(kind, data[offset + 2 : end]))
        offset = end
    return tuple(options)


def _parse_option(kind: int, value: memoryview) -> NdOption:
    if kind in (OptionType.SOURCE_LINK_LAYER_ADDRESS, OptionType.TARGET_LINK_LAYER_ADDRESS):
        if len(value) != 6:
            raise Malformed(f"link-layer address option of {len(value) + 2} bytes, not 8")
        mac = MacAddress(bytes(value))
        if kind == OptionType.SOURCE_LINK_LAYER_ADDRESS:
            return SourceLinkLayerAddress(mac)
        return TargetLinkLayerAddress(mac)
    if kind == OptionType.PREFIX_INFORMATION:
        if len(value) != 30:
            raise Malformed(f"prefix information option of {len(value) + 2} bytes, not 32")
        length, flags, valid, preferred, _reserved, prefix = _PREFIX.unpack_from(value)
        if length > 128:
            raise Malformed(f"prefix information with prefix length {length}")
        return PrefixInformation(
            ipv6_address(prefix), length, bool(flags & 0x80), bool(flags & 0x40), valid, preferred
        )
    if kind == OptionType.MTU:
        if len(value) != 6:
            raise Malformed(f"MTU option of {len(value) + 2} bytes, not 8")
        return Mtu(int.from_bytes(value[2:6], "big"))
    if kind == OptionType.RECURSIVE_DNS_SERVER:
        if len(value) < 22 or (len(value) - 6) % 16:
            raise Malformed(f"RDNSS option of {len(value) + 2} bytes: not 8 + 16n with n >= 1")
        servers = tuple(ipv6_address(bytes(value[i : i + 16])) for i in range(6, len(value), 16))
        return RecursiveDnsServers(int.from_bytes(value[2:6], "big"), servers)
    if kind == OptionType.REDIRECTED_HEADER:
        return RedirectedHeader(bytes(value[6:]))
    return UnknownOption(kind, bytes(value))


# --- emitting ----------------------------------------------------------------


def emit(message: NdMessage, source: IPv6Address, destination: IPv6Address) -> bytes:
    """The ICMPv6 message, checksummed for these addresses.  The IPv6
    header that carries it must have hop limit :data:`HOP_LIMIT`."""
    header, fixed = _header_and_fixed(message)
    return icmpv6.emit(header, fixed + emit_options(message.options), source, destination)


def _header_and_fixed(message: NdMessage) -> tuple[Icmpv6Header, bytes]:
    if isinstance(message, RouterSolicitation):
        return Icmpv6Header(Icmpv6Type.ROUTER_SOLICITATION, 0), b""
    if isinstance(message, RouterAdvertisement):
        flags = message.managed << 7 | message.other << 6 | (message.preference & 3) << 3
        rest = message.current_hop_limit << 24 | flags << 16 | message.router_lifetime
        fixed = _RA_BODY.pack(message.reachable_time, message.retransmit_timer)
        return Icmpv6Header(Icmpv6Type.ROUTER_ADVERTISEMENT, 0, rest), fixed
    if isinstance(message, NeighborSolicitation):
        return Icmpv6Header(Icmpv6Type.NEIGHBOR_SOLICITATION, 0), message.target.packed
    if isinstance(message, NeighborAdvertisement):
        rest = message.router << 31 | message.solicited << 30 | message.override << 29
        return Icmpv6Header(Icmpv6Type.NEIGHBOR_ADVERTISEMENT, 0, rest), message.target.packed
    fixed = message.target.packed + message.destination.packed
    return Icmpv6Header(Icmpv6Type.REDIRECT, 0), fixed


def emit_options(options: Iterable[NdOption]) -> bytes:
    return b"".join(_emit_option(option) for option in options)


def _emit_option(option: NdOption) -> bytes:
    if isinstance(option, SourceLinkLayerAddress | TargetLinkLayerAddress):
        kind = (
            OptionType.SOURCE_LINK_LAYER_ADDRESS
            if isinstance(option, SourceLinkLayerAddress)
            else OptionType.TARGET_LINK_LAYER_ADDRESS
        )
        return bytes((kind, 1)) + option.mac
    if isinstance(option, PrefixInformation):
        flags = option.on_link << 7 | option.autonomous << 6
        value = _PREFIX.pack(
            option.prefix_length,
            flags,
            option.valid_lifetime,
            option.preferred_lifetime,
            0,
            option.prefix.packed,
        )
        return bytes((OptionType.PREFIX_INFORMATION, 4)) + value
    if isinstance(option, Mtu):
        return bytes((OptionType.MTU, 1, 0, 0)) + option.mtu.to_bytes(4, "big")
    if isinstance(option, RecursiveDnsServers):
        if not option.servers:
            raise ValueError("an RDNSS option needs at least one server")
        addresses = b"".join(server.packed for server in option.servers)
        head = bytes((OptionType.RECURSIVE_DNS_SERVER, 1 + 2 * len(option.servers), 0, 0))
        return head + option.lifetime.to_bytes(4, "big") + addresses
    if isinstance(option, RedirectedHeader):
        data = option.data + bytes(-len(option.data) % 8)
        if len(data) > 254 * 8:
            raise ValueError(f"redirected header of {len(data)} bytes exceeds 2032")
        return bytes((OptionType.REDIRECTED_HEADER, 1 + len(data) // 8)) + bytes(6) + data
    if (len(option.data) + 2) % 8 or len(option.data) + 2 > 255 * 8:
        raise ValueError(f"option data of {len(option.data)} bytes is not 8k - 2 bytes")
    return bytes((option.type, (len(option.data) + 2) // 8)) + option.data
