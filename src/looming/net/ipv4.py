"""IPv4 (RFC 791): addressing, routing to a gateway, fragmentation and
reassembly, over Ethernet and ARP."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv6Address

from looming.devices.net import (
    BROADCAST_MAC,
    EthernetProtocol,
    IpProtocol,
    Ipv4Handler,
    MacAddress,
    ReceivedPacket,
)
from looming.devices.random import Random
from looming.devices.time import Time
from looming.errors import Malformed, NoRoute
from looming.net.arp import ArpLayer, Frame
from looming.net.ethernet import EthernetLayer
from looming.net.reassembly import Reassembler
from looming.net.wire import ipv4 as wire
from looming.net.wire._cache import ipv4_address
from looming.net.wire.checksum import internet_checksum, pseudo_header_sum
from looming.net.wire.ipv4 import MIN_HEADER_LENGTH, Ipv4Header
from looming.net.wire.tcp import finish_checksum as finish_tcp_checksum

_LIMITED_BROADCAST = IPv4Address("255.255.255.255")
_ETHERNET_HEADER = 14
_FRAME_HEADERS = _ETHERNET_HEADER + MIN_HEADER_LENGTH
_UNSPECIFIED = IPv4Address(0)
_IPV4 = int(EthernetProtocol.IPV4)

UnhandledProtocolHandler = Callable[[ReceivedPacket[IPv4Address], bytes], None]
"""Called with what IPv4 knows of a datagram nobody registered for, and its payload."""

PlainHandler = Callable[[IPv4Address, IPv4Address, int, bool, bytes], None]
"""Called with the source, destination, ToS byte and checksum state of a
datagram without options that is no fragment, and its payload: what a
protocol that needs no more of the header takes instead of a
:class:`ReceivedPacket` built for it (see :meth:`Ipv4Layer.register`)."""


_Route = tuple[IPv4Address | None, int, bytes, IPv4Address | MacAddress | None]
_NO_ROUTE: _Route = (None, -1, b"", None)


def multicast_mac(address: IPv4Address) -> MacAddress:
    """The Ethernet group address an IPv4 multicast maps to (RFC 1112)."""
    low = int(address) & 0x7FFFFF
    return MacAddress(b"\x01\x00\x5e" + low.to_bytes(3, "big"))


# RFC 1191 section 7's plateaus, for reports that carry no next-hop MTU.
_PLATEAUS = (65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)
_MIN_PATH_MTU = 552
_PATH_MTU_LIFETIME_NS = 600 * 1_000_000_000
_MAX_PATH_MTUS = 1024

_LSRR = 0x83
_SSRR = 0x89


def options_problem(options: bytes) -> str | None:
    """Why a datagram with these IPv4 options is dropped: a source route
    (loose or strict), or options that do not parse; None to accept it."""
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:  # end of options
            return None
        if kind == 1:  # no-operation
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2 or i + options[i + 1] > len(options):
            return "bad_options"
        if kind in (_LSRR, _SSRR):
            return "source_route_dropped"
        i += options[i + 1]
    return None


_TCP_FIN = 0x01
_TCP_PSH = 0x08
_TCP_CWR = 0x80


def cut_tcp_burst(
    segment: bytes,
    segment_size: int,
    source: IPv4Address | IPv6Address,
    destination: IPv4Address | IPv6Address,
) -> list[bytes]:
    """A TCP packet of several segments (its checksum finished or only the
    pseudo-header sum) cut into segments of at most ``segment_size``
    payload bytes, each with its own sequence number and finished
    checksum: what an interface with segmentation offload does (Linux's
    GSO in software). FIN and PSH stay on the last piece only, CWR on the
    first only, as RFC 3168 6.1.2 and Linux's tcp_gso_segment have it."""
    header_length = (segment[12] >> 4) * 4 if len(segment) >= 20 else 0
    payload_length = len(segment) - header_length
    if header_length < 20 or payload_length < 0 or segment_size <= 0:
        return [segment]  # nonsense: the peer's parser rejects it
    header = bytearray(segment[:header_length])
    header[16:18] = b"\0\0"
    first_seq = int.from_bytes(segment[4:8], "big")
    flags = segment[13]
    view = memoryview(segment)
    pieces: list[bytes] = []
    for offset in range(0, payload_length or 1, segment_size):
        last = offset + segment_size >= payload_length
        header[4:8] = ((first_seq + offset) & 0xFFFFFFFF).to_bytes(4, "big")
        header[13] = flags & ~((0 if last else _TCP_FIN | _TCP_PSH) | (_TCP_CWR if offset else 0))
        start = header_length + offset
        piece = bytearray(header)
        piece += view[start : start + segment_size]
        pseudo = pseudo_header_sum(source, destination, IpProtocol.TCP, len(piece))
        piece[16:18] = (internet_checksum(piece, pseudo) or 0xFFFF).to_bytes(2, "big")
        pieces.append(bytes(piece))
    return pieces


