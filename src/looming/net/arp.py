"""Address resolution (RFC 826, RFC 1122 2.3.2): a sans-I/O neighbour table
and a thin asyncio shell.

No sender ever waits for a resolution. A datagram for a neighbour whose
address is not yet known joins that neighbour's small pending queue and the
sender carries on; the queue leaves when the reply comes, or is dropped (and
counted) when the neighbour stays silent, which is then remembered for a
while (negative caching): traffic to it then asks once more with a single
request, one a second at most, instead of a full round. Every table is bounded, so a flood from unresolvable sources
costs a bounded amount of memory and never delays traffic to neighbours
that answer.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, deque
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from looming.devices.net import BROADCAST_MAC, EthernetProtocol, MacAddress
from looming.devices.time import Time
from looming.errors import HostUnreachable, Malformed
from looming.net._timeouts import wait_until_done
from looming.net.ethernet import EthernetLayer, TokenBucket
from looming.net.failures import FAILED_LIFETIME_NS, MAX_FAILED, FailedNeighbours
from looming.net.wire import arp as wire
from looming.net.wire.arp import ArpOperation, ArpPacket

_ZERO_MAC = MacAddress(bytes(6))
_SECOND_NS = 1_000_000_000

Frame = tuple[int, bytes, int | None]
"""(EtherType, payload, segment size for the interface's segmentation or None)."""

Datagram = tuple[Frame, ...]
"""The frames of one datagram (several when it was fragmented)."""


class ArpCache:
    """IPv4-to-MAC bindings with expiry and a bound on their number.

    The oldest binding is evicted when full, so a peer flooding us with ARP
    cannot grow memory.
    """

    def __init__(
        self,
        *,
        lifetime_ns: int = 60 * _SECOND_NS,
        max_entries: int = 512,
        lock_ns: int = _SECOND_NS,
        max_unsolicited: int = 128,
    ) -> None:
        self.lifetime_ns = lifetime_ns
        self.max_entries = max_entries
        # Bindings learned from requests for us, not yet used (RFC 826's
        # merge rule): at most so many, the oldest giving way to a newer
        # one; a full cache makes room for them only among themselves, so a
        # request flood from new sources never evicts a neighbour in use.
        self.max_unsolicited = max_unsolicited
        self._unsolicited: OrderedDict[IPv4Address, None] = OrderedDict()
        self.counters: Counter[str] = Counter()
        # A binding learned less than this long ago is not moved to another
        # MAC by a non-gratuitous packet (Linux's neighbour locktime): of two
        # answers to one request (a duplicate damaged on the way, or two
        # hosts answering), the first one stays.
        self.lock_ns = lock_ns
        self._entries: OrderedDict[IPv4Address, tuple[MacAddress, int]] = OrderedDict()
        # The binding :meth:`Arp.lookup` last found in use and not due for
        # a refresh: the address, its MAC and the time up to which it stays
        # so. Every change to the bindings forgets it.
        self.recent: tuple[IPv4Address | None, MacAddress | None, int] = (None, None, -1)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, address: IPv4Address) -> bool:
        return address in self._entries

    def lookup(self, address: IPv4Address, now_ns: int) -> MacAddress | None:
        entry = self._entries.get(address)
        if entry is None:
            return None
        mac, expires_ns = entry
        if now_ns >= expires_ns:
            self.forget(address)
            return None
        if self._unsolicited and address in self._unsolicited:
            del self._unsolicited[address]  # in use from now on
        return mac

    def binds(self, address: bytes, mac: bytes, now_ns: int) -> bool:
        """Whether the packed ``address`` is bound to ``mac`` now (no side
        effect: a binding looked at is not in use for it)."""
        entry = self._entries.get(IPv4Address(address))
        return entry is not None and entry[0] == mac and now_ns < entry[1]

    def expires_soon(self, address: IPv4Address, now_ns: int) -> bool:
        """Whether the entry is in the last tenth of its lifetime."""
        entry = self._entries.get(address)
        return entry is not None and entry[1] - now_ns < self.lifetime_ns // 10

    def fresh_until(self, address: IPv4Address) -> int:
        """The last time at which ``address``'s binding is not yet in the
        last tenth of its lifetime (-1 without one)."""
        entry = self._entries.get(address)
        return -1 if entry is None else entry[1] - self.lifetime_ns // 10

    def learn(
        self, address: IPv4Address, mac: MacAddress, now_ns: int, *, unsolicited: bool = False
    ) -> None:
        """Bind ``address`` to ``mac``; ``unsolicited``: a new binding
        learned only because its holder asked for us."""
        entries = self._entries
        self.recent = (None, None, -1)
        if unsolicited and address not in entries and not self._room_for_unsolicited():
            self.counters["unsolicited_not_learned"] += 1
            return
        entries.pop(address, None)
        entries[address] = (mac, now_ns + self.lifetime_ns)
        if unsolicited:
            self._unsolicited[address] = None
        elif self._unsolicited:
            self._unsolicited.pop(address, None)  # confirmed: in use
        while len(entries) > self.max_entries:
            oldest, _ = entries.popitem(last=False)
            self._unsolicited.pop(oldest, None)

    def _room_for_unsolicited(self) -> bool:
        unsolicited = self._unsolicited
        if len(unsolicited) >= self.max_unsolicited or (
            unsolicited and len(self._entries) >= self.max_entries
        ):
            oldest, _ = unsolicited.popitem(last=False)
            del self._entries[oldest]
            self.recent = (None, None, -1)
            self.counters["unsolicited_evicted"] += 1
            return True
        return len(self._entries) < self.max_entries

    def locked(self, address: IPv4Address, mac: MacAddress, now_ns: int) -> bool:
        """Whether moving ``address`` to ``mac`` now would change a binding
        younger than :attr:`lock_ns`."""
        entry = self._entries.get(address)
        if entry is None or entry[0] == mac:
            return False
        return now_ns < entry[1] - self.lifetime_ns + self.lock_ns

    def forget(self, address: IPv4Address) -> None:
        self._entries.pop(address, None)
        self._unsolicited.pop(address, None)
        self.recent = (None, None, -1)

    def entries(self, now_ns: int) -> dict[IPv4Address, MacAddress]:
        return {ip: mac for ip, (mac, expires) in self._entries.items() if expires > now_ns}


