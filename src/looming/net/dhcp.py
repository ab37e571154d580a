"""A DHCP client (RFC 2131): a sans-I/O state machine and an asyncio shell.

The state machine takes messages and the time in and gives messages to send,
lease events and its next deadline out; :class:`DhcpShell` binds UDP port 68
and drives it.  Timers follow RFC 2131 section 4.4: retransmission with
exponential backoff and jitter, renewing at T1 (unicast to the server),
rebinding at T2 (broadcast), and giving the address up when the lease ends
(logged as a warning).  Every new lease is printed and logged
(:func:`report_lease`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from looming.devices.net import MacAddress
from looming.devices.random import Random
from looming.devices.stack import Datagram
from looming.devices.time import Time
from looming.errors import DeviceError, Malformed
from looming.net._timeouts import wait_until_done
from looming.net.ipv4 import Ipv4Layer
from looming.net.udp import UdpLayer
from looming.net.wire import dhcp as wire
from looming.net.wire.dhcp import (
    CLIENT_PORT,
    FLAG_BROADCAST,
    SERVER_PORT,
    DhcpMessage,
    DhcpMessageType,
    DhcpOp,
    DhcpOption,
)

log = logging.getLogger(__name__)
_SECOND_NS = 1_000_000_000
_BROADCAST = IPv4Address("255.255.255.255")
_ZERO = IPv4Address(0)
_PARAMETERS = bytes(
    (
        DhcpOption.SUBNET_MASK,
        DhcpOption.ROUTER,
        DhcpOption.DNS_SERVERS,
        DhcpOption.DOMAIN_NAME,
        DhcpOption.LEASE_TIME,
        DhcpOption.RENEWAL_TIME,
        DhcpOption.REBINDING_TIME,
    )
)


class DhcpState(enum.Enum):
    INIT = "init"
    SELECTING = "selecting"
    REQUESTING = "requesting"
    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"


@dataclass(frozen=True, slots=True)
class DhcpLease:
    interface: IPv4Interface
    server: IPv4Address
    gateway: IPv4Address | None
    dns_servers: tuple[IPv4Address, ...]
    lease_s: int
    renew_s: int
    rebind_s: int
    bound_ns: int  # when the lease was granted (for its timers)

    @property
    def expires_ns(self) -> int:
        return self.bound_ns + self.lease_s * _SECOND_NS


@dataclass(frozen=True, slots=True)
class DhcpSend:
    """A message to send and where: ``destination`` is the broadcast address
    or the server's (when renewing)."""

    message: DhcpMessage
    destination: IPv4Address


@dataclass(slots=True)
class DhcpEvents:
    bound: list[DhcpLease] = field(default_factory=list)
    lost: int = 0
    lost_leases: list[DhcpLease] = field(default_factory=list)  # the last few


