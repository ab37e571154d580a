"""IPv6 (RFC 8200) on one link, over Ethernet: the link-local address made
from the interface's MAC (RFC 4291 appendix A), address resolution by
Neighbor Discovery (RFC 4861) with the neighbour cache of
``net/neighbours.py``, ICMPv6 echo (RFC 4443), and delivery of upper-layer
payloads with the same :class:`~looming.devices.net.ReceivedPacket` that
IPv4 hands up.

Packets larger than the link's MTU are fragmented at the source (RFC 8200
4.5) and fragments are reassembled, bounded, by ``net/reassembly.py``
(overlapping fragments drop the whole, RFC 5722; an atomic fragment, offset
0 without more to come, is taken as the whole packet it is, RFC 6946).

Errors sent, all from one token bucket (RFC 4443 2.4(f)): destination
unreachable (UDP's port unreachable); parameter problem for an unknown
Next Header (code 1, pointing at the field that named it), a malformed
extension header (code 0) and an unrecognised option whose action bits ask
for it (code 2, RFC 8200 4.2; action 11 not for a packet sent to a group),
a first fragment without the whole header chain through the upper-layer
header, which is discarded (code 3, pointer 0, RFC 8200 4.5 and RFC 7112);
time exceeded code 1 when a packet whose first fragment came is not
complete in time (RFC 8200 4.5). Errors taken: Packet Too Big, which lowers
the path MTU (and TCP's MSS) for its destination (RFC 8201), one quoting
TCP only after TCP's check of ports and sequence number (RFC 5927); destination
unreachable, time exceeded and parameter problem quoting a packet we sent,
handed to the layer registered for its protocol (:meth:`register_errors`;
TCP and UDP take them as their ICMP errors, with the same hard and soft
meanings as Linux gives them).

Addresses: the link-local one (taken as unique: it comes from the MAC),
static ones with their on-link prefix and a static gateway
(:meth:`Ipv6Layer.add_static`: used once duplicate address detection has
found no other holder), and with ``autoconf`` those of
``net/slaac.py``: Router Solicitations at :meth:`Ipv6Layer.start`, Router
Advertisements giving default routers, on-link prefixes, the MTU and DNS
servers, Reachable Time and Retrans Timer (clamped), and addresses from
autonomous prefixes after duplicate address detection (a probe from ::,
one RetransTimer without an answer); DHCPv6 leases
(:meth:`Ipv6Layer.lease_address`) are probed the same way.  Each
solicited-node group joined is announced by an MLDv2 report (repeated once
within a second), and MLD queries are answered.  Options in extension
headers after a fragment header are not checked (the reassembled packet
is delivered as the pieces' Next Header says).  A destination neither link-local, nor multicast,
nor on an on-link prefix goes to a default router (RFC 4861 5.2); without
one it is unreachable (RFC 4943: never assumed on-link).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

from looming.devices.net import EthernetProtocol, IpProtocol, MacAddress, ReceivedPacket
from looming.devices.random import Random
from looming.devices.time import Time
from looming.errors import ConnectionTimeout, Malformed, NoRoute
from looming.net._timeouts import wait_until_done
from looming.net.ethernet import EthernetLayer, TokenBucket
from looming.net.icmp import IcmpError, QuotedHeader
from looming.net.ipv4 import cut_tcp_burst
from looming.net.neighbours import (
    NeighbourCache,
    NeighbourSettings,
    NeighbourState,
    Solicitation,
)
from looming.net.reassembly import Reassembler, ReassemblyKey
from looming.net.slaac import Action, Assign, Autoconf, Remove, SolicitRouters, StartDad
from looming.net.wire import icmpv6, mld, ndp
from looming.net.wire import ipv6 as wire
from looming.net.wire.icmp import IcmpType, UnreachableCode
from looming.net.wire.icmpv6 import Icmpv6Header, Icmpv6Type
from looming.net.wire.ipv6 import FragmentHeader, Ipv6Header, NextHeader, UnrecognisedOption

Ipv6Handler = Callable[[ReceivedPacket[IPv6Address], bytes], None]
"""Called with (what IPv6 knows of the packet, its upper-layer payload)."""

# Packets of the stack's own waiting for the device, by kind, beyond which
# new ones are dropped (counted): upper layers' packets never wait here.
_MAX_PENDING = {"nd": 256, "icmp": 256, "released": 1024}
_PATH_MTU_LIFETIME_NS = 600 * 1_000_000_000  # RFC 8201 5.3: try larger after 10 minutes
_MAX_PATH_MTUS = 1024
_MAX_REACHABLE_MS = 3_600_000  # RFC 4861 6.2.1 MAX_REACHABLE_TIME
_MIN_RETRANS_MS, _MAX_RETRANS_MS = 100, 60_000  # bounds on an advertised Retrans Timer

PathMtuListener = Callable[[IPv6Address], None]
"""Called with a destination whose path MTU was just lowered."""

_ERRORS_FOR_UPPER_LAYERS = frozenset(
    {Icmpv6Type.DESTINATION_UNREACHABLE, Icmpv6Type.TIME_EXCEEDED, Icmpv6Type.PARAMETER_PROBLEM}
)


@dataclass(frozen=True, slots=True)
class Icmpv6Error:
    """An ICMPv6 error received about a packet we sent: ``original`` holds
    its addresses and upper-layer protocol, ``original_payload`` at least
    the first 8 bytes of its upper-layer header."""

    reporter: IPv6Address
    type: int
    code: int
    original: Ipv6Header
    original_payload: bytes
    mtu: int = 0  # of a Packet Too Big

    @property
    def hard(self) -> bool:
        """Whether the destination refuses this traffic for good (the
        codes Linux makes fatal): administratively prohibited, port
        unreachable, source policy, reject route, and Parameter Problem."""
        if self.type == Icmpv6Type.PARAMETER_PROBLEM:
            return True
        return self.type == Icmpv6Type.DESTINATION_UNREACHABLE and self.code in (1, 4, 5, 6)


Icmpv6ErrorHandler = Callable[[Icmpv6Error], None]

# RFC 4443 3.1 Destination Unreachable codes -> the RFC 1122 code with the
# same meaning, for TCP and UDP, which classify errors by IPv4's codes.
_UNREACHABLE_AS_IPV4 = {0: 0, 1: 13, 2: 1, 3: 1, 4: 3, 5: 13, 6: 13}


def as_icmp_error(error: Icmpv6Error) -> IcmpError:
    """The ICMPv6 error in the form TCP and UDP take for ICMP errors: the
    same hard/soft meaning (port unreachable stays port unreachable,
    Parameter Problem is protocol unreachable, Time Exceeded is time
    exceeded, Packet Too Big is "fragmentation needed" with its MTU).
    Those layers read the addresses, the quoted ports and
    sequence, and the codes; the quoted header carries IPv6 addresses."""
    if error.type == Icmpv6Type.TIME_EXCEEDED:
        kind, code = IcmpType.TIME_EXCEEDED, error.code
    elif error.type == Icmpv6Type.PACKET_TOO_BIG:  # IPv4's "fragmentation needed"
        kind, code = IcmpType.DESTINATION_UNREACHABLE, UnreachableCode.FRAGMENTATION_NEEDED
    elif error.type == Icmpv6Type.PARAMETER_PROBLEM:
        kind, code = IcmpType.DESTINATION_UNREACHABLE, 2
    else:
        kind, code = IcmpType.DESTINATION_UNREACHABLE, _UNREACHABLE_AS_IPV4.get(error.code, 1)
    quoted = error.original
    original = QuotedHeader(quoted.source, quoted.destination, quoted.next_header)
    return IcmpError(
        error.reporter, kind, code, original, error.original_payload, next_hop_mtu=error.mtu
    )


# Upper-layer protocols a packet may name directly after the fixed header.
_UPPER_LAYER = frozenset({NextHeader.TCP, NextHeader.UDP, NextHeader.ICMPV6})
# The upper-layer header a first fragment must hold whole (RFC 7112; the
# sizes Linux checks: TCP's and UDP's headers, ICMPv6's first eight bytes;
# at least one byte of any other protocol, none after No Next Header).
_UPPER_HEADER_LENGTH: dict[int, int] = {NextHeader.TCP: 20, NextHeader.UDP: 8, NextHeader.ICMPV6: 8}


def _incomplete_first_fragment(fragment: FragmentHeader, data: memoryview) -> bool:
    """Whether a first fragment (offset 0, more to come) lacks part of the
    header chain through the upper-layer header (RFC 8200 4.5, RFC 7112)."""
    if fragment.offset != 0:
        return False
    try:
        chain = wire.walk(fragment.next_header, data)
    except wire.ExtensionHeaderProblem:
        return False  # a header wrong in itself: judged in the whole packet
    except Malformed:
        return True  # the extension headers run past the fragment
    if chain.fragment is not None:
        return False  # a fragment header inside: dropped after reassembly
    if chain.protocol == NextHeader.NO_NEXT_HEADER:
        return False
    return len(chain.payload) < _UPPER_HEADER_LENGTH.get(chain.protocol, 1)


_ORIGINS = {
    "slaac": "by SLAAC, from a router's prefix",
    "dhcpv6": "leased by DHCPv6",
    "static": "static, no duplicate found",
}

_LOOPBACK_PACKED = IPv6Address("::1").packed
_UNSPECIFIED_PACKED = bytes(16)
_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def _martian_source(packet: bytes) -> bool:
    """Whether a packet's source address may not come from the wire (RFC
    4291, as Linux's ip6_rcv_core): multicast (2.7), loopback (2.5.3),
    IPv4-mapped (2.5.5.2), or the unspecified address (2.5.2) on anything
    but a Neighbor Solicitation without extension headers, which duplicate
    address detection sends so (RFC 4862 5.4.2; ND handles it)."""
    source = packet[8:24]
    if source[0] == 0xFF or source == _LOOPBACK_PACKED or source[:12] == _V4_MAPPED_PREFIX:
        return True
    return source == _UNSPECIFIED_PACKED and not (
        packet[6] == NextHeader.ICMPV6
        and len(packet) > wire.HEADER_LENGTH
        and packet[wire.HEADER_LENGTH] == Icmpv6Type.NEIGHBOR_SOLICITATION
    )


def _next_header_pointer(packet: bytes, chain: wire.Chain) -> int:
    """The offset in ``packet`` of the Next Header field naming the
    upper-layer protocol: 6 in the fixed header, else the first byte of
    the last extension header."""
    offset, last = wire.HEADER_LENGTH, 6
    for extension in chain.headers:
        last = offset
        offset += 8 if isinstance(extension, FragmentHeader) else (packet[offset + 1] + 1) * 8
    return last


def _unrecognised_option(packet: bytes, chain: wire.Chain) -> tuple[int, int] | None:
    """The offset and action (RFC 8200 4.2) of the first option in the
    hop-by-hop or destination options headers that looming does not know
    and may not skip; None when there is none."""
    offset = wire.HEADER_LENGTH
    for extension in chain.headers:
        length = 8 if isinstance(extension, FragmentHeader) else (packet[offset + 1] + 1) * 8
        if isinstance(extension, wire.OptionsHeader):
            position, end = offset + 2, offset + length
            while position < end:
                kind = packet[position]
                if kind == wire.OptionType.PAD1:
                    position += 1
                    continue
                if kind not in _KNOWN_OPTIONS and kind >> 6 != UnrecognisedOption.SKIP:
                    return position, kind >> 6
                position += 2 + packet[position + 1]
        offset += length
    return None


_KNOWN_OPTIONS = frozenset({wire.OptionType.PADN, wire.OptionType.ROUTER_ALERT})


def _is_icmpv6_error(chain: wire.Chain) -> bool:
    """RFC 4443 2.4(e.1): no error is sent about an ICMPv6 error."""
    return (
        chain.protocol == NextHeader.ICMPV6
        and chain.fragment is None
        and len(chain.payload) > 0
        and chain.payload[0] < 128
    )


AddressListener = Callable[[IPv6Address, bool], None]
"""Called with an address autoconfiguration assigned (True) or removed (False)."""

log = logging.getLogger(__name__)
_ANY_GLOBAL = IPv6Address("2000::")  # a destination for which source_for picks a global address


class Ipv6Layer:
    """IPv6 with a link-local address (and static ones added), answering
    Neighbor Solicitations and echo requests, resolving neighbours for
    what it sends."""

    def __init__(
        self,
        ethernet: EthernetLayer,
        time: Time,
        random: Random,
        *,
        settings: NeighbourSettings | None = None,
        hop_limit: int = 64,
        reassembler: Reassembler | None = None,
        autoconf: bool = False,
        secret: bytes | None = None,
    ) -> None:
        """``autoconf`` runs router discovery and SLAAC; its RFC 7217
        ``secret`` comes from ``random`` unless given."""
        self._ethernet = ethernet
        self._time = time
        # RFC 7739: fragment identifications others cannot predict.
        self._identification = random.randint(0, 0xFFFFFFFF)
        self.reassembler = reassembler if reassembler is not None else Reassembler()
        self._reassembly_timer: asyncio.TimerHandle | None = None
        self.hop_limit = hop_limit
        self.link_local = wire.link_local_from_mac(ethernet.mac)
        self._addresses: list[IPv6Address] = []
        self._accepted: set[IPv6Address] = {wire.ALL_NODES}
        self._accepted_packed: set[bytes] = {wire.ALL_NODES.packed}
        self._handlers: dict[int, Ipv6Handler] = {NextHeader.ICMPV6: self._on_icmpv6}
        self.neighbours = NeighbourCache(settings)
        ethernet.policy.bound_v6 = self.neighbours.binds  # SYNs of neighbours (FramePolicy)
        self.counters: Counter[str] = Counter()
        self._pings: dict[tuple[IPv6Address, int, int], asyncio.Future[None]] = {}
        self._ping_identifier = int.from_bytes(ethernet.mac[4:6], "big")
        self._ping_sequence = 0
        self._outgoing: dict[str, deque[tuple[MacAddress, bytes]]] = {
            kind: deque() for kind in _MAX_PENDING
        }
        self._drain_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._path_mtu: OrderedDict[IPv6Address, tuple[int, int]] = OrderedDict()
        self._path_mtu_listeners: list[PathMtuListener] = []
        # A token bucket on the errors we send (RFC 4443 2.4(f)).
        self.error_burst = 50
        self.errors_per_second = 1000
        self._error_tokens = float(self.error_burst)
        self._error_refilled_ns = time.now_ns()
        # Neighbor Solicitations for us (RFC 4861 7.2.3 asks each to be
        # answered, and to make its sender a neighbour): beyond so many a
        # second after a burst, dropped before ICMPv6 is parsed, so that a
        # flood costs little more than a header check each.
        self._solicit_bucket = TokenBucket(1000, 100, self._error_refilled_ns)
        # Fragments that would start a new reassembly, likewise: a storm of
        # first pieces (each a new packet) costs a header check apiece
        # beyond this rate, not a reassembly each (``fragment_policed``).
        self._reassembly_bucket = TokenBucket(10_000, 1_000, self._error_refilled_ns)
        self._random = random
        # Static on-link prefixes as (network, mask) integers: tested per packet.
        self._static_on_link: set[tuple[int, int]] = set()
        self.gateway: IPv6Address | None = None
        # The address table and duplicate address detection, always; router
        # discovery and SLAAC only with ``autoconf`` (the key is for SLAAC).
        self.router_discovery = autoconf
        key = secret if secret is not None else random.bytes(16) if autoconf else bytes(16)
        self.autoconf = Autoconf(key, bytes(ethernet.mac), link_mtu=ethernet.mtu)
        self._statics: list[IPv6Address] = []
        self._static_prefixes: dict[IPv6Address, int] = {}
        self._autoconf_timer: asyncio.TimerHandle | None = None
        self._address_listeners: list[AddressListener] = []
        self._address_waiters: list[asyncio.Future[None]] = []
        self._managed_listeners: list[Callable[[], None]] = []
        self._report_timers: set[asyncio.TimerHandle] = set()
        self._router_turn = 0
        self._duplicate_listeners: list[Callable[[IPv6Address], None]] = []
        self._error_handlers: dict[int, Icmpv6ErrorHandler] = {}
        self._first_fragments: dict[ReassemblyKey, bytes] = {}
        # Until then (ns) the link-local address is being probed, in use
        # meanwhile as RFC 4429's optimistic addresses are (None: not probing).
        self._link_local_probe_until: int | None = None
        self.add_address(self.link_local)
        ethernet.register(EthernetProtocol.IPV6, self._on_frame)

    # -- configuration -----------------------------------------------------------

    def addresses(self) -> list[IPv6Address]:
        return list(self._addresses)

    def interfaces(self) -> list[IPv6Interface]:
        """The addresses beyond link-local in use, with their prefixes
        (/128 for one added without a prefix)."""
        entries = self.autoconf.addresses
        found = []
        for address in self._addresses:
            if address.is_link_local:
                continue
            entry = entries.get(address)
            length = entry.prefix.prefixlen if entry is not None else 128
            length = self._static_prefixes.get(address, length)
            found.append(IPv6Interface((address, length)))
        return found

    def add_address(self, address: IPv6Address, prefix_length: int | None = None) -> None:
        """Answer for ``address`` at once, without duplicate address
        detection (:meth:`add_static` runs it); ``prefix_length`` makes its
        prefix on-link."""
        if address.is_multicast or address.is_unspecified:
            raise ValueError(f"{address} cannot be an interface address")
        if prefix_length is not None:
            self._add_on_link(IPv6Network((address, prefix_length), strict=False))
        if address not in self._addresses:
            self._addresses.append(address)
            self._recompute_accepted()

    def add_static(self, address: IPv6Address, prefix_length: int) -> None:
        """A manually configured address: its prefix on-link at once, the
        address itself after duplicate address detection, which
        :meth:`start` begins (RFC 4862 5.4: every unicast address)."""
        if address.is_multicast or address.is_unspecified:
            raise ValueError(f"{address} cannot be an interface address")
        self._add_on_link(IPv6Network((address, prefix_length), strict=False))
        self._statics.append(address)
        self._static_prefixes[address] = prefix_length

    def _add_on_link(self, prefix: IPv6Network) -> None:
        self._static_on_link.add((int(prefix.network_address), int(prefix.netmask)))

    def remove_address(self, address: IPv6Address) -> None:
        if address in self._addresses and address != self.link_local:
            self._addresses.remove(address)
        self._recompute_accepted()

    def _recompute_accepted(self) -> None:
        """All-nodes, our addresses and the solicited-node groups of those
        and of the tentative ones (whose probes must reach us)."""
        tentative = list(self.autoconf.addresses)
        accepted = {wire.ALL_NODES, *self._addresses}
        accepted.update(wire.solicited_node(a) for a in (*self._addresses, *tentative))
        self._accepted = accepted
        self._accepted_packed = {address.packed for address in accepted}

    def set_gateway(self, gateway: IPv6Address | None) -> None:
        """A static default router (used when no advertised one is alive)."""
        if gateway is not None and (gateway.is_multicast or gateway.is_unspecified):
            raise ValueError(f"{gateway} cannot be a gateway")
        self.gateway = gateway

    def watch_addresses(self, listener: AddressListener) -> None:
        """Call ``listener`` when autoconfiguration assigns or removes an address."""
        self._address_listeners.append(listener)

    def dns_servers(self) -> list[IPv6Address]:
        """Recursive DNS servers from Router Advertisements (RFC 8106)."""
        return self.autoconf.current_dns_servers(self._now())

    def register(self, protocol: int, handler: Ipv6Handler) -> None:
        """Deliver payloads whose upper-layer protocol is ``protocol``."""
        self._handlers[protocol] = handler

    def mtu(self, destination: IPv6Address) -> int:
        """The largest payload of one packet to ``destination``: the link's,
        or less when a Packet Too Big said so (RFC 8201)."""
        link = self._ethernet.mtu
        if self.autoconf.mtu is not None:
            link = min(link, self.autoconf.mtu)
        if self._path_mtu:
            entry = self._path_mtu.get(destination)
            if entry is not None:
                if entry[1] > self._now():
                    return min(entry[0], link) - wire.HEADER_LENGTH
                del self._path_mtu[destination]
        return link - wire.HEADER_LENGTH

    def watch_path_mtu(self, listener: PathMtuListener) -> None:
        """Call ``listener`` with each destination whose path MTU falls."""
        self._path_mtu_listeners.append(listener)

    def source_for(self, destination: IPv6Address) -> IPv6Address:
        """Our address for reaching ``destination``: link-local for link-local
        and multicast destinations, else the first other address we hold."""
        if destination.is_link_local or destination.is_multicast:
            return self.link_local
        deprecated = set(self.autoconf.deprecated())
        candidates = [a for a in self._addresses if not a.is_link_local]
        # RFC 6724 rule 3: a deprecated address only when nothing else is left.
        candidates.sort(key=lambda a: a in deprecated)
        return candidates[0] if candidates else self.link_local

    def next_hop(self, destination: IPv6Address) -> IPv6Address | None:
        """Whom to hand a packet for ``destination`` (RFC 4861 5.2): itself
        when on-link, else a default router; None when unreachable."""
        value = int(destination)
        # fe80::/10 and ff00::/8, by their top bits: this runs for every packet.
        if value >> 118 == 0x3FA or value >> 120 == 0xFF:
            return destination
        for network, mask in self._static_on_link:
            if value & mask == network:
                return destination
        autoconf = self.autoconf
        now = self._now()
        if autoconf.is_on_link(destination, now):
            return destination
        routers = autoconf.alive_routers(now)
        if routers:
            return self._choose_router(routers)
        return self.gateway

    def _choose_router(self, routers: list[IPv6Address]) -> IPv6Address:
        """RFC 4861 6.3.6: a router known (or probably) reachable, the first
        such; when none is, each in turn, so that one that never answers
        does not take all the traffic."""
        for router in routers:
            state = self.neighbours.state(router)
            if state is not None and state is not NeighbourState.INCOMPLETE:
                return router
        self._router_turn += 1
        return routers[self._router_turn % len(routers)]

    # -- receiving -----------------------------------------------------------------

    def _on_frame(
        self, source: MacAddress, destination: MacAddress, payload: bytes, checksum_verified: bool
    ) -> None:
        if source[0] & 1:
            # A group Ethernet source is never a sender's: forged (as IPv4's).
            self.counters["martian_mac_source"] += 1
            return
        self._receive(payload, checksum_verified)

    def input(self, packet: bytes) -> None:
        """Handle one received IPv6 packet."""
        self._receive(packet, False)

    def _receive(self, packet: bytes, checksum_verified: bool) -> None:
        counters = self.counters
        if (
            len(packet) > wire.HEADER_LENGTH
            and packet[6] == NextHeader.ICMPV6
            and packet[wire.HEADER_LENGTH] == Icmpv6Type.NEIGHBOR_SOLICITATION
            and packet[24:40] in self._accepted_packed
            and not self._solicit_bucket.take(self._now())
        ):
            counters["solicit_policed"] += 1
            return
        if (
            len(packet) >= 48
            and packet[6] == NextHeader.FRAGMENT
            and self._new_reassembly_policed(packet)
        ):
            counters["fragment_policed"] += 1
            return
        try:
            header, payload_view = wire.parse(packet)
        except Malformed:
            counters["malformed"] += 1
            return
        if header.destination not in self._accepted:
            counters["not_for_us"] += 1
            return
        if _martian_source(packet):
            counters["martian_source"] += 1
            return
        if header.next_header in _UPPER_LAYER:
            # No extension headers (the common case): nothing to walk.
            protocol, upper = header.next_header, bytes(payload_view)
            raw_header, pointer = packet[: wire.HEADER_LENGTH], 6
            self._deliver(header, protocol, upper, raw_header, pointer, checksum_verified)
            return
        chain = self._walk(header, packet, payload_view)
        if chain is None:
            return
        if chain.fragment is None:
            protocol, upper = chain.protocol, bytes(chain.payload)
            raw_header = packet[: len(packet) - len(chain.payload)]
            pointer = _next_header_pointer(packet, chain)
        else:
            whole = self._reassemble(header, chain.fragment, chain.payload, packet)
            if whole is None:
                return
            protocol, upper = whole
            raw_header = wire.emit_header(replace(header, next_header=protocol), len(upper))
            checksum_verified = False  # the interface saw only the pieces
            pointer = 6
        self._deliver(header, protocol, upper, raw_header, pointer, checksum_verified)

    def _new_reassembly_policed(self, packet: bytes) -> bool:
        """Whether ``packet``, whose fragment header follows the fixed one,
        would start a new reassembly beyond the budget (read from its
        bytes, before parsing; atomic fragments start none)."""
        placement = packet[42] << 8 | packet[43]
        if placement & 0xFFF9 == 0 or packet[24:40] not in self._accepted_packed:
            return False  # atomic (RFC 6946), or not for us: counted later
        key = (packet[8:24], packet[24:40], packet[40], int.from_bytes(packet[44:48], "big"))
        if key in self.reassembler:
            return False
        return not self._reassembly_bucket.take(self._now())

    def _deliver(
        self,
        header: Ipv6Header,
        protocol: int,
        upper: bytes,
        raw_header: bytes,
        pointer: int,
        checksum_verified: bool,
    ) -> None:
        """Hand the upper-layer payload of a packet to its protocol's
        handler; a protocol nobody handles gets a Parameter Problem
        pointing (``pointer``) at the Next Header field that names it."""
        counters = self.counters
        counters["rx_packets"] += 1
        received = ReceivedPacket(
            header.source,
            header.destination,
            protocol,
            header.hop_limit,
            header.traffic_class,
            checksum_verified,
            raw_header,
        )
        handler = self._handlers.get(protocol)
        if handler is None:
            counters["unknown_protocol"] += 1
            if protocol != NextHeader.NO_NEXT_HEADER:  # RFC 8200 4.7: nothing follows
                # RFC 8200 section 4: the offset of the Next Header field.
                code = icmpv6.ParameterProblemCode.UNRECOGNISED_NEXT_HEADER
                self._send_error(
                    header, raw_header + upper, Icmpv6Type.PARAMETER_PROBLEM, code, pointer
                )
            return
        handler(received, upper)

    def _walk(self, header: Ipv6Header, packet: bytes, payload: memoryview) -> wire.Chain | None:
        """The extension headers, or None when the packet is dropped (and
        answered with a Parameter Problem where RFC 8200 says so)."""
        try:
            chain = wire.walk(header.next_header, payload)
        except wire.ExtensionHeaderProblem as problem:
            self.counters["extension_header_problem"] += 1
            problem_type = Icmpv6Type.PARAMETER_PROBLEM
            self._send_error(header, packet, problem_type, problem.code, problem.pointer)
            return None
        except Malformed:
            self.counters["malformed"] += 1
            return None
        bad_option = _unrecognised_option(packet, chain)
        if bad_option is None:
            return chain
        position, action = bad_option
        self.counters["unrecognised_option"] += 1
        report = action == UnrecognisedOption.DISCARD_AND_REPORT or (
            action == UnrecognisedOption.DISCARD_AND_REPORT_UNLESS_MULTICAST
            and not header.destination.is_multicast
        )
        if report and not _is_icmpv6_error(chain):
            code = icmpv6.ParameterProblemCode.UNRECOGNISED_OPTION
            self._send_error(
                header, packet, Icmpv6Type.PARAMETER_PROBLEM, code, position, to_group=True
            )
        return None

    def _reassemble(
        self, header: Ipv6Header, fragment: FragmentHeader, data: memoryview, packet: bytes
    ) -> tuple[int, bytes] | None:
        """Add a fragment; the upper-layer protocol and payload of the whole
        once it is complete."""
        counters = self.counters
        if fragment.is_atomic:
            # RFC 6946 section 4: a whole packet in a fragment header, taken
            # as it is, never mixed with other fragments of its identification.
            counters["rx_atomic_fragments"] += 1
            return self._upper_layer(fragment, bytes(data))
        counters["rx_fragments"] += 1
        if _incomplete_first_fragment(fragment, data):
            # RFC 8200 4.5: discarded, and a Parameter Problem code 3
            # pointing at the start of the packet.
            counters["first_fragment_incomplete"] += 1
            code = icmpv6.ParameterProblemCode.INCOMPLETE_CHAIN
            self._send_error(header, packet, Icmpv6Type.PARAMETER_PROBLEM, code, 0)
            return None
        # The Next Header is part of the key: pieces that disagree on it
        # never make a whole. The addresses as bytes: their hash is cached,
        # an IPv6Address's is computed at every lookup.
        key = (packet[8:24], packet[24:40], fragment.next_header, fragment.identification)
        whole = self.reassembler.add_piece(
            key, fragment.offset, fragment.more_fragments, bytes(data), self._now(), 0xFFFF
        )
        if whole is None:
            self._keep_first_fragment(key, fragment, packet)
            self._watch_reassembly()
            return None
        self._first_fragments.pop(key, None)
        return self._upper_layer(fragment, whole)

    def _upper_layer(self, fragment: FragmentHeader, whole: bytes) -> tuple[int, bytes] | None:
        """The upper-layer protocol and payload of a reassembled packet."""
        counters = self.counters
        try:
            chain = wire.walk(fragment.next_header, whole)
        except Malformed:
            counters["malformed"] += 1
            return None
        if chain.fragment is not None:
            counters["nested_fragment_dropped"] += 1
            return None
        return chain.protocol, bytes(chain.payload)

    def _watch_reassembly(self) -> None:
        """Free incomplete packets at their timeout even if no fragment comes."""
        deadline = self.reassembler.next_deadline_ns()
        if deadline is None or self._reassembly_timer is not None:
            return
        delay = max(deadline - self._now(), 0) / 1e9
        self._reassembly_timer = asyncio.get_running_loop().call_later(
            delay, self._expire_reassembly
        )

    def _keep_first_fragment(
        self, key: ReassemblyKey, fragment: FragmentHeader, packet: bytes
    ) -> None:
        """Keep the start of a first fragment (bounded like the reassembler)
        for the Time Exceeded that its timeout sends (RFC 8200 4.5)."""
        kept = self._first_fragments
        reassembler = self.reassembler
        if fragment.offset == 0 and key in reassembler:
            kept[key] = packet[: icmpv6.MAX_ERROR_QUOTE]
        if len(kept) > 2 * reassembler.max_datagrams:
            # Keys the reassembler has let go of, swept once per
            # max_datagrams first fragments: O(1) a fragment, not a scan
            # of every key for each one once the table is full.
            self._first_fragments = {k: v for k, v in kept.items() if k in reassembler}

    def _expire_reassembly(self) -> None:
        self._reassembly_timer = None
        for key in self.reassembler.expire(self._now()):
            first = self._first_fragments.pop(key, None)
            if first is None:
                continue  # the first fragment never came: no error (RFC 8200 4.5)
            source, destination = key[0], key[1]
            assert isinstance(source, bytes) and isinstance(destination, bytes)
            header = Ipv6Header(IPv6Address(source), IPv6Address(destination), NextHeader.FRAGMENT)
            code = icmpv6.TimeExceededCode.REASSEMBLY
            self._send_error(header, first, Icmpv6Type.TIME_EXCEEDED, code, 0)
        self._watch_reassembly()

    def _on_icmpv6(self, packet: ReceivedPacket[IPv6Address], payload: bytes) -> None:
        counters = self.counters
        message: ndp.NdMessage | None = None
        try:
            header, body = icmpv6.parse(payload, packet.source, packet.destination)
            if ndp.is_nd(header.type):
                message = ndp.decode(header, body, packet.source, packet.destination)
                if packet.hop_limit != ndp.HOP_LIMIT:
                    raise Malformed("Neighbor Discovery from off-link (hop limit not 255)")
        except Malformed:
            counters["icmpv6_malformed"] += 1
            return
        if header.type == Icmpv6Type.ECHO_REQUEST:
            self._answer_echo(packet, header, bytes(body))
        elif header.type == Icmpv6Type.ECHO_REPLY:
            counters["rx_echo_reply"] += 1
            future = self._pings.pop((packet.source, header.identifier, header.sequence), None)
            if future is not None and not future.done():
                future.set_result(None)
        elif header.type == Icmpv6Type.PACKET_TOO_BIG:
            self._on_packet_too_big(packet, header, bytes(body))
        elif header.type in _ERRORS_FOR_UPPER_LAYERS:
            self._on_error(packet, header, bytes(body))
        elif isinstance(message, ndp.NeighborSolicitation):
            self._on_solicitation(packet, message)
        elif isinstance(message, ndp.NeighborAdvertisement):
            self._on_advertisement(message)
        elif isinstance(message, ndp.RouterAdvertisement):
            self._on_router_advertisement(packet, message)
        elif header.type == Icmpv6Type.MULTICAST_LISTENER_QUERY:
            self._on_listener_query(packet, header, body)
        else:
            counters["icmpv6_ignored"] += 1

    def _answer_echo(
        self, packet: ReceivedPacket[IPv6Address], header: Icmpv6Header, body: bytes
    ) -> None:
        self.counters["rx_echo_request"] += 1
        # A request to a group is answered from our address (RFC 4443 4.2).
        source = packet.destination
        if source.is_multicast:
            source = self.source_for(packet.source)
        reply = Icmpv6Header(Icmpv6Type.ECHO_REPLY, 0, header.rest)
        message = icmpv6.emit(reply, body, source, packet.source)
        self._send(packet.source, NextHeader.ICMPV6, message, source=source, kind="icmp")

    def _on_packet_too_big(
        self, packet: ReceivedPacket[IPv6Address], header: Icmpv6Header, quoted: bytes
    ) -> None:
        """A Packet Too Big (RFC 4443 3.2, RFC 8201) about a packet we sent.
        One quoting TCP goes to TCP's check first, as IPv4's "fragmentation
        needed" does (RFC 5927: a connection's ports and a sequence number
        in flight), which lowers the path MTU (:meth:`lower_path_mtu`) only
        if it passes; so a blind forger must guess both. One quoting UDP
        lowers it only if it quotes a port bound here. One quoting ICMPv6
        lowers it at once (counted ``pmtu_unchecked``: nothing to check, as
        in Linux; never below 1280)."""
        found = self._quoted(quoted, "packet_too_big_not_ours")
        if found is None:
            return
        original, payload = found
        if original.destination.is_multicast:
            self.counters["packet_too_big_not_ours"] += 1
            return
        handler = self._error_handlers.get(original.next_header)
        if original.next_header in (NextHeader.TCP, NextHeader.UDP) and handler is not None:
            self.counters["rx_error_delivered"] += 1
            error = Icmpv6Error(
                packet.source, header.type, header.code, original, payload, mtu=header.mtu
            )
            handler(error)
            return
        self.counters["pmtu_unchecked"] += 1
        self.lower_path_mtu(original.destination, header.mtu)

    def lower_path_mtu(self, destination: IPv6Address, mtu: int) -> bool:
        """Take a checked Packet Too Big: the path MTU to ``destination``
        becomes ``mtu`` for ten minutes if that is lower (never below IPv6's
        minimum of 1280, RFC 8021: no atomic fragments instead); whether it
        was lowered. Those watching (:meth:`watch_path_mtu`) are told."""
        counters = self.counters
        mtu = max(mtu, icmpv6.MIN_MTU)
        if mtu - wire.HEADER_LENGTH >= self.mtu(destination):
            counters["pmtu_not_lower"] += 1
            return False
        table = self._path_mtu
        table.pop(destination, None)
        table[destination] = (mtu, self._now() + _PATH_MTU_LIFETIME_NS)
        while len(table) > _MAX_PATH_MTUS:
            table.popitem(last=False)
        counters["pmtu_lowered"] += 1
        for listener in self._path_mtu_listeners:
            listener(destination)
        return True

    def _quoted(self, quoted: bytes, not_ours: str) -> tuple[Ipv6Header, bytes] | None:
        """The header (with its upper-layer protocol) and at least 8 bytes of
        the upper-layer payload of the packet an error quotes, if it was sent
        from one of our addresses (RFC 5927 4.1); None (counted) if not."""
        counters = self.counters
        if len(quoted) < wire.HEADER_LENGTH:
            counters["icmpv6_malformed"] += 1
            return None
        source = IPv6Address(quoted[8:24])
        if source not in self._addresses:
            counters[not_ours] += 1
            return None
        try:
            chain = wire.walk(quoted[6], quoted[wire.HEADER_LENGTH :])
        except Malformed:
            counters["error_quote_malformed"] += 1
            return None
        if (chain.fragment is not None and chain.fragment.offset) or len(chain.payload) < 8:
            counters["error_quote_too_short"] += 1
            return None
        original = Ipv6Header(source, IPv6Address(quoted[24:40]), chain.protocol)
        return original, bytes(chain.payload)

    def _on_error(
        self, packet: ReceivedPacket[IPv6Address], header: Icmpv6Header, quoted: bytes
    ) -> None:
        """Destination Unreachable, Time Exceeded or Parameter Problem: to
        the upper layer whose packet it quotes (RFC 4443 3, RFC 5927 4.1:
        only packets sent from our addresses, with at least 8 bytes of the
        upper-layer header for the layer to match its ports)."""
        found = self._quoted(quoted, "error_not_ours")
        if found is None:
            return
        original, payload = found
        handler = self._error_handlers.get(original.next_header)
        if handler is None:
            self.counters["error_no_handler"] += 1
            return
        self.counters["rx_error_delivered"] += 1
        handler(Icmpv6Error(packet.source, header.type, header.code, original, payload))

    def register_errors(self, protocol: int, handler: Icmpv6ErrorHandler) -> None:
        """Hand ICMPv6 errors quoting a ``protocol`` packet to ``handler``."""
        self._error_handlers[protocol] = handler

    def _on_solicitation(
        self, packet: ReceivedPacket[IPv6Address], message: ndp.NeighborSolicitation
    ) -> None:
        counters = self.counters
        if self.autoconf.is_tentative(message.target):
            if packet.source.is_unspecified:
                # Another node is checking the same address (RFC 4862 5.4.3).
                self._duplicate(message.target)
            else:
                counters["solicit_for_tentative"] += 1
            return
        if message.target not in self._addresses:
            counters["solicit_not_ours"] += 1
            return
        probing = self._link_local_probing(message.target)
        if probing and packet.source.is_unspecified:
            self._link_local_duplicate()  # another node probes it too (RFC 4862 5.4.3)
            return
        counters["rx_solicit"] += 1
        mac = ndp.source_mac(message)
        if not packet.source.is_unspecified and mac is not None:
            self._transmit_all(self.neighbours.solicited_by(packet.source, mac, self._now()))
        anonymous = packet.source.is_unspecified  # a duplicate address check
        destination = wire.ALL_NODES if anonymous else packet.source
        advert = ndp.NeighborAdvertisement(
            message.target,
            solicited=not anonymous,
            override=not probing,  # RFC 4429 3.3: an optimistic address does not override
            options=(ndp.TargetLinkLayerAddress(self._ethernet.mac),),
        )
        payload = ndp.emit(advert, message.target, destination)
        counters["tx_advert"] += 1
        if anonymous or mac is None:
            self._send(
                destination, NextHeader.ICMPV6, payload, source=message.target, hop_limit=255
            )
            return
        # To the link-layer address the solicitation gave (RFC 4861 7.2.4):
        # answering moves no neighbour entry into DELAY and then PROBE, so a
        # flood of solicitations costs one reply each and no probes later.
        header = Ipv6Header(message.target, destination, NextHeader.ICMPV6, ndp.HOP_LIMIT)
        self._transmit(mac, wire.emit(header, payload), "nd")

    def _on_advertisement(self, message: ndp.NeighborAdvertisement) -> None:
        if self.autoconf.is_tentative(message.target):
            self._duplicate(message.target)  # RFC 4862 5.4.4
            return
        if self._link_local_probing(message.target):
            self._link_local_duplicate()  # RFC 4862 5.4.4
            return
        if message.target in self._addresses:
            # Someone else claims our address: log-worthy, never believed.
            self.counters["advert_for_our_address"] += 1
            return
        self.counters["rx_advert"] += 1
        released = self.neighbours.advertised(
            message.target,
            ndp.target_mac(message),
            solicited=message.solicited,
            override=message.override,
            now=self._now(),
        )
        self._transmit_all(released)

    def _on_router_advertisement(
        self, packet: ReceivedPacket[IPv6Address], message: ndp.RouterAdvertisement
    ) -> None:
        if not self.router_discovery:
            self.counters["router_advert_ignored"] += 1
            return
        mac = ndp.source_mac(message)
        if mac is not None:
            self._transmit_all(self.neighbours.solicited_by(packet.source, mac, self._now()))
        self._run(self.autoconf.on_advertisement(packet.source, message, self._now()))
        if self.autoconf.hop_limit is not None:
            self.hop_limit = self.autoconf.hop_limit
        self._take_timers(message)
        if message.managed:
            for listener in self._managed_listeners:
                listener()

    def _take_timers(self, message: ndp.RouterAdvertisement) -> None:
        """RFC 4861 6.3.4: a nonzero Reachable Time becomes the base of ours
        (drawn between 0.5 and 1.5 times it, 6.3.2), a nonzero Retrans Timer
        the wait between solicitations and DAD's wait; both clamped so a
        forged advertisement can neither flood the link nor stall it."""
        settings = self.neighbours.settings
        if message.reachable_time:
            base_ms = min(message.reachable_time, _MAX_REACHABLE_MS)
            factor = 0.5 + self._random.random()
            settings = replace(settings, reachable_ns=int(base_ms * factor * 1_000_000))
        if message.retransmit_timer:
            retransmit_ms = min(max(message.retransmit_timer, _MIN_RETRANS_MS), _MAX_RETRANS_MS)
            settings = replace(settings, retransmit_ns=retransmit_ms * 1_000_000)
            self.autoconf.retransmit_ns = settings.retransmit_ns
        self.neighbours.settings = settings

    def watch_managed(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` for each Router Advertisement with the M flag
        (addresses are to come from DHCPv6)."""
        self._managed_listeners.append(listener)

    def lease_address(self, address: IPv6Address, preferred_s: int, valid_s: int) -> None:
        """Use an address DHCPv6 leased, once duplicate address detection
        has found no other holder."""
        self._run(self.autoconf.lease(address, preferred_s, valid_s, self._now()))

    def release_address(self, address: IPv6Address) -> None:
        self._run(self.autoconf.release(address))

    def _on_listener_query(
        self, packet: ReceivedPacket[IPv6Address], header: Icmpv6Header, body: memoryview
    ) -> None:
        """An MLD query (RFC 3810 6.2): report the groups asked about that we
        listen to (all-nodes is never reported)."""
        try:
            query = mld.decode(header, body, packet.source)
        except Malformed:
            self.counters["mld_malformed"] += 1
            return
        if not isinstance(query, mld.Query) or packet.hop_limit != mld.HOP_LIMIT:
            self.counters["mld_malformed"] += 1
            return
        self.counters["rx_listener_query"] += 1
        groups = self._groups()
        if not query.group.is_unspecified:
            groups = [g for g in groups if g == query.group]
        if groups:
            records = tuple(mld.AddressRecord(mld.RecordType.MODE_IS_EXCLUDE, g) for g in groups)
            self._report(mld.Report(records))

    def _groups(self) -> list[IPv6Address]:
        return sorted(a for a in self._accepted if a.is_multicast and a != wire.ALL_NODES)

    # -- autoconfiguration ---------------------------------------------------------

    def start(self) -> None:
        """Announce our groups and, with autoconfiguration, solicit routers
        (after a random delay of up to a second, RFC 4861 6.3.7)."""
        self._announce(mld.join(self._groups()))
        now = self._now()
        self._probe_link_local(now)
        for address in self._statics:
            self._run(self.autoconf.manual(address, now))
        if self.router_discovery:
            delay = self._random.randint(0, 1_000_000_000)
            self._run(self.autoconf.start(now, delay))

    def _probe_link_local(self, now: int) -> None:
        """Duplicate address detection for the link-local address (RFC 4862
        5.4) without delaying start-up: probed once, used at once; another
        node answering for it (or probing it) within RetransTimer makes it
        a duplicate."""
        autoconf = self.autoconf
        self._link_local_probe_until = now + autoconf.dad_transmits * autoconf.retransmit_ns
        self._probe(self.link_local, counter="tx_link_local_probe")

    def _link_local_probing(self, target: IPv6Address) -> bool:
        until = self._link_local_probe_until
        if target != self.link_local or until is None:
            return False
        if self._now() < until:
            return True
        self._link_local_probe_until = None
        return False

    def _link_local_duplicate(self) -> None:
        """RFC 4862 5.4.5: the MAC-derived link-local address is another
        node's; stop answering for it and say so."""
        self._link_local_probe_until = None
        self.counters["link_local_duplicate"] += 1
        log.warning(
            "IPv6: link-local address %s is already in use on the link; not using it "
            "(give this interface another MAC address)",
            self.link_local,
        )
        if self.link_local in self._addresses:
            self._addresses.remove(self.link_local)
            self._recompute_accepted()

    def _run(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SolicitRouters):
                self._solicit_routers()
            elif isinstance(action, StartDad):
                self._recompute_accepted()
                self._announce(mld.join([wire.solicited_node(action.address)]))
                self._probe(action.address)
            elif isinstance(action, Assign):
                log.debug("IPv6: %s assigned (%s)", action.address, self._origin(action.address))
                self.add_address(action.address)
                self._tell(action.address, True)
            elif isinstance(action, Remove):
                self._forget(action.address)
        self._arm_autoconf()

    def _origin(self, address: IPv6Address) -> str:
        """How an address passing duplicate address detection came to us."""
        entry = self.autoconf.addresses.get(address)
        origin = entry.origin if entry is not None else "slaac"
        return _ORIGINS.get(origin, origin)

    def _forget(self, address: IPv6Address) -> None:
        """An address given up: its group left (RFC 3810 6.1, a state-change
        report) unless another address still needs it."""
        was_ours = address in self._addresses
        before = set(self._groups())
        self.remove_address(address)
        left = before - set(self._groups())
        if left:
            self._report(mld.leave(sorted(left)))
        if was_ours:
            self._tell(address, False)

    def _tell(self, address: IPv6Address, assigned: bool) -> None:
        if assigned:
            for waiter in self._address_waiters:
                if not waiter.done():
                    waiter.set_result(None)
        for listener in self._address_listeners:
            listener(address, assigned)

    def _duplicate(self, address: IPv6Address) -> None:
        log.warning("IPv6: %s is already in use on the link; not using it", address)
        self.counters["dad_duplicate"] += 1
        self._run(self.autoconf.duplicate(address, self._now()))
        for listener in self._duplicate_listeners:
            listener(address)

    def watch_duplicates(self, listener: Callable[[IPv6Address], None]) -> None:
        """Call ``listener`` with each address duplicate address detection
        found in use by another node."""
        self._duplicate_listeners.append(listener)

    def _arm_autoconf(self) -> None:
        deadline = self.autoconf.next_deadline_ns()
        if self._autoconf_timer is not None:
            self._autoconf_timer.cancel()
            self._autoconf_timer = None
        if deadline is not None:
            delay = max(deadline - self._now(), 0) / 1e9
            self._autoconf_timer = asyncio.get_running_loop().call_later(
                delay, self._on_autoconf_timer
            )

    def _on_autoconf_timer(self) -> None:
        self._autoconf_timer = None
        self._run(self.autoconf.on_timer(self._now()))

    def _solicit_routers(self) -> None:
        message = ndp.RouterSolicitation((ndp.SourceLinkLayerAddress(self._ethernet.mac),))
        destination = wire.ALL_ROUTERS
        payload = ndp.emit(message, self.link_local, destination)
        self.counters["tx_router_solicit"] += 1
        self._send(destination, NextHeader.ICMPV6, payload, source=self.link_local, hop_limit=255)

    def _probe(self, tentative: IPv6Address, *, counter: str = "tx_dad_probe") -> None:
        """Duplicate address detection's solicitation: from ::, to the
        solicited-node group, no link-layer option (RFC 4862 5.4.2)."""
        destination = wire.solicited_node(tentative)
        unspecified = IPv6Address(0)
        payload = ndp.emit(ndp.NeighborSolicitation(tentative), unspecified, destination)
        self.counters[counter] += 1
        self._send(destination, NextHeader.ICMPV6, payload, source=unspecified, hop_limit=255)

    def _announce(self, report: mld.Report) -> None:
        """An unsolicited report, sent again once after a random delay of up
        to a second (RFC 3810 6.1: Robustness Variable 2, Unsolicited
        Report Interval 1 s), in case the first is lost."""
        self._report(report)
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._report_timers = {h for h in self._report_timers if h.when() > now}
        handle = loop.call_later(self._random.random(), self._repeat_report, report)
        self._report_timers.add(handle)

    def _repeat_report(self, report: mld.Report) -> None:
        joined = set(self._groups())
        still = tuple(r for r in report.records if r.group in joined)
        self._report(mld.Report(still))

    def _report(self, report: mld.Report) -> None:
        """An MLDv2 report (RFC 3810 5.2) from our link-local address."""
        if not report.records:
            return
        self.counters["tx_listener_report"] += 1
        packet = mld.emit_packet(report, self.link_local)
        self._transmit(wire.multicast_mac(wire.ALL_MLDV2_ROUTERS), packet, "nd")

    async def wait_for_address(self, timeout: float) -> IPv6Address:
        """The first address that is not link-local, once there is one
        (raises ConnectionTimeout after ``timeout`` seconds)."""
        found = self.source_for(_ANY_GLOBAL)
        if not found.is_link_local:
            return found
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._address_waiters.append(future)
        try:
            if not await wait_until_done(future, self._time, timeout):
                raise ConnectionTimeout(f"no IPv6 address beyond link-local in {timeout} s")
        finally:
            if future in self._address_waiters:
                self._address_waiters.remove(future)
        return self.source_for(_ANY_GLOBAL)

    # -- sending ---------------------------------------------------------------------

    def _now(self) -> int:
        return self._time.now_ns()

    async def write(
        self,
        destination: IPv6Address,
        protocol: int,
        payload: bytes,
        *,
        source: IPv6Address | None = None,
        hop_limit: int | None = None,
        traffic_class: int = 0,
        segment_size: int | None = None,
    ) -> None:
        """Send one packet; never waits for address resolution (a packet for
        a neighbour being resolved waits in its queue). ``traffic_class`` is
        the DSCP and ECN byte (RFC 3168: 2 is ECT(0)). Raises NoRoute when
        the destination is off-link and no router is known. With
        ``segment_size``, ``payload`` is a TCP packet of several segments
        (its checksum finished or only the pseudo-header sum), sent as
        segments of that many payload bytes each (IPv4's write does the same
        without an offloading interface)."""
        hop = self.next_hop(destination)
        if hop is None:
            self.counters["no_route"] += 1
            raise NoRoute(f"{destination} is not on-link and no IPv6 router is known")
        header = self._header(destination, protocol, source, hop_limit, traffic_class)
        pieces = [payload]
        if segment_size is not None and protocol == IpProtocol.TCP:
            pieces = cut_tcp_burst(payload, segment_size, header.source, destination)
            if len(pieces) > 1:
                self.counters["tx_cut_in_software"] += 1
        # Straight to the device, as IPv4 does: what the stack sends for
        # itself (Neighbor Discovery, ICMPv6 answers) waits in queues of its
        # own, never in front of this.
        write = self._ethernet.write
        for piece in pieces:
            for mac, packet in self._route(header, piece, hop):
                try:
                    await write(mac, EthernetProtocol.IPV6, packet)
                except Exception:
                    self.counters["tx_failed"] += 1
                    raise

    def _send(
        self,
        destination: IPv6Address,
        protocol: int,
        payload: bytes,
        *,
        source: IPv6Address | None = None,
        hop_limit: int | None = None,
        traffic_class: int = 0,
        kind: str = "nd",
        explicit: bool = False,
    ) -> None:
        """Send a packet of the stack's own through the ``kind`` queue
        (``explicit``: asked for by a user, so outside the budget of new
        resolutions)."""
        header = self._header(destination, protocol, source, hop_limit, traffic_class)
        hop = destination if destination.is_multicast else self.next_hop(destination)
        if hop is None:
            self.counters["no_route"] += 1
            return
        for mac, packet in self._route(header, payload, hop, explicit=explicit):
            self._transmit(mac, packet, kind)

    def _header(
        self,
        destination: IPv6Address,
        protocol: int,
        source: IPv6Address | None,
        hop_limit: int | None,
        traffic_class: int,
    ) -> Ipv6Header:
        if source is None:
            source = self.source_for(destination)
        return Ipv6Header(
            source,
            destination,
            protocol,
            hop_limit if hop_limit is not None else self.hop_limit,
            traffic_class,
        )

    def _route(
        self, header: Ipv6Header, payload: bytes, hop: IPv6Address, *, explicit: bool = False
    ) -> list[tuple[MacAddress, bytes]]:
        """The frames of one packet that can leave now (to ``hop``); the
        others wait in the neighbour's queue while it resolves."""
        packets = self._packets(header, payload)
        self.counters["tx_packets"] += 1
        if header.destination.is_multicast:
            group = wire.multicast_mac(header.destination)
            return [(group, packet) for packet in packets]
        ready = []
        for packet in packets:
            mac, solicitation = self.neighbours.send(hop, packet, self._now(), explicit=explicit)
            if solicitation is not None:
                self._solicit(solicitation)
            if mac is not None:
                ready.append((mac, packet))
        self._arm_timer()
        return ready

    def _packets(self, header: Ipv6Header, payload: bytes) -> list[bytes]:
        """The packet, or its fragments when it exceeds the link's MTU (only
        the source fragments in IPv6, RFC 8200 4.5)."""
        mtu = self.mtu(header.destination)
        if len(payload) <= mtu:
            return [wire.emit(header, payload)]
        if len(payload) + 8 > wire.MAX_PAYLOAD_LENGTH:
            raise ValueError(f"{len(payload)} bytes do not fit one IPv6 packet (no jumbograms)")
        self._identification = (self._identification + 1) & 0xFFFFFFFF
        chunk = (mtu - 8) // 8 * 8
        fragmented = replace(header, next_header=NextHeader.FRAGMENT)
        packets = []
        for offset in range(0, len(payload), chunk):
            more = offset + chunk < len(payload)
            piece = FragmentHeader(header.next_header, offset, more, self._identification)
            extension = wire.emit_extension(piece)
            packets.append(wire.emit(fragmented, extension + payload[offset : offset + chunk]))
        self.counters["tx_fragments"] += len(packets)
        return packets

    def _solicit(self, solicitation: Solicitation) -> None:
        target, mac = solicitation
        destination = wire.solicited_node(target) if mac is None else target
        source = self.source_for(target)
        message = ndp.NeighborSolicitation(
            target, (ndp.SourceLinkLayerAddress(self._ethernet.mac),)
        )
        header = Ipv6Header(source, destination, NextHeader.ICMPV6, ndp.HOP_LIMIT)
        packet = wire.emit(header, ndp.emit(message, source, destination))
        self.counters["tx_solicit"] += 1
        self._transmit(mac if mac is not None else wire.multicast_mac(destination), packet, "nd")

    def _transmit_all(self, transmissions: list[tuple[MacAddress, bytes]]) -> None:
        """Packets a neighbour's resolution let out."""
        for mac, packet in transmissions:
            self._transmit(mac, packet, "released")

    def _transmit(self, mac: MacAddress, packet: bytes, kind: str) -> None:
        """Queue one packet of the stack's own for the device, in the queue
        of its kind ("nd": Neighbor Discovery and MLD, "icmp": echo replies
        and errors, "released": what waited for a neighbour), each bounded
        so that one kind flooding cannot crowd out the others."""
        queue = self._outgoing[kind]
        if len(queue) >= _MAX_PENDING[kind]:
            self.counters[f"tx_{kind}_backlog_dropped"] += 1
            return
        queue.append((mac, packet))
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Send the queued packets, one of each kind in turn."""
        queues = list(self._outgoing.values())
        write = self._ethernet.write
        try:
            while any(queues):
                for queue in queues:
                    if not queue:
                        continue
                    mac, packet = queue.popleft()
                    try:
                        await write(mac, EthernetProtocol.IPV6, packet)
                    except Exception:
                        self.counters["tx_failed"] += 1
        finally:
            self._drain_task = None

    def _arm_timer(self) -> None:
        if self._timer is not None:
            return
        deadline = self.neighbours.next_deadline_ns()
        if deadline is None:
            return
        delay = max(deadline - self._now(), 0) / 1e9
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        for solicitation in self.neighbours.on_timer(self._now()):
            self._solicit(solicitation)
        self._arm_timer()

    # -- errors we send ----------------------------------------------------------------

    def destination_unreachable(
        self, original: ReceivedPacket[IPv6Address], payload: bytes, code: int
    ) -> None:
        """Tell the sender of ``original`` (with ``payload``) that it cannot
        be delivered (RFC 4443 3.1), quoting as much of it as fits a
        minimum-MTU packet; never about a packet sent to a group or from no
        address (RFC 4443 2.4(e)), and rate limited."""
        header = Ipv6Header(original.source, original.destination, original.protocol)
        unreachable = Icmpv6Type.DESTINATION_UNREACHABLE
        if self._send_error(header, original.header + payload, unreachable, code, 0):
            self.counters["tx_unreachable"] += 1

    def _send_error(
        self,
        original: Ipv6Header,
        packet: bytes,
        type: int,
        code: int,
        rest: int,
        *,
        to_group: bool = False,
    ) -> bool:
        """An ICMPv6 error to the sender of ``packet`` quoting as much of it
        as fits a minimum-MTU packet (RFC 4443 2.4(c)); never about a packet
        from no address, nor one sent to a group unless ``to_group`` (a
        Parameter Problem for an option that asks for it, 2.4(e.3)); rate
        limited (2.4(f)). Whether it was sent."""
        if original.source.is_unspecified or (original.destination.is_multicast and not to_group):
            return False
        if not self._error_allowed():
            self.counters["tx_error_rate_limited"] += 1
            return False
        source = original.destination
        if source.is_multicast or source not in self._addresses:
            source = self.source_for(original.source)
        quoted = icmpv6.error_quote(packet)
        message = icmpv6.emit(Icmpv6Header(type, code, rest), quoted, source, original.source)
        self.counters[f"tx_error_type_{type}"] += 1
        self._send(original.source, NextHeader.ICMPV6, message, source=source, kind="icmp")
        return True

    def _error_allowed(self) -> bool:
        now = self._now()
        elapsed_s = (now - self._error_refilled_ns) / 1e9
        self._error_refilled_ns = now
        tokens = min(
            float(self.error_burst), self._error_tokens + elapsed_s * self.errors_per_second
        )
        if tokens < 1.0:
            self._error_tokens = tokens
            return False
        self._error_tokens = tokens - 1.0
        return True

    # -- ping ------------------------------------------------------------------------

    async def ping(
        self, destination: IPv6Address | str, *, size: int = 56, timeout: float = 1.0
    ) -> float:
        """One ICMPv6 echo round trip in seconds (resolving the neighbour
        first if need be); raises ConnectionTimeout without a reply."""
        destination = IPv6Address(destination)
        self._ping_sequence = (self._ping_sequence + 1) & 0xFFFF
        key = (destination, self._ping_identifier, self._ping_sequence)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[key] = future
        source = self.source_for(destination)
        request = Icmpv6Header.echo(Icmpv6Type.ECHO_REQUEST, key[1], key[2])
        message = icmpv6.emit(request, bytes(i & 0xFF for i in range(size)), source, destination)
        started = self._now()
        try:
            self._send(
                destination, NextHeader.ICMPV6, message, source=source, kind="icmp", explicit=True
            )
            if not await wait_until_done(future, self._time, timeout):
                raise ConnectionTimeout(f"no ICMPv6 echo reply from {destination} in {timeout} s")
        finally:
            self._pings.pop(key, None)
        return (self._now() - started) / 1e9

    async def stop(self) -> None:
        for handle in self._report_timers:
            handle.cancel()
        self._report_timers.clear()
        if self._autoconf_timer is not None:
            self._autoconf_timer.cancel()
            self._autoconf_timer = None
        if self._reassembly_timer is not None:
            self._reassembly_timer.cancel()
            self._reassembly_timer = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._drain_task is not None:
            self._drain_task.cancel()
