"""A DHCPv6 client for stateful addresses (RFC 8415): a sans-I/O state
machine and its asyncio shell.

The client solicits, takes the first Advertise that offers an address,
requests it, and holds it for its lifetimes: renewing at T1 with the
server that gave it, rebinding with any server at T2, and giving it up
when its valid lifetime ends (then soliciting again).  An address that
duplicate address detection finds in use is declined (RFC 8415 18.2.8).  Retransmissions
follow RFC 8415 section 15 (doubling with a random factor of +-10%, within
each message's maximum).  The address is handed to the IPv6 layer, which
runs duplicate address detection before using it.  The shell starts when
a Router Advertisement sets the M flag (or when asked at once).
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from looming.devices.random import Random
from looming.devices.stack import Datagram
from looming.devices.time import Time
from looming.errors import Malformed
from looming.net.udp import UdpBinding, UdpLayer
from looming.net.wire import dhcp6 as wire
from looming.net.wire.dhcp6 import Dhcp6Message, Dhcp6Type, IaAddress, IaNa, OptionCode

SECOND_NS = 1_000_000_000
INFINITY = 0xFFFFFFFF
NO_ADDRS_AVAIL = 2


@dataclass(frozen=True, slots=True)
class Timing:
    """RFC 8415 7.6: initial and maximum retransmission time (s), maximum
    count (0: none) of one kind of message."""

    initial_s: float
    maximum_s: float
    count: int = 0


SOLICIT = Timing(1, 3600)
REQUEST = Timing(1, 30, 10)
RENEW = Timing(10, 600)
REBIND = Timing(10, 600)
DECLINE = Timing(1, 3600, 4)


class Dhcp6State(enum.Enum):
    IDLE = "idle"
    SOLICITING = "soliciting"
    REQUESTING = "requesting"
    BOUND = "bound"
    RENEWING = "renewing"
    REBINDING = "rebinding"
    DECLINING = "declining"


@dataclass(frozen=True, slots=True)
class Dhcp6Lease:
    """An address and its lifetimes (s) from ``server_id``; T1 and T2 are
    when to renew and rebind (s after ``obtained_ns``)."""

    address: IPv6Address
    preferred_lifetime: int
    valid_lifetime: int
    t1: int
    t2: int
    server_id: bytes
    dns_servers: tuple[IPv6Address, ...]
    obtained_ns: int


@dataclass
class Dhcp6Events:
    bound: list[Dhcp6Lease] = field(default_factory=list)
    lost: list[IPv6Address] = field(default_factory=list)


class Dhcp6Client:
    """The state machine: messages and the time in, messages to send out."""

    def __init__(self, mac: bytes, random: Random) -> None:
        self.duid = wire.duid_ll(mac)
        self.iaid = int.from_bytes(bytes(mac)[2:6], "big")
        self._random = random
        self.state = Dhcp6State.IDLE
        self.lease: Dhcp6Lease | None = None
        self.events = Dhcp6Events()
        self.counters: Counter[str] = Counter()
        self._message: Dhcp6Message | None = None  # what is being (re)sent
        self._timing = SOLICIT
        self._exchange_started_ns = 0
        self._retransmit_ns = 0
        self._sent = 0
        self._next_ns: int | None = None
        self._give_up_ns: int | None = None  # when retransmitting this message ends

    # -- starting and the clock -------------------------------------------------

    def start(self, now: int) -> None:
        """Solicit after a random delay of up to a second (RFC 8415 18.2.1)."""
        if self.state is not Dhcp6State.IDLE:
            return
        self._begin(Dhcp6State.SOLICITING, self._solicit(), SOLICIT, now)
        self._next_ns = now + self._random.randint(0, SECOND_NS)

    def next_deadline_ns(self) -> int | None:
        return self._next_ns

    def on_timer(self, now: int) -> list[Dhcp6Message]:
        if self._next_ns is None or now < self._next_ns:
            return []
        if self.state is Dhcp6State.BOUND:
            return self.renew(now)  # T1
        if self._give_up_ns is not None and now >= self._give_up_ns:
            return self._exchange_failed(now)
        if self._timing.count and self._sent >= self._timing.count:
            return self._exchange_failed(now)
        return [self._transmit(now)]

    def renew(self, now: int) -> list[Dhcp6Message]:
        """Renew now, as at T1 (with the server that gave the lease)."""
        lease = self.lease
        if lease is None:
            return []
        end = lease.obtained_ns + lease.t2 * SECOND_NS
        message = self._extend(Dhcp6Type.RENEW, lease, lease.server_id)
        self._begin(Dhcp6State.RENEWING, message, RENEW, now, give_up_ns=end)
        return [self._transmit(now)]

    def rebind(self, now: int) -> list[Dhcp6Message]:
        """Rebind now, as at T2 (with any server)."""
        lease = self.lease
        if lease is None:
            return []
        end = self._expiry_ns(lease)
        message = self._extend(Dhcp6Type.REBIND, lease, None)
        self._begin(Dhcp6State.REBINDING, message, REBIND, now, give_up_ns=end)
        return [self._transmit(now)]

    def decline(self, address: IPv6Address, now: int) -> list[Dhcp6Message]:
        """Duplicate address detection found ``address`` in use: tell the
        server (RFC 8415 18.2.8) and, answered or not, solicit again."""
        lease = self.lease
        if lease is None or lease.address != address:
            return []
        self.lease = None
        self.counters["declined"] += 1
        ia = IaNa(self.iaid, addresses=(IaAddress(address, 0, 0),))
        message = Dhcp6Message(
            Dhcp6Type.DECLINE, self._transaction_id(), server_id=lease.server_id, ia_na=(ia,)
        )
        self._begin(Dhcp6State.DECLINING, message, DECLINE, now)
        return [self._transmit(now)]

    def _exchange_failed(self, now: int) -> list[Dhcp6Message]:
        """Requests unanswered, or the lease ran out while renewing or
        rebinding: lose the address (if any) and solicit again."""
        self.counters[f"{self.state.value}_failed"] += 1
        if self.state is Dhcp6State.RENEWING and self.lease is not None:
            return self.rebind(now)
        self._lose()
        self._begin(Dhcp6State.SOLICITING, self._solicit(), SOLICIT, now)
        return [self._transmit(now)]

    def _lose(self) -> None:
        if self.lease is not None:
            self.events.lost.append(self.lease.address)
            self.lease = None

    # -- sending ----------------------------------------------------------------

    def _begin(
        self,
        state: Dhcp6State,
        message: Dhcp6Message,
        timing: Timing,
        now: int,
        give_up_ns: int | None = None,
    ) -> None:
        self.state = state
        self._message = message
        self._timing = timing
        self._exchange_started_ns = now
        self._sent = 0
        self._retransmit_ns = 0
        self._give_up_ns = give_up_ns
        self._next_ns = now

    def _transmit(self, now: int) -> Dhcp6Message:
        """The current message (elapsed time updated) and the next
        retransmission time (RFC 8415 15)."""
        assert self._message is not None
        timing = self._timing
        previous = self._retransmit_ns or int(timing.initial_s * SECOND_NS)
        if self._sent == 0:
            self._exchange_started_ns = now  # elapsed time counts from the first send
        base = previous if self._sent == 0 else 2 * previous
        jitter = (self._random.random() * 0.2 - 0.1) * base
        self._retransmit_ns = int(min(base + jitter, timing.maximum_s * SECOND_NS * 1.1))
        self._sent += 1
        self._next_ns = now + self._retransmit_ns
        if self._give_up_ns is not None:
            self._next_ns = min(self._next_ns, self._give_up_ns)
        elapsed = min((now - self._exchange_started_ns) // 10_000_000, 0xFFFF)
        self.counters[f"tx_{Dhcp6Type(self._message.type).name.lower()}"] += 1
        return Dhcp6Message(
            self._message.type,
            self._message.transaction_id,
            self.duid,
            self._message.server_id,
            self._message.ia_na,
            (OptionCode.DNS_SERVERS,),
            elapsed_time=elapsed,
        )

    def _transaction_id(self) -> int:
        return self._random.randint(0, 0xFFFFFF)

    def _solicit(self) -> Dhcp6Message:
        return Dhcp6Message(Dhcp6Type.SOLICIT, self._transaction_id(), ia_na=(IaNa(self.iaid),))

    def _extend(self, kind: Dhcp6Type, lease: Dhcp6Lease, server_id: bytes | None) -> Dhcp6Message:
        ia = IaNa(self.iaid, addresses=(IaAddress(lease.address, 0, 0),))
        return Dhcp6Message(kind, self._transaction_id(), server_id=server_id, ia_na=(ia,))

    # -- receiving --------------------------------------------------------------

    def input(self, message: Dhcp6Message, now: int) -> list[Dhcp6Message]:
        """An Advertise or Reply; what to send in answer."""
        sent = self._message
        if sent is None or message.transaction_id != sent.transaction_id:
            self.counters["rx_wrong_transaction"] += 1
            return []
        if message.client_id != self.duid or message.server_id is None:
            self.counters["rx_not_for_us"] += 1  # RFC 8415 16.3 and 16.10
            return []
        if message.type == Dhcp6Type.ADVERTISE and self.state is Dhcp6State.SOLICITING:
            return self._on_advertise(message, now)
        if message.type == Dhcp6Type.REPLY and self.state in _WAITING_FOR_REPLY:
            return self._on_reply(message, now)
        self.counters["rx_unexpected"] += 1
        return []

    def _offered(self, message: Dhcp6Message) -> IaNa | None:
        """Our IA with at least one usable address, if the message has it."""
        if message.status is not None and message.status.code != wire.STATUS_SUCCESS:
            return None
        for ia in message.ia_na:
            if ia.iaid != self.iaid or (ia.status is not None and ia.status.code):
                continue
            if any(
                a.valid_lifetime and a.preferred_lifetime <= a.valid_lifetime for a in ia.addresses
            ):
                return ia
        return None

    def _on_advertise(self, message: Dhcp6Message, now: int) -> list[Dhcp6Message]:
        ia = self._offered(message)
        if ia is None:
            self.counters["rx_advertise_without_address"] += 1
            return []
        self.counters["rx_advertise"] += 1
        wanted = tuple(IaAddress(a.address, 0, 0) for a in ia.addresses if a.valid_lifetime)
        request = Dhcp6Message(
            Dhcp6Type.REQUEST,
            self._transaction_id(),
            server_id=message.server_id,
            ia_na=(IaNa(self.iaid, addresses=wanted),),
        )
        self._begin(Dhcp6State.REQUESTING, request, REQUEST, now)
        return [self._transmit(now)]

    def _on_reply(self, message: Dhcp6Message, now: int) -> list[Dhcp6Message]:
        if self.state is Dhcp6State.DECLINING:
            self.counters["rx_reply"] += 1
            self._begin(Dhcp6State.SOLICITING, self._solicit(), SOLICIT, now)
            return [self._transmit(now)]
        ia = self._offered(message)
        if ia is None:
            self.counters["rx_reply_without_address"] += 1
            if self.state is Dhcp6State.REQUESTING:
                return self._exchange_failed(now)
            self._lose()  # the server took it back (valid lifetime 0, NoBinding)
            self._begin(Dhcp6State.SOLICITING, self._solicit(), SOLICIT, now)
            return [self._transmit(now)]
        self.counters["rx_reply"] += 1
        chosen = next(a for a in ia.addresses if a.valid_lifetime)
        assert message.server_id is not None
        lease = _lease(chosen, ia, message.server_id, message.dns_servers, now)
        if self.lease is not None and self.lease.address != lease.address:
            self.events.lost.append(self.lease.address)
        self.lease = lease
        self.events.bound.append(lease)
        self.state = Dhcp6State.BOUND
        self._message = None
        self._give_up_ns = None
        self._next_ns = None if lease.t1 == INFINITY else now + lease.t1 * SECOND_NS
        return []

    def _expiry_ns(self, lease: Dhcp6Lease) -> int | None:
        if lease.valid_lifetime == INFINITY:
            return None
        return lease.obtained_ns + lease.valid_lifetime * SECOND_NS


_WAITING_FOR_REPLY = frozenset(
    {Dhcp6State.REQUESTING, Dhcp6State.RENEWING, Dhcp6State.REBINDING, Dhcp6State.DECLINING}
)


def _lease(
    chosen: IaAddress,
    ia: IaNa,
    server_id: bytes,
    dns_servers: tuple[IPv6Address, ...],
    now: int,
) -> Dhcp6Lease:
    """T1 and T2 as the server set them, else half and 0.8 of the preferred
    lifetime (RFC 8415 21.4: the client's choice when they are 0)."""
    preferred = chosen.preferred_lifetime
    t1, t2 = ia.t1, ia.t2
    if t1 == 0 or t2 == 0 or t1 > t2:
        t1 = INFINITY if preferred == INFINITY else max(preferred // 2, 1)
        t2 = INFINITY if preferred == INFINITY else max(preferred * 4 // 5, 1)
    return Dhcp6Lease(
        chosen.address, preferred, chosen.valid_lifetime, t1, t2, server_id, dns_servers, now
    )


class Dhcp6Shell:
    """Runs a :class:`Dhcp6Client` on UDP port 546 and hands its leases to
    ``on_lease`` (address, preferred and valid lifetimes in s) and its lost
    addresses to ``on_lost``."""

    def __init__(
        self,
        client: Dhcp6Client,
        udp: UdpLayer,
        time: Time,
        on_lease: Callable[[Dhcp6Lease], None],
        on_lost: Callable[[IPv6Address], None],
    ) -> None:
        self.client = client
        self._udp = udp
        self._time = time
        self._on_lease = on_lease
        self._on_lost = on_lost
        self._timer: asyncio.TimerHandle | None = None
        self._binding: UdpBinding | None = None
        self.counters: Counter[str] = Counter()
        self.leased: set[IPv6Address] = set()  # kept by the owner's on_lease / on_lost

    async def start(self) -> None:
        if self._binding is not None:
            return
        self._binding = await self._udp.bind(wire.CLIENT_PORT, self._on_datagram)
        self.client.start(self._time.now_ns())
        self._arm()

    def _on_datagram(self, datagram: Datagram) -> None:
        if datagram.source_port != wire.SERVER_PORT:
            self.counters["wrong_port"] += 1
            return
        try:
            message = wire.parse(datagram.data)
        except Malformed:
            self.counters["malformed"] += 1
            return
        self._handle(self.client.input(message, self._time.now_ns()))

    def _on_timer(self) -> None:
        self._timer = None
        self._handle(self.client.on_timer(self._time.now_ns()))

    def renew(self) -> None:
        self._handle(self.client.renew(self._time.now_ns()))

    def rebind(self) -> None:
        self._handle(self.client.rebind(self._time.now_ns()))

    def decline(self, address: IPv6Address) -> None:
        self.leased.discard(address)
        self._handle(self.client.decline(address, self._time.now_ns()))

    def _handle(self, messages: list[Dhcp6Message]) -> None:
        events = self.client.events
        lost, bound = events.lost, events.bound
        self.client.events = Dhcp6Events()
        for address in lost:
            self._on_lost(address)
        for lease in bound:
            self._on_lease(lease)
        for message in messages:
            task = asyncio.get_running_loop().create_task(self._send(message))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._arm()

    async def _send(self, message: Dhcp6Message) -> None:
        try:
            await self._udp.send(
                wire.ALL_SERVERS_AND_RELAYS,
                wire.SERVER_PORT,
                wire.emit(message),
                source_port=wire.CLIENT_PORT,
            )
        except Exception:
            self.counters["tx_failed"] += 1

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.client.next_deadline_ns()
        if deadline is not None:
            delay = max(deadline - self._time.now_ns(), 0) / 1e9
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        binding, self._binding = self._binding, None
        if binding is not None:
            await binding.close()
