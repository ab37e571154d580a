"""A frame's way up to TCP in one pass, taken whole (Ethernet hands IPv4
the frame as it came, IPv4 hands TCP the fields it reads without a packet
object) against the layer-by-layer path it stands in for, on generated
frames: the same deliveries, counters and handler errors."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

from hypothesis import given
from hypothesis import strategies as st

from looming.devices.net import MacAddress, ReceivedPacket
from looming.net.arp import ArpLayer
from looming.net.ethernet import EthernetLayer
from looming.net.ipv4 import Ipv4Layer
from looming.net.netif.memory import MemorySwitch
from looming.net.wire import ipv4
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime

OURS = MacAddress(b"\x02\x00\x00\x00\x00\x01")
LOCAL = IPv4Interface("10.0.0.2/24")
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)

Delivery = tuple[object, ...]


class Stack:
    """Ethernet and IPv4 with recording TCP and UDP handlers; ``whole``
    registers the whole-frame and plain paths, as the direct stack does."""

    def __init__(self, *, whole: bool) -> None:
        self.delivered: list[Delivery] = []
        self.ethernet = EthernetLayer(MemorySwitch().port(OURS))
        time = UnixTime()
        self.ipv4 = Ipv4Layer(
            self.ethernet, ArpLayer(self.ethernet, time), time, UnixRandom(1), interface=LOCAL
        )
        if whole:
            self.ipv4.register(6, self._tcp, plain=self._tcp_plain)
        else:
            # What IPv4 registered before the whole-frame path existed.
            self.ethernet.register(0x0800, self.ipv4._on_frame)
            self.ipv4.register(6, self._tcp)
        self.ipv4.register(17, self._udp)

    def _tcp(self, packet: ReceivedPacket[IPv4Address], payload: bytes) -> None:
        self._tcp_plain(
            packet.source,
            packet.destination,
            packet.traffic_class,
            packet.checksum_verified,
            payload,
        )

    def _tcp_plain(
        self,
        source: IPv4Address,
        destination: IPv4Address,
        traffic_class: int,
        verified: bool,
        payload: bytes,
    ) -> None:
        if payload[:4] == b"boom":
            raise RuntimeError("a handler bug")
        self.delivered.append(("tcp", source, destination, traffic_class, verified, payload))

    def _udp(self, packet: ReceivedPacket[IPv4Address], payload: bytes) -> None:
        self.delivered.append(
            (
                "udp",
                packet.source,
                packet.destination,
                packet.protocol,
                packet.hop_limit,
                packet.traffic_class,
                packet.checksum_verified,
                bytes(packet.header),
                payload,
            )
        )

    def outcome(self) -> tuple[object, ...]:
        error = self.ethernet.last_handler_error
        return (
            self.delivered,
            self.ethernet.counters,
            self.ipv4.counters,
            None if error is None else (type(error), str(error)),
        )


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, bool]:
    """IPv4 frames, mostly well formed and to us, some broken anywhere."""
    header = ipv4.Ipv4Header(
        source=IPv4Address(draw(st.sampled_from(["10.0.0.1", "8.8.8.8", "127.0.0.1"]))),
        destination=IPv4Address(
            draw(st.sampled_from(["10.0.0.2", "10.0.0.2", "10.0.0.255", "10.0.0.3"]))
        ),
        protocol=draw(st.sampled_from([6, 6, 17, 1])),
        ttl=draw(u8),
        identification=draw(u16),
        dont_fragment=draw(st.booleans()),
        more_fragments=draw(st.sampled_from([False, False, True])),
        tos=draw(u8),
        options=draw(st.sampled_from([b"", b"", b"", b"\x01\x01\x01\x00"])),
    )
    payload = draw(st.sampled_from([b"", b"boom", b"x" * 20])) + draw(st.binary(max_size=40))
    packet = bytearray(ipv4.emit(header, payload))
    packet += draw(st.binary(max_size=4))  # link-layer padding
    if draw(st.integers(0, 3)) == 0:
        index = draw(st.integers(0, len(packet) - 1))
        packet[index] ^= draw(st.integers(1, 255))
    if draw(st.integers(0, 7)) == 0:
        del packet[draw(st.integers(0, len(packet))) :]  # cut short
    destination = draw(
        st.sampled_from([bytes(OURS), bytes(OURS), b"\xff" * 6, b"\x01\x00\x5e\x00\x00\x01"])
    )
    source = draw(st.sampled_from([b"\x02\x00\x00\x00\x00\x09", b"\x03\x00\x00\x00\x00\x09"]))
    return destination + source + b"\x08\x00" + bytes(packet), draw(st.booleans())


@given(st.lists(frames(), max_size=8))
def test_whole_frames_reach_tcp_as_layer_by_layer(arrivals: list[tuple[bytes, bool]]) -> None:
    whole, general = Stack(whole=True), Stack(whole=False)
    for frame, verified in arrivals:
        whole.ethernet.input(frame, verified)
        general.ethernet.input(frame, verified)
    assert whole.outcome() == general.outcome()


def test_a_handler_registered_later_replaces_the_whole_frame_path() -> None:
    """A protocol registered again without ``plain`` (as tests and taps do)
    gets every datagram, the common ones too."""
    stack = Stack(whole=True)
    seen: list[bytes] = []
    stack.ipv4.register(6, lambda packet, payload: seen.append(payload))
    header = ipv4.Ipv4Header(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), 6)
    frame = bytes(OURS) + b"\x02\x00\x00\x00\x00\x09\x08\x00" + ipv4.emit(header, b"segment")
    stack.ethernet.input(frame)
    assert seen == [b"segment"]
    assert stack.delivered == []
