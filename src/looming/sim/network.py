"""A simulated Ethernet: switches, links with latency and faults, partitions.

Nodes attach to switches by links; switches may be joined by links too (no
loops: there is no spanning tree). A link has two directions, each with its
own seeded random stream, a transmit queue (bandwidth), a latency
distribution plus jitter, an MTU, and fault rates (loss, duplication,
reordering, corruption). Frames keep their order on a link unless the
reordering fault moves one. Partitions are enforced where a switch hands a
frame to the link of a node. Every frame that arrives is written to the
link's pcap; every drop and fault is written to the trace.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from looming.devices.net import Capabilities, FrameHandler, MacAddress, NetworkStats
from looming.errors import DeviceError
from looming.net.netif.pcap import PcapWriter
from looming.sim.devices import EPOCH_NS, SimRandom, derive_seed
from looming.sim.loop import VirtualEventLoop
from looming.sim.trace import Trace, frame_id

ETHERNET_HEADER = 14


# -- latency distributions ---------------------------------------------------


@dataclass(frozen=True)
class Fixed:
    """Every frame takes ``seconds``."""

    seconds: float

    def sample(self, random: SimRandom) -> float:
        return self.seconds

    def check(self) -> str | None:
        return None if self.seconds >= 0 else f"latency {self.seconds} s is negative"


@dataclass(frozen=True)
class Uniform:
    """Uniformly between ``low`` and ``high`` seconds."""

    low: float
    high: float

    def sample(self, random: SimRandom) -> float:
        return random.uniform(self.low, self.high)

    def check(self) -> str | None:
        if self.low < 0 or self.high < self.low:
            return f"uniform latency needs 0 <= low <= high, not {self.low}..{self.high}"
        return None


@dataclass(frozen=True)
class Exponential:
    """``minimum`` plus an exponential delay with mean ``mean`` seconds."""

    mean: float
    minimum: float = 0.0

    def sample(self, random: SimRandom) -> float:
        return self.minimum + random.expovariate(1.0 / self.mean)

    def check(self) -> str | None:
        if self.mean <= 0 or self.minimum < 0:
            return f"exponential latency needs mean > 0 and minimum >= 0, not {self}"
        return None


Latency = Fixed | Uniform | Exponential


@dataclass(frozen=True)
class LinkSpec:
    """The properties of a link, the same in both directions."""

    latency: Latency = Fixed(0.0005)
    jitter: float = 0.0
    bandwidth_bps: float | None = None
    mtu: int = 1500
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.002
    corrupt: float = 0.0

    def problems(self) -> list[str]:
        """What is out of range, as messages (empty when the spec is valid)."""
        found = []
        latency_problem = self.latency.check()
        if latency_problem:
            found.append(latency_problem)
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                found.append(f"{name} must be a probability between 0 and 1, not {value}")
        if self.jitter < 0 or self.reorder_delay < 0:
            found.append("jitter and reorder_delay must be >= 0")
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            found.append(f"bandwidth_bps must be > 0, not {self.bandwidth_bps}")
        if not 68 <= self.mtu <= 65535:
            found.append(f"mtu must be between 68 and 65535, not {self.mtu}")
        return found


# -- frames and link ends -----------------------------------------------------


@dataclass(slots=True)
class SimFrame:
    """A frame on the simulated wire, remembering which node sent it."""

    data: bytes
    origin: str


@dataclass(slots=True)
class InFlight:
    """A frame a link has accepted and not yet delivered."""

    frame: SimFrame
    source: str
    destination: str
    sent_at: float
    arrives_at: float | None
    handle: asyncio.TimerHandle | None = None

    def summary(self) -> str:
        return (
            f"{self.source}->{self.destination} {len(self.frame.data)} bytes "
            f"from {self.frame.origin} id {frame_id(self.frame.data)}"
        )


class LinkEnd(Protocol):
    """One end of a link: a switch port or a node's attachment."""

    name: str
    node: str | None

    def receive(self, frame: SimFrame) -> None: ...