def answer(
    cache: ArpCache,
    packet: ArpPacket,
    our_mac: MacAddress,
    our_addresses: frozenset[IPv4Address],
    now_ns: int,
    *,
    waiting: Container[IPv4Address] = frozenset(),
    counters: Counter[str] | None = None,
) -> ArpPacket | None:
    """Apply RFC 826's merge rule to ``packet`` and return the reply to send.

    The sender's binding is updated if already known, learned if the packet
    is for us or answers a question we asked; requests for our addresses get
    a reply. A binding learned within the cache's lock time keeps its MAC
    unless the packet is gratuitous (counted as ``locked``).
    """
    sender = packet.sender_ip
    for_us = packet.target_ip in our_addresses
    if (
        not sender.is_unspecified
        and sender not in our_addresses
        and (sender in cache or for_us or sender in waiting)
    ):
        gratuitous = packet.target_ip == sender
        if not gratuitous and cache.locked(sender, packet.sender_mac, now_ns):
            if counters is not None:
                counters["locked"] += 1
        else:
            known = sender in cache or sender in waiting
            cache.learn(sender, packet.sender_mac, now_ns, unsolicited=not known)
    if for_us and packet.operation == ArpOperation.REQUEST:
        return ArpPacket(
            operation=ArpOperation.REPLY,
            sender_mac=our_mac,
            sender_ip=packet.target_ip,
            target_mac=packet.sender_mac,
            target_ip=sender,
        )
    return None


