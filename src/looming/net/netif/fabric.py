"""One simulated Ethernet: learning switches, links with latency and faults, partitions.

Nodes attach to switches by links; switches may be joined by links too (no
loops: there is no spanning tree). A link has two directions (each a
:class:`Wire`), each with its own random stream, a transmit queue
(bandwidth), a latency distribution plus jitter, an MTU, and fault rates
(loss, duplication, reordering, corruption). Frames keep their order on a
wire unless the reordering fault moves one. Partitions are enforced where a
switch hands a frame to the link of a node.

The fabric is sans-I/O: it reads no clock, draws no randomness and makes no
system call of its own. Its user gives it a :class:`Scheduler` (the time
now, and a call at a later time), a random stream per wire, and optionally
a recorder for every drop, fault and delivery. Two users, two presets:

- ``looming.sim.network.SimNetwork``: the simulator's virtual loop, a stream
  per wire derived from the run's seed, every event in the run's trace and
  every delivered frame in the link's pcap.
- ``looming.net.netif.memory.MemorySwitch``: one switch whose ports plug in
  without a wire of their own, the faults (if any) on the wire out to each
  port, all drawn from one ``Random``; no time passes (:class:`Timeless`),
  so a frame reaches the port at once, which hands it on a turn later.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from looming.devices.clock import Clock
from looming.devices.net import MacAddress
from looming.net.netif.pcap import PcapWriter

ETHERNET_HEADER = 14


class Draws(Protocol):
    """The random stream a wire draws its faults and delays from."""

    def random(self) -> float: ...

    def randint(self, low: int, high: int) -> int: ...


class Undrawn:
    """The stream of a fabric whose wires have no faults and fixed latencies:
    drawing from it is a bug."""

    def random(self) -> float:
        raise AssertionError("a wire without faults or random latency drew a number")

    def randint(self, low: int, high: int) -> int:
        raise AssertionError("a wire without faults or random latency drew a number")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The time, and calls at a given time (the simulator's virtual loop, say)."""

    def time(self) -> float: ...

    def call_at(
        self, when: float, callback: Callable[[int], None], argument: int
    ) -> Cancellable | None: ...


Recorder = Callable[[str, str], None]
"""Receives (kind, text) for each drop, fault and delivery (a run's trace)."""


def frame_id(data: bytes) -> str:
    """A short, stable name for a frame's exact bytes."""
    return hashlib.blake2b(data, digest_size=6).hexdigest()


class Timeless:
    """The scheduler of a fabric where no time passes: every call runs at once.

    Latency, jitter and bandwidth mean nothing here, and reordering is by
    swapping with the next frame (``reorder_delay=None``)."""

    def time(self) -> float:
        return 0.0

    def call_at(self, when: float, callback: Callable[[int], None], argument: int) -> None:
        callback(argument)


# -- latency distributions ---------------------------------------------------
# Drawn from ``random()`` alone, with the standard library's formulas for
# uniform and exponential variates, so any Draws will do.


@dataclass(frozen=True)
class Fixed:
    """Every frame takes ``seconds``."""

    seconds: float

    def sample(self, random: Draws) -> float:
        return self.seconds

    def check(self) -> str | None:
        return None if self.seconds >= 0 else f"latency {self.seconds} s is negative"


@dataclass(frozen=True)
class Uniform:
    """Uniformly between ``low`` and ``high`` seconds."""

    low: float
    high: float

    def sample(self, random: Draws) -> float:
        return self.low + (self.high - self.low) * random.random()

    def check(self) -> str | None:
        if self.low < 0 or self.high < self.low:
            return f"uniform latency needs 0 <= low <= high, not {self.low}..{self.high}"
        return None


@dataclass(frozen=True)
class Exponential:
    """``minimum`` plus an exponential delay with mean ``mean`` seconds."""

    mean: float
    minimum: float = 0.0

    def sample(self, random: Draws) -> float:
        return self.minimum + -math.log(1.0 - random.random()) / (1.0 / self.mean)

    def check(self) -> str | None:
        if self.mean <= 0 or self.minimum < 0:
            return f"exponential latency needs mean > 0 and minimum >= 0, not {self}"
        return None


Latency = Fixed | Uniform | Exponential