class DhcpClient:
    """The RFC 2131 client state machine for one interface."""

    def __init__(
        self,
        mac: MacAddress,
        random: Random,
        *,
        initial_retransmit_s: float = 2.0,
        max_retransmit_s: float = 64.0,
        hostname: str | None = None,
    ) -> None:
        self.mac = mac
        self._random = random
        self.initial_retransmit_s = initial_retransmit_s
        self.max_retransmit_s = max_retransmit_s
        self.hostname = hostname
        self.state = DhcpState.INIT
        self.lease: DhcpLease | None = None
        self.events = DhcpEvents()
        self.counters: Counter[str] = Counter()
        self._xid = 0
        self._started_ns = 0
        self._offer: DhcpMessage | None = None
        self._deadline_ns: int | None = None
        self._backoff_s = initial_retransmit_s

    # -- inputs --------------------------------------------------------------

    def start(self, now_ns: int) -> list[DhcpSend]:
        """Begin (or restart) acquiring an address."""
        self.state = DhcpState.SELECTING
        self._new_transaction(now_ns)
        return [self._discover(now_ns)]

    def next_deadline_ns(self) -> int | None:
        return self._deadline_ns

    def poll(self, now_ns: int) -> list[DhcpSend]:
        """Act on timers that are due."""
        if self._deadline_ns is None or now_ns < self._deadline_ns:
            return []
        state = self.state
        lease = self.lease
        if state is DhcpState.SELECTING:
            return [self._discover(now_ns)]
        if state is DhcpState.REQUESTING:
            if self._backoff_s > self.max_retransmit_s:
                return self.start(now_ns)  # the server went quiet: start over
            assert self._offer is not None
            return [self._request_offer(now_ns)]
        if lease is None:
            return []
        if now_ns >= lease.expires_ns:
            self.counters["lease_expired"] += 1
            self._lose(lease)
            return self.start(now_ns)
        rebind_at = lease.bound_ns + lease.rebind_s * _SECOND_NS
        if state is DhcpState.BOUND:
            self.state = DhcpState.RENEWING
            self._xid = self._random.randint(1, 0xFFFFFFFF)
        if self.state is DhcpState.RENEWING and now_ns >= rebind_at:
            self.state = DhcpState.REBINDING
            self._xid = self._random.randint(1, 0xFFFFFFFF)
        return [self._extend(lease, now_ns)]

    def renew(self, now_ns: int) -> list[DhcpSend]:
        """Ask the server to extend the lease now, before T1 (RFC 2131 4.4.5
        allows a client to renew early)."""
        return self._extend_now(DhcpState.RENEWING, now_ns)

    def rebind(self, now_ns: int) -> list[DhcpSend]:
        """Ask any server (by broadcast) to extend the lease now."""
        return self._extend_now(DhcpState.REBINDING, now_ns)

    def _extend_now(self, state: DhcpState, now_ns: int) -> list[DhcpSend]:
        if self.lease is None or self.state not in (
            DhcpState.BOUND,
            DhcpState.RENEWING,
            DhcpState.REBINDING,
        ):
            return []
        self.state = state
        self._xid = self._random.randint(1, 0xFFFFFFFF)
        return [self._extend(self.lease, now_ns)]

    def _extend(self, lease: DhcpLease, now_ns: int) -> DhcpSend:
        rebind_at = lease.bound_ns + lease.rebind_s * _SECOND_NS
        # RFC 2131 4.4.5: retransmit after half the time left to T2 (or to
        # the lease's end when rebinding), but no sooner than 60 seconds.
        limit = rebind_at if self.state is DhcpState.RENEWING else lease.expires_ns
        wait_ns = max((limit - now_ns) // 2, 60 * _SECOND_NS)
        self._deadline_ns = min(now_ns + wait_ns, max(limit, now_ns + 1))
        destination = lease.server if self.state is DhcpState.RENEWING else _BROADCAST
        message = self._message(
            DhcpMessageType.REQUEST, now_ns, client_address=lease.interface.ip, broadcast=False
        )
        self.counters["tx_request"] += 1
        return DhcpSend(message, destination)

    def input(self, message: DhcpMessage, now_ns: int) -> list[DhcpSend]:
        if message.op != DhcpOp.BOOTREPLY or message.xid != self._xid:
            self.counters["not_ours"] += 1
            return []
        if message.client_mac != self.mac:
            self.counters["not_ours"] += 1
            return []
        kind = message.message_type
        if kind == DhcpMessageType.OFFER and self.state is DhcpState.SELECTING:
            if message.your_address.is_unspecified or message.server_identifier is None:
                self.counters["bad_offer"] += 1
                return []
            self.counters["rx_offer"] += 1
            self._offer = message
            self.state = DhcpState.REQUESTING
            self._backoff_s = self.initial_retransmit_s
            return [self._request_offer(now_ns)]
        if kind == DhcpMessageType.ACK and self.state in (
            DhcpState.REQUESTING,
            DhcpState.RENEWING,
            DhcpState.REBINDING,
        ):
            lease = self._lease_from(message, now_ns)
            if lease is None:
                self.counters["bad_ack"] += 1
                return []
            self.counters["rx_ack"] += 1
            self.lease = lease
            self.state = DhcpState.BOUND
            self._deadline_ns = now_ns + lease.renew_s * _SECOND_NS
            self.events.bound.append(lease)
            return []
        if kind == DhcpMessageType.NAK and self.state in (
            DhcpState.REQUESTING,
            DhcpState.RENEWING,
            DhcpState.REBINDING,
        ):
            self.counters["rx_nak"] += 1
            if self.lease is not None:
                self._lose(self.lease)
            return self.start(now_ns)
        self.counters["unexpected"] += 1
        return []

    # -- helpers -------------------------------------------------------------

    def _lose(self, lease: DhcpLease) -> None:
        self.lease = None
        self.events.lost += 1
        del self.events.lost_leases[:-7]  # bounded if nobody takes them
        self.events.lost_leases.append(lease)

    def _new_transaction(self, now_ns: int) -> None:
        self._xid = self._random.randint(1, 0xFFFFFFFF)
        self._started_ns = now_ns
        self._offer = None
        self._backoff_s = self.initial_retransmit_s

    def _schedule_retransmit(self, now_ns: int) -> None:
        # RFC 2131 4.1: double the delay each time, randomised by +-1 second
        # (scaled down with the delay so short test timers stay positive).
        jitter = (self._random.random() * 2 - 1) * min(1.0, self._backoff_s / 4)
        self._deadline_ns = now_ns + int((self._backoff_s + jitter) * _SECOND_NS)
        self._backoff_s = min(self._backoff_s * 2, self.max_retransmit_s * 2)

    def _message(
        self,
        kind: DhcpMessageType,
        now_ns: int,
        *,
        extra: tuple[tuple[int, bytes], ...] = (),
        client_address: IPv4Address = _ZERO,
        broadcast: bool = True,
    ) -> DhcpMessage:
        options: list[tuple[int, bytes]] = [
            (DhcpOption.MESSAGE_TYPE, bytes((kind,))),
            (DhcpOption.CLIENT_IDENTIFIER, b"\x01" + self.mac),
            *extra,
            (DhcpOption.PARAMETER_REQUEST_LIST, _PARAMETERS),
            (DhcpOption.MAXIMUM_MESSAGE_SIZE, (1500).to_bytes(2, "big")),
        ]
        if self.hostname:
            options.append((DhcpOption.HOST_NAME, self.hostname.encode()[:63]))
        seconds = min((now_ns - self._started_ns) // _SECOND_NS, 0xFFFF)
        return DhcpMessage(
            op=DhcpOp.BOOTREQUEST,
            xid=self._xid,
            client_mac=self.mac,
            options=tuple(options),
            secs=max(0, seconds),
            flags=FLAG_BROADCAST if broadcast else 0,
            client_address=client_address,
        )

    def _discover(self, now_ns: int) -> DhcpSend:
        self._schedule_retransmit(now_ns)
        self.counters["tx_discover"] += 1
        return DhcpSend(self._message(DhcpMessageType.DISCOVER, now_ns), _BROADCAST)

    def _request_offer(self, now_ns: int) -> DhcpSend:
        offer = self._offer
        assert offer is not None and offer.server_identifier is not None
        self._schedule_retransmit(now_ns)
        extra = (
            (DhcpOption.REQUESTED_ADDRESS, offer.your_address.packed),
            (DhcpOption.SERVER_IDENTIFIER, offer.server_identifier.packed),
        )
        self.counters["tx_request"] += 1
        return DhcpSend(self._message(DhcpMessageType.REQUEST, now_ns, extra=extra), _BROADCAST)

    def _lease_from(self, ack: DhcpMessage, now_ns: int) -> DhcpLease | None:
        address = ack.your_address
        if address.is_unspecified or address.is_multicast or address.is_loopback:
            return None
        if address.is_reserved:  # 240.0.0.0/4, the limited broadcast among them
            return None
        mask = ack.address_option(DhcpOption.SUBNET_MASK)
        try:
            network = IPv4Network(f"{address}/{mask}", strict=False) if mask else None
        except ValueError:
            return None
        prefix = network.prefixlen if network is not None else 24
        interface = IPv4Interface(f"{address}/{prefix}")
        edges = (interface.network.network_address, interface.network.broadcast_address)
        if prefix < 31 and address in edges:
            return None  # the network's own or broadcast address: no host's
        routers = ack.addresses_option(DhcpOption.ROUTER)
        gateway = routers[0] if routers and routers[0] in interface.network else None
        lease_s = ack.seconds_option(DhcpOption.LEASE_TIME) or 3600
        lease_s = max(lease_s, 10)
        renew_s = ack.seconds_option(DhcpOption.RENEWAL_TIME) or lease_s // 2
        rebind_s = ack.seconds_option(DhcpOption.REBINDING_TIME) or lease_s * 7 // 8
        rebind_s = min(rebind_s, lease_s)
        renew_s = min(renew_s, rebind_s)
        server = ack.server_identifier or (
            self.lease.server if self.lease is not None else _BROADCAST
        )
        return DhcpLease(
            interface=interface,
            server=server,
            gateway=gateway,
            dns_servers=tuple(ack.addresses_option(DhcpOption.DNS_SERVERS)),
            lease_s=lease_s,
            renew_s=renew_s,
            rebind_s=rebind_s,
            bound_ns=now_ns,
        )


def report_lease(lease: DhcpLease) -> None:
    """Log a new lease and print it on stderr, for whoever runs the unikernel."""
    report = (
        f"DHCP: address {lease.interface} from {lease.server}, gateway "
        f"{lease.gateway or 'none'}, lease {lease.lease_s} s"
    )
    log.info("%s", report)
    print(f"looming: {report}", file=sys.stderr, flush=True)


# With no lease after this long, say so; and again every WAIT_REMINDER_S.
WAIT_NOTICE_S = 1.0
WAIT_REMINDER_S = 10.0


def report_waiting(link: str, waited: float, timeout: float) -> None:
    """Tell whoever runs the unikernel that no lease has come yet."""
    report = f"DHCP: waiting for a lease on {link} ({waited:.0f} s of {timeout:.0f} s)..."
    log.info("%s", report)
    print(f"looming: {report}", file=sys.stderr, flush=True)


class DhcpShell:
    """Runs a :class:`DhcpClient` over UDP and applies leases to IPv4."""

    def __init__(
        self,
        client: DhcpClient,
        udp: UdpLayer,
        ipv4: Ipv4Layer,
        time: Time,
    ) -> None:
        self.client = client
        self._udp = udp
        self._ipv4 = ipv4
        self._time = time
        self._wake: asyncio.Event = asyncio.Event()
        self._bound: asyncio.Future[DhcpLease] | None = None
        self._task: asyncio.Task[None] | None = None
        self._reported: IPv4Interface | None = None  # the address of the lease held
        # Called with each lease granted after the first (renewals too) and
        # with None when the lease is lost.
        self.lease_listeners: list[Callable[[DhcpLease | None], None]] = []
        self.counters: Counter[str] = Counter()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._bound = loop.create_future()
        self._binding = await self._udp.bind(CLIENT_PORT, self._on_datagram)
        self._task = loop.create_task(self._run())

    async def wait_bound(self, timeout: float, *, link: str = "the link") -> DhcpLease:
        """The first lease; :class:`DeviceError` if none comes within
        ``timeout``. When none has come after ``WAIT_NOTICE_S`` it says that
        it waits (on ``link``), and again every ``WAIT_REMINDER_S``."""
        bound = self._bound
        assert bound is not None, "start() first"
        waited = 0.0
        step = min(WAIT_NOTICE_S, timeout)
        while not await wait_until_done(bound, self._time, step):
            waited += step
            if waited >= timeout:
                raise DeviceError(f"no DHCP lease within {timeout} s (is a DHCP server reachable?)")
            report_waiting(link, waited, timeout)
            step = min(WAIT_REMINDER_S, timeout - waited)
        return bound.result()

    def _on_datagram(self, datagram: Datagram) -> None:
        if datagram.source_port != SERVER_PORT:
            return
        try:
            message = wire.parse(datagram.data)
        except Malformed:
            self.counters["malformed"] += 1
            return
        sends = self.client.input(message, self._time.now_ns())
        self._dispatch(sends)
        self._wake.set()

    def _dispatch(self, sends: list[DhcpSend]) -> None:
        self._apply_events()
        for send in sends:
            task = asyncio.get_running_loop().create_task(self._send(send))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send(self, send: DhcpSend) -> None:
        try:
            await self._udp.send(
                send.destination, SERVER_PORT, wire.emit(send.message), source_port=CLIENT_PORT
            )
        except Exception:
            self.counters["tx_failed"] += 1

    def _apply_events(self) -> None:
        """Apply lost and new leases to IPv4, and report them: a loss as a
        warning, every new lease (another address, or one regained after a
        loss) as the first is reported (the first by whoever awaits
        :meth:`wait_bound`); renewals of the same lease quietly."""
        events = self.client.events
        if events.lost:
            events.lost = 0
            self._ipv4.configure(None)
            for lost in events.lost_leases:
                log.warning(
                    "DHCP: lease of address %s from %s lost (expired or refused); "
                    "no IPv4 address until a new lease comes",
                    lost.interface,
                    lost.server,
                )
            events.lost_leases.clear()
            self._reported = None
            self._tell_listeners(None)
        while events.bound:
            lease = events.bound.pop(0)
            current = self._ipv4.interfaces()
            if current != [lease.interface] or self._ipv4.gateway != lease.gateway:
                self._ipv4.configure(lease.interface, lease.gateway)
            if self._bound is not None and not self._bound.done():
                self._bound.set_result(lease)
            else:
                if lease.interface != self._reported:
                    report_lease(lease)
                self._tell_listeners(lease)
            self._reported = lease.interface

    def _tell_listeners(self, lease: DhcpLease | None) -> None:
        for listener in self.lease_listeners:
            listener(lease)

    async def _run(self) -> None:
        self._dispatch(self.client.start(self._time.now_ns()))
        while True:
            deadline = self.client.next_deadline_ns()
            self._wake.clear()
            if deadline is not None:
                delay_ns = deadline - self._time.now_ns()
                if delay_ns > 0:
                    waiter = asyncio.ensure_future(self._wake.wait())
                    await wait_until_done(waiter, self._time, delay_ns / 1e9)
                    waiter.cancel()
            else:
                await self._wake.wait()
            self._dispatch(self.client.poll(self._time.now_ns()))

    def renew(self) -> None:
        """Renew the lease now (unicast to the server that granted it)."""
        self._dispatch(self.client.renew(self._time.now_ns()))
        self._wake.set()

    def rebind(self) -> None:
        """Extend the lease now by broadcast (any server may answer)."""
        self._dispatch(self.client.rebind(self._time.now_ns()))
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._binding.close()
