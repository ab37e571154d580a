"""The per-segment fast paths give what the general code gives.

Each shortcut taken for the common segment (a datagram without options, a
frame without a VLAN tag, the usual TCP option layout, long checksums) is
checked against the general code it stands in for, on generated input.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
from collections.abc import Awaitable
from ipaddress import IPv4Address, IPv4Interface

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from looming.devices.net import Capabilities, MacAddress, Network, ReceivedPacket
from looming.errors import DeviceError
from looming.net.arp import ArpLayer
from looming.net.ethernet import EthernetLayer, FramePolicy
from looming.net.ipv4 import Ipv4Layer
from looming.net.netif._fd import FrameDevice, FrameDeviceNetwork
from looming.net.netif.memory import MemoryPort, MemorySwitch
from looming.net.wire import ipv4, tcp
from looming.net.wire.checksum import internet_checksum
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
addresses = st.integers(0, 0xFFFFFFFF).map(IPv4Address)


@given(addresses, addresses, u8, u8, u16, st.booleans(), u8, st.binary(max_size=1600))
def test_plain_ipv4_emit_is_the_general_emit(
    source: IPv4Address,
    destination: IPv4Address,
    protocol: int,
    ttl: int,
    identification: int,
    dont_fragment: bool,
    tos: int,
    payload: bytes,
) -> None:
    header = ipv4.Ipv4Header(
        source=source,
        destination=destination,
        protocol=protocol,
        ttl=ttl,
        identification=identification,
        dont_fragment=dont_fragment,
        tos=tos,
    )
    plain = ipv4.emit_plain(
        source.packed,
        destination.packed,
        int(source) + int(destination),
        protocol,
        ttl,
        identification,
        dont_fragment,
        tos,
        payload,
    )
    assert plain == ipv4.emit(header, payload)
    assert ipv4.parse(plain)[0] == header


Delivery = tuple[object, ...]


def _ipv4_layer(delivered: list[Delivery]) -> Ipv4Layer:
    ethernet = EthernetLayer(MemorySwitch().port())
    time = UnixTime()
    layer = Ipv4Layer(ethernet, ArpLayer(ethernet, time), time, UnixRandom(1), interface=LOCAL)

    def record(packet: ReceivedPacket[IPv4Address], payload: bytes) -> None:
        delivered.append(
            (
                packet.source,
                packet.destination,
                packet.protocol,
                packet.hop_limit,
                packet.traffic_class,
                packet.checksum_verified,
                bytes(packet.header),
                bytes(payload),
            )
        )

    layer.register(6, record)
    layer.unhandled_protocol = lambda packet, payload: delivered.append(("unhandled", payload))
    return layer


LOCAL = IPv4Interface("10.0.0.2/24")
SOURCES = st.sampled_from(["10.0.0.1", "10.0.0.2", "224.0.0.9", "255.255.255.255", "8.8.8.8"])
DESTINATIONS = st.sampled_from(["10.0.0.2", "10.0.0.255", "255.255.255.255", "10.0.0.3"])


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    """IPv4 datagrams, mostly well formed, some broken in one field."""
    header = ipv4.Ipv4Header(
        source=IPv4Address(draw(SOURCES)),
        destination=IPv4Address(draw(DESTINATIONS)),
        protocol=draw(st.sampled_from([6, 17])),
        ttl=draw(u8),
        identification=draw(u16),
        dont_fragment=draw(st.booleans()),
        more_fragments=draw(st.booleans()),
        fragment_offset=draw(st.sampled_from([0, 0, 8, 1480])),
        tos=draw(u8),
        options=draw(st.sampled_from([b"", b"", b"\x01\x01\x01\x00"])),
    )
    packet = bytearray(ipv4.emit(header, draw(st.binary(max_size=80))))
    packet += draw(st.binary(max_size=4))  # link-layer padding
    if draw(st.booleans()):
        index = draw(st.integers(0, len(packet) - 1))
        packet[index] ^= draw(st.integers(1, 255))
    return bytes(packet)


def _ipv4_with_gateway(network: Network) -> tuple[EthernetLayer, ArpLayer, Ipv4Layer]:
    """An IPv4 layer at LOCAL on ``network`` whose gateway, 10.0.0.1, is
    already resolved, with the layers below it."""
    ethernet = EthernetLayer(network)
    time = UnixTime()
    arp = ArpLayer(ethernet, time)
    layer = Ipv4Layer(
        ethernet, arp, time, UnixRandom(1), interface=LOCAL, gateway=IPv4Address("10.0.0.1")
    )
    arp.cache.learn(IPv4Address("10.0.0.1"), MacAddress(b"\x02\x00\x00\x00\x00\x01"), time.now_ns())
    return ethernet, arp, layer


class _SegmentingPort(MemoryPort):
    """A network that cuts TCP packets itself: it records what it is given."""

    def __init__(self) -> None:
        super().__init__(MemorySwitch(), "tso", MacAddress(b"\x02\x00\x00\x00\x00\x02"), 1500)
        self.sent: list[tuple[bytes, int | None]] = []

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(mtu=1500, tx_checksum=True, segmentation=65536)

    async def write(self, frame: bytes) -> None:
        self.sent.append((frame, None))

    async def write_segmented(self, frame: bytes, segment_size: int) -> None:
        self.sent.append((frame, segment_size))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["10.0.0.1", "10.0.0.3", "8.8.8.8", "10.0.0.9"]),
            st.integers(20, 65535 - 20),
            st.integers(1, 1460),
            u8,
        ),
        max_size=5,
    )
)
def test_offloaded_ipv4_write_is_the_general_write(
    packets: list[tuple[str, int, int, int]],
) -> None:
    """A TCP packet for the interface to segment, sent from the layer's own
    address (its fast path) and with that address given as the source (the
    general path): the same frames, segment sizes and counters, whether the
    next hop is resolved (10.0.0.1, 8.8.8.8 through it) or held for ARP."""

    async def run(explicit_source: bool) -> tuple[list[tuple[bytes, int | None]], object]:
        port = _SegmentingPort()
        _, arp, layer = _ipv4_with_gateway(port)
        for destination, length, segment_size, tos in packets:
            await layer.write(
                IPv4Address(destination),
                6,
                bytes(range(256)) * (length // 256) + bytes(length % 256),
                tos=tos,
                segment_size=segment_size,
                source=LOCAL.ip if explicit_source else None,
            )
        return port.sent, (layer.counters, arp.counters)

    fast = asyncio.run(run(False))
    general = asyncio.run(run(True))
    assert fast == general
    offloaded = [frame for frame, size in fast[0] if size is not None]
    assert len(offloaded) == sum(p[0] in ("10.0.0.1", "8.8.8.8") for p in packets)


@given(st.lists(datagrams(), max_size=6))
def test_plain_ipv4_receive_is_the_general_receive(packets: list[bytes]) -> None:
    """The same datagrams through the fast path (bytes) and the general
    path (a bytearray never takes it): the same deliveries and counters."""
    fast: list[Delivery] = []
    general: list[Delivery] = []
    fast_layer, general_layer = _ipv4_layer(fast), _ipv4_layer(general)
    for packet in packets:
        fast_layer.input(packet)
        general_layer.input(bytearray(packet))  # type: ignore[arg-type]
    assert fast == general
    assert fast_layer.counters == general_layer.counters


MACS = st.sampled_from(
    [
        b"\x02\x00\x00\x00\x00\x01",
        b"\xff" * 6,
        b"\x01\x00\x5e\x00\x00\x01",
        b"\x02\x00\x00\x00\x00\x07",
    ]
)


@given(
    st.lists(
        st.tuples(
            MACS,
            st.sampled_from(
                [b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x88\xa8", b"\x05\xdc", b"\x12\x34"]
            ),
            st.binary(max_size=30),
        ),
        max_size=6,
    )
)
def test_untagged_ethernet_receive_is_the_general_receive(
    frames: list[tuple[bytes, bytes, bytes]],
) -> None:
    delivered: dict[str, list[Delivery]] = {"fast": [], "general": []}
    layers = {name: _ethernet_layer(received) for name, received in delivered.items()}
    for destination, type_field, rest in frames:
        frame = destination + b"\x02\x00\x00\x00\x00\x09" + type_field + rest
        layers["fast"].input(frame, True)
        layers["general"].input(bytearray(frame), True)  # type: ignore[arg-type]
    assert delivered["fast"] == delivered["general"]
    assert layers["fast"].counters == layers["general"].counters


def _ethernet_layer(received: list[Delivery]) -> EthernetLayer:
    layer = EthernetLayer(MemorySwitch().port(MacAddress(b"\x02\x00\x00\x00\x00\x01")))

    def record(source: MacAddress, destination: MacAddress, payload: bytes, verified: bool) -> None:
        received.append((type(source), source, type(destination), destination, payload, verified))

    for ethertype in (0x0800, 0x86DD):
        layer.register(ethertype, record)
    return layer


u32 = st.integers(0, 0xFFFFFFFF)


def _drawn_header(
    draw: st.DrawFn,
    sack_blocks: tuple[tuple[int, int], ...],
    timestamps: tuple[int, int] | None,
) -> tcp.TcpHeader:
    """A header with drawn fixed fields and the options given."""
    return tcp.TcpHeader(
        src_port=draw(u16),
        dst_port=draw(u16),
        seq=draw(u32),
        ack=draw(u32),
        flags=draw(u8),
        window=draw(u16),
        urgent=draw(u16),
        sack_blocks=sack_blocks,
        timestamps=timestamps,
    )


@st.composite
def timestamped_headers(draw: st.DrawFn) -> tcp.TcpHeader:
    return _drawn_header(draw, (), (draw(u32), draw(u32)))


def _reference_segment(
    header: tcp.TcpHeader, payload: bytes, src: IPv4Address, dst: IPv4Address
) -> bytes:
    """The segment with NOP, NOP, timestamps, laid out field by field and
    summed over its bytes and the pseudo-header spelled out."""
    assert header.timestamps is not None
    options = bytes((1, 1, 8, 10)) + struct.pack("!II", *header.timestamps)
    fields = (header.src_port, header.dst_port, header.seq, header.ack, 8 << 4, header.flags)
    bare = struct.pack("!HHIIBBHHH", *fields, header.window, 0, header.urgent) + options + payload
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, len(bare))
    checksum = internet_checksum(pseudo + bare)
    return bare[:16] + checksum.to_bytes(2, "big") + bare[18:]


@given(timestamped_headers(), st.binary(max_size=1600), addresses, addresses)
def test_timestamped_emit_is_the_reference_layout(
    header: tcp.TcpHeader, payload: bytes, src: IPv4Address, dst: IPv4Address
) -> None:
    segment = tcp.emit(header, payload, src=src, dst=dst)
    assert segment == _reference_segment(header, payload, src, dst)
    assert tcp.checksum_ok(segment, src, dst)
    partial = tcp.emit(header, payload, src=src, dst=dst, partial_checksum=True)
    assert tcp.finish_checksum(partial) == segment


@given(timestamped_headers(), st.binary(max_size=64), st.booleans())
def test_timestamped_parse_is_the_general_parse(
    header: tcp.TcpHeader, payload: bytes, nops_first: bool
) -> None:
    """NOP, NOP, timestamps takes the fast path; timestamps, NOP, NOP (the
    same header) the general one."""
    segment = tcp.emit(header, payload)
    if not nops_first:
        segment = segment[:20] + segment[22:32] + b"\x01\x01" + segment[32:]
    parsed, rest = tcp.parse(segment)
    assert parsed == header
    assert bytes(rest) == payload


def test_tcp_header_stays_a_frozen_dataclass() -> None:
    """Its own constructor keeps what the generated one gave: keywords and
    defaults, equality, hashing, replace(), and no assignment."""
    header = tcp.TcpHeader(1, 2, 3, 4, tcp.ACK, 5, timestamps=(6, 7))
    same = tcp.TcpHeader(
        src_port=1, dst_port=2, seq=3, ack=4, flags=tcp.ACK, window=5, timestamps=(6, 7)
    )
    assert header == same and hash(header) == hash(same)
    assert (header.urgent, header.mss, header.sack_blocks) == (0, None, ())
    assert dataclasses.replace(header, seq=9) == tcp.TcpHeader(
        1, 2, 9, 4, tcp.ACK, 5, timestamps=(6, 7)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.seq = 10  # type: ignore[misc]


@st.composite
def connection_headers(draw: st.DrawFn) -> tcp.TcpHeader:
    """Headers of a connection's segments after the handshake: no options,
    timestamps, SACK blocks or both, some blocks more than fit."""
    blocks = draw(st.lists(st.tuples(u32, u32), max_size=5))
    return _drawn_header(draw, tuple(blocks), draw(st.none() | st.tuples(u32, u32)))


@given(
    connection_headers(),
    st.binary(max_size=1600),
    addresses,
    addresses,
    st.booleans(),
    st.booleans(),
)
def test_connection_emit_is_the_general_emit(
    header: tcp.TcpHeader,
    payload: bytes,
    src: IPv4Address,
    dst: IPv4Address,
    summed: bool,
    partial: bool,
) -> None:
    """The layouts packed in one call (no options, SACK blocks behind the
    timestamps or not) give the general emit's bytes, or its error."""
    source, destination = (src, dst) if summed else (None, None)
    try:
        general = tcp._emit_general(header, payload, source, destination, partial)
    except ValueError:
        with pytest.raises(ValueError, match="TCP options exceed 40 bytes"):
            tcp.emit(header, payload, src=source, dst=destination, partial_checksum=partial)
        return
    segment = tcp.emit(header, payload, src=source, dst=destination, partial_checksum=partial)
    assert segment == general
    parsed, rest = tcp.parse(segment)
    assert parsed == header and bytes(rest) == payload
    if summed and not partial:
        assert tcp.checksum_ok(segment, src, dst)


