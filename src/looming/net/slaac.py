"""Router discovery (RFC 4861 section 6.3) and stateless address
autoconfiguration (RFC 4862) with stable, privacy-preserving interface
identifiers (RFC 7217), without I/O.

:class:`Autoconf` keeps what Router Advertisements taught: the default
routers and their lifetimes, the on-link prefixes, the link MTU, the
recursive DNS servers (RFC 8106), and the addresses formed from
autonomous /64 prefixes with their preferred and valid lifetimes.  A new
address is *tentative* until duplicate address detection has sent
``dad_transmits`` Neighbor Solicitations ``retransmit_ns`` apart without
an answer; only then is it assigned.  A duplicate (a Neighbor
Advertisement for it, or another node's detection for the same address)
makes the next address with the next DAD counter (RFC 7217 section 6),
at most ``IDGEN_RETRIES`` times.  The same table probes and ages the
addresses DHCPv6 leases (:meth:`Autoconf.lease`) and static ones
(:meth:`Autoconf.manual`); a duplicate of those is dropped, not replaced.

The owner (``net/ipv6.py``) calls :meth:`Autoconf.start`,
:meth:`Autoconf.on_advertisement`, :meth:`Autoconf.duplicate` and, at
:meth:`Autoconf.next_deadline_ns`, :meth:`Autoconf.on_timer`; each returns
the actions to carry out (solicit routers, start detection, assign or
remove an address).  Every table is bounded: a flood of advertisements
with new routers or prefixes costs bounded memory.
"""

from __future__ import annotations

import enum
import hashlib
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import TypeVar

from looming.net.wire import ndp

SECOND_NS = 1_000_000_000
INFINITY = 0xFFFFFFFF  # a lifetime that never ends (RFC 4861 4.6.2)
TWO_HOURS_S = 2 * 3600  # RFC 4862 5.5.3 (e)
MAX_RTR_SOLICITATIONS = 3  # RFC 4861 section 10
RTR_SOLICITATION_INTERVAL_NS = 4 * SECOND_NS
MAX_RTR_SOLICITATION_DELAY_NS = 1 * SECOND_NS
IDGEN_RETRIES = 3  # RFC 7217 section 7
MAX_ROUTERS = 8
MAX_PREFIXES = 16
MAX_ADDRESSES = 16
MAX_DNS_SERVERS = 8
K = TypeVar("K", bound=Hashable)

# A full table of routers, prefixes or addresses gives way to a newcomer by
# its entry heard from least recently, once that one has not been heard
# from for this long: a flood of forged advertisements then cannot lock a
# real router out for its lifetimes (up to days), nor churn the tables
# faster than one round of them a minute.
STALE_ENTRY_NS = 60 * SECOND_NS
INTERFACE_ID_BITS = 64  # Ethernet (RFC 2464)


class AddressState(enum.Enum):
    TENTATIVE = "tentative"
    PREFERRED = "preferred"
    DEPRECATED = "deprecated"


@dataclass
class AutoAddress:
    """An address formed from ``prefix``; deadlines in ns (None: never)."""

    address: IPv6Address
    prefix: IPv6Network
    state: AddressState
    dad_counter: int
    dad_deadline_ns: int | None
    preferred_until_ns: int | None
    valid_until_ns: int | None
    origin: str = "slaac"  # or "dhcpv6" or "static": only SLAAC's are formed anew


@dataclass(frozen=True, slots=True)
class SolicitRouters:
    """Send a Router Solicitation to all routers."""


@dataclass(frozen=True, slots=True)
class StartDad:
    """Join the address's solicited-node group and send a detection probe."""

    address: IPv6Address


@dataclass(frozen=True, slots=True)
class Assign:
    """Detection found no duplicate: the address is ours."""

    address: IPv6Address


@dataclass(frozen=True, slots=True)
class Remove:
    """The address is no longer ours (duplicate, or its valid lifetime ended)."""

    address: IPv6Address


Action = SolicitRouters | StartDad | Assign | Remove


