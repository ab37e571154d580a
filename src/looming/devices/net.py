"""The lower network layers: raw frames, Ethernet, ARP and IPv4.

Applications rarely use these directly; they are the seams along which
looming's own TCP/IP stack (``--net direct``) is assembled, each layer
receiving the one below as a constructor argument.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address
from typing import Generic, Protocol, TypeVar, runtime_checkable


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


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a network interface does itself, so the layers above need not
    (smoltcp's ``DeviceCapabilities``; Linux's netdev features).

    ``rx_checksum``: received frames may come with their TCP/UDP checksum
    already verified or completed by the interface; each such frame is
    handed to the listener with ``checksum_verified=True``.
    ``tx_checksum``: frames given to
    :meth:`SegmentingNetwork.write_segmented` may leave the TCP checksum
    holding only the pseudo-header sum; the interface finishes it.
    ``segmentation``: the largest IPv4 packet
    :meth:`SegmentingNetwork.write_segmented` takes and cuts into TCP
    segments (TSO), or 0 when the interface does not segment; an interface
    with a non-zero value implements :class:`SegmentingNetwork`.
    ``mtu``: the largest Ethernet payload the interface carries.
    """

    mtu: int = 1500
    rx_checksum: bool = False
    tx_checksum: bool = False
    segmentation: int = 0

    def __post_init__(self) -> None:
        if self.mtu < 68:
            raise ValueError(f"an interface MTU of {self.mtu} is below IPv4's minimum of 68")
        if self.segmentation and not self.tx_checksum:
            raise ValueError(
                "an interface that segments TCP must also finish checksums (tx_checksum=True)"
            )
        if self.segmentation and self.segmentation <= self.mtu:
            raise ValueError(
                f"segmentation limit {self.segmentation} is not above the MTU {self.mtu}: "
                "use 0 for an interface that does not segment"
            )


class FrameHandler(Protocol):
    """Called with each received frame; ``checksum_verified`` is True when
    the interface vouches for the frame's TCP/UDP checksum (only interfaces
    whose :attr:`Capabilities.rx_checksum` is set pass it)."""

    def __call__(self, frame: bytes, checksum_verified: bool = False, /) -> None: ...


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

    @property
    def capabilities(self) -> Capabilities:
        """What this interface offloads (its ``mtu`` is :attr:`mtu`)."""
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


@runtime_checkable
class SegmentingNetwork(Network, Protocol):
    """A :class:`Network` whose :attr:`Capabilities.segmentation` is non-zero."""

    async def write_segmented(self, frame: bytes, segment_size: int) -> None:
        """Send an IPv4/TCP frame of up to ``capabilities.segmentation`` bytes
        of IP packet whose TCP checksum holds the pseudo-header sum: the
        interface cuts it into segments of ``segment_size`` payload bytes and
        finishes each one's checksum."""
        ...


EthernetHandler = Callable[[MacAddress, MacAddress, bytes, bool], None]
"""Called with (source MAC, destination MAC, payload, checksum verified) for
each frame; the flag is the interface's (see :class:`FrameHandler`)."""


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

    @property
    def capabilities(self) -> Capabilities:
        """What the interface below offloads."""
        ...

    def input(self, frame: bytes, checksum_verified: bool = False) -> None:
        """Demultiplex one received frame (malformed frames are counted and
        dropped); ``checksum_verified`` as the interface said."""
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


AddressT = TypeVar("AddressT", IPv4Address, IPv6Address)


class ReceivedPacket(Generic[AddressT]):
    """What the IP layer knows of a datagram it hands to ICMP, UDP or TCP
    (smoltcp's ``IpRepr``), given to the handler with the payload.

    The same kind serves IPv4 (``ReceivedPacket[IPv4Address]``) and IPv6
    (``ReceivedPacket[IPv6Address]``): ``protocol`` is the IPv4 protocol or
    the IPv6 next header of the payload, ``hop_limit`` the TTL or hop limit,
    ``traffic_class`` the ToS or traffic class byte (DSCP and ECN).
    ``checksum_verified`` is True when the interface vouched for the
    payload's checksum (never for reassembled or looped-back datagrams).
    ``header`` is the IP header as it arrived (for a reassembled IPv4
    datagram, the header of the whole), what an ICMP error quotes.
    """

    __slots__ = (
        "checksum_verified",
        "destination",
        "header",
        "hop_limit",
        "protocol",
        "source",
        "traffic_class",
    )

    def __init__(
        self,
        source: AddressT,
        destination: AddressT,
        protocol: int,
        hop_limit: int,
        traffic_class: int,
        checksum_verified: bool,
        header: bytes,
    ) -> None:
        self.source: AddressT = source
        self.destination: AddressT = destination
        self.protocol = protocol
        self.hop_limit = hop_limit
        self.traffic_class = traffic_class
        self.checksum_verified = checksum_verified
        self.header = header

    @property
    def ecn(self) -> int:
        """The ECN field (RFC 3168): 0 not ECT, 1 or 2 ECT, 3 CE."""
        return self.traffic_class & 0b11

    def pseudo_header_sum(self, length: int) -> int:
        """The uninverted one's-complement sum of the TCP/UDP pseudo-header
        for an upper-layer packet of ``length`` bytes (RFC 9293 3.1 for
        IPv4, RFC 8200 8.1 for IPv6), to start its checksum from.

        Both pseudo-headers hold the two addresses, the protocol and the
        length, and as 2**16 = 1 (mod 0xFFFF) an address read as one integer
        is congruent to the sum of its 16-bit words: one formula serves both.
        """
        total = int(self.source) + int(self.destination) + self.protocol + length
        folded = total % 0xFFFF
        return 0xFFFF if folded == 0 and total else folded

    def __repr__(self) -> str:
        return (
            f"ReceivedPacket({self.source} -> {self.destination}, protocol {self.protocol}, "
            f"hop limit {self.hop_limit}, traffic class {self.traffic_class:#04x}, "
            f"checksum verified {self.checksum_verified})"
        )


Ipv4Handler = Callable[[ReceivedPacket[IPv4Address], bytes], None]
"""Called with (what IPv4 knows of the datagram, its payload) for each datagram."""


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

    def segment_limit(self, destination: IPv4Address) -> int:
        """The largest TCP packet (header and payload) :meth:`write` takes in
        one piece with ``segment_size``: above :meth:`mtu` only when the
        interface segments TCP itself (:attr:`Capabilities.segmentation`)."""
        ...

    def lower_path_mtu(
        self, destination: IPv4Address, mtu: int, original_length: int
    ) -> int | None:
        """Take a validated report that the path to ``destination`` carries
        at most ``mtu`` bytes (0: not said; ``original_length`` is the
        datagram that failed): the new path MTU, or None if nothing changed."""
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
        segment_size: int | None = None,
    ) -> None:
        """Send ``payload``, fragmenting above the MTU unless ``dont_fragment``;
        ``tos`` is the header's DSCP and ECN byte (RFC 3168: 2 is ECT(0)).

        With ``segment_size`` the payload is a TCP packet of up to
        :meth:`segment_limit` bytes whose checksum holds only the
        pseudo-header sum: an interface that segments cuts it into segments
        of that payload size and finishes their checksums; otherwise the
        checksum is finished here and it leaves as one packet."""
        ...
