"""Address resolution (RFC 826): a sans-I/O cache and a thin asyncio shell."""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Coroutine
from ipaddress import IPv4Address
from typing import Any

from looming.devices.net import BROADCAST_MAC, EthernetProtocol, MacAddress
from looming.devices.time import Time
from looming.errors import HostUnreachable, Malformed
from looming.net._timeouts import wait_until_done
from looming.net.ethernet import EthernetLayer
from looming.net.wire import arp as wire
from looming.net.wire.arp import ArpOperation, ArpPacket

_ZERO_MAC = MacAddress(bytes(6))
_SECOND_NS = 1_000_000_000
MAX_PENDING_SENDS = 256


class ArpCache:
    """IPv4-to-MAC bindings with expiry and a bound on their number.

    The oldest binding is evicted when full, so a peer flooding us with ARP
    cannot grow memory.
    """

    def __init__(self, *, lifetime_ns: int = 60 * _SECOND_NS, max_entries: int = 512) -> None:
        self.lifetime_ns = lifetime_ns
        self.max_entries = max_entries
        self._entries: OrderedDict[IPv4Address, tuple[MacAddress, int]] = OrderedDict()

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
            del self._entries[address]
            return None
        return mac

    def expires_soon(self, address: IPv4Address, now_ns: int) -> bool:
        """Whether the entry is in the last tenth of its lifetime."""
        entry = self._entries.get(address)
        return entry is not None and entry[1] - now_ns < self.lifetime_ns // 10

    def learn(self, address: IPv4Address, mac: MacAddress, now_ns: int) -> None:
        self._entries.pop(address, None)
        self._entries[address] = (mac, now_ns + self.lifetime_ns)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, address: IPv4Address) -> None:
        self._entries.pop(address, None)

    def entries(self, now_ns: int) -> dict[IPv4Address, MacAddress]:
        return {ip: mac for ip, (mac, expires) in self._entries.items() if expires > now_ns}


def answer(
    cache: ArpCache,
    packet: ArpPacket,
    our_mac: MacAddress,
    our_addresses: frozenset[IPv4Address],
    now_ns: int,
    *,
    waiting: frozenset[IPv4Address] = frozenset(),
) -> ArpPacket | None:
    """Apply RFC 826's merge rule to ``packet`` and return the reply to send.

    The sender's binding is updated if already known, learned if the packet
    is for us or answers a question we asked; requests for our addresses get
    a reply.
    """
    sender = packet.sender_ip
    for_us = packet.target_ip in our_addresses
    if (
        not sender.is_unspecified
        and sender not in our_addresses
        and (sender in cache or for_us or sender in waiting)
    ):
        cache.learn(sender, packet.sender_mac, now_ns)
    if for_us and packet.operation == ArpOperation.REQUEST:
        return ArpPacket(
            operation=ArpOperation.REPLY,
            sender_mac=our_mac,
            sender_ip=packet.target_ip,
            target_mac=packet.sender_mac,
            target_ip=sender,
        )
    return None