class _Direction:
    def __init__(self, link: Link, source: LinkEnd, destination: LinkEnd, seed: int) -> None:
        self.link = link
        self.source = source
        self.destination = destination
        self.random = SimRandom(seed)
        self.busy_until = 0.0
        self.last_arrival = 0.0
        self.held: list[InFlight] = []
        self.holding = False
        self.in_flight: dict[int, InFlight] = {}
        self._order = 0

    def transmit(self, frame: SimFrame) -> None:
        link = self.link
        spec = link.spec
        net = link.network
        now = net.loop.time()
        label = f"{link.name} {self.source.name}->{self.destination.name}"
        data = frame.data
        if len(data) > spec.mtu + ETHERNET_HEADER:
            net.trace.record("drop", f"{label} mtu {len(data)} {frame_id(data)}")
            link.dropped += 1
            return
        if self.holding:
            self.held.append(InFlight(frame, self.source.name, self.destination.name, now, None))
            net.trace.record("hold", f"{label} {len(data)} {frame_id(data)}")
            return
        rng = self.random
        if spec.loss and rng.random() < spec.loss:
            net.trace.record("drop", f"{label} loss {len(data)} {frame_id(data)}")
            link.dropped += 1
            return
        if spec.corrupt and data and rng.random() < spec.corrupt:
            damaged = bytearray(data)
            position = rng.randint(0, len(data) - 1)
            damaged[position] ^= 1 << rng.randint(0, 7)
            net.trace.record("corrupt", f"{label} byte {position} {frame_id(data)}")
            frame = SimFrame(bytes(damaged), frame.origin)
        copies = 1
        if spec.duplicate and rng.random() < spec.duplicate:
            copies = 2
            net.trace.record("duplicate", f"{label} {frame_id(frame.data)}")
        for _ in range(copies):
            self._schedule(frame, now, label)

    def _schedule(self, frame: SimFrame, now: float, label: str) -> None:
        spec = self.link.spec
        rng = self.random
        start = max(now, self.busy_until)
        if spec.bandwidth_bps is not None:
            start += len(frame.data) * 8 / spec.bandwidth_bps
        self.busy_until = start
        arrival = start + spec.latency.sample(rng)
        if spec.jitter:
            arrival += spec.jitter * rng.random()
        if spec.reorder and rng.random() < spec.reorder:
            arrival += spec.reorder_delay
            self.link.network.trace.record("reorder", f"{label} {frame_id(frame.data)}")
        else:
            # First in, first out: strictly after the previous frame, since
            # timers due at the very same instant run in a seed-drawn order.
            if arrival <= self.last_arrival:
                arrival = math.nextafter(self.last_arrival, math.inf)
            self.last_arrival = arrival
        entry = InFlight(frame, self.source.name, self.destination.name, now, arrival)
        order = self._order
        self._order += 1
        self.in_flight[order] = entry
        entry.handle = self.link.network.loop.call_at(
            arrival, self._arrive, order, context=contextvars.Context()
        )

    def _arrive(self, order: int) -> None:
        entry = self.in_flight.pop(order, None)
        if entry is None:
            return
        link = self.link
        data = entry.frame.data
        link.delivered += 1
        if link.pcap is not None:
            link.pcap.record(data)
        link.network.trace.record(
            "deliver",
            f"{link.name} {self.source.name}->{self.destination.name} {len(data)} {frame_id(data)}",
        )
        self.destination.receive(entry.frame)

    def release(self, *, drop: bool) -> int:
        held, self.held = self.held, []
        self.holding = False
        now = self.link.network.loop.time()
        label = f"{self.link.name} {self.source.name}->{self.destination.name}"
        for entry in held:
            if drop:
                self.link.network.trace.record("drop", f"{label} released-dropped")
            else:
                self._schedule(entry.frame, now, label)
        return len(held)


class _VirtualClock:
    """Wall-clock time of the simulation, for pcap timestamps."""

    def __init__(self, loop: VirtualEventLoop) -> None:
        self._loop = loop

    def now_ns(self) -> int:
        return EPOCH_NS + self._loop.now_ns()

    def now(self) -> float:
        return self.now_ns() / 1e9

    def utc_offset_s(self) -> int:
        return 0