@dataclass(slots=True)
class _Incomplete:
    """A neighbour asked about and not yet answering."""

    next_request_ns: int
    requests: int = 0
    queue: deque[Datagram] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class NeighbourLimits:
    """Bounds and timers of a :class:`NeighbourTable` (RFC 1122 2.3.2)."""

    requests: int = 3  # broadcasts before a neighbour counts as unreachable
    request_interval_ns: int = _SECOND_NS  # RFC 1122 2.3.2.1: at most one per second
    queue_per_neighbour: int = 8  # datagrams held while one neighbour resolves
    queue_total: int = 256  # datagrams held for all neighbours together
    max_incomplete: int = 256  # neighbours being resolved at once
    failed_lifetime_ns: int = FAILED_LIFETIME_NS  # negative caching of a silent neighbour
    max_failed: int = MAX_FAILED
    # New resolutions started for outgoing datagrams: a burst, then so many
    # a second. Each is a broadcast on the LAN and a write; a flood of
    # packets from unused on-link addresses (spoofed SYNs) must not turn
    # into as many broadcasts, nor cost the stack a write per packet. Hosts
    # that talk to us first ask for our address and are learned from that.
    new_burst: int = 32
    new_per_second: int = 256


class NeighbourTable:
    """Resolution state of every neighbour, without I/O.

    Bound neighbours live in :attr:`cache`; neighbours being asked about hold
    a few datagrams each; neighbours that never answered are remembered as
    failed until ``failed_lifetime_ns`` passes. The owner calls
    :meth:`on_timer` at :meth:`next_deadline_ns` and broadcasts a request for
    each address it returns.
    """

    def __init__(self, cache: ArpCache, limits: NeighbourLimits | None = None) -> None:
        self.cache = cache
        self.limits = limits or NeighbourLimits()
        # Ordered by the next request's time (every step adds the same interval).
        self.incomplete: OrderedDict[IPv4Address, _Incomplete] = OrderedDict()
        self.failed: FailedNeighbours[IPv4Address] = FailedNeighbours(
            self.limits.failed_lifetime_ns, self.limits.max_failed
        )
        self.queued = 0
        self.counters: Counter[str] = Counter()
        self._new_tokens = float(self.limits.new_burst)
        self._new_refilled_ns: int | None = None

    def _may_start(self, now_ns: int) -> bool:
        """Whether the new-resolution budget allows one more now."""
        limits = self.limits
        tokens = self._new_tokens
        if self._new_refilled_ns is not None:
            tokens += (now_ns - self._new_refilled_ns) * limits.new_per_second / _SECOND_NS
        self._new_refilled_ns = now_ns
        tokens = min(tokens, float(limits.new_burst))
        if tokens < 1.0:
            self._new_tokens = tokens
            return False
        self._new_tokens = tokens - 1.0
        return True

    def has_failed(self, address: IPv4Address, now_ns: int) -> bool:
        return self.failed.has_failed(address, now_ns)

    def enqueue(self, address: IPv4Address, datagram: Datagram | None, now_ns: int) -> bool:
        """Hold ``datagram`` (None: nothing, only resolve) until ``address``
        resolves. Whether a request must go out now (a new resolution).

        A datagram for a neighbour not yet being resolved, beyond the
        new-resolution budget, is dropped (``resolution_limited``, or
        ``failed_neighbour_dropped`` for one that failed recently); an
        explicit query (None) is not limited. A neighbour that failed
        recently is asked once more, one request a second at most (RFC 1122
        2.3.2.1): a host that has just arrived is not locked out."""
        entry = self.incomplete.get(address)
        started = entry is None
        if entry is None:
            retry = self.failed.has_failed(address, now_ns)
            if datagram is not None and not self._may_start(now_ns):
                self.counters["failed_neighbour_dropped" if retry else "resolution_limited"] += 1
                return False
            limits = self.limits
            while len(self.incomplete) >= limits.max_incomplete:
                # Under a flood of new neighbours the oldest resolution gives
                # way: newcomers still get their chance.
                _, oldest = self.incomplete.popitem(last=False)
                self._drop_queue(oldest, "incomplete_evicted")
            # A retry is a single request: it fails again after one interval.
            requests = limits.requests if retry else 1
            entry = _Incomplete(now_ns + limits.request_interval_ns, requests)
            self.incomplete[address] = entry
            self.counters["tx_request"] += 1
            if retry:
                self.counters["failed_neighbour_retried"] += 1
        if datagram is not None:
            if len(entry.queue) >= self.limits.queue_per_neighbour:
                entry.queue.popleft()
                self.queued -= 1
                self.counters["queue_full"] += 1
            elif self.queued >= self.limits.queue_total:
                self.counters["queue_total_full"] += 1
                return started
            entry.queue.append(datagram)
            self.queued += 1
        return started

    def _drop_queue(self, entry: _Incomplete, reason: str) -> None:
        if entry.queue:
            self.counters[reason] += len(entry.queue)
            self.queued -= len(entry.queue)
            entry.queue.clear()

    def resolved(self, address: IPv4Address) -> list[Datagram]:
        """The reply for ``address`` came (already in the cache): what waited for it."""
        self.failed.forget(address)
        entry = self.incomplete.pop(address, None)
        if entry is None:
            return []
        self.queued -= len(entry.queue)
        return list(entry.queue)

    def next_deadline_ns(self) -> int | None:
        for entry in self.incomplete.values():
            return entry.next_request_ns
        return None

    def on_timer(self, now_ns: int) -> tuple[list[IPv4Address], list[IPv4Address]]:
        """(addresses to ask again, addresses that just failed)."""
        limits = self.limits
        again: list[IPv4Address] = []
        failed: list[IPv4Address] = []
        incomplete = self.incomplete
        while incomplete:
            address, entry = next(iter(incomplete.items()))
            if entry.next_request_ns > now_ns:
                break
            if entry.requests >= limits.requests:
                del incomplete[address]
                self._drop_queue(entry, "unresolved_dropped")
                self.counters["unresolved"] += 1
                # The limits may have been replaced since: their timers hold.
                self.failed.lifetime_ns = limits.failed_lifetime_ns
                self.failed.max_entries = limits.max_failed
                self.failed.failed(address, now_ns)
                failed.append(address)
                continue
            entry.requests += 1
            entry.next_request_ns = now_ns + limits.request_interval_ns
            incomplete.move_to_end(address)
            self.counters["tx_request"] += 1
            again.append(address)
        return again, failed


