"""An in-memory IPv4 test double: two hosts joined by a faulty wire.

Each :class:`WireIpv4` implements :class:`looming.devices.Ipv4` well enough
for a TCP layer. Datagrams cross the wire on the event loop (never inside
``write``), and the wire can lose, duplicate, reorder and corrupt them with
a seeded generator so that every run is the same.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from looming.devices.net import ReceivedPacket
from looming.net.wire.tcp import finish_checksum

Handler = Callable[[ReceivedPacket[IPv4Address], bytes], None]


@dataclass
class Faults:
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    latency_s: float = 0.0
    reorder_delay_s: float = 0.002
    seed: int = 1
    rng: random.Random = field(init=False)
    dropped: int = 0
    delivered: int = 0
    # Return True to drop a given (source, payload); for scripted losses.
    drop_filter: Callable[[IPv4Address, bytes], bool] | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class WireIpv4:
    def __init__(self, address: str, faults: Faults, *, mtu: int = 1480) -> None:
        self.address = IPv4Address(address)
        self.faults = faults
        self._mtu = mtu
        self.handlers: dict[int, Handler] = {}
        self.peer: WireIpv4 | None = None
        self.sent: list[tuple[IPv4Address, bytes]] = []
        self.record = False

    def interfaces(self) -> list[IPv4Interface]:
        return [IPv4Interface(f"{self.address}/24")]

    def source_for(self, destination: IPv4Address) -> IPv4Address:
        return self.address

    def mtu(self, destination: IPv4Address) -> int:
        # Like Ipv4.mtu: the largest IP payload (an Ethernet MTU of 1500 less 20).
        return self._mtu

    def segment_limit(self, destination: IPv4Address) -> int:
        # No segmentation offload on the test wire: TCP cuts its own segments.
        return self._mtu

    def lower_path_mtu(
        self, destination: IPv4Address, mtu: int, original_length: int
    ) -> int | None:
        return None  # the wire's MTU is fixed

    def register(self, protocol: int, handler: Handler) -> None:
        self.handlers[protocol] = handler

    def input(self, packet: bytes) -> None:
        raise NotImplementedError("the test wire delivers payloads directly")

    async def write(
        self,
        destination: IPv4Address,
        protocol: int,
        payload: bytes,
        *,
        ttl: int = 64,
        dont_fragment: bool = False,
        tos: int = 0,
        segment_size: int | None = None,
    ) -> None:
        if segment_size is not None:
            # A packet cut for a larger segment size than TCP's current one
            # (a resend after the size fell): as Ipv4.write does for an
            # interface without segmentation offload, its checksum is
            # finished and it goes whole (fragmented and reassembled, as far
            # as the peer can tell).
            payload = finish_checksum(payload)
        if self.record:
            self.sent.append((destination, payload))
        peer = self.peer
        if peer is None or destination != peer.address:
            return
        faults = self.faults
        rng = faults.rng
        if faults.drop_filter is not None and faults.drop_filter(self.address, payload):
            faults.dropped += 1
            return
        if rng.random() < faults.loss:
            faults.dropped += 1
            return
        copies = 2 if rng.random() < faults.duplicate else 1
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            data = payload
            if rng.random() < faults.corrupt and data:
                damaged = bytearray(data)
                damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
                data = bytes(damaged)
            delay = faults.latency_s
            if rng.random() < faults.reorder:
                delay += faults.reorder_delay_s
            faults.delivered += 1
            if delay:
                loop.call_later(delay, peer.deliver, protocol, self.address, destination, data, tos)
            else:
                loop.call_soon(peer.deliver, protocol, self.address, destination, data, tos)

    def deliver(
        self, protocol: int, src: IPv4Address, dst: IPv4Address, data: bytes, tos: int = 0
    ) -> None:
        handler = self.handlers.get(protocol)
        if handler is not None:
            handler(ReceivedPacket(src, dst, protocol, 64, tos, False, b""), data)


def wire_pair(faults: Faults | None = None, *, mtu: int = 1480) -> tuple[WireIpv4, WireIpv4]:
    faults = faults or Faults()
    a = WireIpv4("10.9.0.1", faults, mtu=mtu)
    b = WireIpv4("10.9.0.2", faults, mtu=mtu)
    a.peer = b
    b.peer = a
    return a, b
