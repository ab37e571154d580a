"""UDP datagrams (RFC 768), checksummed over the IPv4 pseudo-header."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from looming.errors import Malformed
from looming.net.wire.checksum import internet_checksum, pseudo_header_sum

HEADER_LENGTH = 8
PROTOCOL_UDP = 17

_HEADER = struct.Struct("!HHHH")

_Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class UdpHeader:
    source_port: int
    destination_port: int


def parse(
    buf: _Buffer, source: IPv4Address | None = None, destination: IPv4Address | None = None
) -> tuple[UdpHeader, memoryview]:
    """Split a datagram; when both addresses are given a non-zero checksum is
    verified (zero means the sender computed none)."""
    view = memoryview(buf)
    if len(view) < HEADER_LENGTH:
        raise Malformed(f"UDP datagram of {len(view)} bytes is shorter than its header")
    source_port, destination_port, length, checksum = _HEADER.unpack_from(view)
    if length < HEADER_LENGTH or length > len(view):
        raise Malformed(f"UDP length {length} does not fit the {len(view)} bytes received")
    if length != len(view):
        view = view[:length]
    if source is not None and destination is not None and checksum:
        initial = pseudo_header_sum(source, destination, PROTOCOL_UDP, length)
        if internet_checksum(view, initial) != 0:
            raise Malformed("UDP checksum mismatch")
    return UdpHeader(source_port, destination_port), view[HEADER_LENGTH:]


def emit(
    header: UdpHeader, payload: _Buffer, source: IPv4Address, destination: IPv4Address
) -> bytes:
    length = HEADER_LENGTH + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram of {length} bytes exceeds 65535")
    # The header's words join the pseudo-header sum, so the payload is
    # summed where it lies instead of after a copy.
    initial = (
        pseudo_header_sum(source, destination, PROTOCOL_UDP, length)
        + header.source_port
        + header.destination_port
        + length
    )
    checksum = internet_checksum(payload, initial) or 0xFFFF
    return _HEADER.pack(header.source_port, header.destination_port, length, checksum) + bytes(
        payload
    )
