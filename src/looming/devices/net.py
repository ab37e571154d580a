"""The lower network layers: raw frames, Ethernet, ARP and IPv4.

Applications rarely use these directly; they are the seams along which
looming's own TCP/IP stack (``--net direct``) is assembled, each layer
receiving the one below as a constructor argument.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Protocol, runtime_checkable


class MacAddress(bytes):
    """A 6-byte Ethernet address, printed as ``02:00:00:00:00:01``."""

    def __new__(cls, value: bytes | str) -> MacAddress:
        if isinstance(value, str):
            parts = value.split(":")
            if len(parts) != 6:
                raise ValueError(f"not a MAC address: {value!r} (expected six hex pairs)")
            try:
                raw = bytes(int(p, 16) for p in parts)
            except ValueError:
                raise ValueError(f"not a MAC address: {value!r}") from None
        else:
            raw = bytes(value)
        if len(raw) != 6:
            raise ValueError(f"a MAC address has 6 bytes, not {len(raw)}")
        return super().__new__(cls, raw)

    def __str__(self) -> str:
        return ":".join(f"{b:02x}" for b in self)

    def __repr__(self) -> str:
        return f"MacAddress('{self}')"

    @property
    def is_broadcast(self) -> bool:
        return self == b"\xff" * 6

    @property
    def is_multicast(self) -> bool:
        return bool(self[0] & 1)


BROADCAST_MAC = MacAddress(b"\xff" * 6)


class EthernetProtocol(enum.IntEnum):
    """EtherType values looming's stack dispatches on."""

    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD


class IpProtocol(enum.IntEnum):
    """IP protocol numbers looming's stack dispatches on."""

    ICMP = 1
    TCP = 6
    UDP = 17


@dataclass(slots=True)
class NetworkStats:
    """Counters kept by every network device and layer."""

    rx_bytes: int = 0
    rx_packets: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0
    rx_malformed: int = 0


FrameHandler = Callable[[bytes], None]


@runtime_checkable
class Network(Protocol):
    """A network interface that moves whole Ethernet frames (TAP, AF_PACKET,
    an in-memory switch port, a simulated link)."""

    @property
    def mac(self) -> MacAddress:
        """This interface's hardware address."""
        ...

    @property
    def mtu(self) -> int:
        """The largest Ethernet payload this interface carries (1500 typically)."""
        ...

    def stats(self) -> NetworkStats:
        """A snapshot of this interface's counters."""
        ...

    async def write(self, frame: bytes) -> None:
        """Transmit one whole Ethernet frame (header included, no FCS)."""
        ...

    async def listen(self, handler: FrameHandler) -> None:
        """Deliver each received frame to ``handler`` until :meth:`disconnect`.

        ``handler`` must not block; it is called in arrival order.
        """
        ...

    async def disconnect(self) -> None:
        """Stop listening and release the interface."""
        ...


EthernetHandler = Callable[[MacAddress, MacAddress, bytes], None]
"""Called with (source MAC, destination MAC, payload) for each frame."""


@runtime_checkable
class Ethernet(Protocol):
    """Ethernet II framing over a :class:`Network`."""

    @property
    def mac(self) -> MacAddress: ...

    @property
    def mtu(self) -> int:
        """The largest payload (without the 14-byte header)."""
        ...

    def register(self, ethertype: int, handler: EthernetHandler) -> None:
        """Deliver payloads of this EtherType to ``handler``."""
        ...

    def input(self, frame: bytes) -> None:
        """Demultiplex one received frame (malformed frames are counted and dropped)."""
        ...

    async def write(self, destination: MacAddress, ethertype: int, payload: bytes) -> None:
        """Frame ``payload`` and transmit it."""
        ...


@runtime_checkable
class Arp(Protocol):
    """IPv4-to-Ethernet address resolution (RFC 826)."""

    def addresses(self) -> list[IPv4Address]:
        """The IPv4 addresses this host answers for."""
        ...

    def set_addresses(self, addresses: list[IPv4Address]) -> None:
        """Replace our addresses (announcing each with gratuitous ARP)."""
        ...

    async def query(self, address: IPv4Address) -> MacAddress:
        """Resolve ``address``, from the cache or by asking the network.

        Raises :class:`~looming.errors.HostUnreachable` when no answer comes.
        """
        ...

    def input(self, payload: bytes) -> None:
        """Handle one received ARP packet."""
        ...


Ipv4Handler = Callable[[IPv4Address, IPv4Address, bytes], None]
"""Called with (source, destination, payload) for each datagram."""


@runtime_checkable
class Ipv4(Protocol):
    """IPv4 (RFC 791): addressing, routing to a gateway, fragmentation."""

    def interfaces(self) -> list[IPv4Interface]:
        """The addresses (with their networks) this host holds."""
        ...

    def source_for(self, destination: IPv4Address) -> IPv4Address:
        """The local address used to reach ``destination``."""
        ...

    def mtu(self, destination: IPv4Address) -> int:
        """The largest payload that reaches ``destination`` without fragmenting."""
        ...

    def register(self, protocol: int, handler: Ipv4Handler) -> None:
        """Deliver datagrams of this IP protocol number to ``handler``."""
        ...

    def input(self, packet: bytes) -> None:
        """Handle one received IPv4 packet (reassembling fragments)."""
        ...

    async def write(
        self,
        destination: IPv4Address,
        protocol: int,
        payload: bytes,
        *,
        ttl: int = 64,
        dont_fragment: bool = False,
        tos: int = 0,
    ) -> None:
        """Send ``payload``, fragmenting above the MTU unless ``dont_fragment``;
        ``tos`` is the header's DSCP and ECN byte (RFC 3168: 2 is ECT(0))."""
        ...
