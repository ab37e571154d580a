"""ICMPv4 messages (RFC 792)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from looming.errors import Malformed
from looming.net.wire.checksum import internet_checksum

HEADER_LENGTH = 8

_Buffer = bytes | bytearray | memoryview


class IcmpType(enum.IntEnum):
    ECHO_REPLY = 0
    DESTINATION_UNREACHABLE = 3
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11


class UnreachableCode(enum.IntEnum):
    NETWORK = 0
    HOST = 1
    PROTOCOL = 2
    PORT = 3
    FRAGMENTATION_NEEDED = 4


@dataclass(frozen=True, slots=True)
class IcmpHeader:
    """Type, code and the 4-byte "rest of header" (identifier and sequence
    number for echo; unused or next-hop MTU for errors)."""

    type: int
    code: int
    rest: int = 0

    @property
    def identifier(self) -> int:
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        return self.rest & 0xFFFF

    @classmethod
    def echo(cls, type: int, identifier: int, sequence: int) -> IcmpHeader:
        return cls(type=type, code=0, rest=(identifier << 16) | sequence)


def parse(buf: _Buffer) -> tuple[IcmpHeader, memoryview]:
    view = memoryview(buf)
    if len(view) < HEADER_LENGTH:
        raise Malformed(f"ICMP message of {len(view)} bytes is shorter than its header")
    if internet_checksum(view) != 0:
        raise Malformed("ICMP checksum mismatch")
    header = IcmpHeader(type=view[0], code=view[1], rest=int.from_bytes(view[4:8], "big"))
    return header, view[HEADER_LENGTH:]


def emit(header: IcmpHeader, payload: _Buffer) -> bytes:
    body = header.rest.to_bytes(4, "big") + bytes(payload)
    checksum = internet_checksum(body, (header.type << 8) | header.code)
    return bytes((header.type, header.code)) + checksum.to_bytes(2, "big") + body