MAX_QUEUED_FRAMES = 1024


class ArpLayer:
    """:class:`looming.devices.net.Arp` over an :class:`EthernetLayer`.

    :meth:`send` is how the layers above transmit: at once to a bound
    neighbour, queued (never waited for) otherwise. Everything this layer
    transmits itself (requests, replies, released queues) leaves through one
    bounded queue drained by one task.
    """

    def __init__(
        self,
        ethernet: EthernetLayer,
        time: Time,
        *,
        addresses: list[IPv4Address] | None = None,
        cache: ArpCache | None = None,
        limits: NeighbourLimits | None = None,
    ) -> None:
        self._ethernet = ethernet
        self._time = time
        self._addresses: list[IPv4Address] = list(addresses or [])
        self.cache = cache if cache is not None else ArpCache()
        self.table = NeighbourTable(self.cache, limits)
        self._waiters: dict[IPv4Address, list[asyncio.Future[MacAddress]]] = {}
        self._refreshing: set[IPv4Address] = set()
        self._tx: deque[tuple[MacAddress, Frame]] = deque()
        self._tx_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._stopped = False
        self._request_template: tuple[IPv4Address, bytes] | None = None
        self.counters: Counter[str] = self.table.counters
        self.cache.counters = self.counters
        # Requests from senders we do not know, beyond so many a second after
        # a burst: dropped before parsing (``request_policed``), so a flood
        # from new sources costs a few byte comparisons a frame. Neighbours
        # in the cache are always answered.
        self._request_bucket = TokenBucket(1000, 100, time.now_ns())
        ethernet.register(EthernetProtocol.ARP, self._on_frame)
        # A SYN beyond the shared budget from a neighbour bound to its
        # frame's source MAC still passes (FramePolicy).
        ethernet.policy.bound_v4 = self._binds

    def _binds(self, address: bytes, mac: bytes) -> bool:
        return self.cache.binds(address, mac, self._time.now_ns())

    @property
    def limits(self) -> NeighbourLimits:
        return self.table.limits

    @limits.setter
    def limits(self, limits: NeighbourLimits) -> None:
        self.table.limits = limits

    def addresses(self) -> list[IPv4Address]:
        return list(self._addresses)

    def set_addresses(self, addresses: list[IPv4Address], *, announce: bool = True) -> None:
        self._addresses = list(addresses)
        if announce:
            for address in self._addresses:
                self._queue_frame(BROADCAST_MAC, self._gratuitous(address))

    async def start(self) -> None:
        """Announce every address with gratuitous ARP."""
        for address in self._addresses:
            await self.announce(address)

    def _gratuitous(self, address: IPv4Address) -> Frame:
        packet = ArpPacket(
            operation=ArpOperation.REQUEST,
            sender_mac=self._ethernet.mac,
            sender_ip=address,
            target_mac=_ZERO_MAC,
            target_ip=address,
        )
        self.counters["tx_gratuitous"] += 1
        return (EthernetProtocol.ARP, wire.emit(packet), None)

    async def announce(self, address: IPv4Address) -> None:
        """Send a gratuitous ARP request for ``address`` (RFC 5227 section 3)."""
        _, payload, _ = self._gratuitous(address)
        await self._ethernet.write(BROADCAST_MAC, EthernetProtocol.ARP, payload)

    async def stop(self) -> None:
        """Drop every queue and fail every waiter; returns at once."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tx_task is not None:
            self._tx_task.cancel()
        self._tx.clear()
        for address in list(self.table.incomplete):
            self.table.resolved(address)
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(HostUnreachable("ARP stopped"))
                    future.exception()  # mark retrieved: nobody may be waiting
        self._waiters.clear()

    # -- receiving -----------------------------------------------------------

    def input(self, payload: bytes) -> None:
        try:
            packet, _ = wire.parse(payload)
        except Malformed:
            self.counters["malformed"] += 1
            return
        self.counters["rx_" + ("request" if packet.operation == 1 else "reply")] += 1
        now = self._time.now_ns()
        sender = packet.sender_ip
        if self.table.failed:
            self.table.failed.forget(sender)  # it speaks after all
        reply = answer(
            self.cache,
            packet,
            self._ethernet.mac,
            frozenset(self._addresses),
            now,
            waiting=self.table.incomplete,
            counters=self.counters,
        )
        self._refreshing.discard(sender)
        if sender in self.table.incomplete or sender in self._waiters:
            mac = self.cache.lookup(sender, now)
            if mac is not None:
                for datagram in self.table.resolved(sender):
                    for frame in datagram:
                        self._queue_frame(mac, frame)
                for future in self._waiters.pop(sender, []):
                    if not future.done():
                        future.set_result(mac)
        if reply is not None:
            self.counters["tx_reply"] += 1
            self._queue_frame(packet.sender_mac, (EthernetProtocol.ARP, wire.emit(reply), None))

    def _on_frame(
        self, source: MacAddress, destination: MacAddress, payload: bytes, _verified: bool
    ) -> None:
        if source[0] & 1 or (len(payload) >= 9 and payload[8] & 1):
            # A group Ethernet source, or one as the sender's hardware
            # address: forged; learning it would send a neighbour's traffic
            # (and the reply) to every host on the link.
            self.counters["martian_mac_source"] += 1
            return
        if (
            len(payload) >= 28
            and payload[6:8] == b"\x00\x01"  # a request
            and not self._request_bucket.take(self._time.now_ns())
            and IPv4Address(payload[14:18]) not in self.cache
        ):
            self.counters["request_policed"] += 1
            return
        self.input(payload)

    # -- sending -------------------------------------------------------------

    def lookup(self, address: IPv4Address) -> MacAddress | None:
        """The bound MAC of ``address`` (refreshing it near expiry), or None."""
        now = self._time.now_ns()
        cache = self.cache
        recent = cache.recent
        if recent[0] is address and now <= recent[2]:
            # (What the rest gives a binding in use and not due for a
            # refresh, without hashing the address twice.)
            return recent[1]
        mac = cache.lookup(address, now)
        if mac is None:
            self._refreshing.discard(address)
        elif cache.expires_soon(address, now):
            if address not in self._refreshing:
                # Ask again (once) before the entry lapses, so a long-lived
                # flow never stalls on a fresh resolution.
                self._refreshing.add(address)
                self._send_request(address)
                self.counters["tx_request"] += 1
        else:
            cache.recent = (address, mac, cache.fresh_until(address))
        return mac

    async def send(self, address: IPv4Address, frames: Sequence[Frame]) -> None:
        """Transmit ``frames`` (one datagram) to neighbour ``address``.

        Never waits for resolution: an unknown neighbour's datagram is held
        in its pending queue. Raises :class:`HostUnreachable` for a neighbour
        that recently failed to answer.
        """
        mac = self.lookup(address)
        if mac is not None:
            write = self._ethernet.write
            for ethertype, payload, segment_size in frames:
                await write(mac, ethertype, payload, segment_size=segment_size)
            return
        self._hold(address, tuple(frames))

    def _hold(self, address: IPv4Address, datagram: Datagram | None) -> None:
        now = self._time.now_ns()
        if self._stopped:
            raise HostUnreachable("ARP stopped")
        table = self.table
        dropped = table.counters["failed_neighbour_dropped"]
        if table.enqueue(address, datagram, now):
            self._send_request(address)
            self._arm_timer()
        elif table.counters["failed_neighbour_dropped"] != dropped:
            raise HostUnreachable(f"{address} did not answer ARP recently; asking again later")

    async def query(self, address: IPv4Address) -> MacAddress:
        """The MAC of ``address``, resolving it if needed (waits at most
        ``requests`` x ``request_interval_ns``)."""
        mac = self.lookup(address)
        if mac is not None:
            return mac
        self._hold(address, None)
        future: asyncio.Future[MacAddress] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(address, []).append(future)
        limits = self.limits
        seconds = limits.requests * limits.request_interval_ns / _SECOND_NS + 0.1
        try:
            if not await wait_until_done(future, self._time, seconds):
                raise HostUnreachable(f"{address} did not answer ARP ({limits.requests} requests)")
            return future.result()
        finally:
            waiters = self._waiters.get(address)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[address]

    def _arm_timer(self) -> None:
        deadline = self.table.next_deadline_ns()
        if deadline is None or self._stopped:
            return
        if self._timer is not None:
            assert self._timer_at is not None
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        delay = max(deadline - self._time.now_ns(), 0) / 1e9
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)
        self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        again, failed = self.table.on_timer(self._time.now_ns())
        for address in again:
            self._send_request(address)
        for address in failed:
            for future in self._waiters.pop(address, []):
                if not future.done():
                    future.set_exception(
                        HostUnreachable(
                            f"{address} did not answer ARP ({self.limits.requests} requests)"
                        )
                    )
                    future.exception()
        self._arm_timer()

    def _send_request(self, address: IPv4Address) -> None:
        source = self._addresses[0] if self._addresses else IPv4Address(0)
        template = self._request_template
        if template is None or template[0] != source:
            # Every request differs only in the target address (the last
            # four bytes): under a flood, build the rest once.
            packet = ArpPacket(
                operation=ArpOperation.REQUEST,
                sender_mac=self._ethernet.mac,
                sender_ip=source,
                target_mac=_ZERO_MAC,
                target_ip=IPv4Address(0),
            )
            template = self._request_template = (source, wire.emit(packet)[:-4])
        frame = template[1] + address.packed
        self._queue_frame(BROADCAST_MAC, (EthernetProtocol.ARP, frame, None))

    def _queue_frame(self, mac: MacAddress, frame: Frame) -> None:
        if self._stopped:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # configured before start: start() announces
        if len(self._tx) >= MAX_QUEUED_FRAMES:
            # A request flood must not queue unbounded replies.
            self.counters["tx_backlog_full"] += 1
            return
        self._tx.append((mac, frame))
        if self._tx_task is None:
            self._tx_task = loop.create_task(self._drain())

    async def _drain(self) -> None:
        write = self._ethernet.write
        try:
            while self._tx:
                mac, (ethertype, payload, segment_size) = self._tx.popleft()
                try:
                    await write(mac, ethertype, payload, segment_size=segment_size)
                except Exception:
                    self.counters["tx_failed"] += 1
        finally:
            self._tx_task = None
