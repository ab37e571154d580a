"""A pcap recorder that wraps any :class:`~looming.devices.net.Network`.

Every frame sent or received through the wrapper is appended to a classic
libpcap file (microsecond timestamps, LINKTYPE_ETHERNET) that tshark and
Wireshark read.  Timestamps come from the Clock device.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import BinaryIO

from looming.devices.clock import Clock
from looming.devices.net import Capabilities, FrameHandler, MacAddress, Network, NetworkStats

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144


class PcapWriter:
    """Appends frames to a pcap stream (the global header written first)."""

    def __init__(self, stream: BinaryIO, clock: Clock) -> None:
        self._stream = stream
        self._clock = clock
        stream.write(struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        self.frames = 0

    def record(self, frame: bytes) -> None:
        now_us = self._clock.now_ns() // 1000
        seconds, micros = divmod(now_us, 1_000_000)
        captured = frame[:SNAPLEN]
        self._stream.write(struct.pack("<IIII", seconds, micros, len(captured), len(frame)))
        self._stream.write(captured)
        self.frames += 1

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()


class PcapNetwork:
    """A :class:`Network` that records everything crossing ``inner``."""

    def __init__(self, inner: Network, path: str, clock: Clock) -> None:
        self._inner = inner
        self.path = path
        self.writer = PcapWriter(open(path, "wb"), clock)  # noqa: SIM115  (closed in disconnect)

    @property
    def inner(self) -> Network:
        return self._inner

    @property
    def mac(self) -> MacAddress:
        return self._inner.mac

    @property
    def mtu(self) -> int:
        return self._inner.mtu

    def stats(self) -> NetworkStats:
        return self._inner.stats()

    @property
    def capabilities(self) -> Capabilities:
        """The inner interface's, less segmentation: what is recorded is what
        crosses the wire, whole frames only."""
        return replace(self._inner.capabilities, tx_checksum=False, segmentation=0)

    async def write(self, frame: bytes) -> None:
        self.writer.record(frame)
        await self._inner.write(frame)

    async def listen(self, handler: FrameHandler) -> None:
        record = self.writer.record

        def recorded(frame: bytes, checksum_verified: bool = False, /) -> None:
            record(frame)
            handler(frame, checksum_verified)

        await self._inner.listen(recorded)

    async def disconnect(self) -> None:
        await self._inner.disconnect()
        self.writer.close()