class Link:
    """A full-duplex cable between two ends."""

    def __init__(
        self, network: SimNetwork, name: str, a: LinkEnd, b: LinkEnd, spec: LinkSpec
    ) -> None:
        self.network = network
        self.name = name
        self.a = a
        self.b = b
        self.spec = spec
        self.delivered = 0
        self.dropped = 0
        self._forward = _Direction(self, a, b, derive_seed(network.seed, "link", name, "ab"))
        self._backward = _Direction(self, b, a, derive_seed(network.seed, "link", name, "ba"))
        self.pcap_buffer: io.BytesIO | None = None
        self.pcap: PcapWriter | None = None
        if network.record_pcap:
            self.pcap_buffer = io.BytesIO()
            self.pcap = PcapWriter(self.pcap_buffer, _VirtualClock(network.loop))

    def _direction(self, sender: LinkEnd) -> _Direction:
        return self._forward if sender is self.a else self._backward

    def transmit(self, sender: LinkEnd, frame: SimFrame) -> None:
        self._direction(sender).transmit(frame)

    def hold(self) -> None:
        """Keep every frame entering the link (both ways) until :meth:`release`."""
        self._forward.holding = self._backward.holding = True
        self.network.trace.record("fault", f"hold {self.name}")

    def release(self, *, drop: bool = False) -> int:
        """Send the held frames on (or drop them); returns how many there were."""
        count = self._forward.release(drop=drop) + self._backward.release(drop=drop)
        self.network.trace.record("fault", f"release {self.name} {count} frames")
        return count

    def in_flight(self) -> list[InFlight]:
        """Frames on the wire or held, oldest first."""
        entries = [
            *self._forward.held,
            *self._backward.held,
            *self._forward.in_flight.values(),
            *self._backward.in_flight.values(),
        ]
        return sorted(entries, key=lambda e: e.sent_at)

    def pcap_bytes(self) -> bytes:
        return self.pcap_buffer.getvalue() if self.pcap_buffer is not None else b""


# -- switches ---------------------------------------------------------------


class SwitchPort:
    def __init__(self, switch: Switch, name: str) -> None:
        self.switch = switch
        self.name = name
        self.node: str | None = None
        self.link: Link | None = None
        self.far: LinkEnd | None = None

    def receive(self, frame: SimFrame) -> None:
        self.switch.forward(self, frame)

    def send(self, frame: SimFrame) -> None:
        if self.link is not None:
            self.link.transmit(self, frame)


class Switch:
    """A learning Ethernet switch."""

    def __init__(self, network: SimNetwork, name: str) -> None:
        self.network = network
        self.name = name
        self.ports: list[SwitchPort] = []
        self.table: dict[bytes, SwitchPort] = {}

    def new_port(self) -> SwitchPort:
        port = SwitchPort(self, self.name)
        self.ports.append(port)
        return port

    def forward(self, ingress: SwitchPort, frame: SimFrame) -> None:
        data = frame.data
        if len(data) < ETHERNET_HEADER:
            return
        source = data[6:12]
        if not source[0] & 1:
            self.table[source] = ingress
        known = self.table.get(data[0:6])
        targets = [known] if known is not None else self.ports
        blocked = self.network.blocked
        for port in targets:
            if port is ingress:
                continue
            far = port.far
            if blocked and far is not None and (frame.origin, far.node) in blocked:
                self.network.trace.record(
                    "drop", f"partition {frame.origin}->{far.node} {frame_id(data)}"
                )
                continue
            port.send(frame)


# -- node attachments and the NIC a node's stack sees ------------------------


class Attachment:
    """Where a node's cable plugs in; outlives the node's crashes."""

    def __init__(self, network: SimNetwork, node: str, mac: MacAddress) -> None:
        self.network = network
        self.name = node
        self.node: str | None = node
        self.mac = mac
        self.link: Link | None = None
        self.nic: SimNic | None = None
        self.context: Callable[[], contextvars.Context] | None = None

    def receive(self, frame: SimFrame) -> None:
        nic = self.nic
        if nic is None or self.context is None:
            self.network.trace.record("drop", f"node-down {self.name} {frame_id(frame.data)}")
            return
        # The node's own code runs in its own context, so a paused node's
        # frames wait and a crashed node's frames vanish.
        self.network.loop.call_soon(nic.receive, frame.data, context=self.context())