class _ImmediateNetwork(FrameDeviceNetwork):
    """An interface whose device takes frames at once (a list records them),
    but for the sends told to block, as a full socket buffer does; it
    segments TCP packets too."""

    def __init__(self, blocking: set[int]) -> None:
        self._socket, self._other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._mac = MacAddress(b"\x02\x00\x00\x00\x00\x02")
        self._mtu = 1500
        self.sent: list[tuple[bytes, int | None]] = []
        self._sends = 0
        self._blocking = blocking
        self._device = FrameDevice(self._socket.fileno(), send=self._send)

    def _send(self, frame: bytes, segment_size: int | None = None) -> int:
        self._sends += 1
        if self._sends in self._blocking:
            raise BlockingIOError
        self.sent.append((frame, segment_size))
        return len(frame)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(mtu=1500, tx_checksum=True, segmentation=65536)

    async def write_segmented(self, frame: bytes, segment_size: int) -> None:
        await self._device.write(frame, send=lambda frame: self._send(frame, segment_size))

    def write_segmented_now(self, frame: bytes, segment_size: int) -> Awaitable[None] | None:
        return self._device.write_now(frame, lambda frame: self._send(frame, segment_size))

    def _release(self) -> None:
        self._socket.close()
        self._other.close()


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["10.0.0.1", "10.0.0.3", "8.8.8.8", "10.0.0.2", "10.0.0.255"]),
            st.sampled_from([6, 17]),
            st.integers(0, 3000),
            st.none() | st.integers(1, 1460),
            u8,
        ),
        max_size=6,
    ),
    st.sets(st.integers(1, 8), max_size=3),
)
def test_immediate_ipv4_write_is_the_general_write(
    datagrams: list[tuple[str, int, int, int | None, int]], blocking: set[int]
) -> None:
    """Datagrams sent through write_now (the frames leave without a
    coroutine while the device takes them; what it gives back is awaited
    where it would block) and through write: the same frames, in the same
    order, with the same counters, whether the next hop is resolved
    (10.0.0.1, 8.8.8.8 through it), held for ARP (10.0.0.3), our own
    address or broadcast, fragmented or offloaded."""

    async def run(immediate: bool) -> object:
        network = _ImmediateNetwork(blocking)
        ethernet, arp, layer = _ipv4_with_gateway(network)
        errors: list[str] = []
        for destination, protocol, length, segment_size, tos in datagrams:
            size = segment_size if protocol == 6 else None
            payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
            try:
                if immediate:
                    pending = layer.write_now(
                        IPv4Address(destination),
                        protocol,
                        payload,
                        dont_fragment=True,
                        segment_size=size,
                        tos=tos,
                    )
                    if pending is not None:
                        await pending
                else:
                    await layer.write(
                        IPv4Address(destination),
                        protocol,
                        payload,
                        dont_fragment=True,
                        segment_size=size,
                        tos=tos,
                    )
            except ValueError as error:
                errors.append(str(error))
        await asyncio.sleep(0)  # (what went to our own address comes back)
        stats = network.stats()
        await network.disconnect()
        return network.sent, errors, layer.counters, arp.counters, ethernet.counters, stats

    assert asyncio.run(run(True)) == asyncio.run(run(False))


