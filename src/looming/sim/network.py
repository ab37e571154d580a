"""The simulator's Ethernet: :mod:`looming.net.netif.fabric` in virtual time.

Switches, links with latency, bandwidth and faults (loss, duplication,
reordering, corruption), partitions, hold and release are the fabric's (the
same code as the in-memory switch's); this module drives it with the run's
virtual loop, gives each link direction its own random stream derived from
the run's seed, writes every drop, fault and delivery to the trace and every
delivered frame to its link's pcap, and adds what a node needs: an
:class:`Attachment` that outlives the node's crashes and the :class:`SimNic`
its stack sees.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterable

from looming.devices.net import Capabilities, FrameHandler, MacAddress, NetworkStats
from looming.errors import DeviceError
from looming.net.netif.fabric import (
    ETHERNET_HEADER,
    Exponential,
    Fabric,
    Fixed,
    InFlight,
    Latency,
    Link,
    LinkEnd,
    LinkSpec,
    SimFrame,
    Switch,
    SwitchPort,
    Uniform,
    Wire,
    frame_id,
)
from looming.sim.devices import EPOCH_NS, SimRandom, derive_seed
from looming.sim.loop import VirtualEventLoop
from looming.sim.trace import Trace

__all__ = [
    "ETHERNET_HEADER",
    "Attachment",
    "Exponential",
    "Fixed",
    "InFlight",
    "Latency",
    "Link",
    "LinkEnd",
    "LinkSpec",
    "SimFrame",
    "SimNetwork",
    "SimNic",
    "Switch",
    "SwitchPort",
    "Uniform",
    "Wire",
]


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


class _VirtualScheduler:
    """The fabric's clock and timers: the run's virtual loop. Deliveries run
    in a fresh context, so no node's context leaks into another's frames."""

    def __init__(self, loop: VirtualEventLoop) -> None:
        self._loop = loop

    def time(self) -> float:
        return self._loop.time()

    def call_at(
        self, when: float, callback: Callable[[int], None], argument: int
    ) -> asyncio.TimerHandle:
        return self._loop.call_at(when, callback, argument, context=contextvars.Context())


# -- node attachments and the NIC a node's stack sees ------------------------


class Attachment:
    """Where a node's cable plugs in (a fabric :class:`LinkEnd`); outlives the
    node's crashes."""

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


class SimNetwork:
    """Every switch, link and partition of one run: a :class:`Fabric` on the
    run's virtual loop, traced, with a seeded stream per link direction."""

    def __init__(
        self, loop: VirtualEventLoop, trace: Trace, seed: int, record_pcap: bool = True
    ) -> None:
        self.loop = loop
        self.trace = trace
        self.seed = seed
        self.record_pcap = record_pcap
        self.fabric = Fabric(
            scheduler=_VirtualScheduler(loop),
            random_for=lambda link, way: SimRandom(derive_seed(seed, "link", link, way)),
            recorder=trace.record,
            frame_name=frame_id,
            pcap_clock=_VirtualClock(loop) if record_pcap else None,
        )
        self.attachments: dict[str, Attachment] = {}

    @property
    def switches(self) -> dict[str, Switch]:
        return self.fabric.switches

    @property
    def links(self) -> dict[str, Link]:
        return self.fabric.links

    @property
    def blocked(self) -> set[tuple[str, str]]:
        return self.fabric.blocked

    def switch(self, name: str) -> Switch:
        return self.fabric.switch(name)

    def attach(
        self,
        node: str,
        mac: MacAddress,
        switch: str,
        spec: LinkSpec,
        *,
        back: LinkSpec | None = None,
    ) -> Attachment:
        """Cable ``node`` to ``switch``: ``spec`` both ways, or ``back`` on the way to the node."""
        attachment = Attachment(self, node, mac)
        attachment.link = self.fabric.attach(attachment, switch, spec, back=back)
        self.attachments[node] = attachment
        return attachment

    def trunk(self, a: str, b: str, spec: LinkSpec) -> Link:
        return self.fabric.trunk(a, b, spec)

    def link_of(self, node: str) -> Link:
        return self.fabric.link_of(node)

    def partition(self, side_a: Iterable[str], side_b: Iterable[str], *, one_way: bool) -> None:
        self.fabric.partition(side_a, side_b, one_way=one_way)

    def isolate(self, node: str) -> None:
        self.fabric.isolate(node)

    def heal(self) -> None:
        self.fabric.heal()
