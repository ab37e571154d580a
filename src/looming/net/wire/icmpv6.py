"""ICMPv6 messages (RFC 4443), checksummed over the IPv6 pseudo-header.

The header is type, code and the 4-byte field after the checksum (identifier
and sequence for echo, MTU for Packet Too Big, pointer for Parameter
Problem).  Neighbor Discovery (:mod:`ndp`) and MLDv2 (:mod:`mld`) parse
their bodies from what :func:`parse` returns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv6Address

from looming.errors import Malformed
from looming.net.wire.checksum import internet_checksum
from looming.net.wire.ipv6 import HEADER_LENGTH as IPV6_HEADER_LENGTH
from looming.net.wire.ipv6 import NextHeader, pseudo_header_sum

HEADER_LENGTH = 8
MIN_MTU = 1280
# An error quotes as much of the invoking packet as fits in a minimum-MTU
# packet (RFC 4443 section 2.4 (c)).
MAX_ERROR_QUOTE = MIN_MTU - IPV6_HEADER_LENGTH - HEADER_LENGTH

_Buffer = bytes | bytearray | memoryview


class Icmpv6Type(enum.IntEnum):
    DESTINATION_UNREACHABLE = 1
    PACKET_TOO_BIG = 2
    TIME_EXCEEDED = 3
    PARAMETER_PROBLEM = 4
    ECHO_REQUEST = 128
    ECHO_REPLY = 129
    MULTICAST_LISTENER_QUERY = 130
    ROUTER_SOLICITATION = 133
    ROUTER_ADVERTISEMENT = 134
    NEIGHBOR_SOLICITATION = 135
    NEIGHBOR_ADVERTISEMENT = 136
    REDIRECT = 137
    MULTICAST_LISTENER_REPORT_V2 = 143


class UnreachableCode(enum.IntEnum):
    NO_ROUTE = 0
    ADMINISTRATIVELY_PROHIBITED = 1
    BEYOND_SCOPE = 2
    ADDRESS = 3
    PORT = 4
    SOURCE_POLICY = 5
    REJECT_ROUTE = 6


class TimeExceededCode(enum.IntEnum):
    HOP_LIMIT = 0
    REASSEMBLY = 1


class ParameterProblemCode(enum.IntEnum):
    ERRONEOUS_FIELD = 0
    UNRECOGNISED_NEXT_HEADER = 1
    UNRECOGNISED_OPTION = 2
    INCOMPLETE_CHAIN = 3


@dataclass(frozen=True, slots=True)
class Icmpv6Header:
    type: int
    code: int
    rest: int = 0

    @property
    def is_error(self) -> bool:
        """Error messages have types below 128 (RFC 4443 section 2.1)."""
        return self.type < 128

    @property
    def identifier(self) -> int:
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        """Packet Too Big's MTU."""
        return self.rest

    @property
    def pointer(self) -> int:
        """Parameter Problem's offset of the bad byte in the quoted packet."""
        return self.rest

    @classmethod
    def echo(cls, type: int, identifier: int, sequence: int) -> Icmpv6Header:
        return cls(type=type, code=0, rest=(identifier << 16) | sequence)


def checksum_initial(source: IPv6Address, destination: IPv6Address, length: int) -> int:
    return pseudo_header_sum(source, destination, NextHeader.ICMPV6, length)


def parse(
    buf: _Buffer, source: IPv6Address, destination: IPv6Address
) -> tuple[Icmpv6Header, memoryview]:
    """Check the checksum (mandatory in ICMPv6) and split the message."""
    view = memoryview(buf)
    if len(view) < HEADER_LENGTH:
        raise Malformed(f"ICMPv6 message of {len(view)} bytes is shorter than its header")
    if internet_checksum(view, checksum_initial(source, destination, len(view))) != 0:
        raise Malformed("ICMPv6 checksum mismatch")
    header = Icmpv6Header(type=view[0], code=view[1], rest=int.from_bytes(view[4:8], "big"))
    return header, view[HEADER_LENGTH:]


def emit(
    header: Icmpv6Header, payload: _Buffer, source: IPv6Address, destination: IPv6Address
) -> bytes:
    length = HEADER_LENGTH + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"ICMPv6 message of {length} bytes exceeds 65535 (no jumbograms)")
    body = header.rest.to_bytes(4, "big") + bytes(payload)
    initial = checksum_initial(source, destination, length) + ((header.type << 8) | header.code)
    checksum = internet_checksum(body, initial)
    return bytes((header.type, header.code)) + checksum.to_bytes(2, "big") + body


def error_quote(invoking_packet: _Buffer) -> memoryview:
    """As much of the packet that caused an error as an error may carry."""
    return memoryview(invoking_packet)[:MAX_ERROR_QUOTE]
