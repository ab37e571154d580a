"""UDP (RFC 768) over :class:`~looming.net.ipv4.Ipv4Layer`."""

from __future__ import annotations

import asyncio
import inspect
import struct
from collections import Counter, deque
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING

from looming.bounded import Memo
from looming.devices.net import IpProtocol, ReceivedPacket
from looming.devices.random import Random
from looming.devices.stack import Datagram, UdpHandler
from looming.errors import AddressInUse, Malformed, NoRoute
from looming.net.icmp import IcmpError, IcmpLayer
from looming.net.ipv4 import Ipv4Layer
from looming.net.wire import udp as wire
from looming.net.wire.checksum import internet_checksum
from looming.net.wire.udp import UdpHeader

if TYPE_CHECKING:  # IPv6 (off by default) is imported only by a stack that has it
    from looming.net.ipv6 import Ipv6Layer

EPHEMERAL_PORTS = (49152, 65535)


Address = IPv4Address | IPv6Address
_texts: Memo[Address, str] = Memo(4096)
_texts_get = _texts.get
_texts_put = _texts.put


def _text(address: Address) -> str:
    """``str(address)``, memoised (bounded) as it is asked for every datagram."""
    text = _texts_get(address)
    if text is None:
        text = _texts_put(address, str(address))
    return text


def _checksum_right(
    packet: ReceivedPacket[IPv4Address] | ReceivedPacket[IPv6Address],
    datagram: bytes,
    data_length: int,
) -> bool:
    """Whether the UDP checksum of ``datagram`` (its header and
    ``data_length`` bytes of data) is right or absent. Absent is allowed
    over IPv4 only (RFC 768; RFC 8200 8.1 forbids it over IPv6)."""
    if datagram[6] == 0 and datagram[7] == 0:
        return isinstance(packet.source, IPv4Address)
    length = wire.HEADER_LENGTH + data_length
    view = memoryview(datagram)[:length]
    return internet_checksum(view, packet.pseudo_header_sum(length)) == 0


class UdpBinding:
    """:class:`looming.devices.stack.Listener` for one bound UDP port."""

    def __init__(
        self,
        layer: UdpLayer,
        port: int,
        host: Address | None,
        on_error: Callable[[IcmpError], None] | None = None,
    ) -> None:
        self._layer = layer
        self._port = port
        self.host = host
        self.on_error = on_error
        # ICMP errors about datagrams sent from this port (RFC 1122 4.1.3.3:
        # they reach the application), the latest last.
        self.errors: deque[IcmpError] = deque(maxlen=16)

    @property
    def port(self) -> int:
        return self._port

    async def send(self, destination: str | Address, port: int, data: bytes) -> None:
        """Send from this binding's port."""
        await self._layer.send(destination, port, data, source_port=self._port)

    async def close(self) -> None:
        self._layer._unbind(self._port)


