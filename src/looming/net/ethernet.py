"""Ethernet II over a :class:`~looming.devices.net.Network`: framing and
demultiplexing by EtherType."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from looming.devices.net import (
    Capabilities,
    EthernetHandler,
    MacAddress,
    Network,
    SegmentingNetwork,
)
from looming.devices.time import Time
from looming.errors import Malformed
from looming.net.wire import ethernet as wire
from looming.net.wire._cache import mac_address

_BROADCAST = b"\xff" * 6
_VLAN = 0x8100
_QINQ = 0x88A8


def _is_syn(frame: bytes) -> bool:
    """Whether an untagged frame holds a TCP SYN without ACK, over IPv4
    (whatever its options) or IPv6 (TCP right after the fixed header), read
    from a few bytes without parsing."""
    if len(frame) <= 47:  # 14 + 20 + 13: no TCP flags inside
        return False
    ethertype = frame[12:14]
    if ethertype == b"\x08\x00":
        flags = 27 + (frame[14] & 0x0F) * 4  # 14 + the header's length + 13
        return (
            frame[23] == 6  # TCP
            and not (frame[20] & 0x1F or frame[21])  # a first fragment or none
            and len(frame) > flags
            and frame[flags] & 0x12 == 0x02  # SYN without ACK
        )
    if ethertype == b"\x86\xdd":
        return len(frame) > 67 and frame[20] == 6 and frame[67] & 0x12 == 0x02
    return False


class TokenBucket:
    """``rate`` a second after a burst of ``burst``."""

    __slots__ = ("_refilled_ns", "_tokens", "burst", "rate")

    def __init__(self, rate: int, burst: int, now_ns: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._refilled_ns = now_ns

    def take(self, now_ns: int) -> bool:
        """Whether one more is allowed now."""
        tokens = self._tokens + (now_ns - self._refilled_ns) * self.rate / 1e9
        self._refilled_ns = now_ns
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = min(tokens, float(self.burst)) - 1.0
        return True


class EthernetLayer:
    """:class:`looming.devices.net.Ethernet`.

    Frames addressed to another unicast MAC are dropped (the interface may be
    promiscuous); VLAN-tagged frames are accepted with the tag ignored.
    """

    def __init__(
        self,
        network: Network,
        *,
        mac: MacAddress | None = None,
        time: Time | None = None,
        syn_rate: int = 2000,
        syn_burst: int = 64,
    ) -> None:
        self._network = network
        self._mac = mac if mac is not None else network.mac
        capabilities = network.capabilities
        self._capabilities = capabilities
        self._write_segmented: Callable[[bytes, int], Awaitable[None]] | None = None
        if capabilities.segmentation:
            if not isinstance(network, SegmentingNetwork):
                raise TypeError(
                    f"{type(network).__name__} declares segmentation offload in its "
                    "capabilities but has no write_segmented method"
                )
            self._write_segmented = network.write_segmented
        self._handlers: dict[int, EthernetHandler] = {}
        self.counters: Counter[str] = Counter()
        self.last_handler_error: Exception | None = None
        # Connection requests (TCP SYNs) beyond syn_rate a second, after a
        # burst of syn_burst, are dropped before any parsing (with a Time
        # device only): a flood then costs a few byte comparisons a frame
        # and cannot queue up in front of established connections' segments.
        self._time = time
        now = time.now_ns() if time is not None else 0
        self._syn_bucket = TokenBucket(syn_rate, syn_burst, now)

    @property
    def syn_burst(self) -> int:
        return self._syn_bucket.burst

    @property
    def mac(self) -> MacAddress:
        return self._mac

    @property
    def mtu(self) -> int:
        return self._capabilities.mtu

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def network(self) -> Network:
        return self._network

    def register(self, ethertype: int, handler: EthernetHandler) -> None:
        self._handlers[ethertype] = handler

    def input(self, frame: bytes, checksum_verified: bool = False) -> None:
        counters = self.counters
        if (
            self._time is not None
            and _is_syn(frame)
            and not self._syn_bucket.take(self._time.now_ns())
        ):
            counters["syn_policed"] += 1
            return
        if type(frame) is bytes and len(frame) >= wire.HEADER_LENGTH:
            # The common untagged frame, read without a header object.
            ethertype = frame[12] << 8 | frame[13]
            if ethertype >= 0x0600 and ethertype != _VLAN and ethertype != _QINQ:
                self._dispatch(
                    mac_address(frame[6:12]),
                    frame[:6],
                    ethertype,
                    frame[wire.HEADER_LENGTH :],
                    checksum_verified,
                )
                return
        try:
            header, payload = wire.parse(frame)
        except Malformed:
            counters["malformed"] += 1
            return
        self._dispatch(
            header.source, header.destination, header.ethertype, bytes(payload), checksum_verified
        )

    def _dispatch(
        self,
        source: MacAddress,
        destination: bytes,
        ethertype: int,
        payload: bytes,
        checksum_verified: bool,
    ) -> None:
        """Hand a parsed frame to the handler of its EtherType, if it is ours."""
        counters = self.counters
        to = self._mac
        if destination != to:
            if destination != _BROADCAST and not destination[0] & 1:
                counters["not_for_us"] += 1
                return
            to = mac_address(destination)
        handler = self._handlers.get(ethertype)
        if handler is None:
            counters["unknown_ethertype"] += 1
            return
        counters["rx_frames"] += 1
        try:
            handler(source, to, payload, checksum_verified)
        except Exception as error:
            # A layer above must count and drop its own bad input; reaching
            # here is a bug there, but it must not stop frames arriving.
            counters["handler_error"] += 1
            self.last_handler_error = error

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
            if self._write_segmented is None:
                raise ValueError(
                    "this network interface cannot segment TCP packets: "
                    "give segment_size only when capabilities.segmentation is set"
                )
            await self._write_segmented(frame, segment_size)
            return
        await self._network.write(frame)
