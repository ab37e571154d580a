"""An in-memory Ethernet switch linking several stacks in one process.

A preset of the one simulated Ethernet (:mod:`looming.net.netif.fabric`,
which the simulator runs in virtual time): one switch, each port plugged in
with its MAC known, no time passing. Frames are delivered on a later turn
of the event loop, never re-entrantly. Faults (loss, duplication,
corruption, reordering by swapping with the next frame) happen on the way
out of the switch to each port, drawn from a seeded
:class:`~looming.devices.random.Random` so a failing run can be replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from looming.devices.net import Capabilities, FrameHandler, MacAddress, NetworkStats
from looming.devices.random import Random
from looming.errors import DeviceError
from looming.net.netif.fabric import (
    Draws,
    Fabric,
    Fixed,
    Link,
    LinkSpec,
    SimFrame,
    SwitchPort,
    Timeless,
    Undrawn,
)

SWITCH = "memory"
"""The name of the preset's one switch in its fabric."""


@dataclass(slots=True)
class LinkFaults:
    """Probabilities, per delivered frame, of each fault."""

    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0

    def spec(self) -> LinkSpec:
        """The fabric's spec for the wire from the switch to a port."""
        return LinkSpec(
            latency=Fixed(0.0),
            mtu=65535,
            loss=self.loss,
            duplicate=self.duplicate,
            corrupt=self.corrupt,
            reorder=self.reorder,
            reorder_delay=None,
        )


_BACKLOG = 256

FrameFilter = Callable[[bytes], bool]
"""Return False to drop a frame (a test's own fault injector)."""


class MemorySwitch:
    """A switch: frames go to the port that owns the destination MAC, or to
    every other port for broadcast, multicast and unknown MACs."""

    def __init__(self, *, random: Random | None = None, faults: LinkFaults | None = None) -> None:
        self.faults = faults if faults is not None else LinkFaults()
        draws: Draws = random if random is not None else Undrawn()
        if random is None and not self.faults.spec().ideal:
            raise ValueError("fault injection needs a Random device (seeded for replay)")
        self.fabric = Fabric(scheduler=Timeless(), random_for=lambda link, way: draws)
        self.fabric.switch(SWITCH, learning=False)
        self._ports = 0
        self.drop_filter: FrameFilter | None = None
        self.frames_switched = 0

    def port(self, mac: MacAddress | str | None = None, *, mtu: int = 1500) -> MemoryPort:
        self._ports += 1
        if mac is None:
            mac = MacAddress(bytes((0x02, 0, 0, 0, 0, self._ports)))
        port = MemoryPort(self, f"port{self._ports}", MacAddress(mac), mtu)
        link = self.fabric.plug(port, port.mac, SWITCH, self.faults.spec())
        assert isinstance(link.b, SwitchPort)
        port._link, port._port = link, link.b
        return port

    def _remove(self, port: MemoryPort) -> None:
        self.fabric.detach(port.name)
        port._link = port._port = None


class MemoryPort:
    """:class:`looming.devices.net.Network` for one port of a :class:`MemorySwitch`
    (and the fabric's end of the port's link)."""

    def __init__(self, switch: MemorySwitch, name: str, mac: MacAddress, mtu: int) -> None:
        self._switch = switch
        self.name = name
        self.node: str | None = name
        self._mac = mac
        self._mtu = mtu
        self._stats = NetworkStats()
        self._handler: FrameHandler | None = None
        self._closed = asyncio.Event()
        self._backlog: list[bytes] = []
        self._link: Link | None = None
        self._port: SwitchPort | None = None

    @property
    def mac(self) -> MacAddress:
        return self._mac

    @property
    def mtu(self) -> int:
        return self._mtu

    @property
    def capabilities(self) -> Capabilities:
        """No offloads: every checksum crosses the switch to be verified."""
        return Capabilities(mtu=self._mtu)

    def stats(self) -> NetworkStats:
        s = self._stats
        lost = self._link.backward.dropped if self._link is not None else 0
        return NetworkStats(
            s.rx_bytes, s.rx_packets, s.tx_bytes, s.tx_packets, s.rx_dropped + lost, s.tx_dropped
        )

    async def write(self, frame: bytes) -> None:
        if self._closed.is_set():
            raise DeviceError("this switch port is disconnected")
        if len(frame) > self._mtu + 18:
            self._stats.tx_dropped += 1
            return
        self._stats.tx_packets += 1
        self._stats.tx_bytes += len(frame)
        data = bytes(frame)
        switch = self._switch
        if switch.drop_filter is not None and not switch.drop_filter(data):
            return
        switch.frames_switched += 1
        port = self._port
        if port is not None:
            port.receive(SimFrame(data, self.name))  # plugged in: no wire on the way in

    def receive(self, frame: SimFrame) -> None:
        """A frame out of the switch: handed to the stack on a later turn."""
        if self._closed.is_set():
            self._stats.rx_dropped += 1
            return
        if self._handler is None:
            # Like a NIC's receive ring before the driver polls: a bounded
            # backlog, so frames sent while a stack starts are not lost.
            if len(self._backlog) < _BACKLOG:
                self._backlog.append(frame.data)
            else:
                self._stats.rx_dropped += 1
            return
        asyncio.get_running_loop().call_soon(self._receive, frame.data)

    def _receive(self, frame: bytes) -> None:
        handler = self._handler
        if handler is None or self._closed.is_set():
            return
        self._stats.rx_packets += 1
        self._stats.rx_bytes += len(frame)
        handler(frame)

    async def listen(self, handler: FrameHandler) -> None:
        self._handler = handler
        backlog, self._backlog = self._backlog, []
        for frame in backlog:
            asyncio.get_running_loop().call_soon(self._receive, frame)
        try:
            await self._closed.wait()
        finally:
            self._handler = None

    async def disconnect(self) -> None:
        self._closed.set()
        self._switch._remove(self)