class ArpLayer:
    """:class:`looming.devices.net.Arp` over an :class:`EthernetLayer`."""

    def __init__(
        self,
        ethernet: EthernetLayer,
        time: Time,
        *,
        addresses: list[IPv4Address] | None = None,
        cache: ArpCache | None = None,
        retries: int = 3,
        retry_interval_s: float = 1.0,
        max_waiting: int = 256,
    ) -> None:
        self._ethernet = ethernet
        self._time = time
        self._addresses: list[IPv4Address] = list(addresses or [])
        self.cache = cache if cache is not None else ArpCache()
        self.retries = retries
        self.retry_interval_s = retry_interval_s
        # Each waiting query holds one packet of the layer above; bounding
        # them bounds the memory a burst to unresolvable hosts can take.
        self.max_waiting = max_waiting
        self._waiting_count = 0
        self._pending: dict[IPv4Address, asyncio.Future[MacAddress]] = {}
        self._refreshing: set[IPv4Address] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: Counter[str] = Counter()
        ethernet.register(EthernetProtocol.ARP, self._on_frame)

    def addresses(self) -> list[IPv4Address]:
        return list(self._addresses)

    def set_addresses(self, addresses: list[IPv4Address], *, announce: bool = True) -> None:
        self._addresses = list(addresses)
        if announce:
            for address in self._addresses:
                self._spawn(self.announce(address))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if len(self._tasks) >= MAX_PENDING_SENDS:
            # A request flood must not queue unbounded replies.
            coroutine.close()
            self.counters["tx_backlog_full"] += 1
            return
        try:
            task = asyncio.get_running_loop().create_task(coroutine)
        except RuntimeError:
            # No loop yet (configured before start): announce() runs in start().
            coroutine.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Announce every address with gratuitous ARP."""
        for address in self._addresses:
            await self.announce(address)

    async def announce(self, address: IPv4Address) -> None:
        """Send a gratuitous ARP request for ``address`` (RFC 5227 section 3)."""
        packet = ArpPacket(
            operation=ArpOperation.REQUEST,
            sender_mac=self._ethernet.mac,
            sender_ip=address,
            target_mac=_ZERO_MAC,
            target_ip=address,
        )
        self.counters["tx_gratuitous"] += 1
        await self._ethernet.write(BROADCAST_MAC, EthernetProtocol.ARP, wire.emit(packet))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(HostUnreachable("ARP stopped"))
                future.exception()  # mark retrieved: nobody may be waiting

    def input(self, payload: bytes) -> None:
        try:
            packet, _ = wire.parse(payload)
        except Malformed:
            self.counters["malformed"] += 1
            return
        self.counters["rx_" + ("request" if packet.operation == 1 else "reply")] += 1
        now = self._time.now_ns()
        reply = answer(
            self.cache,
            packet,
            self._ethernet.mac,
            frozenset(self._addresses),
            now,
            waiting=frozenset(self._pending),
        )
        future = self._pending.pop(packet.sender_ip, None)
        if future is not None and not future.done():
            future.set_result(packet.sender_mac)
        if reply is not None:
            self.counters["tx_reply"] += 1
            self._spawn(
                self._ethernet.write(packet.sender_mac, EthernetProtocol.ARP, wire.emit(reply))
            )

    def _on_frame(self, source: MacAddress, destination: MacAddress, payload: bytes) -> None:
        self.input(payload)

    async def query(self, address: IPv4Address) -> MacAddress:
        now = self._time.now_ns()
        mac = self.cache.lookup(address, now)
        if mac is not None:
            if self.cache.expires_soon(address, now) and address not in self._refreshing:
                # Ask again before the entry lapses, so a long-lived flow
                # never stalls on a fresh resolution.
                self._refreshing.add(address)
                self._spawn(self._refresh(address))
            return mac
        if self._waiting_count >= self.max_waiting:
            self.counters["queue_full"] += 1
            raise HostUnreachable(f"{address}: too many packets already wait on ARP resolution")
        self._waiting_count += 1
        try:
            future = self._pending.get(address)
            if future is not None:
                await future
                return future.result()
            future = asyncio.get_running_loop().create_future()
            self._pending[address] = future
            try:
                for _ in range(self.retries):
                    await self._request(address)
                    if await wait_until_done(future, self._time, self.retry_interval_s):
                        return future.result()
            finally:
                if self._pending.get(address) is future:
                    del self._pending[address]
            self.counters["unresolved"] += 1
            error = HostUnreachable(f"{address} did not answer ARP ({self.retries} requests)")
            future.set_exception(error)
            future.exception()
            raise error
        finally:
            self._waiting_count -= 1

    async def _refresh(self, address: IPv4Address) -> None:
        try:
            await self._request(address)
        finally:
            self._refreshing.discard(address)

    async def _request(self, address: IPv4Address) -> None:
        source = self._addresses[0] if self._addresses else IPv4Address(0)
        packet = ArpPacket(
            operation=ArpOperation.REQUEST,
            sender_mac=self._ethernet.mac,
            sender_ip=source,
            target_mac=_ZERO_MAC,
            target_ip=address,
        )
        self.counters["tx_request"] += 1
        await self._ethernet.write(BROADCAST_MAC, EthernetProtocol.ARP, wire.emit(packet))