class Ipv4Layer:
    """:class:`looming.devices.net.Ipv4` with one interface address (static
    or later set by DHCP through :meth:`configure`)."""

    def __init__(
        self,
        ethernet: EthernetLayer,
        arp: ArpLayer,
        time: Time,
        random: Random,
        *,
        interface: IPv4Interface | None = None,
        gateway: IPv4Address | None = None,
        reassembler: Reassembler | None = None,
    ) -> None:
        self._ethernet = ethernet
        self._arp = arp
        self._time = time
        self._interface: IPv4Interface | None = None
        self._gateway: IPv4Address | None = None
        self._handlers: dict[int, Ipv4Handler] = {}
        self._plain_handlers: dict[int, PlainHandler] = {}
        self._identification = random.randint(0, 0xFFFF)
        self.reassembler = reassembler if reassembler is not None else Reassembler()
        self._path_mtu: OrderedDict[IPv4Address, tuple[int, int]] = OrderedDict()
        self.counters: Counter[str] = Counter()
        self.unhandled_protocol: UnhandledProtocolHandler | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        # The last destination written to: the address, as an integer and
        # packed, and its next hop once looked up (forgotten by configure).
        self._route: _Route = _NO_ROUTE
        ethernet.register(EthernetProtocol.IPV4, self._on_frame, whole=self._on_whole_frame)
        self.configure(interface, gateway, announce=False)

    # -- configuration -------------------------------------------------------

    def configure(
        self,
        interface: IPv4Interface | None,
        gateway: IPv4Address | None = None,
        *,
        announce: bool = True,
    ) -> None:
        """Set (or with ``None`` remove) our address and gateway."""
        if gateway is not None and interface is not None and gateway not in interface.network:
            raise ValueError(f"gateway {gateway} is not inside {interface.network}")
        self._interface = interface
        self._gateway = gateway
        self._route = _NO_ROUTE
        self._local_int = int(interface.ip) if interface is not None else -1
        # The hot paths compare integers and reuse one address object:
        # IPv4Interface.ip builds a new address on every access.
        self._local_address = interface.ip if interface is not None else None
        self._network_int = int(interface.network.network_address) if interface is not None else -1
        self._netmask_int = int(interface.network.netmask) if interface is not None else 0
        self._local_packed = interface.ip.packed if interface is not None else b""
        self._broadcast_ints = {int(_LIMITED_BROADCAST)}
        if interface is not None and interface.network.prefixlen < 31:
            self._broadcast_ints.add(int(interface.network.broadcast_address))
        # The last source found no martian (see _martian; which sources are
        # depends on our address): the next datagram is most often from it.
        self._sane_source = -1
        addresses = [interface.ip] if interface is not None else []
        self._arp.set_addresses(addresses, announce=announce)

    @property
    def gateway(self) -> IPv4Address | None:
        return self._gateway

    @property
    def ethernet(self) -> EthernetLayer:
        return self._ethernet

    def interfaces(self) -> list[IPv4Interface]:
        return [self._interface] if self._interface is not None else []

    def source_for(self, destination: IPv4Address) -> IPv4Address:
        local = self._local_address
        return local if local is not None else _UNSPECIFIED

    def mtu(self, destination: IPv4Address) -> int:
        """The largest payload of an unfragmented datagram to ``destination``:
        the link's, or less when path-MTU discovery learned a smaller path."""
        link = self._ethernet.mtu
        if self._path_mtu:
            entry = self._path_mtu.get(destination)
            if entry is not None:
                if entry[1] > self._time.now_ns():
                    return min(entry[0], link) - MIN_HEADER_LENGTH
                del self._path_mtu[destination]
        return link - MIN_HEADER_LENGTH

    def lower_path_mtu(
        self, destination: IPv4Address, mtu: int, original_length: int
    ) -> int | None:
        """Take a validated "fragmentation needed" (RFC 1191): the new path
        MTU to ``destination``, or None when it changes nothing.

        A report without the next-hop MTU (old routers) steps down the RFC
        1191 plateau table below the datagram that failed; a report below
        552 bytes (Linux's min_pmtu) is raised to it, so a forged error
        cannot make us send tiny segments; the value lapses after ten
        minutes, when a larger path is tried again.
        """
        if mtu == 0:
            mtu = next((p for p in _PLATEAUS if p < original_length), _MIN_PATH_MTU)
        mtu = max(mtu, _MIN_PATH_MTU)
        if mtu >= self.mtu(destination) + MIN_HEADER_LENGTH:
            self.counters["pmtu_not_lower"] += 1
            return None
        table = self._path_mtu
        table.pop(destination, None)
        table[destination] = (mtu, self._time.now_ns() + _PATH_MTU_LIFETIME_NS)
        while len(table) > _MAX_PATH_MTUS:
            table.popitem(last=False)
        self.counters["pmtu_lowered"] += 1
        return mtu

    def raise_path_mtu(self, destination: IPv4Address, mtu: int) -> int | None:
        """A datagram of ``mtu`` bytes reached ``destination`` whole (a
        transport's confirmed probe, RFC 8899 4.3 and 5.1.4): the path MTU
        learned for it rises to ``mtu``, for every sender, and goes once it
        reaches the link's. The raised entry keeps its lifetime, so RFC
        1191's aging still tries the link's MTU when it lapses. The new path
        MTU, or None when nothing lower was learned.
        """
        link = self._ethernet.mtu
        learned = self.mtu(destination) + MIN_HEADER_LENGTH  # (an expired entry goes)
        if learned >= link or mtu <= learned:
            return None
        self.counters["pmtu_raised"] += 1
        if mtu >= link:
            del self._path_mtu[destination]
            return link
        self._path_mtu[destination] = (mtu, self._path_mtu[destination][1])
        return mtu

    def segment_limit(self, destination: IPv4Address) -> int:
        """The largest TCP payload-plus-header :meth:`write` takes in one
        packet when given ``segment_size``: up to 64 KB when the interface
        segments TCP itself (TSO), else 0: without it TCP sends each segment
        on its own, never more than one of the peer's segments in a packet."""
        offload = self._ethernet.capabilities.segmentation
        return offload - MIN_HEADER_LENGTH if offload else 0

    def register(
        self, protocol: int, handler: Ipv4Handler, *, plain: PlainHandler | None = None
    ) -> None:
        """Deliver datagrams of ``protocol`` to ``handler``; with ``plain``,
        those without options that are no fragment to ``plain`` instead,
        which must do what ``handler`` does with a packet of those fields
        (no :class:`ReceivedPacket` is built for them: the common datagram's
        path)."""
        self._handlers[protocol] = handler
        if plain is None:
            self._plain_handlers.pop(protocol, None)
        else:
            self._plain_handlers[protocol] = plain

    def is_local(self, address: IPv4Address) -> bool:
        local = self._local_address
        return local is not None and (address is local or address == local)

    def is_broadcast(self, address: IPv4Address) -> bool:
        if address == _LIMITED_BROADCAST:
            return True
        return self._interface is not None and (
            address == self._interface.network.broadcast_address
            and self._interface.network.prefixlen < 31
        )

    # -- receiving -----------------------------------------------------------

    def _on_frame(
        self, source: MacAddress, destination: MacAddress, payload: bytes, checksum_verified: bool
    ) -> None:
        if source[0] & 1:
            # A group (multicast or broadcast) Ethernet source is never a
            # sender's (IEEE 802.3 3.2.3): forged, and an answer would go to
            # every host on the link.
            self.counters["martian_mac_source"] += 1
            return
        self._receive(payload, looped_back=False, checksum_verified=checksum_verified)

    def _on_whole_frame(self, frame: bytes, checksum_verified: bool) -> None:
        """:meth:`_on_frame` for an untagged frame to our MAC, given whole
        (see :meth:`EthernetLayer.register`): the common datagram is read in
        place, its payload copied once."""
        if frame[6] & 1:
            self.counters["martian_mac_source"] += 1
            return
        if (
            len(frame) >= _FRAME_HEADERS
            and frame[14] == 0x45  # version 4, no options
            and not frame[20] & 0xBF  # no fragment, no reserved flag (DF may be set)
            and not frame[21]
            and self._receive_plain(frame, checksum_verified, _ETHERNET_HEADER)
        ):
            return
        self._receive(
            frame[_ETHERNET_HEADER:], looped_back=False, checksum_verified=checksum_verified
        )

    def input(self, packet: bytes) -> None:
        self._receive(packet, looped_back=False, checksum_verified=False)

    def _receive(self, packet: bytes, *, looped_back: bool, checksum_verified: bool) -> None:
        counters = self.counters
        if (
            not looped_back
            and type(packet) is bytes
            and len(packet) >= MIN_HEADER_LENGTH
            and packet[0] == 0x45  # version 4, no options
            and not packet[6] & 0xBF  # no fragment, no reserved flag (DF may be set)
            and not packet[7]
            and self._receive_plain(packet, checksum_verified)
        ):
            return
        try:
            header, payload_view = wire.parse(packet)
        except Malformed:
            counters["malformed"] += 1
            return
        problem = self._refusal(header, looped_back)
        if problem is not None:
            counters[problem] += 1
            return
        payload = bytes(payload_view)
        if header.is_fragment:
            counters["rx_fragments"] += 1
            whole = self.reassembler.add(header, payload, self._time.now_ns())
            if whole is None:
                self._watch_reassembly()
                return
            payload = whole
            header = Ipv4Header(
                source=header.source,
                destination=header.destination,
                protocol=header.protocol,
                ttl=header.ttl,
                identification=header.identification,
                tos=header.tos,
            )
            raw_header = wire.emit_header(header, len(payload))
            checksum_verified = False  # the interface saw only the pieces
        else:
            raw_header = packet[: header.length]
        counters["rx_datagrams"] += 1
        received = ReceivedPacket(
            header.source,
            header.destination,
            header.protocol,
            header.ttl,
            header.tos,
            checksum_verified and not looped_back,
            raw_header,
        )
        handler = self._handlers.get(header.protocol)
        if handler is not None:
            handler(received, payload)
            return
        counters["unknown_protocol"] += 1
        if self.unhandled_protocol is not None:
            self.unhandled_protocol(received, payload)

    def _receive_plain(self, packet: bytes, checksum_verified: bool, at: int = 0) -> bool:
        """:meth:`_receive` for a datagram from the wire without options
        that is no fragment (at ``at`` in ``packet``: a frame's), without
        building a header object; False when it is not for this path after
        all (the general one then counts it)."""
        (
            _,
            tos,
            total_length,
            identification,
            flags,
            ttl,
            protocol,
            checksum,
            source,
            destination,
        ) = wire.FIXED.unpack_from(packet, at)
        if total_length < MIN_HEADER_LENGTH or total_length > len(packet) - at:
            return False
        counters = self.counters
        destination_int = int.from_bytes(destination, "big")
        source_int = int.from_bytes(source, "big")
        # The header's words summed from the fields already read (an address
        # is congruent to the sum of its halves modulo 0xFFFF); a right
        # header sums to "negative zero", a multiple of 0xFFFF (never 0).
        words = (
            (0x4500 | tos)
            + total_length
            + identification
            + flags
            + (ttl << 8 | protocol)
            + checksum
            + source_int
            + destination_int
        )
        if words % 0xFFFF:
            counters["malformed"] += 1  # header checksum mismatch
            return True
        if (
            destination_int != self._local_int
            and self._interface is not None
            and destination_int not in self._broadcast_ints
        ):
            counters["not_for_us"] += 1
            return True
        if source_int != self._sane_source:
            if self._martian(source_int):
                counters["martian_source"] += 1  # see _martian
                return True
            self._sane_source = source_int
        counters["rx_datagrams"] += 1
        payload = packet[at + MIN_HEADER_LENGTH : at + total_length]
        plain = self._plain_handlers.get(protocol)
        if plain is not None:
            plain(ipv4_address(source), ipv4_address(destination), tos, checksum_verified, payload)
            return True
        received = ReceivedPacket(
            ipv4_address(source),
            ipv4_address(destination),
            protocol,
            ttl,
            tos,
            checksum_verified,
            packet[at : at + MIN_HEADER_LENGTH],
        )
        handler = self._handlers.get(protocol)
        if handler is not None:
            handler(received, payload)
            return True
        counters["unknown_protocol"] += 1
        if self.unhandled_protocol is not None:
            self.unhandled_protocol(received, payload)
        return True

    def _refusal(self, header: Ipv4Header, looped_back: bool) -> str | None:
        """Why a parsed datagram is dropped before delivery (the counter to
        raise), or None to deliver it."""
        # Integer comparisons: IPv4Address's own are Python-level and this
        # runs for every packet.
        destination_int = int(header.destination)
        if not (
            self._interface is None
            or destination_int == self._local_int
            or destination_int in self._broadcast_ints
        ):
            return "not_for_us"
        if not looped_back and self._martian(int(header.source)):
            return "martian_source"
        if header.options:
            # RFC 7126 4.3/4.4 and Linux's accept_source_route=0: a source
            # route would make us answer through a path the sender chose
            # (spoofing aid); not honoured, the datagram goes. Options that
            # do not parse go too.
            return options_problem(header.options)
        return None

    def _martian(self, source: int) -> bool:
        """Whether a datagram from the wire with this source address is
        dropped unanswered (RFC 1122 3.2.1.3, as Linux's martian checks):
        "this network" (0.0.0.0/8), loopback (127.0.0.0/8), multicast,
        reserved (240.0.0.0/4) and limited broadcast, our subnet's directed
        broadcast, or our own address. An answer to any of them is
        forged-source reflection (to a broadcast: an amplifier) or a loop."""
        return (
            source >= 0xE0000000  # 224.0.0.0/4, 240.0.0.0/4, 255.255.255.255
            or source >> 24 == 0
            or source >> 24 == 127
            or source == self._local_int
            or source in self._broadcast_ints
        )

    def _watch_reassembly(self) -> None:
        """Make sure incomplete datagrams are freed at their timeout even
        if no further fragment arrives to trigger the check."""
        if self._expiry_task is not None or not len(self.reassembler):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._expiry_task = loop.create_task(self._expire_reassembly())

    async def _expire_reassembly(self) -> None:
        try:
            while (deadline := self.reassembler.next_deadline_ns()) is not None:
                await self._time.sleep_ns(deadline - self._time.now_ns())
                self.reassembler.expire(self._time.now_ns())
        finally:
            self._expiry_task = None

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()

    # -- sending -------------------------------------------------------------

    def next_hop(self, destination: IPv4Address) -> IPv4Address | MacAddress:
        """The neighbour to resolve for ``destination``, or the Ethernet
        address itself for broadcast and multicast."""
        destination_int = int(destination)
        if destination_int in self._broadcast_ints:
            return BROADCAST_MAC
        if destination_int >> 28 == 0xE:  # 224.0.0.0/4
            return multicast_mac(destination)
        interface = self._interface
        if interface is None:
            raise NoRoute(f"no IPv4 address configured yet; cannot reach {destination}")
        if destination_int & self._netmask_int == self._network_int:
            return destination
        if self._gateway is None:
            raise NoRoute(f"{destination} is outside {interface.network} and there is no gateway")
        return self._gateway

    async def next_hop_mac(self, destination: IPv4Address) -> MacAddress:
        """The Ethernet address to send a datagram for ``destination`` to
        (waiting for its resolution: only for callers with nothing else to do)."""
        hop = self.next_hop(destination)
        if isinstance(hop, MacAddress):
            return hop
        return await self._arp.query(hop)

    def resolving(self, destination: IPv4Address) -> bool:
        """Whether the neighbour ``destination`` goes through has not (or
        recently could not) be resolved: a datagram sent there waits or is lost."""
        try:
            hop = self.next_hop(destination)
        except NoRoute:
            return False
        if isinstance(hop, MacAddress):
            return False
        return self._arp.lookup(hop) is None

    def _next_identification(self) -> int:
        self._identification = (self._identification + 1) & 0xFFFF
        return self._identification

    async def write(
        self,
        destination: IPv4Address,
        protocol: int,
        payload: bytes,
        *,
        ttl: int = 64,
        dont_fragment: bool = False,
        source: IPv4Address | None = None,
        segment_size: int | None = None,
        tos: int = 0,
    ) -> None:
        """Send one datagram, fragmenting above the MTU.

        Never waits for address resolution: a datagram for a neighbour not
        yet resolved waits in that neighbour's queue (see
        :class:`~looming.net.arp.ArpLayer`) and this returns at once.

        A TCP layer may pass a packet of up to :meth:`segment_limit` bytes
        with ``segment_size`` (its MSS for this connection): an interface with
        segmentation offload then cuts it into segments of that payload size.
        Such a packet's TCP checksum holds only the pseudo-header sum (the
        interface finishes it per segment); when the packet does not go to
        such an interface after all, it is cut into segments here.
        """
        if (
            segment_size is None
            and source is None
            and self._local_address is not None
            and len(payload) <= self.mtu(destination)
            and not self.is_local(destination)
        ):
            route = self._route
            if route[0] is not destination:
                route = self._route_to(destination)
            pending = self._send_plain(
                route, protocol, payload, ttl, dont_fragment, tos, "tx_datagrams"
            )
            if pending is not None:
                await pending
            return
        if segment_size is not None and protocol == IpProtocol.TCP:
            if await self._write_burst(
                destination, payload, segment_size, ttl, tos, dont_fragment, source
            ):
                return
            if self.is_local(destination):
                payload = finish_tcp_checksum(payload)
                segment_size = None
        if source is None:
            source = self.source_for(destination)
        header = Ipv4Header(
            source=source,
            destination=destination,
            protocol=protocol,
            ttl=ttl,
            identification=self._next_identification(),
            dont_fragment=dont_fragment,
            tos=tos,
        )
        if self.is_local(destination):
            # Our own address: deliver through input() on the next turn of
            # the loop, as a device would, without touching the wire.
            packet = wire.emit(header, payload)
            asyncio.get_running_loop().call_soon(
                functools.partial(self._receive, packet, looped_back=True, checksum_verified=False)
            )
            self.counters["tx_local"] += 1
            return
        hop = self.next_hop(destination)
        frames = self._frames(header, payload, segment_size)
        if isinstance(hop, MacAddress):
            for ethertype, frame, size in frames:
                await self._ethernet.write(hop, ethertype, frame, segment_size=size)
            return
        await self._arp.send(hop, frames)

    def write_now(
        self,
        destination: IPv4Address,
        protocol: int,
        payload: bytes,
        *,
        dont_fragment: bool = False,
        segment_size: int | None = None,
        tos: int = 0,
    ) -> Awaitable[None] | None:
        """:meth:`write` (from our address, with the default TTL) without a
        coroutine where it can: None once the datagram is sent (or held for
        address resolution), else what finishes sending it, to be awaited.
        The common datagram, and a TCP packet for segmentation offload, go
        out so while the interface takes frames at once."""
        if self._local_address is not None and "write" not in self.__dict__:
            # ("write" set on the layer: a wrapper that sees every datagram.)
            route = self._route
            if route[0] is not destination:
                route = self._route_to(destination)
            if route[1] != self._local_int:
                if segment_size is None:
                    if len(payload) <= self.mtu(destination):
                        return self._send_plain(
                            route, protocol, payload, 64, dont_fragment, tos, "tx_datagrams"
                        )
                elif protocol == IpProtocol.TCP and self._offloads(payload):
                    self.counters["tx_offloaded"] += 1
                    return self._send_plain(
                        route, protocol, payload, 64, True, tos, None, segment_size
                    )
        return self.write(
            destination,
            protocol,
            payload,
            dont_fragment=dont_fragment,
            segment_size=segment_size,
            tos=tos,
        )

    async def _write_burst(
        self,
        destination: IPv4Address,
        payload: bytes,
        segment_size: int,
        ttl: int,
        tos: int,
        dont_fragment: bool,
        source: IPv4Address | None,
    ) -> bool:
        """For :meth:`write`: a TCP packet of several segments, handed to
        the interface's segmentation offload or cut here; False when the
        general path sends it (to our own address, or from a source given
        to an interface that segments)."""
        if self.is_local(destination):
            return False
        if source is None and await self._write_offloaded(
            destination, payload, ttl, tos, segment_size
        ):
            return True
        if len(payload) <= self.segment_limit(destination):
            return False
        # No interface to cut it (or too large for one): cut here, so that
        # no segment exceeds the peer's MSS and none is fragmented (RFC 9293
        # 3.7.1; DF as the caller asked).
        await self._write_cut(destination, payload, segment_size, ttl, tos, dont_fragment, source)
        return True

    async def _write_cut(
        self,
        destination: IPv4Address,
        payload: bytes,
        segment_size: int,
        ttl: int,
        tos: int,
        dont_fragment: bool,
        source: IPv4Address | None,
    ) -> None:
        """For :meth:`write`: a TCP packet of several segments that no
        interface cuts up, sent as separate segments of ``segment_size``."""
        origin = self.source_for(destination) if source is None else source
        pieces = cut_tcp_burst(payload, segment_size, origin, destination)
        if len(pieces) > 1:
            self.counters["tx_cut_in_software"] += 1
        for piece in pieces:
            await self.write(
                destination,
                IpProtocol.TCP,
                piece,
                ttl=ttl,
                dont_fragment=dont_fragment,
                tos=tos,
                source=source,
            )

    async def _write_offloaded(
        self, destination: IPv4Address, payload: bytes, ttl: int, tos: int, segment_size: int
    ) -> bool:
        """For :meth:`write`: a TCP packet from our address that the
        interface cuts into segments (always with DF), sent with the general
        path's bytes and counters but no header object; False when the
        general path must send it."""
        if self._local_address is None or not self._offloads(payload) or self.is_local(destination):
            return False
        pending = self._offload(destination, payload, ttl, tos, segment_size)
        if pending is not None:
            await pending
        return True

    def _offloads(self, payload: bytes) -> bool:
        """Whether the interface cuts a TCP packet of ``payload`` into segments."""
        offload = self._ethernet.capabilities.segmentation
        return bool(offload) and len(payload) <= offload - MIN_HEADER_LENGTH

    def _offload(
        self, destination: IPv4Address, payload: bytes, ttl: int, tos: int, segment_size: int
    ) -> Awaitable[None] | None:
        """For :meth:`_write_offloaded`, as :meth:`write_now` gives it."""
        self.counters["tx_offloaded"] += 1
        route = self._route
        if route[0] is not destination:
            route = self._route_to(destination)
        return self._send_plain(route, IpProtocol.TCP, payload, ttl, True, tos, None, segment_size)

    def _route_to(self, destination: IPv4Address) -> _Route:
        """``destination`` as :attr:`_route` holds it (its next hop not yet
        looked up), remembered there."""
        destination_int = int(destination)
        self._route = route = (
            destination,
            destination_int,
            destination_int.to_bytes(4, "big"),
            None,
        )
        return route

    def _send_plain(
        self,
        route: _Route,
        protocol: int,
        payload: bytes,
        ttl: int,
        dont_fragment: bool,
        tos: int,
        counter: str | None,
        segment_size: int | None = None,
    ) -> Awaitable[None] | None:
        """For :meth:`write`'s common datagram (from our address, to
        another host, unfragmented; with ``segment_size`` a TCP packet the
        interface segments): the same bytes as the general path, without
        building a header object, sent or held for the next hop's address
        resolution; ``counter`` is counted, if any. None once done, else
        what finishes sending it."""
        self._identification = identification = (self._identification + 1) & 0xFFFF
        destination, destination_int, destination_packed, hop = route
        if hop is None:
            assert destination is not None
            hop = self.next_hop(destination)
            self._route = (destination, destination_int, destination_packed, hop)
        packet = wire.emit_plain(
            self._local_packed,
            destination_packed,
            self._local_int + destination_int,
            protocol,
            ttl,
            identification,
            dont_fragment,
            tos,
            payload,
        )
        if counter is not None:
            self.counters[counter] += 1
        if isinstance(hop, MacAddress):
            return self._ethernet.write_now(hop, _IPV4, packet, segment_size=segment_size)
        mac = self._arp.lookup(hop)
        if mac is not None:
            return self._ethernet.write_now(mac, _IPV4, packet, segment_size=segment_size)
        return self._arp.send(hop, ((_IPV4, packet, segment_size),))  # held until resolved

    def _frames(self, header: Ipv4Header, payload: bytes, segment_size: int | None) -> list[Frame]:
        """The Ethernet payloads carrying one datagram (several when fragmented)."""
        destination = header.destination
        payload_mtu = self.mtu(destination)
        ipv4 = EthernetProtocol.IPV4
        if len(payload) <= payload_mtu and segment_size is None:
            self.counters["tx_datagrams"] += 1
            return [(ipv4, wire.emit(header, payload), None)]
        if (
            segment_size is not None
            and header.protocol == IpProtocol.TCP
            and len(payload) <= self.segment_limit(destination)
        ):
            # (Even a packet within the MTU: it may still hold more than one
            # of the peer's segments.)
            self.counters["tx_offloaded"] += 1
            offloaded = replace(header, dont_fragment=True)
            return [(ipv4, wire.emit(offloaded, payload), segment_size)]
        if segment_size is not None:
            payload = finish_tcp_checksum(payload)
        if len(payload) <= payload_mtu:
            self.counters["tx_datagrams"] += 1
            return [(ipv4, wire.emit(header, payload), None)]
        if header.dont_fragment:
            link_payload = self._ethernet.mtu - MIN_HEADER_LENGTH
            if len(payload) <= link_payload:
                # Above the path MTU learned, within the link's: a probe for
                # a larger path MTU (RFC 8899 4.5; TCP's, see tcp/plpmtud.py)
                # or a sender that knows better. The path decides.
                self.counters["tx_above_path_mtu"] += 1
                return [(ipv4, wire.emit(header, payload), None)]
            self.counters["tx_too_big"] += 1
            raise ValueError(
                f"{len(payload)} bytes exceed the link MTU payload {link_payload} "
                "and fragmenting is forbidden"
            )
        if len(payload) + MIN_HEADER_LENGTH > wire.MAX_PACKET_LENGTH:
            raise ValueError(f"{len(payload)} bytes do not fit one IPv4 datagram")
        self.counters["tx_datagrams"] += 1
        chunk = payload_mtu // 8 * 8
        view = memoryview(payload)
        frames: list[Frame] = []
        for offset in range(0, len(payload), chunk):
            fragment = replace(
                header,
                more_fragments=offset + chunk < len(payload),
                fragment_offset=offset,
            )
            self.counters["tx_fragments"] += 1
            frames.append((ipv4, wire.emit(fragment, view[offset : offset + chunk]), None))
        return frames