_BACKLOG = 256


class SimNic:
    """:class:`looming.devices.Network` for one run of a node's code."""

    def __init__(self, attachment: Attachment, mtu: int) -> None:
        self._attachment = attachment
        self._mtu = mtu
        self._stats = NetworkStats()
        self._handler: FrameHandler | None = None
        self._backlog: list[bytes] = []
        self._closed = asyncio.Event()

    @property
    def mac(self) -> MacAddress:
        return self._attachment.mac

    @property
    def mtu(self) -> int:
        return self._mtu

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(mtu=self._mtu)

    def stats(self) -> NetworkStats:
        s = self._stats
        return NetworkStats(
            s.rx_bytes,
            s.rx_packets,
            s.tx_bytes,
            s.tx_packets,
            s.rx_dropped,
            s.tx_dropped,
            s.rx_malformed,
        )

    async def write(self, frame: bytes) -> None:
        attachment = self._attachment
        if self._closed.is_set():
            raise DeviceError("this simulated interface is disconnected")
        if attachment.nic is not self or attachment.link is None:
            self._stats.tx_dropped += 1
            return
        self._stats.tx_packets += 1
        self._stats.tx_bytes += len(frame)
        attachment.link.transmit(attachment, SimFrame(bytes(frame), attachment.name))

    def receive(self, data: bytes) -> None:
        if self._closed.is_set():
            self._stats.rx_dropped += 1
            return
        handler = self._handler
        if handler is None:
            if len(self._backlog) < _BACKLOG:
                self._backlog.append(data)
            else:
                self._stats.rx_dropped += 1
            return
        self._stats.rx_packets += 1
        self._stats.rx_bytes += len(data)
        handler(data)

    async def listen(self, handler: FrameHandler) -> None:
        self._handler = handler
        backlog, self._backlog = self._backlog, []
        for data in backlog:
            self.receive(data)
        try:
            await self._closed.wait()
        finally:
            self._handler = None

    async def disconnect(self) -> None:
        self._closed.set()


# -- the whole network ---------------------------------------------------------


@dataclass
class SimNetwork:
    """Every switch, link and partition of one run."""

    loop: VirtualEventLoop
    trace: Trace
    seed: int
    record_pcap: bool = True
    switches: dict[str, Switch] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    attachments: dict[str, Attachment] = field(default_factory=dict)
    blocked: set[tuple[str, str]] = field(default_factory=set)

    def switch(self, name: str) -> Switch:
        if name not in self.switches:
            self.switches[name] = Switch(self, name)
        return self.switches[name]

    def attach(self, node: str, mac: MacAddress, switch: str, spec: LinkSpec) -> Attachment:
        attachment = Attachment(self, node, mac)
        port = self.switch(switch).new_port()
        name = f"{node}-{switch}"
        link = Link(self, name, attachment, port, spec)
        attachment.link = port.link = link
        port.far = attachment
        self.attachments[node] = attachment
        self.links[name] = link
        return attachment

    def trunk(self, a: str, b: str, spec: LinkSpec) -> Link:
        port_a = self.switch(a).new_port()
        port_b = self.switch(b).new_port()
        name = f"{a}-{b}"
        link = Link(self, name, port_a, port_b, spec)
        port_a.link = port_b.link = link
        port_a.far, port_b.far = port_b, port_a
        self.links[name] = link
        return link

    def link_of(self, node: str) -> Link:
        link = self.attachments[node].link
        assert link is not None
        return link

    # -- partitions -------------------------------------------------------

    def partition(self, side_a: Iterable[str], side_b: Iterable[str], *, one_way: bool) -> None:
        a, b = sorted(set(side_a)), sorted(set(side_b))
        for x in a:
            for y in b:
                if x != y:
                    self.blocked.add((x, y))
                    if not one_way:
                        self.blocked.add((y, x))
        arrow = "->" if one_way else "<->"
        self.trace.record("fault", f"partition {','.join(a)} {arrow} {','.join(b)}")

    def isolate(self, node: str) -> None:
        others = [n for n in self.attachments if n != node]
        self.partition([node], others, one_way=False)

    def heal(self) -> None:
        self.blocked.clear()
        self.trace.record("fault", "heal")
