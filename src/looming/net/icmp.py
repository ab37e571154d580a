"""ICMPv4 (RFC 792): echo replies, unreachable errors and a ping client."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from looming.devices.net import IpProtocol, ReceivedPacket
from looming.devices.random import Random
from looming.devices.time import Time
from looming.errors import ConnectionTimeout, HostUnreachable, Malformed
from looming.net._timeouts import wait_until_done
from looming.net.ipv4 import Ipv4Layer
from looming.net.wire import icmp as wire
from looming.net.wire import ipv4 as ipv4_wire
from looming.net.wire.checksum import internet_checksum
from looming.net.wire.icmp import IcmpHeader, IcmpType, UnreachableCode
from looming.net.wire.ipv4 import Ipv4Header

MAX_PENDING_SENDS = 256


@dataclass(frozen=True, slots=True)
class QuotedHeader:
    """What TCP and UDP read of the IP header an ICMPv6 error quotes:
    the addresses and the upper-layer protocol."""

    source: IPv6Address
    destination: IPv6Address
    protocol: int


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP or ICMPv6 error received about a datagram we sent, in
    ICMPv4's types and codes (:func:`looming.net.ipv6.as_icmp_error` maps
    ICMPv6's onto them); ``reporter`` and ``original`` are of the family
    the datagram was sent in."""

    reporter: IPv4Address | IPv6Address
    type: int
    code: int
    original: Ipv4Header | QuotedHeader
    original_payload: bytes  # at least the first 8 bytes (ports for TCP/UDP)
    next_hop_mtu: int = 0  # for "fragmentation needed" (RFC 1191), 0 if not given
    original_length: int = 0  # the failed datagram's total length, as quoted

    @property
    def fragmentation_needed(self) -> bool:
        return (
            self.type == IcmpType.DESTINATION_UNREACHABLE
            and self.code == UnreachableCode.FRAGMENTATION_NEEDED
        )

    @property
    def hard(self) -> bool:
        """Whether the error says the destination will not take this
        traffic at all (RFC 1122 4.2.3.9; the codes Linux treats as fatal):
        protocol or port unreachable, unknown or prohibited destinations.
        Network and host unreachable and time exceeded are soft: transient."""
        return self.type == IcmpType.DESTINATION_UNREACHABLE and self.code in _HARD_CODES

    def describe(self) -> str:
        if self.type == IcmpType.TIME_EXCEEDED:
            what = "time exceeded in transit"
        else:
            what = _UNREACHABLE_NAMES.get(self.code, f"destination unreachable (code {self.code})")
        return f"{what} (ICMP from {self.reporter})"


# RFC 1122 3.2.2.1 and RFC 1812 5.2.7.1 codes: 2 protocol, 3 port, 6/7 unknown
# network/host, 8 isolated, 9/10 prohibited, 13 filtered.
_HARD_CODES = frozenset({2, 3, 6, 7, 8, 9, 10, 13})
_UNREACHABLE_NAMES = {
    0: "network unreachable",
    1: "host unreachable",
    2: "protocol unreachable",
    3: "port unreachable",
    4: "fragmentation needed",
    5: "source route failed",
    9: "network administratively prohibited",
    10: "host administratively prohibited",
    13: "communication administratively prohibited",
}


IcmpErrorHandler = Callable[[IcmpError], None]