@dataclass(frozen=True)
class LinkSpec:
    """The properties of one direction of a link (the same both ways unless
    a link is given two). ``reorder_delay=None`` reorders by holding a frame
    back until the next one has passed it."""

    latency: Latency = Fixed(0.0005)
    jitter: float = 0.0
    bandwidth_bps: float | None = None
    mtu: int = 1500
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float | None = 0.002
    corrupt: float = 0.0

    @property
    def ideal(self) -> bool:
        """No delay and no fault: what goes in comes out, at once and intact."""
        return (
            self.latency == Fixed(0.0)
            and not self.jitter
            and self.bandwidth_bps is None
            and not (self.loss or self.duplicate or self.reorder or self.corrupt)
        )

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
        if self.jitter < 0 or (self.reorder_delay is not None and self.reorder_delay < 0):
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
    handle: Cancellable | None = None

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


class Wire:
    """One direction of a link: queue, latency, faults, hold and release."""

    def __init__(
        self, link: Link, source: LinkEnd, destination: LinkEnd, spec: LinkSpec, random: Draws
    ) -> None:
        self.link = link
        self.source = source
        self.destination = destination
        self.spec = spec
        self.random = random
        self.label = f"{link.name} {source.name}->{destination.name}"
        self.max_frame = spec.mtu + ETHERNET_HEADER
        self.busy_until = 0.0
        self.last_arrival = 0.0
        self.held: list[InFlight] = []
        self.holding = False
        self.in_flight: dict[int, InFlight] = {}
        self.delivered = 0
        self.dropped = 0
        self._order = 0
        self._swapped: SimFrame | None = None
        # A wire that can neither delay nor damage, on a fabric with no time
        # and no observer, hands frames straight on (the in-memory switch).
        fabric = link.fabric
        self.direct = (
            spec.ideal
            and isinstance(fabric.scheduler, Timeless)
            and not fabric.tracing
            and link.pcap is None
        )

    def transmit(self, frame: SimFrame) -> None:
        data = frame.data
        if len(data) > self.max_frame:
            self._drop(f"mtu {len(data)} {self._name(data)}")
            return
        if self.direct and not self.holding:
            self.delivered += 1
            self.destination.receive(frame)
            return
        now = self.link.fabric.scheduler.time()
        if self.holding:
            self.held.append(InFlight(frame, self.source.name, self.destination.name, now, None))
            self._record("hold", f"{self.label} {len(data)} {self._name(data)}")
            return
        copies = self._faults(frame)
        if copies is None:
            return
        frame, count = copies
        for _ in range(count):
            self._schedule(frame, now)

    def _faults(self, frame: SimFrame) -> tuple[SimFrame, int] | None:
        """Loss, corruption and duplication, drawn in that order: the frame to
        send and how many times, or None when it is lost."""
        spec, rng, data = self.spec, self.random, frame.data
        if spec.loss and rng.random() < spec.loss:
            self._drop(f"loss {len(data)} {self._name(data)}")
            return None
        if spec.corrupt and data and rng.random() < spec.corrupt:
            damaged = bytearray(data)
            position = rng.randint(0, len(data) - 1)
            damaged[position] ^= 1 << rng.randint(0, 7)
            self._record("corrupt", f"{self.label} byte {position} {self._name(data)}")
            frame = SimFrame(bytes(damaged), frame.origin)
        copies = 1
        if spec.duplicate and rng.random() < spec.duplicate:
            copies = 2
            self._record("duplicate", f"{self.label} {self._name(frame.data)}")
        return frame, copies

    def _schedule(self, frame: SimFrame, now: float) -> None:
        spec = self.spec
        rng = self.random
        start = max(now, self.busy_until)
        if spec.bandwidth_bps is not None:
            start += len(frame.data) * 8 / spec.bandwidth_bps
        self.busy_until = start
        arrival = start + spec.latency.sample(rng)
        if spec.jitter:
            arrival += spec.jitter * rng.random()
        if spec.reorder and rng.random() < spec.reorder:
            self._record("reorder", f"{self.label} {self._name(frame.data)}")
            if spec.reorder_delay is None:
                if self._swapped is None:
                    self._swapped = frame  # goes out after the next frame
                    return
            else:
                arrival += spec.reorder_delay
                self._launch(frame, now, arrival)
                return
        # First in, first out: strictly after the previous frame, since
        # timers due at the very same instant run in a seed-drawn order.
        if arrival <= self.last_arrival:
            arrival = math.nextafter(self.last_arrival, math.inf)
        self.last_arrival = arrival
        self._launch(frame, now, arrival)
        if self._swapped is not None:
            swapped, self._swapped = self._swapped, None
            self._schedule_after(swapped, now)

    def _schedule_after(self, frame: SimFrame, now: float) -> None:
        """A frame held back by a reordering swap, after the one that passed it."""
        arrival = math.nextafter(self.last_arrival, math.inf)
        self.last_arrival = arrival
        self._launch(frame, now, arrival)

    def _launch(self, frame: SimFrame, now: float, arrival: float) -> None:
        entry = InFlight(frame, self.source.name, self.destination.name, now, arrival)
        order = self._order
        self._order += 1
        self.in_flight[order] = entry
        entry.handle = self.link.fabric.scheduler.call_at(arrival, self._arrive, order)

    def _arrive(self, order: int) -> None:
        entry = self.in_flight.pop(order, None)
        if entry is None:
            return
        data = entry.frame.data
        self.delivered += 1
        pcap = self.link.pcap
        if pcap is not None:
            pcap.record(data)
        self._record("deliver", f"{self.label} {len(data)} {self._name(data)}")
        self.destination.receive(entry.frame)

    def release(self, *, drop: bool) -> int:
        held, self.held = self.held, []
        self.holding = False
        now = self.link.fabric.scheduler.time()
        for entry in held:
            if drop:
                self._record("drop", f"{self.label} released-dropped")
            else:
                self._schedule(entry.frame, now)
        return len(held)

    def _drop(self, why: str) -> None:
        self.dropped += 1
        self._record("drop", f"{self.label} {why}")

    def _record(self, kind: str, text: str) -> None:
        self.link.fabric.record(kind, text)

    def _name(self, data: bytes) -> str:
        return self.link.fabric.frame_name(data) if self.link.fabric.tracing else ""