class UdpLayer:
    """:class:`looming.devices.stack.Udp`."""

    def __init__(
        self,
        ipv4: Ipv4Layer,
        random: Random,
        *,
        icmp: IcmpLayer | None = None,
        ipv6: Ipv6Layer | None = None,
    ) -> None:
        """UDP over ``ipv4``, and over ``ipv6`` too when given."""
        self._ipv4 = ipv4
        self._ipv6 = ipv6
        self._random = random
        self._icmp = icmp
        self._bindings: dict[int, tuple[UdpHandler, Address | None]] = {}
        self._binding_objects: dict[int, UdpBinding] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.counters: Counter[str] = Counter()
        self.max_handler_tasks = 1024
        # Datagrams to bound ports pass the link's frame policy unpoliced;
        # to any other, they are policed as strays (FramePolicy).
        self._open_ports = ipv4.ethernet.policy.udp_ports
        ipv4.register(IpProtocol.UDP, self.input)
        if ipv6 is not None:
            ipv6.register(IpProtocol.UDP, self.input)

    def _free_port(self) -> int:
        low, high = EPHEMERAL_PORTS
        for _ in range(64):
            port = self._random.randint(low, high)
            if port not in self._bindings:
                return port
        for port in range(low, high + 1):
            if port not in self._bindings:
                return port
        raise AddressInUse("every ephemeral UDP port is bound")

    async def bind(
        self,
        port: int,
        handler: UdpHandler,
        *,
        host: str | None = None,
        on_error: Callable[[IcmpError], None] | None = None,
    ) -> UdpBinding:
        """Receive on ``port``; ``on_error`` (if given) is called with every
        ICMP error about a datagram sent from it (also kept in
        :attr:`UdpBinding.errors`)."""
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"UDP port {port} is outside 0..65535")
        if port == 0:
            port = self._free_port()
        if port in self._bindings:
            raise AddressInUse(f"UDP port {port} is already bound")
        address = ip_address(host) if host not in (None, "", "0.0.0.0", "::") else None
        self._bindings[port] = (handler, address)
        self._open_ports.add(port.to_bytes(2, "big"))
        binding = UdpBinding(self, port, address, on_error)
        self._binding_objects[port] = binding
        return binding

    def _unbind(self, port: int) -> None:
        self._bindings.pop(port, None)
        self._open_ports.discard(port.to_bytes(2, "big"))
        self._binding_objects.pop(port, None)

    def on_icmp_error(self, error: IcmpError) -> None:
        """Hand an ICMP error to the binding whose datagram it quotes (the
        source port and address must match one; RFC 5927 4.1)."""
        port = int.from_bytes(error.original_payload[0:2], "big")
        binding = self._binding_objects.get(port)
        if binding is None or (binding.host is not None and binding.host != error.original.source):
            self.counters["icmp_no_binding"] += 1
            return
        self.counters["icmp_delivered"] += 1
        remote = error.original.destination
        if error.fragmentation_needed and isinstance(remote, IPv6Address) and self._ipv6:
            # A Packet Too Big quoting a port we send from (RFC 8201 5.2).
            self._ipv6.lower_path_mtu(remote, error.next_hop_mtu)
        binding.errors.append(error)
        if binding.on_error is not None:
            try:
                binding.on_error(error)
            except Exception:
                self.counters["handler_error"] += 1

    async def send(
        self,
        destination: str | Address,
        port: int,
        data: bytes,
        *,
        source_port: int | None = None,
    ) -> None:
        destination = ip_address(destination)
        if source_port is None:
            source_port = self._free_port()
        if isinstance(destination, IPv6Address):
            await self._send_ipv6(destination, UdpHeader(source_port, port), data)
            return
        source = self._ipv4.source_for(destination)
        datagram = wire.emit(UdpHeader(source_port, port), data, source, destination)
        self.counters["tx_datagrams"] += 1
        await self._ipv4.write(destination, IpProtocol.UDP, datagram)

    async def _send_ipv6(self, destination: IPv6Address, header: UdpHeader, data: bytes) -> None:
        if self._ipv6 is None:
            raise NoRoute(f"cannot send to {destination}: this stack has no IPv6 layer")
        source = self._ipv6.source_for(destination)
        length = wire.HEADER_LENGTH + len(data)
        # The same record IPv6 hands up gives the pseudo-header sum.
        pseudo = ReceivedPacket(source, destination, IpProtocol.UDP, 0, 0, False, b"")
        initial = pseudo.pseudo_header_sum(length) + header.source_port + header.destination_port
        checksum = internet_checksum(data, initial + length) or 0xFFFF  # RFC 8200 8.1
        datagram = struct.pack(
            "!HHHH", header.source_port, header.destination_port, length, checksum
        )
        self.counters["tx_datagrams"] += 1
        await self._ipv6.write(destination, IpProtocol.UDP, datagram + bytes(data), source=source)

    def input(
        self, packet: ReceivedPacket[IPv4Address] | ReceivedPacket[IPv6Address], payload: bytes
    ) -> None:
        try:
            header, data = wire.parse(payload)
        except Malformed:
            self.counters["malformed"] += 1
            return
        if not packet.checksum_verified and not _checksum_right(packet, payload, len(data)):
            self.counters["malformed"] += 1
            return
        source = packet.source
        destination = packet.destination
        binding = self._bindings.get(header.destination_port)
        if binding is None or (binding[1] is not None and binding[1] != destination):
            self.counters["no_listener"] += 1
            if isinstance(packet.source, IPv4Address):
                if self._icmp is not None:
                    self._icmp.port_unreachable(packet, payload)
            elif self._ipv6 is not None:
                from looming.net.wire.icmpv6 import UnreachableCode

                self._ipv6.destination_unreachable(packet, payload, UnreachableCode.PORT)
            return
        self.counters["rx_datagrams"] += 1
        handler = binding[0]
        datagram = Datagram(
            source=_text(source),
            source_port=header.source_port,
            destination=_text(destination),
            destination_port=header.destination_port,
            data=bytes(data),
        )
        try:
            result = handler(datagram)
        except Exception:
            self.counters["handler_error"] += 1
            return
        if inspect.isawaitable(result):
            if len(self._tasks) >= self.max_handler_tasks:
                # Handlers slower than the arrival rate: shed load like a
                # full socket buffer would, instead of growing memory.
                self.counters["handler_backlog_full"] += 1
                if inspect.iscoroutine(result):
                    result.close()
                return
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters["handler_error"] += 1

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._bindings.clear()
