"""The IPv6 neighbour cache of Neighbor Discovery (RFC 4861 section 7.3),
without I/O.

Each neighbour is in one of RFC 4861's states: INCOMPLETE (asked, no answer
yet), REACHABLE (confirmed lately), STALE (known, not confirmed lately),
DELAY and PROBE (in use while stale: waiting, then asking it directly).
As with ARP (``net/arp.py``) no sender waits: a packet for a neighbour still
being resolved joins that neighbour's queue (bounded in bytes: the
fragments of one largest packet fit), which leaves when the advertisement
comes and is dropped (and counted) when it never does. The number of
neighbours, of those being resolved and the bytes all queues hold are
bounded, so a flood of packets for unresolvable addresses costs bounded
memory and never delays traffic to neighbours that answer; one that never
answered is remembered for a while (``net/failures.py``, as ARP does), and
a packet for it then starts a single solicitation, one a second at most.

The owner calls :meth:`NeighbourCache.send` for each packet, the
``advertised``/``solicited_by`` methods for Neighbor Discovery input and
:meth:`NeighbourCache.on_timer` at :meth:`NeighbourCache.next_deadline_ns`;
each returns what to transmit.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from looming.devices.net import MacAddress
from looming.net.ethernet import TokenBucket
from looming.net.failures import FAILED_LIFETIME_NS, MAX_FAILED, FailedNeighbours

_SECOND_NS = 1_000_000_000


class NeighbourState(enum.Enum):
    INCOMPLETE = "incomplete"
    REACHABLE = "reachable"
    STALE = "stale"
    DELAY = "delay"
    PROBE = "probe"


@dataclass(frozen=True, slots=True)
class NeighbourSettings:
    """RFC 4861 section 10's constants, and the cache's bounds."""

    retransmit_ns: int = _SECOND_NS  # RetransTimer
    reachable_ns: int = 30 * _SECOND_NS  # ReachableTime
    delay_ns: int = 5 * _SECOND_NS  # DELAY_FIRST_PROBE_TIME
    multicast_solicits: int = 3  # MAX_MULTICAST_SOLICIT
    unicast_solicits: int = 3  # MAX_UNICAST_SOLICIT
    max_neighbours: int = 512
    max_incomplete: int = 256  # as ARP's
    # New resolutions started for outgoing packets, as ARP's: a burst, then
    # so many a second. Each is a multicast solicitation; a flood of SYNs
    # from unused on-link addresses must not turn into as many.
    new_burst: int = 32
    new_per_second: int = 256
    # Entries a Neighbor Solicitation (or Router Advertisement) created
    # before we ever sent to them (RFC 4861 7.2.3: STALE): a flood from new
    # sources replaces only these, never a neighbour in use.
    max_unsolicited: int = 128
    # Held for a neighbour being resolved: the fragments of the largest
    # packet fit; and for all of them together.
    queue_bytes: int = 72 * 1024
    total_queue_bytes: int = 1024 * 1024
    # A neighbour that never answered: packets for it are dropped (counted)
    # without asking again for so long, as ARP does (``net/failures.py``).
    failed_lifetime_ns: int = FAILED_LIFETIME_NS
    max_failed: int = MAX_FAILED


@dataclass(slots=True)
class Neighbour:
    state: NeighbourState
    mac: MacAddress | None
    deadline_ns: int  # when the state's timer runs out (none while STALE)
    probes: int = 0
    queue: deque[bytes] = field(default_factory=deque)
    queued_bytes: int = 0
    unsolicited: bool = False  # created by its own solicitation, not used since


Solicitation = tuple[IPv6Address, MacAddress | None]
"""A Neighbor Solicitation to send: the target, and the MAC to send it to
(None: to the target's solicited-node multicast group)."""

Transmission = tuple[MacAddress, bytes]
"""An IPv6 packet to send to a neighbour's MAC."""


class NeighbourCache:
    """Neighbours on one link, their states and their queued packets."""

    def __init__(self, settings: NeighbourSettings | None = None) -> None:
        self.settings = settings if settings is not None else NeighbourSettings()
        self._entries: OrderedDict[IPv6Address, Neighbour] = OrderedDict()
        self._unsolicited: OrderedDict[IPv6Address, None] = OrderedDict()
        self._incomplete = 0
        self.failed: FailedNeighbours[IPv6Address] = FailedNeighbours(
            self.settings.failed_lifetime_ns, self.settings.max_failed
        )
        self._new_resolutions: TokenBucket | None = None
        self.queued_bytes = 0  # held for all neighbours together
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def state(self, address: IPv6Address) -> NeighbourState | None:
        entry = self._entries.get(address)
        return entry.state if entry is not None else None

    def mac(self, address: IPv6Address) -> MacAddress | None:
        entry = self._entries.get(address)
        return entry.mac if entry is not None else None

    def binds(self, address: bytes, mac: bytes) -> bool:
        """Whether the packed ``address`` is a neighbour known at ``mac``
        (in any state but INCOMPLETE: it has spoken from that MAC)."""
        entry = self._entries.get(IPv6Address(address))
        return entry is not None and entry.mac == mac

    # -- sending ---------------------------------------------------------------

    def send(
        self, address: IPv6Address, packet: bytes, now: int, *, explicit: bool = False
    ) -> tuple[MacAddress | None, Solicitation | None]:
        """Where ``packet`` for neighbour ``address`` goes now (None: queued
        or dropped), and a solicitation to send first if one is due. A new
        resolution beyond the budget drops the packet (``resolution_limited``)
        unless ``explicit`` (asked for by a user, as a ping is)."""
        entry = self._entries.get(address)
        if entry is None:
            # A neighbour that failed recently is asked once more (a single
            # solicitation, one a second at most: RFC 1122 2.3.2.1), so that
            # a host that has just arrived is not locked out.
            retry = bool(self.failed) and self.failed.has_failed(address, now)
            if not explicit and not self._may_start(now):
                self.counters["failed_neighbour_dropped" if retry else "resolution_limited"] += 1
                return None, None
            return None, self._start(address, packet, now, retry=retry)
        if entry.state is NeighbourState.INCOMPLETE:
            self._enqueue(entry, packet)
            return None, None
        if entry.unsolicited:
            self._adopt(address, entry)
        if entry.state is NeighbourState.REACHABLE and now >= entry.deadline_ns:
            entry.state = NeighbourState.STALE
        if entry.state is NeighbourState.STALE:
            # In use while unconfirmed: wait a while for upper-layer hints,
            # then probe (RFC 4861 7.3.3).
            entry.state = NeighbourState.DELAY
            entry.deadline_ns = now + self.settings.delay_ns
        return entry.mac, None

    def _may_start(self, now: int) -> bool:
        settings = self.settings
        bucket = self._new_resolutions
        if bucket is None or (bucket.rate, bucket.burst) != (
            settings.new_per_second,
            settings.new_burst,
        ):
            bucket = self._new_resolutions = TokenBucket(
                settings.new_per_second, settings.new_burst, now
            )
        return bucket.take(now)

    def _start(
        self, address: IPv6Address, packet: bytes, now: int, *, retry: bool = False
    ) -> Solicitation:
        if self._incomplete >= self.settings.max_incomplete:
            # Under a flood of new destinations the oldest resolution gives
            # way (as in ARP): a newcomer that answers still gets its chance.
            self._evict_oldest_incomplete()
        if not self._make_room():
            self._evict_oldest_resolved()  # our own traffic: room is made
        settings = self.settings
        probes = settings.multicast_solicits if retry else 1  # a retry fails after one
        entry = Neighbour(NeighbourState.INCOMPLETE, None, now + settings.retransmit_ns, probes)
        self._entries[address] = entry
        self._enqueue(entry, packet)
        self._incomplete += 1
        self.counters["tx_multicast_solicit"] += 1
        if retry:
            self.counters["failed_neighbour_retried"] += 1
        return address, None

    def _evict_oldest_incomplete(self) -> None:
        for address, entry in self._entries.items():
            if entry.state is NeighbourState.INCOMPLETE:
                self._remove(address)
                self._incomplete -= 1
                self.counters["incomplete_evicted"] += len(entry.queue)
                self._release(entry)
                return

    def _enqueue(self, entry: Neighbour, packet: bytes) -> None:
        settings = self.settings
        if self.queued_bytes + len(packet) > settings.total_queue_bytes:
            self.counters["queue_total_dropped"] += 1
            return
        entry.queue.append(packet)
        entry.queued_bytes += len(packet)
        self.queued_bytes += len(packet)
        while entry.queued_bytes > settings.queue_bytes:
            # The newest packets are the likelier to matter.
            dropped = entry.queue.popleft()
            entry.queued_bytes -= len(dropped)
            self.queued_bytes -= len(dropped)
            self.counters["queue_overflow_dropped"] += 1

    def _release(self, entry: Neighbour) -> list[bytes]:
        """Empty ``entry``'s queue, returning what it held."""
        packets = list(entry.queue)
        entry.queue.clear()
        self.queued_bytes -= entry.queued_bytes
        entry.queued_bytes = 0
        return packets

    def _adopt(self, address: IPv6Address, entry: Neighbour) -> None:
        """An unsolicited entry in use from now on: no longer replaceable."""
        entry.unsolicited = False
        self._unsolicited.pop(address, None)

    def _remove(self, address: IPv6Address) -> Neighbour:
        entry = self._entries.pop(address)
        if entry.unsolicited:
            self._unsolicited.pop(address, None)
        return entry

    def _make_room(self) -> bool:
        """Make room for one more entry by evicting one nobody uses (an
        unsolicited one, else the oldest STALE); False when every entry is
        in use (REACHABLE, DELAY, PROBE) or being resolved."""
        if len(self._entries) < self.settings.max_neighbours:
            return True
        if self._unsolicited:
            self._remove(next(iter(self._unsolicited)))
            self.counters["evicted"] += 1
            return True
        for address, entry in self._entries.items():
            if entry.state is NeighbourState.STALE:
                self._remove(address)
                self.counters["evicted"] += 1
                return True
        return False

    def _evict_oldest_resolved(self) -> None:
        for address, entry in self._entries.items():
            if entry.state is not NeighbourState.INCOMPLETE:
                self._remove(address)
                self.counters["evicted"] += 1
                return
        # All resolving: bounded by max_incomplete instead.

    # -- Neighbor Discovery input ------------------------------------------------

    def advertised(
        self,
        target: IPv6Address,
        mac: MacAddress | None,
        *,
        solicited: bool,
        override: bool,
        now: int,
    ) -> list[Transmission]:
        """A Neighbor Advertisement for ``target`` (RFC 4861 7.2.5): what
        its queue now lets out."""
        if self.failed:
            self.failed.forget(target)  # it speaks after all
        entry = self._entries.get(target)
        if entry is None:
            self.counters["unsolicited_advert_ignored"] += 1
            return []
        if entry.state is NeighbourState.INCOMPLETE:
            if mac is None:
                return []
            return self._resolve(entry, mac, solicited, now)
        changed = mac is not None and mac != entry.mac
        if changed and not override:
            if entry.state is NeighbourState.REACHABLE:
                entry.state = NeighbourState.STALE
            return []
        if mac is not None:
            entry.mac = mac
        if solicited:
            if entry.unsolicited:
                self._adopt(target, entry)
            entry.state = NeighbourState.REACHABLE
            entry.deadline_ns = now + self.settings.reachable_ns
            entry.probes = 0
        elif changed:
            entry.state = NeighbourState.STALE
        return []

    def solicited_by(self, source: IPv6Address, mac: MacAddress, now: int) -> list[Transmission]:
        """A Neighbor Solicitation from ``source`` carrying its MAC (RFC 4861
        7.2.3): the sender is at least STALE now."""
        if self.failed:
            self.failed.forget(source)  # it speaks after all
        entry = self._entries.get(source)
        if entry is None:
            self._learn_unsolicited(source, mac)
            return []
        if entry.state is NeighbourState.INCOMPLETE:
            return self._resolve(entry, mac, False, now)
        if mac != entry.mac:
            entry.mac = mac
            entry.state = NeighbourState.STALE
        return []

    def _learn_unsolicited(self, source: IPv6Address, mac: MacAddress) -> None:
        """A STALE entry for a neighbour that spoke first (RFC 4861 7.2.3),
        within max_unsolicited such entries: the oldest gives way, and a
        neighbour in use never does."""
        unsolicited = self._unsolicited
        if len(unsolicited) >= self.settings.max_unsolicited:
            self._remove(next(iter(unsolicited)))
            self.counters["unsolicited_evicted"] += 1
        if not self._make_room():
            self.counters["unsolicited_not_learned"] += 1
            return
        self._entries[source] = Neighbour(NeighbourState.STALE, mac, 0, unsolicited=True)
        unsolicited[source] = None
        self.counters["unsolicited_learned"] += 1

    def _resolve(
        self, entry: Neighbour, mac: MacAddress, solicited: bool, now: int
    ) -> list[Transmission]:
        self._incomplete -= 1
        entry.mac = mac
        entry.probes = 0
        if solicited:
            entry.state = NeighbourState.REACHABLE
            entry.deadline_ns = now + self.settings.reachable_ns
        else:
            entry.state = NeighbourState.STALE
        self.counters["resolved"] += 1
        return [(mac, packet) for packet in self._release(entry)]

    # -- timers ------------------------------------------------------------------

    def next_deadline_ns(self) -> int | None:
        deadlines = [
            e.deadline_ns for e in self._entries.values() if e.state is not NeighbourState.STALE
        ]
        return min(deadlines) if deadlines else None

    def on_timer(self, now: int) -> list[Solicitation]:
        """Retransmit, probe, give up and age entries whose timer ran out."""
        solicitations: list[Solicitation] = []
        for address, entry in list(self._entries.items()):
            if entry.state is NeighbourState.STALE or now < entry.deadline_ns:
                continue
            solicitation = self._expire(address, entry, now)
            if solicitation is not None:
                solicitations.append(solicitation)
        return solicitations

    def _expire(self, address: IPv6Address, entry: Neighbour, now: int) -> Solicitation | None:
        settings = self.settings
        state = entry.state
        if state is NeighbourState.REACHABLE:
            entry.state = NeighbourState.STALE
            return None
        if state is NeighbourState.DELAY:
            entry.state = NeighbourState.PROBE
            entry.probes = 0
        limit = (
            settings.multicast_solicits
            if state is NeighbourState.INCOMPLETE
            else settings.unicast_solicits
        )
        if entry.probes >= limit:
            self._remove(address)
            if state is NeighbourState.INCOMPLETE:
                self._incomplete -= 1
                self.counters["unresolved_dropped"] += len(entry.queue)
                self._release(entry)
                # The settings may have been replaced since: their timers hold.
                self.failed.lifetime_ns = settings.failed_lifetime_ns
                self.failed.max_entries = settings.max_failed
                self.failed.failed(address, now)
            self.counters["unreachable"] += 1
            return None
        entry.probes += 1
        entry.deadline_ns = now + settings.retransmit_ns
        if state is NeighbourState.INCOMPLETE:
            self.counters["tx_multicast_solicit"] += 1
            return address, None
        self.counters["tx_unicast_solicit"] += 1
        return address, entry.mac