class Link:
    """A full-duplex cable between two ends: a :class:`Wire` each way."""

    def __init__(
        self,
        fabric: Fabric,
        name: str,
        a: LinkEnd,
        b: LinkEnd,
        spec: LinkSpec,
        *,
        back: LinkSpec | None = None,
    ) -> None:
        self.fabric = fabric
        self.name = name
        self.a = a
        self.b = b
        self.spec = spec
        self.pcap_buffer: io.BytesIO | None = None
        self.pcap: PcapWriter | None = None
        if fabric.pcap_clock is not None:
            self.pcap_buffer = io.BytesIO()
            self.pcap = PcapWriter(self.pcap_buffer, fabric.pcap_clock)
        self.forward = Wire(self, a, b, spec, fabric.random_for(name, "ab"))
        self.backward = Wire(self, b, a, back or spec, fabric.random_for(name, "ba"))

    @property
    def delivered(self) -> int:
        return self.forward.delivered + self.backward.delivered

    @property
    def dropped(self) -> int:
        return self.forward.dropped + self.backward.dropped

    def transmit(self, sender: LinkEnd, frame: SimFrame) -> None:
        (self.forward if sender is self.a else self.backward).transmit(frame)

    def hold(self) -> None:
        """Keep every frame entering the link (both ways) until :meth:`release`."""
        self.forward.holding = self.backward.holding = True
        self.fabric.record("fault", f"hold {self.name}")

    def release(self, *, drop: bool = False) -> int:
        """Send the held frames on (or drop them); returns how many there were."""
        count = self.forward.release(drop=drop) + self.backward.release(drop=drop)
        self.fabric.record("fault", f"release {self.name} {count} frames")
        return count

    def in_flight(self) -> list[InFlight]:
        """Frames on the wire or held, oldest first."""
        entries = [
            *self.forward.held,
            *self.backward.held,
            *self.forward.in_flight.values(),
            *self.backward.in_flight.values(),
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
        self.wire: Wire | None = None
        """The way out of this port: its link's wire towards the far end."""
        self.far: LinkEnd | None = None

    def receive(self, frame: SimFrame) -> None:
        self.switch.forward(self, frame)

    def send(self, frame: SimFrame) -> None:
        if self.wire is not None:
            self.wire.transmit(frame)


class Switch:
    """An Ethernet switch: frames go to the port their destination MAC was
    last seen on (or was given to, see :meth:`Fabric.plug`), and to every
    other port when it is broadcast, multicast or unknown."""

    def __init__(self, fabric: Fabric, name: str, *, learning: bool = True) -> None:
        self.fabric = fabric
        self.name = name
        self.learning = learning
        self.ports: list[SwitchPort] = []
        self.table: dict[bytes, SwitchPort] = {}

    def new_port(self) -> SwitchPort:
        port = SwitchPort(self, self.name)
        self.ports.append(port)
        return port

    def remove_port(self, port: SwitchPort) -> None:
        if port in self.ports:
            self.ports.remove(port)
        for mac in [mac for mac, owner in self.table.items() if owner is port]:
            del self.table[mac]

    def forward(self, ingress: SwitchPort, frame: SimFrame) -> None:
        data = frame.data
        if len(data) < ETHERNET_HEADER:
            return
        if self.learning:
            source = data[6:12]
            if not source[0] & 1:
                self.table[source] = ingress
        known = self.table.get(data[0:6])
        targets = (known,) if known is not None else self.ports
        blocked = self.fabric.blocked
        for port in targets:
            if port is ingress:
                continue
            if blocked:
                far = port.far
                if far is not None and (frame.origin, far.node) in blocked:
                    self.fabric.record(
                        "drop",
                        f"partition {frame.origin}->{far.node} {self.fabric.frame_name(data)}",
                    )
                    continue
            port.send(frame)


# -- the whole fabric -------------------------------------------------------------


@dataclass
class Fabric:
    """Every switch, link and partition of one simulated Ethernet."""

    scheduler: Scheduler
    random_for: Callable[[str, str], Draws]
    """The random stream of a link's wire, by link name and ``"ab"``/``"ba"``."""
    recorder: Recorder | None = None
    frame_name: Callable[[bytes], str] = frame_id
    pcap_clock: Clock | None = None
    """With a clock, every link records the frames it delivers as a pcap."""
    switches: dict[str, Switch] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    uplinks: dict[str, Link] = field(default_factory=dict)
    """Each attached node's link to its switch."""
    blocked: set[tuple[str, str]] = field(default_factory=set)

    @property
    def tracing(self) -> bool:
        return self.recorder is not None

    def record(self, kind: str, text: str) -> None:
        if self.recorder is not None:
            self.recorder(kind, text)

    def switch(self, name: str, *, learning: bool = True) -> Switch:
        if name not in self.switches:
            self.switches[name] = Switch(self, name, learning=learning)
        return self.switches[name]

    def attach(
        self, end: LinkEnd, switch: str, spec: LinkSpec, *, back: LinkSpec | None = None
    ) -> Link:
        """Cable a node's ``end`` to ``switch``: ``spec`` towards the switch,
        ``back`` (default: the same) towards the node."""
        assert end.node is not None, "a node's end names its node"
        port = self.switch(switch).new_port()
        name = f"{end.node}-{switch}"
        link = Link(self, name, end, port, spec, back=back)
        port.link, port.wire = link, link.backward
        port.far = end
        self.uplinks[end.node] = link
        self.links[name] = link
        return link

    def plug(self, end: LinkEnd, mac: MacAddress, switch: str, spec: LinkSpec) -> Link:
        """Attach ``end`` with its MAC known to the switch from the start and
        faults (``spec``) only on the way to the node: the in-memory switch's
        port, whose frames go straight into the switch port (``link.b``)."""
        link = self.attach(end, switch, _STRAIGHT, back=spec)
        port = link.b
        assert isinstance(port, SwitchPort)
        port.switch.table[bytes(mac)] = port
        return link

    def detach(self, node: str) -> None:
        """Unplug ``node``: its port, its link and the MACs known there go."""
        link = self.uplinks.pop(node, None)
        if link is None:
            return
        port = link.b
        assert isinstance(port, SwitchPort)
        port.switch.remove_port(port)
        port.link = port.wire = None
        del self.links[link.name]

    def trunk(self, a: str, b: str, spec: LinkSpec) -> Link:
        port_a = self.switch(a).new_port()
        port_b = self.switch(b).new_port()
        name = f"{a}-{b}"
        link = Link(self, name, port_a, port_b, spec)
        port_a.link = port_b.link = link
        port_a.wire, port_b.wire = link.forward, link.backward
        port_a.far, port_b.far = port_b, port_a
        self.links[name] = link
        return link

    def link_of(self, node: str) -> Link:
        return self.uplinks[node]

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
        self.record("fault", f"partition {','.join(a)} {arrow} {','.join(b)}")

    def isolate(self, node: str) -> None:
        others = [n for n in self.uplinks if n != node]
        self.partition([node], others, one_way=False)

    def heal(self) -> None:
        self.blocked.clear()
        self.record("fault", "heal")


_STRAIGHT = LinkSpec(latency=Fixed(0.0), mtu=65535)
"""A node's side of a plugged-in port: nothing in the way."""