def stable_interface_id(
    prefix: IPv6Network,
    interface: bytes,
    network_id: bytes,
    dad_counter: int,
    secret: bytes,
) -> int:
    """RFC 7217's F(Prefix, Net_Iface, Network_ID, DAD_Counter, secret_key):
    the first 64 bits of SHA-256 over the fields; the same inputs give the
    same identifier, another prefix an unrelated one.  Identifiers RFC 5453
    reserves (the subnet-router anycast, all zeros) are never returned:
    the caller moves to the next DAD counter."""
    digest = hashlib.sha256()
    for field in (prefix.network_address.packed, interface, network_id, secret):
        digest.update(len(field).to_bytes(2, "big") + field)
    digest.update(dad_counter.to_bytes(4, "big"))
    return int.from_bytes(digest.digest()[:8], "big")


def _reserved(interface_id: int) -> bool:
    """IANA's reserved interface identifiers (RFC 5453): all zeros (the
    subnet-router anycast), those of the IANA Ethernet block
    0200:5EFF:FE00:0000-0200:5EFF:FEFF:FFFF, and the 128 subnet anycast
    ones FDFF:FFFF:FFFF:FF80-FDFF:FFFF:FFFF:FFFF (RFC 2526); nothing above
    them (one identifier in 128 is there, and a usable one)."""
    return (
        interface_id == 0
        or _IANA_ETHERNET_FIRST <= interface_id <= _IANA_ETHERNET_LAST
        or _SUBNET_ANYCAST_FIRST <= interface_id <= _SUBNET_ANYCAST_LAST
    )


_IANA_ETHERNET_FIRST = 0x0200_5EFF_FE00_0000
_IANA_ETHERNET_LAST = 0x0200_5EFF_FEFF_FFFF
_SUBNET_ANYCAST_FIRST = 0xFDFF_FFFF_FFFF_FF80
_SUBNET_ANYCAST_LAST = 0xFDFF_FFFF_FFFF_FFFF


def _deadline(now: int, lifetime_s: int) -> int | None:
    return None if lifetime_s == INFINITY else now + lifetime_s * SECOND_NS


def _stale(table: Mapping[K, object], heard: Mapping[K, int], now: int) -> K | None:
    """The entry of ``table`` heard from least recently, if that was at
    least STALE_ENTRY_NS ago (one never heard counts as heard at 0)."""
    if not table:
        return None
    oldest = min(table, key=lambda key: heard.get(key, 0))
    return oldest if now - heard.get(oldest, 0) >= STALE_ENTRY_NS else None


def _remaining_s(deadline: int | None, now: int) -> int:
    return INFINITY if deadline is None else max(deadline - now, 0) // SECOND_NS


