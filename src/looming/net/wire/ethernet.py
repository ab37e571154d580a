"""Ethernet II frames (IEEE 802.3 with an EtherType), one 802.1Q tag tolerated."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from looming.devices.net import EthernetProtocol, MacAddress
from looming.errors import Malformed
from looming.net.wire._cache import mac_address

HEADER_LENGTH = 14
VLAN_TAG_LENGTH = 4
_VLAN = int(EthernetProtocol.VLAN)
_QINQ = 0x88A8

_HEADER = struct.Struct("!6s6sH")
_TAG = struct.Struct("!HH")

_Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class EthernetHeader:
    """The addressing part of an Ethernet II frame.

    ``vlan_tag`` is the 16-bit tag control information (priority and VLAN id)
    of an 802.1Q tag when the frame carried one, else ``None``.
    """

    destination: MacAddress
    source: MacAddress
    ethertype: int
    vlan_tag: int | None = None

    @property
    def length(self) -> int:
        return HEADER_LENGTH + (VLAN_TAG_LENGTH if self.vlan_tag is not None else 0)


def parse(buf: _Buffer) -> tuple[EthernetHeader, memoryview]:
    """Split a frame (without FCS) into its header and payload."""
    view = memoryview(buf)
    if len(view) < HEADER_LENGTH:
        raise Malformed(f"Ethernet frame of {len(view)} bytes is shorter than its header")
    destination, source, ethertype = _HEADER.unpack_from(view)
    offset = HEADER_LENGTH
    vlan_tag: int | None = None
    if ethertype in (_VLAN, _QINQ):
        if len(view) < HEADER_LENGTH + VLAN_TAG_LENGTH:
            raise Malformed("Ethernet frame truncated inside its VLAN tag")
        vlan_tag, ethertype = _TAG.unpack_from(view, HEADER_LENGTH)
        offset += VLAN_TAG_LENGTH
    if ethertype < 0x0600:
        # An 802.3 length field (LLC frames): nothing looming speaks.
        raise Malformed(f"802.3 length field {ethertype} instead of an EtherType")
    header = EthernetHeader(
        destination=mac_address(destination),
        source=mac_address(source),
        ethertype=ethertype,
        vlan_tag=vlan_tag,
    )
    return header, view[offset:]


def emit(header: EthernetHeader, payload: _Buffer) -> bytes:
    """The frame for ``header`` and ``payload`` (no padding, no FCS)."""
    if header.vlan_tag is None:
        prefix = header.destination + header.source + header.ethertype.to_bytes(2, "big")
    else:
        prefix = (
            header.destination
            + header.source
            + _VLAN.to_bytes(2, "big")
            + header.vlan_tag.to_bytes(2, "big")
            + header.ethertype.to_bytes(2, "big")
        )
    return prefix + bytes(payload)