def test_a_disconnected_interface_refuses_frames_at_once() -> None:
    async def run() -> None:
        network = _ImmediateNetwork(set())
        await network.disconnect()
        with pytest.raises(DeviceError, match="disconnected"):
            network.write_now(b"\x00" * 60)

    asyncio.run(run())


def test_writes_waiting_at_disconnect_are_dropped_and_released() -> None:
    """A disconnect while frames wait for a full device releases their
    writers (nothing would ever wake them) and counts the frames lost."""

    async def run() -> None:
        network = _ImmediateNetwork(set(range(1, 10**6)))  # the device takes none
        device = network._device
        waiting = [asyncio.ensure_future(device.write(bytes([n]) * 60)) for n in range(3)]
        await asyncio.sleep(0.01)
        assert not any(write.done() for write in waiting)
        await network.disconnect()
        await asyncio.wait_for(asyncio.gather(*waiting), 5)
        assert network.sent == []
        stats = device.stats()
        assert stats.tx_dropped == 3 and stats.tx_packets == 0

    asyncio.run(run())


FLOW_ADDRESSES = st.sampled_from([b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"])
FLOW_PORTS = st.sampled_from([b"\x00\x07", b"\x9c\x40"])


@st.composite
def sent_frames(draw: st.DrawFn) -> bytes:
    """Frames a host sends: IPv4 TCP segments (some resets, SYNs, first and
    later fragments, header options), UDP datagrams, IPv6, short ones."""
    version = draw(st.sampled_from([0x45, 0x45, 0x46]))
    protocol = draw(st.sampled_from([6, 6, 17]))
    fragment = draw(st.sampled_from([b"\x40\x00", b"\x40\x00", b"\x20\x00", b"\x00\x10"]))
    header = (
        bytes((version, 0))
        + b"\x00\x00\x00\x01"
        + fragment
        + bytes((64, protocol))
        + b"\x00\x00"
        + draw(FLOW_ADDRESSES)
        + draw(FLOW_ADDRESSES)
        + bytes(4 * (version - 0x45))
    )
    transport = draw(FLOW_PORTS) + draw(FLOW_PORTS) + bytes(9) + bytes((draw(u8),)) + bytes(6)
    frame = bytes(6) + bytes(6) + draw(st.sampled_from([b"\x08\x00", b"\x08\x00", b"\x86\xdd"]))
    frame += header + transport + draw(st.binary(max_size=4))
    return frame[: draw(st.sampled_from([len(frame), len(frame), 40, 47]))]


@given(st.lists(st.tuples(st.sampled_from(["send", "pin", "release"]), sent_frames()), max_size=30))
def test_sent_of_a_pinned_connection_is_the_general_sent(
    steps: list[tuple[str, bytes]],
) -> None:
    """The frame policy's shortcut for segments of pinned connections (and
    its memory of the last one) leaves the flows it remembers as the
    general code does, through pins and releases."""
    fast, general = FramePolicy(0), FramePolicy(0)
    for action, frame in steps:
        key = frame[30:34] + frame[26:30] + frame[36:38] + frame[34:36]
        if action == "pin":
            fast.pin(key)
            general.pin(key)
        elif action == "release":
            fast.release(key)
            general.release(key)
        else:
            fast.sent(frame)
            general._sent_general(frame)
        for kind in ("flows", "handshakes", "datagrams", "connections"):
            assert list(getattr(fast, kind)) == list(getattr(general, kind))


def test_writes_waiting_together_all_go_out() -> None:
    """Two writes the device refused at first (a full buffer) both go out
    once it takes frames again: one waiting must not silence the other's
    wake-up (the loop holds one writer callback an fd)."""

    async def run() -> list[tuple[bytes, int | None]]:
        network = _ImmediateNetwork({1, 2})
        device = network._device
        await asyncio.wait_for(asyncio.gather(device.write(b"1"), device.write(b"2")), 5)
        await network.disconnect()
        return network.sent

    assert asyncio.run(run()) == [(b"1", None), (b"2", None)]


def test_a_write_behind_a_waiting_one_keeps_its_place() -> None:
    """A frame written while an earlier one waits for the device goes out
    after it, though the device would take it at once."""

    async def run() -> list[tuple[bytes, int | None]]:
        network = _ImmediateNetwork({1})
        device = network._device
        first = device.write_now(b"1")
        assert first is not None  # refused: it waits for the device
        waiting = asyncio.ensure_future(first)
        await asyncio.sleep(0)  # (it now waits for the fd to be writable)
        second = device.write_now(b"2")
        assert second is not None and network.sent == []
        await asyncio.wait_for(asyncio.gather(waiting, second), 5)
        await network.disconnect()
        return network.sent

    assert asyncio.run(run()) == [(b"1", None), (b"2", None)]


class _SteppedTime:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 10**12

    def now_ns(self) -> int:
        return self.now


_NEIGHBOURS = [IPv4Address(f"10.0.0.{n}") for n in (1, 2)]
_MACS = [MacAddress(bytes([2, 0, 0, 0, 0, n])) for n in (1, 2)]


class ArpLookupMachine(RuleBasedStateMachine):
    """ArpLayer.lookup gives a binding found in use before without looking
    it up again: what it returns and the refresh requests it sends are what
    the bindings say, whatever is learned, forgotten or aged between (the
    address given as the object used before, as IPv4 gives it, or as an
    equal new one)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.time = _SteppedTime()
        self.arp = ArpLayer(
            EthernetLayer(MemorySwitch().port()),
            self.time,  # type: ignore[arg-type]
            addresses=[IPv4Address("10.0.0.9")],
        )
        self.lifetime = self.arp.cache.lifetime_ns
        self.bound: dict[IPv4Address, tuple[MacAddress, int]] = {}  # the model
        self.refreshing: set[IPv4Address] = set()

    @rule(which=st.integers(0, 1), mac=st.sampled_from(_MACS), unsolicited=st.booleans())
    def learn(self, which: int, mac: MacAddress, unsolicited: bool) -> None:
        address = _NEIGHBOURS[which]
        self.arp.cache.learn(address, mac, self.time.now, unsolicited=unsolicited)
        if address in self.arp.cache:
            self.bound[address] = (mac, self.time.now + self.lifetime)

    @rule(which=st.integers(0, 1))
    def forget(self, which: int) -> None:
        self.arp.cache.forget(_NEIGHBOURS[which])
        self.bound.pop(_NEIGHBOURS[which], None)

    # (none, a little, and across the refresh point and the expiry)
    @rule(ns=st.sampled_from([0, 10**6, 10**9, 50 * 10**9, 54 * 10**9, 55 * 10**9, 61 * 10**9]))
    def wait(self, ns: int) -> None:
        self.time.now += ns

    @rule(which=st.integers(0, 1), same=st.sampled_from([True, True, True, False]))
    def lookup(self, which: int, same: bool) -> None:
        address = _NEIGHBOURS[which]
        arp = self.arp
        requests = arp.counters["tx_request"]

        async def look() -> MacAddress | None:
            return arp.lookup(address if same else IPv4Address(str(address)))

        mac = self.loop.run_until_complete(look())
        entry = self.bound.get(address)
        now = self.time.now
        if entry is None or now >= entry[1]:
            self.bound.pop(address, None)
            self.refreshing.discard(address)
            assert mac is None
            assert arp.counters["tx_request"] == requests
            return
        assert mac == entry[0]
        due = entry[1] - now < self.lifetime // 10 and address not in self.refreshing
        if due:
            self.refreshing.add(address)
        assert arp.counters["tx_request"] == requests + due

    def teardown(self) -> None:
        self.loop.run_until_complete(self.arp.stop())
        self.loop.close()


TestArpLookup = ArpLookupMachine.TestCase
TestArpLookup.settings = settings(max_examples=300, stateful_step_count=25)