class Autoconf:
    """Router discovery and SLAAC state for one interface."""

    def __init__(
        self,
        secret: bytes,
        interface: bytes,
        *,
        network_id: bytes = b"",
        dad_transmits: int = 1,
        retransmit_ns: int = SECOND_NS,
        link_mtu: int = 1500,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the RFC 7217 secret key needs at least 128 bits")
        self._secret = secret
        self._interface = interface
        self.network_id = network_id
        self.dad_transmits = dad_transmits
        self.retransmit_ns = retransmit_ns
        self._link_mtu = link_mtu
        self.routers: dict[IPv6Address, int | None] = {}
        self.on_link: dict[IPv6Network, int | None] = {}
        self.dns_servers: dict[IPv6Address, int | None] = {}
        self.addresses: dict[IPv6Address, AutoAddress] = {}
        # When each router and each prefix was last advertised (for eviction).
        self._router_heard: dict[IPv6Address, int] = {}
        self._prefix_heard: dict[IPv6Network, int] = {}
        self._dns_heard: dict[IPv6Address, int] = {}
        self.mtu: int | None = None
        self.hop_limit: int | None = None
        self.managed = False  # the last advertisement's M flag: addresses by DHCPv6
        self.counters: Counter[str] = Counter()
        self._solicitations_left = 0
        self._solicit_at: int | None = None

    # -- routers ------------------------------------------------------------------

    def start(self, now: int, delay_ns: int = 0) -> list[Action]:
        """Begin soliciting routers after ``delay_ns`` (RFC 4861 6.3.7: a
        random delay up to one second; the caller draws it)."""
        self._solicitations_left = MAX_RTR_SOLICITATIONS
        self._solicit_at = now + min(max(delay_ns, 0), MAX_RTR_SOLICITATION_DELAY_NS)
        return self.on_timer(now)

    def default_router(self, now: int) -> IPv6Address | None:
        """A router whose lifetime has not ended (the first one learned)."""
        alive = self.alive_routers(now)
        return alive[0] if alive else None

    def alive_routers(self, now: int) -> list[IPv6Address]:
        """The default router list: routers whose lifetime has not ended."""
        return [r for r, until in self.routers.items() if until is None or until > now]

    def is_on_link(self, destination: IPv6Address, now: int) -> bool:
        return any(
            destination in prefix and (until is None or until > now)
            for prefix, until in self.on_link.items()
        )

    def on_advertisement(
        self, source: IPv6Address, advert: ndp.RouterAdvertisement, now: int
    ) -> list[Action]:
        """A valid Router Advertisement (hop limit 255, link-local source,
        checksum: checked by the caller) from ``source``."""
        self.counters["rx_router_advert"] += 1
        self._solicitations_left = 0  # RFC 4861 6.3.7: an answer came
        self._solicit_at = None
        self._learn_router(source, advert.router_lifetime, now)
        self.managed = advert.managed
        if advert.current_hop_limit:
            self.hop_limit = advert.current_hop_limit
        actions: list[Action] = []
        for option in advert.options:
            if isinstance(option, ndp.PrefixInformation):
                actions += self._on_prefix(option, now)
            elif isinstance(option, ndp.Mtu):
                self._on_mtu(option.mtu)
            elif isinstance(option, ndp.RecursiveDnsServers):
                self._on_dns_servers(option, now)
        if len(self._prefix_heard) > MAX_PREFIXES + MAX_ADDRESSES:
            # Only prefixes in a table are worth remembering (bounded so).
            kept = set(self.on_link) | {a.prefix for a in self.addresses.values()}
            self._prefix_heard = {p: t for p, t in self._prefix_heard.items() if p in kept}
        return actions

    def _learn_router(self, source: IPv6Address, lifetime_s: int, now: int) -> None:
        if lifetime_s == 0:
            self._router_heard.pop(source, None)
            if self.routers.pop(source, 0) != 0:
                self.counters["router_withdrawn"] += 1
            return
        heard = self._router_heard
        if source not in self.routers and len(self.routers) >= MAX_ROUTERS:
            stale = _stale(self.routers, heard, now)
            if stale is None:
                self.counters["router_table_full"] += 1
                return
            del self.routers[stale]
            heard.pop(stale, None)
            self.counters["router_evicted"] += 1
        self.routers[source] = now + lifetime_s * SECOND_NS  # at most 9000 s: never infinite
        heard[source] = now

    def _on_mtu(self, mtu: int) -> None:
        # RFC 4861 6.3.4: only values between IPv6's minimum and the link's.
        if 1280 <= mtu <= self._link_mtu:
            self.mtu = mtu
        else:
            self.counters["mtu_option_ignored"] += 1

    def _on_dns_servers(self, option: ndp.RecursiveDnsServers, now: int) -> None:
        servers, heard = self.dns_servers, self._dns_heard
        for server in option.servers:
            if option.lifetime == 0:
                servers.pop(server, None)
                heard.pop(server, None)
                continue
            if server not in servers and len(servers) >= MAX_DNS_SERVERS:
                stale = _stale(servers, heard, now)
                if stale is None:
                    self.counters["dns_table_full"] += 1
                    continue
                del servers[stale]
                heard.pop(stale, None)
                self.counters["dns_evicted"] += 1
            servers[server] = _deadline(now, option.lifetime)
            heard[server] = now

    def current_dns_servers(self, now: int) -> list[IPv6Address]:
        return [s for s, until in self.dns_servers.items() if until is None or until > now]

    # -- prefixes and addresses ---------------------------------------------------------

    def _on_prefix(self, option: ndp.PrefixInformation, now: int) -> list[Action]:
        try:
            prefix = IPv6Network((option.prefix, option.prefix_length), strict=False)
        except ValueError:
            self.counters["prefix_malformed"] += 1
            return []
        if prefix.is_link_local or prefix.is_multicast:
            self.counters["prefix_ignored"] += 1  # RFC 4861 6.3.4, RFC 4862 5.5.3 (b)
            return []
        self._prefix_heard[prefix] = now
        if option.on_link:
            self._learn_on_link(prefix, option.valid_lifetime, now)
        if not option.autonomous:
            return []
        if option.preferred_lifetime > option.valid_lifetime:
            self.counters["prefix_lifetimes_inverted"] += 1  # RFC 4862 5.5.3 (c)
            return []
        if prefix.prefixlen + INTERFACE_ID_BITS != 128:
            self.counters["prefix_length_not_64"] += 1  # RFC 4862 5.5.3 (d)
            return []
        existing = [a for a in self.addresses.values() if a.prefix == prefix]
        if existing:
            for entry in existing:
                self._refresh(entry, option, now)
            return []
        if option.valid_lifetime == 0:
            return []
        return self._form(prefix, 0, option.preferred_lifetime, option.valid_lifetime, now)

    def _learn_on_link(self, prefix: IPv6Network, valid_s: int, now: int) -> None:
        if valid_s == 0:
            self.on_link.pop(prefix, None)
        elif prefix in self.on_link or len(self.on_link) < MAX_PREFIXES:
            self.on_link[prefix] = _deadline(now, valid_s)
        elif (stale := _stale(self.on_link, self._prefix_heard, now)) is not None:
            del self.on_link[stale]
            self.counters["prefix_evicted"] += 1
            self.on_link[prefix] = _deadline(now, valid_s)
        else:
            self.counters["prefix_table_full"] += 1

    def _refresh(self, entry: AutoAddress, option: ndp.PrefixInformation, now: int) -> None:
        """RFC 4862 5.5.3 (e): the preferred lifetime is reset; the valid one
        only if the new value exceeds two hours or the time left, else (the
        "two-hour rule", against a forged short lifetime) kept or cut to
        two hours."""
        entry.preferred_until_ns = _deadline(now, option.preferred_lifetime)
        remaining = _remaining_s(entry.valid_until_ns, now)
        received = option.valid_lifetime
        if received > TWO_HOURS_S or received > remaining:
            entry.valid_until_ns = _deadline(now, received)
        elif remaining > TWO_HOURS_S:
            entry.valid_until_ns = now + TWO_HOURS_S * SECOND_NS
        if entry.state is AddressState.DEPRECATED and option.preferred_lifetime:
            entry.state = AddressState.PREFERRED

    def _form(
        self, prefix: IPv6Network, counter: int, preferred_s: int, valid_s: int, now: int
    ) -> list[Action]:
        """A tentative address from ``prefix`` with DAD counter ``counter``
        (or higher, past reserved identifiers); in a full table, in place of
        the SLAAC address whose prefix was advertised least recently, if
        that was over STALE_ENTRY_NS ago."""
        removed: list[Action] = []
        if len(self.addresses) >= MAX_ADDRESSES:
            formed = {a.address: a.prefix for a in self.addresses.values() if a.origin == "slaac"}
            heard = {a: self._prefix_heard.get(p, 0) for a, p in formed.items()}
            stale = _stale(formed, heard, now)
            if stale is None:
                self.counters["address_table_full"] += 1
                return []
            del self.addresses[stale]
            self.counters["address_evicted"] += 1
            removed.append(Remove(stale))
        while counter <= IDGEN_RETRIES:
            interface_id = stable_interface_id(
                prefix, self._interface, self.network_id, counter, self._secret
            )
            address = IPv6Address(int(prefix.network_address) | interface_id)
            if not _reserved(interface_id) and address not in self.addresses:
                break
            counter += 1
        else:
            self.counters["address_generation_failed"] += 1
            return []
        self.addresses[address] = AutoAddress(
            address,
            prefix,
            AddressState.TENTATIVE,
            counter,
            now + self.dad_transmits * self.retransmit_ns,
            _deadline(now, preferred_s),
            _deadline(now, valid_s),
        )
        self.counters["dad_started"] += 1
        return [*removed, StartDad(address)]

    def lease(self, address: IPv6Address, preferred_s: int, valid_s: int, now: int) -> list[Action]:
        """An address DHCPv6 gave (or renewed): probed like the others
        before use; its lifetimes are the lease's."""
        return self._add(address, preferred_s, valid_s, now, "dhcpv6")

    def manual(self, address: IPv6Address, now: int) -> list[Action]:
        """A statically configured address (lifetimes infinite): probed
        like the others before use."""
        return self._add(address, INFINITY, INFINITY, now, "static")

    def _add(
        self, address: IPv6Address, preferred_s: int, valid_s: int, now: int, origin: str
    ) -> list[Action]:
        entry = self.addresses.get(address)
        if entry is not None:
            entry.preferred_until_ns = _deadline(now, preferred_s)
            entry.valid_until_ns = _deadline(now, valid_s)
            if entry.state is AddressState.DEPRECATED and preferred_s:
                entry.state = AddressState.PREFERRED
            return []
        if len(self.addresses) >= MAX_ADDRESSES:
            self.counters["address_table_full"] += 1
            return []
        self.addresses[address] = AutoAddress(
            address,
            IPv6Network(address),
            AddressState.TENTATIVE,
            0,
            now + self.dad_transmits * self.retransmit_ns,
            _deadline(now, preferred_s),
            _deadline(now, valid_s),
            origin,
        )
        self.counters["dad_started"] += 1
        return [StartDad(address)]

    def release(self, address: IPv6Address) -> list[Action]:
        """Forget an address (a lease that ended)."""
        return [Remove(address)] if self.addresses.pop(address, None) is not None else []

    def is_tentative(self, address: IPv6Address) -> bool:
        entry = self.addresses.get(address)
        return entry is not None and entry.state is AddressState.TENTATIVE

    def duplicate(self, address: IPv6Address, now: int) -> list[Action]:
        """Another node holds (or is claiming) ``address``: drop it and try
        the next DAD counter with what is left of the lifetimes."""
        entry = self.addresses.pop(address, None)
        if entry is None:
            return []
        self.counters["dad_duplicate"] += 1
        actions: list[Action] = [Remove(address)]
        if entry.origin != "slaac":
            self.counters[f"{entry.origin}_address_duplicate"] += 1  # the server's or user's
            return actions
        if entry.dad_counter >= IDGEN_RETRIES:
            self.counters["address_generation_failed"] += 1
            return actions
        preferred = _remaining_s(entry.preferred_until_ns, now)
        valid = _remaining_s(entry.valid_until_ns, now)
        if valid == 0:
            return actions
        return actions + self._form(entry.prefix, entry.dad_counter + 1, preferred, valid, now)

    # -- time -------------------------------------------------------------------------------

    def next_deadline_ns(self) -> int | None:
        deadlines = [self._solicit_at] if self._solicit_at is not None else []
        for entry in self.addresses.values():
            if entry.state is AddressState.TENTATIVE:
                deadlines.append(entry.dad_deadline_ns or 0)
                continue
            if entry.state is AddressState.PREFERRED and entry.preferred_until_ns is not None:
                deadlines.append(entry.preferred_until_ns)
            if entry.valid_until_ns is not None:
                deadlines.append(entry.valid_until_ns)
        return min(deadlines, default=None)

    def on_timer(self, now: int) -> list[Action]:
        actions: list[Action] = []
        if self._solicit_at is not None and self._solicit_at <= now:
            actions.append(SolicitRouters())
            self.counters["tx_router_solicit"] += 1
            self._solicitations_left -= 1
            self._solicit_at = (
                now + RTR_SOLICITATION_INTERVAL_NS if self._solicitations_left > 0 else None
            )
        for entry in list(self.addresses.values()):
            actions += self._age(entry, now)
        return actions

    def _age(self, entry: AutoAddress, now: int) -> list[Action]:
        if entry.valid_until_ns is not None and entry.valid_until_ns <= now:
            del self.addresses[entry.address]
            self.counters["address_expired"] += 1
            return [Remove(entry.address)]
        if entry.state is AddressState.TENTATIVE:
            if entry.dad_deadline_ns is not None and entry.dad_deadline_ns <= now:
                entry.state = AddressState.PREFERRED
                entry.dad_deadline_ns = None
                self.counters["address_assigned"] += 1
                actions: list[Action] = [Assign(entry.address)]
                return actions + self._age(entry, now)
            return []
        preferred_until = entry.preferred_until_ns
        ended = preferred_until is not None and preferred_until <= now
        if entry.state is AddressState.PREFERRED and ended:
            entry.state = AddressState.DEPRECATED
            self.counters["address_deprecated"] += 1
        return []

    def preferred(self) -> list[IPv6Address]:
        """Assigned addresses whose preferred lifetime has not ended."""
        return [a.address for a in self.addresses.values() if a.state is AddressState.PREFERRED]

    def deprecated(self) -> list[IPv6Address]:
        return [a.address for a in self.addresses.values() if a.state is AddressState.DEPRECATED]
