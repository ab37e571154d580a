"""An in-memory Ethernet switch linking several stacks in one process.

Frames are delivered on a later turn of the event loop, never re-entrantly.
Faults (loss, duplication, corruption, reordering) are drawn from a seeded
:class:`~looming.devices.random.Random` so a failing run can be replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from looming.devices.net import Capabilities, FrameHandler, MacAddress, NetworkStats
from looming.devices.random import Random
from looming.errors import DeviceError


@dataclass(slots=True)
class LinkFaults:
    """Probabilities, per delivered frame, of each fault."""

    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0


_BACKLOG = 256

FrameFilter = Callable[[bytes], bool]
"""Return False to drop a frame (a test's own fault injector)."""


class MemorySwitch:
    """A learning switch: frames go to the port that owns the destination
    MAC, or to every other port for broadcast, multicast and unknown MACs."""

    def __init__(self, *, random: Random | None = None, faults: LinkFaults | None = None) -> None:
        self._ports: list[MemoryPort] = []
        self._random = random
        self.faults = faults if faults is not None else LinkFaults()
        if random is None and self._faulty():
            raise ValueError("fault injection needs a Random device (seeded for replay)")
        self.drop_filter: FrameFilter | None = None
        self.frames_switched = 0

    def _faulty(self) -> bool:
        f = self.faults
        return bool(f.loss or f.duplicate or f.corrupt or f.reorder)

    def port(self, mac: MacAddress | str | None = None, *, mtu: int = 1500) -> MemoryPort:
        if mac is None:
            mac = MacAddress(bytes((0x02, 0, 0, 0, 0, len(self._ports) + 1)))
        port = MemoryPort(self, MacAddress(mac), mtu)
        self._ports.append(port)
        return port

    def _remove(self, port: MemoryPort) -> None:
        if port in self._ports:
            self._ports.remove(port)

    def _forward(self, sender: MemoryPort, frame: bytes) -> None:
        if self.drop_filter is not None and not self.drop_filter(frame):
            return
        self.frames_switched += 1
        destination = frame[0:6]
        targets = [p for p in self._ports if p is not sender and p.mac == destination]
        if not targets:
            targets = [p for p in self._ports if p is not sender]
        for port in targets:
            self._deliver(port, frame)

    def _deliver(self, port: MemoryPort, frame: bytes) -> None:
        random = self._random
        if random is None or not self._faulty():
            port._enqueue(frame)
            return
        faults = self.faults
        if faults.loss and random.random() < faults.loss:
            port._stats.rx_dropped += 1
            return
        if faults.corrupt and random.random() < faults.corrupt and frame:
            position = random.randint(0, len(frame) - 1)
            damaged = bytearray(frame)
            damaged[position] ^= 1 << random.randint(0, 7)
            frame = bytes(damaged)
        copies = 2 if faults.duplicate and random.random() < faults.duplicate else 1
        for _ in range(copies):
            if faults.reorder and random.random() < faults.reorder:
                port._hold(frame)
            else:
                port._enqueue(frame)


class MemoryPort:
    """:class:`looming.devices.net.Network` for one port of a :class:`MemorySwitch`."""

    def __init__(self, switch: MemorySwitch, mac: MacAddress, mtu: int) -> None:
        self._switch = switch
        self._mac = mac
        self._mtu = mtu
        self._stats = NetworkStats()
        self._handler: FrameHandler | None = None
        self._closed = asyncio.Event()
        self._held: bytes | None = None
        self._backlog: list[bytes] = []

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
        return NetworkStats(
            s.rx_bytes, s.rx_packets, s.tx_bytes, s.tx_packets, s.rx_dropped, s.tx_dropped
        )

    async def write(self, frame: bytes) -> None:
        if self._closed.is_set():
            raise DeviceError("this switch port is disconnected")
        if len(frame) > self._mtu + 18:
            self._stats.tx_dropped += 1
            return
        self._stats.tx_packets += 1
        self._stats.tx_bytes += len(frame)
        self._switch._forward(self, bytes(frame))

    def _enqueue(self, frame: bytes) -> None:
        if self._closed.is_set():
            self._stats.rx_dropped += 1
            return
        if self._handler is None:
            # Like a NIC's receive ring before the driver polls: a bounded
            # backlog, so frames sent while a stack starts are not lost.
            if len(self._backlog) < _BACKLOG:
                self._backlog.append(frame)
            else:
                self._stats.rx_dropped += 1
            return
        asyncio.get_running_loop().call_soon(self._receive, frame)
        if self._held is not None:
            # A held frame goes out after the one that overtook it.
            held, self._held = self._held, None
            asyncio.get_running_loop().call_soon(self._receive, held)

    def _hold(self, frame: bytes) -> None:
        if self._held is not None:
            self._enqueue(frame)
        else:
            self._held = frame

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
