"""Ethernet II over a :class:`~looming.devices.net.Network`: framing and
demultiplexing by EtherType."""

from __future__ import annotations

from collections import Counter

from looming.devices.net import EthernetHandler, MacAddress, Network
from looming.errors import Malformed
from looming.net.wire import ethernet as wire

_BROADCAST = b"\xff" * 6


class EthernetLayer:
    """:class:`looming.devices.net.Ethernet`.

    Frames addressed to another unicast MAC are dropped (the interface may be
    promiscuous); VLAN-tagged frames are accepted with the tag ignored.
    """

    def __init__(self, network: Network, *, mac: MacAddress | None = None) -> None:
        self._network = network
        self._mac = mac if mac is not None else network.mac
        self._handlers: dict[int, EthernetHandler] = {}
        self.counters: Counter[str] = Counter()
        self.last_handler_error: Exception | None = None

    @property
    def mac(self) -> MacAddress:
        return self._mac

    @property
    def mtu(self) -> int:
        return self._network.mtu

    @property
    def network(self) -> Network:
        return self._network

    def register(self, ethertype: int, handler: EthernetHandler) -> None:
        self._handlers[ethertype] = handler

    def input(self, frame: bytes) -> None:
        counters = self.counters
        try:
            header, payload = wire.parse(frame)
        except Malformed:
            counters["malformed"] += 1
            return
        destination = header.destination
        if destination != self._mac and destination != _BROADCAST and not destination[0] & 1:
            counters["not_for_us"] += 1
            return
        handler = self._handlers.get(header.ethertype)
        if handler is None:
            counters["unknown_ethertype"] += 1
            return
        counters["rx_frames"] += 1
        try:
            handler(header.source, destination, bytes(payload))
        except Exception as error:
            # A layer above must count and drop its own bad input; reaching
            # here is a bug there, but it must not stop frames arriving.
            counters["handler_error"] += 1
            self.last_handler_error = error

    @property
    def rx_checksum_verified(self) -> bool:
        """Whether the interface vouches for the checksums of the frame being
        handled (a vnet TAP completed or checked them), so they need no
        second pass."""
        return getattr(self._network, "rx_checksum_verified", False) is True

    @property
    def segmentation_offload(self) -> int:
        """The largest IPv4 packet the interface segments itself for TCP
        (a TAP with virtio-net headers), or 0."""
        limit = getattr(self._network, "segmentation_offload", 0)
        return limit if isinstance(limit, int) else 0

    async def write(
        self,
        destination: MacAddress,
        ethertype: int,
        payload: bytes,
        *,
        segment_size: int | None = None,
    ) -> None:
        """Frame and send ``payload``; with ``segment_size`` the interface
        splits the TCP packet inside into segments of that many bytes."""
        frame = destination + self._mac + ethertype.to_bytes(2, "big") + payload
        self.counters["tx_frames"] += 1
        if segment_size is not None:
            write_segmented = getattr(self._network, "write_segmented", None)
            if write_segmented is None:
                raise ValueError("this network interface cannot segment TCP packets")
            await write_segmented(frame, segment_size)
            return
        await self._network.write(frame)
