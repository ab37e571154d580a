"""ARP packets for IPv4 over Ethernet (RFC 826)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address

from looming.devices.net import MacAddress
from looming.errors import Malformed

PACKET_LENGTH = 28
_FIXED = bytes.fromhex("000108000604")  # Ethernet, IPv4, 6-byte MAC, 4-byte IP

_Buffer = bytes | bytearray | memoryview


class ArpOperation(enum.IntEnum):
    REQUEST = 1
    REPLY = 2


@dataclass(frozen=True, slots=True)
class ArpPacket:
    operation: int
    sender_mac: MacAddress
    sender_ip: IPv4Address
    target_mac: MacAddress
    target_ip: IPv4Address


def parse(buf: _Buffer) -> tuple[ArpPacket, memoryview]:
    """Parse an Ethernet/IPv4 ARP packet; the rest (padding) is returned."""
    view = memoryview(buf)
    if len(view) < PACKET_LENGTH:
        raise Malformed(f"ARP packet of {len(view)} bytes is shorter than {PACKET_LENGTH}")
    if view[0:6] != _FIXED:
        raise Malformed("ARP packet is not for IPv4 over Ethernet")
    operation = int.from_bytes(view[6:8], "big")
    if operation not in (1, 2):
        raise Malformed(f"unknown ARP operation {operation}")
    packet = ArpPacket(
        operation=operation,
        sender_mac=MacAddress(bytes(view[8:14])),
        sender_ip=IPv4Address(bytes(view[14:18])),
        target_mac=MacAddress(bytes(view[18:24])),
        target_ip=IPv4Address(bytes(view[24:28])),
    )
    return packet, view[PACKET_LENGTH:]


def emit(packet: ArpPacket) -> bytes:
    return (
        _FIXED
        + packet.operation.to_bytes(2, "big")
        + packet.sender_mac
        + packet.sender_ip.packed
        + packet.target_mac
        + packet.target_ip.packed
    )
