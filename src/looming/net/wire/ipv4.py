"""IPv4 headers (RFC 791): options carried but not interpreted."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from looming.errors import Malformed
from looming.net.wire._cache import ipv4_address
from looming.net.wire.checksum import internet_checksum

MIN_HEADER_LENGTH = 20
MAX_PACKET_LENGTH = 65535
_FLAG_DF = 0x4000
_FLAG_MF = 0x2000

_FIXED = struct.Struct("!BBHHHBBH4s4s")
FIXED = _FIXED
"""The 20 bytes every header starts with, for callers that read them directly."""

_Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Ipv4Header:
    """An IPv4 header; ``fragment_offset`` is in bytes (a multiple of 8)."""

    source: IPv4Address
    destination: IPv4Address
    protocol: int
    ttl: int = 64
    identification: int = 0
    dont_fragment: bool = False
    more_fragments: bool = False
    fragment_offset: int = 0
    tos: int = 0
    options: bytes = b""

    @property
    def length(self) -> int:
        return MIN_HEADER_LENGTH + len(self.options)

    @property
    def is_fragment(self) -> bool:
        return self.more_fragments or self.fragment_offset != 0


def parse(buf: _Buffer) -> tuple[Ipv4Header, memoryview]:
    """Check and split one IPv4 packet; link-layer padding after the
    packet's total length is dropped from the payload."""
    view = memoryview(buf)
    if len(view) < MIN_HEADER_LENGTH:
        raise Malformed(f"IPv4 packet of {len(view)} bytes is shorter than a header")
    (
        version_length,
        tos,
        total_length,
        identification,
        flags_offset,
        ttl,
        protocol,
        _checksum,
        source,
        destination,
    ) = _FIXED.unpack_from(view)
    if version_length >> 4 != 4:
        raise Malformed(f"IP version {version_length >> 4}, expected 4")
    header_length = (version_length & 0x0F) * 4
    if header_length < MIN_HEADER_LENGTH:
        raise Malformed(f"IPv4 header length {header_length} is below 20")
    if total_length < header_length:
        raise Malformed(f"IPv4 total length {total_length} is below its header length")
    if total_length > len(view):
        raise Malformed(f"IPv4 total length {total_length} exceeds the {len(view)} bytes received")
    if internet_checksum(view[:header_length]) != 0:
        raise Malformed("IPv4 header checksum mismatch")
    if flags_offset & 0x8000:
        raise Malformed("IPv4 reserved flag set")
    header = Ipv4Header(
        ipv4_address(source),
        ipv4_address(destination),
        protocol,
        ttl,
        identification,
        bool(flags_offset & _FLAG_DF),
        bool(flags_offset & _FLAG_MF),
        (flags_offset & 0x1FFF) * 8,
        tos,
        bytes(view[MIN_HEADER_LENGTH:header_length]) if header_length > MIN_HEADER_LENGTH else b"",
    )
    return header, view[header_length:total_length]


def emit_header(header: Ipv4Header, payload_length: int) -> bytes:
    """The header bytes, checksum filled in, for a payload of this length."""
    options = header.options
    if len(options) % 4:
        raise ValueError("IPv4 options must be padded to a multiple of 4 bytes")
    if len(options) > 40:
        raise ValueError("IPv4 options longer than 40 bytes")
    if header.fragment_offset % 8 or header.fragment_offset > 0x1FFF * 8:
        raise ValueError(f"fragment offset {header.fragment_offset} is not a multiple of 8")
    header_length = MIN_HEADER_LENGTH + len(options)
    total_length = header_length + payload_length
    if total_length > MAX_PACKET_LENGTH:
        raise ValueError(f"IPv4 packet of {total_length} bytes exceeds 65535")
    flags_offset = header.fragment_offset // 8
    if header.dont_fragment:
        flags_offset |= _FLAG_DF
    if header.more_fragments:
        flags_offset |= _FLAG_MF
    fields = (
        0x40 | header_length // 4,
        header.tos,
        total_length,
        header.identification,
        flags_offset,
        header.ttl,
        header.protocol,
    )
    source, destination = header.source.packed, header.destination.packed
    unsummed = _FIXED.pack(*fields, 0, source, destination) + options
    checksum = internet_checksum(unsummed)
    return _FIXED.pack(*fields, checksum, source, destination) + options


def emit_plain(
    source: bytes,
    destination: bytes,
    address_sum: int,
    protocol: int,
    ttl: int,
    identification: int,
    dont_fragment: bool,
    tos: int,
    payload: _Buffer,
) -> bytes:
    """What :func:`emit` gives for a header without options that is no
    fragment, without building the header: the datagram path of every
    segment. ``address_sum`` is the two addresses as integers, added (an
    address read as one number is congruent to the sum of its 16-bit words
    modulo 0xFFFF, so the header's sum needs no pass over its bytes)."""
    total_length = MIN_HEADER_LENGTH + len(payload)
    if total_length > MAX_PACKET_LENGTH:
        raise ValueError(f"IPv4 packet of {total_length} bytes exceeds 65535")
    flags_offset = _FLAG_DF if dont_fragment else 0
    total = (
        (0x4500 | tos)
        + total_length
        + identification
        + flags_offset
        + (ttl << 8 | protocol)
        + address_sum
    )
    # Never zero (0x4500 is in it), so the folded sum is 1..0xFFFF.
    checksum = 0xFFFF - (total % 0xFFFF or 0xFFFF)
    return (
        _FIXED.pack(
            0x45,
            tos,
            total_length,
            identification,
            flags_offset,
            ttl,
            protocol,
            checksum,
            source,
            destination,
        )
        + payload
    )


def emit(header: Ipv4Header, payload: _Buffer) -> bytes:
    return emit_header(header, len(payload)) + bytes(payload)