class IcmpLayer:
    def __init__(self, ipv4: Ipv4Layer, time: Time, random: Random) -> None:
        self._ipv4 = ipv4
        self._time = time
        self._identifier = random.randint(0, 0xFFFF)
        self._sequence = 0
        self._pings: dict[tuple[IPv4Address, int, int], asyncio.Future[None]] = {}
        self._error_handlers: dict[int, IcmpErrorHandler] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: Counter[str] = Counter()
        self.error_burst = 50
        self.errors_per_second = 1000
        self._bucket = float(self.error_burst)
        self._bucket_time_ns = time.now_ns()
        ipv4.register(IpProtocol.ICMP, self.input)
        ipv4.unhandled_protocol = self._on_unknown_protocol

    def register_errors(self, protocol: int, handler: IcmpErrorHandler) -> None:
        """Deliver ICMP errors about datagrams of ``protocol`` we sent."""
        self._error_handlers[protocol] = handler

    def _send(self, destination: IPv4Address, message: bytes) -> None:
        if len(self._tasks) >= MAX_PENDING_SENDS:
            # Replies still waiting on ARP or the device: under a flood,
            # drop rather than queue without bound.
            self.counters["tx_backlog_full"] += 1
            return
        task = asyncio.get_running_loop().create_task(self._write(destination, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, destination: IPv4Address, message: bytes) -> None:
        try:
            await self._ipv4.write(destination, IpProtocol.ICMP, message)
        except Exception:
            # Replies and errors are best effort (RFC 1122 3.2.2).
            self.counters["tx_failed"] += 1

    def input(self, packet: ReceivedPacket[IPv4Address], payload: bytes) -> None:
        source = packet.source
        destination = packet.destination
        try:
            header, body = wire.parse(payload)
        except Malformed:
            self.counters["malformed"] += 1
            return
        if header.type == IcmpType.ECHO_REQUEST:
            if self._ipv4.is_broadcast(destination) or destination.is_multicast:
                self.counters["ignored_broadcast_echo"] += 1
                return
            self.counters["rx_echo_request"] += 1
            reply = wire.emit(IcmpHeader(IcmpType.ECHO_REPLY, 0, header.rest), body)
            self._send(source, reply)
        elif header.type == IcmpType.ECHO_REPLY:
            self.counters["rx_echo_reply"] += 1
            future = self._pings.pop((source, header.identifier, header.sequence), None)
            if future is not None and not future.done():
                future.set_result(None)
        elif header.type in (IcmpType.DESTINATION_UNREACHABLE, IcmpType.TIME_EXCEEDED):
            self._on_error(source, header, bytes(body))
        else:
            self.counters["rx_other"] += 1

    def _on_error(self, source: IPv4Address, header: IcmpHeader, body: bytes) -> None:
        try:
            original, _ = ipv4_wire.parse(_tolerate_truncation(body))
        except Malformed:
            self.counters["malformed"] += 1
            return
        self.counters["rx_error"] += 1
        quoted = body[original.length :]
        if not self._ipv4.is_local(original.source) or len(quoted) < 8:
            # RFC 5927 4.1: it must quote a datagram we could have sent, with
            # the ports (and for TCP the sequence number) to check.
            self.counters["error_not_ours"] += 1
            return
        handler = self._error_handlers.get(original.protocol)
        if handler is None:
            self.counters["error_unhandled"] += 1
            return
        mtu = header.rest & 0xFFFF if header.type == IcmpType.DESTINATION_UNREACHABLE else 0
        length = int.from_bytes(body[2:4], "big")
        handler(IcmpError(source, header.type, header.code, original, bytes(quoted), mtu, length))

    # -- errors we send ------------------------------------------------------

    def _error_allowed(self) -> bool:
        """A token bucket on the errors we send (RFC 1812 4.3.2.8): a flood
        to closed ports must not turn us into an amplifier."""
        now = self._time.now_ns()
        elapsed_s = (now - self._bucket_time_ns) / 1e9
        self._bucket_time_ns = now
        self._bucket = min(
            float(self.error_burst), self._bucket + elapsed_s * self.errors_per_second
        )
        if self._bucket < 1.0:
            self.counters["tx_error_rate_limited"] += 1
            return False
        self._bucket -= 1.0
        return True

    def destination_unreachable(
        self, original: ReceivedPacket[IPv4Address], payload: bytes, code: int
    ) -> None:
        """Tell the sender of ``original`` (with ``payload``) that it cannot
        be delivered, quoting its header and the first 8 bytes of its payload
        (RFC 792)."""
        if original.source.is_unspecified or self._ipv4.is_broadcast(original.destination):
            return  # never answer broadcasts or anonymous senders (RFC 1122 3.2.2)
        if original.destination.is_multicast or not self._error_allowed():
            return
        quoted = original.header + payload[:8]
        message = wire.emit(IcmpHeader(IcmpType.DESTINATION_UNREACHABLE, code), quoted)
        self.counters["tx_unreachable"] += 1
        self._send(original.source, message)

    def port_unreachable(self, original: ReceivedPacket[IPv4Address], payload: bytes) -> None:
        self.destination_unreachable(original, payload, UnreachableCode.PORT)

    def _on_unknown_protocol(self, packet: ReceivedPacket[IPv4Address], payload: bytes) -> None:
        self.destination_unreachable(packet, payload, UnreachableCode.PROTOCOL)

    # -- ping ----------------------------------------------------------------

    async def ping(
        self, destination: IPv4Address | str, *, size: int = 56, timeout: float = 1.0
    ) -> float:
        """Send one echo request; the round-trip time in seconds.

        Raises :class:`~looming.errors.ConnectionTimeout` without a reply.
        """
        destination = IPv4Address(destination)
        self._sequence = (self._sequence + 1) & 0xFFFF
        key = (destination, self._identifier, self._sequence)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[key] = future
        payload = bytes(i & 0xFF for i in range(size))
        message = wire.emit(IcmpHeader.echo(IcmpType.ECHO_REQUEST, *key[1:]), payload)
        started = self._time.now_ns()
        try:
            self.counters["tx_echo_request"] += 1
            await self._ipv4.write(destination, IpProtocol.ICMP, message)
            if not await wait_until_done(future, self._time, timeout):
                if self._ipv4.resolving(destination):
                    raise HostUnreachable(
                        f"no echo reply from {destination} within {timeout} s: "
                        "its link-layer address did not resolve (nobody answered ARP)"
                    )
                raise ConnectionTimeout(f"no echo reply from {destination} within {timeout} s")
        finally:
            self._pings.pop(key, None)
        return (self._time.now_ns() - started) / 1e9

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _tolerate_truncation(quoted: bytes) -> bytes:
    """Errors quote the original header and only 8 bytes of its payload, so
    the total length field overstates what is here: fix it up to parse."""
    if len(quoted) < ipv4_wire.MIN_HEADER_LENGTH:
        return quoted
    header_length = (quoted[0] & 0x0F) * 4
    total = int.from_bytes(quoted[2:4], "big")
    if total <= len(quoted) or header_length > len(quoted):
        return quoted
    patched = bytearray(quoted)
    patched[2:4] = len(quoted).to_bytes(2, "big")
    # The checksum covers the length: recompute so parse accepts the header.
    patched[10:12] = b"\x00\x00"
    patched[10:12] = internet_checksum(patched[:header_length]).to_bytes(2, "big")
    return bytes(patched)
