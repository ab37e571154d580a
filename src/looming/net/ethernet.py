"""Ethernet II over a :class:`~looming.devices.net.Network`: framing and
demultiplexing by EtherType."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol, runtime_checkable

from looming.devices.net import (
    Capabilities,
    EthernetHandler,
    FrameHandler,
    MacAddress,
    Network,
    SegmentingNetwork,
)
from looming.devices.time import Time
from looming.errors import Malformed
from looming.net.wire import ethernet as wire
from looming.net.wire._cache import mac_address

Address = IPv4Address | IPv6Address

_BROADCAST = b"\xff" * 6
_VLAN = 0x8100
_QINQ = 0x88A8


@runtime_checkable
class BatchingNetwork(Protocol):
    """A network that hands up the frames of one wake-up together (TAP,
    AF_PACKET) and says when the last one of them is in."""

    def after_batch(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` after each wake-up's frames went to the handler."""


@runtime_checkable
class ImmediateNetwork(Protocol):
    """A network that sends a frame without a coroutine while its device
    takes frames at once (TAP, AF_PACKET)."""

    def write_now(self, frame: bytes) -> Awaitable[None] | None:
        """Send ``frame`` now if the device takes it (None), else give what
        sends it once the device can (to be awaited)."""


@runtime_checkable
class ImmediateSegmentingNetwork(Protocol):
    """:class:`ImmediateNetwork` for the frames a segmenting interface cuts up."""

    def write_segmented_now(self, frame: bytes, segment_size: int) -> Awaitable[None] | None:
        """:meth:`ImmediateNetwork.write_now` for
        :meth:`~looming.devices.net.SegmentingNetwork.write_segmented`."""


_IPV4 = b"\x08\x00"
_IPV4_PLAIN = b"\x08\x00\x45"  # IPv4, a header without options
_IPV6 = b"\x86\xdd"
_TAGGED = b"\x81\x00"
_DOUBLE_TAGGED = b"\x88\xa8"
_TCP = 6
_UDP = 17
_RST = 0x04
_SYN = 0x02


def _transport_offset(frame: bytes) -> int:
    """Where the TCP or UDP header of an untagged IPv4 or IPv6 frame starts,
    or 0 if it holds neither right after the IP header (or is an IPv4
    fragment past the first)."""
    ethertype = frame[12:14]
    if ethertype == _IPV4:
        if len(frame) < 38 or frame[20] & 0x1F or frame[21]:
            return 0
        protocol = frame[23]
        offset = 14 + (frame[14] & 0x0F) * 4
    elif ethertype == _IPV6:
        if len(frame) < 58:
            return 0
        protocol = frame[20]
        offset = 54
    else:
        return 0
    if protocol != _TCP and protocol != _UDP:
        return 0
    return offset


def sent_flow(frame: bytes) -> bytes | None:
    """The flow key of the segments or datagrams that answer this outgoing
    frame, as :meth:`FramePolicy.verdict` reads it from them (source and
    destination address, source and destination port); None if it vouches
    for no flow (not TCP or UDP, or a TCP reset)."""
    sent = _sent_flow(frame)
    return None if sent is None else sent[0]


def connection_flow(local: Address, local_port: int, remote: Address, remote_port: int) -> bytes:
    """The flow key :meth:`FramePolicy.verdict` reads from the segments of
    a TCP connection from ``remote`` to ``local`` (IPv4 or IPv6)."""
    return (
        remote.packed
        + local.packed
        + remote_port.to_bytes(2, "big")
        + local_port.to_bytes(2, "big")
    )


_SENT_UDP = 0
_SENT_TCP = 1
_SENT_SYN = 2


def _sent_flow(frame: bytes) -> tuple[bytes, int] | None:
    """:func:`sent_flow`, and what the frame is: a UDP datagram, a TCP
    segment or a TCP SYN (with ACK or not)."""
    offset = _transport_offset(frame)
    if not offset or len(frame) < offset + 8:
        return None
    ipv4 = frame[12] == 0x08
    kind = _SENT_UDP
    if (frame[23] if ipv4 else frame[20]) == _TCP:
        if len(frame) < offset + 14 or frame[offset + 13] & _RST:
            return None
        kind = _SENT_SYN if frame[offset + 13] & _SYN else _SENT_TCP
    addresses = frame[30:34] + frame[26:30] if ipv4 else frame[38:54] + frame[22:38]
    return addresses + frame[offset + 2 : offset + 4] + frame[offset : offset + 2], kind


class FramePolicy:
    """Which received frames are worth parsing when they arrive faster than
    a pure-Python stack can parse them, decided from a few bytes.

    Segments of every TCP connection the TCP layer holds (:meth:`pin` when
    it is created, :meth:`release` when it is gone: any churn of other
    flows leaves them in), UDP datagrams to bound ports and frames of other
    flows this host sent on lately (:meth:`sent`; bounded LRUs, TCP resets
    excepted, handshakes and UDP datagrams each in an LRU of their own)
    always pass. The rest are
    policed before any parsing, each class by its own token bucket, and
    counted by reason in the layer's counters:
    ``syn_policed`` (TCP connection requests), ``tcp_stray_policed`` (TCP
    segments of no known flow: stray ACKs, resets, probes),
    ``udp_stray_policed`` (datagrams to unbound ports) and
    ``fragment_policed`` (IPv4 fragments that would start a new
    reassembly). A flood of any of them then costs a few byte comparisons
    a frame, and established connections' segments never queue behind it.

    A SYN beyond the budget whose IP source is a neighbour bound (ARP,
    Neighbor Discovery) to the frame's Ethernet source is not a stranger:
    a real on-link client resolved our address before it connected, and
    we learned its MAC then (RFC 826's merge rule). Such SYNs take a
    token of a budget of their own (``syn_from_neighbour``; beyond it
    ``syn_neighbour_policed``), so a flood from spoofed on-link sources
    does not delay them. Checked only once the shared budget is spent.
    """

    def __init__(
        self,
        now_ns: int,
        *,
        syn_rate: int = 2000,
        syn_burst: int = 64,
        stray_rate: int = 1000,
        stray_burst: int = 100,
        fragment_rate: int = 10_000,
        fragment_burst: int = 1000,
        max_flows: int = 16384,
        max_handshakes: int = 4096,
        max_reassemblies: int = 256,
        max_pieces: int = 128,
    ) -> None:
        self.syn = TokenBucket(syn_rate, syn_burst, now_ns)
        self.neighbour_syn = TokenBucket(5 * syn_rate, 4 * syn_burst, now_ns)
        # Whether (IP source, Ethernet source) of a frame is a bound
        # neighbour: set by ARP (IPv4) and Neighbor Discovery (IPv6).
        self.bound_v4: Callable[[bytes, bytes], bool] | None = None
        self.bound_v6: Callable[[bytes, bytes], bool] | None = None
        self.counters: Counter[str] = Counter()
        self.stray = TokenBucket(stray_rate, stray_burst, now_ns)
        self.fragments = TokenBucket(fragment_rate, fragment_burst, now_ns)
        self.max_flows = max_flows
        self.max_handshakes = max_handshakes
        self.max_reassemblies = max_reassemblies
        self.max_pieces = max_pieces
        # Flow keys (sent_flow) of frames sent but SYNs, least recently sent
        # first; and apart, those of SYNs and SYN-ACKs (cookies among them:
        # a SYN flood must not push established flows out).
        self.flows: dict[bytes, None] = {}
        self.handshakes: dict[bytes, None] = {}
        # Those of UDP datagrams sent, apart (up to max_flows): a TCP
        # segment passes on no datagram's account, nor one on a segment's.
        self.datagrams: dict[bytes, None] = {}
        # Raw IPv4 reassembly keys admitted lately, oldest first, and the
        # pieces of each let in.
        self.reassemblies: dict[bytes, int] = {}
        # Bound UDP ports, two bytes each (network order).
        self.udp_ports: set[bytes] = set()
        # Flow keys of the TCP connections the TCP layer holds, in any
        # state (pin/release); bounded by its connection limit and backlogs.
        self.connections: set[bytes] = set()
        # The addresses and ports (IPv4 bytes 12-24) of the last segment sent
        # of a connection in there, or empty.
        self._pinned_sent = b""

    def pin(self, key: bytes) -> None:
        """A TCP connection (key: :func:`connection_flow`) was created: its
        segments pass until :meth:`release`, however many other flows are
        sent on meanwhile."""
        self.connections.add(key)

    def release(self, key: bytes) -> None:
        """The TCP connection of ``key`` is gone: its late segments pass
        while it stays among the flows sent on lately."""
        if key in self.connections:
            self.connections.discard(key)
            self._pinned_sent = b""
            self._remember(self.flows, key, self.max_flows)

    def sent(self, frame: bytes) -> None:
        """An outgoing frame: its flow's answers pass unpoliced from now on."""
        if (
            frame[12:15] == _IPV4_PLAIN
            and frame[23] == _TCP
            and len(frame) >= 48
            and not frame[20] & 0x1F
            and not frame[21]
        ):
            # A segment of a connection the TCP layer holds changes nothing:
            # the last such flow is known by its addresses and ports alone.
            flow = frame[26:38]
            if flow == self._pinned_sent:
                return
            key = frame[30:34] + frame[26:30] + frame[36:38] + frame[34:36]
            if key in self.connections:
                self._pinned_sent = flow
                return
        self._sent_general(frame)

    def _sent_general(self, frame: bytes) -> None:
        """:meth:`sent` for any frame."""
        sent = _sent_flow(frame)
        if sent is None:
            return
        key, kind = sent
        if kind == _SENT_UDP:
            self._remember(self.datagrams, key, self.max_flows)
        elif key not in self.connections:  # a pinned connection needs no place
            if kind == _SENT_SYN:
                self._remember(self.handshakes, key, self.max_handshakes)
            else:
                self._remember(self.flows, key, self.max_flows)

    @staticmethod
    def _remember(flows: dict[bytes, None], key: bytes, limit: int) -> None:
        """``key`` the most recent of ``flows``, the least recent out beyond ``limit``."""
        if flows.pop(key, 0) is None:
            flows[key] = None
            return
        flows[key] = None
        if len(flows) > limit:
            del flows[next(iter(flows))]

    def verdict(self, frame: bytes, now: Callable[[], int]) -> str | None:
        """None for a frame to parse; else the reason it is dropped."""
        if (
            frame[12:14] == _IPV4
            and len(frame) >= 48
            and frame[14] == 0x45  # no options: addresses and ports lie together
            and frame[23] == _TCP
            and not frame[20] & 0x3F  # no fragment
            and not frame[21]
            and frame[47] & 0x12 != 0x02  # no SYN without ACK
            and frame[26:38] in self.connections
        ):
            return None  # the common frame: a segment of a connection we hold
        return self._general_verdict(frame, now)

    def _general_verdict(self, frame: bytes, now: Callable[[], int]) -> str | None:
        """:meth:`verdict` for any frame."""
        ethertype = frame[12:14]
        if ethertype == _IPV4:
            if len(frame) < 34:
                return None
            if frame[20] & 0x3F or frame[21]:
                return self._fragment(frame, now)
            protocol = frame[23]
            offset = 14 + (frame[14] & 0x0F) * 4
            addresses = frame[26:34]
        elif ethertype == _IPV6:
            if len(frame) < 58:
                return None
            protocol = frame[20]
            offset = 54
            addresses = frame[22:54]
        elif ethertype in (_TAGGED, _DOUBLE_TAGGED):
            # Judged as the frame without its tag: a tag must not be a way round.
            return self.verdict(frame[:12] + frame[16:], now)
        else:
            return None
        if protocol == _TCP:
            if len(frame) <= offset + 13:
                return None
            if frame[offset + 13] & 0x12 == 0x02:  # SYN without ACK
                return None if self.syn.take(now()) else self._syn_beyond_budget(frame, now)
            key = addresses + frame[offset : offset + 4]
            if key in self.connections or key in self.flows or key in self.handshakes:
                return None
            return None if self.stray.take(now()) else "tcp_stray_policed"
        if protocol == _UDP and len(frame) >= offset + 8:
            if frame[offset + 2 : offset + 4] in self.udp_ports:
                return None
            if addresses + frame[offset : offset + 4] in self.datagrams:
                return None
            return None if self.stray.take(now()) else "udp_stray_policed"
        return None

    def _syn_beyond_budget(self, frame: bytes, now: Callable[[], int]) -> str | None:
        """A SYN the shared budget refused: one from a bound neighbour
        takes a token of the neighbours' budget instead."""
        if frame[12:14] == _IPV4:
            bound, source = self.bound_v4, frame[26:30]
        else:
            bound, source = self.bound_v6, frame[22:38]
        if bound is None or not bound(source, frame[6:12]):
            return "syn_policed"
        if not self.neighbour_syn.take(now()):
            return "syn_neighbour_policed"
        self.counters["syn_from_neighbour"] += 1
        return None

    def _fragment(self, frame: bytes, now: Callable[[], int]) -> str | None:
        """An IPv4 fragment: one of a reassembly admitted lately passes, up
        to ``max_pieces`` of it (the reassembler's own limit: beyond, a
        flood of one datagram's pieces); one that would start another takes
        a token of the fragment bucket."""
        key = frame[26:34] + frame[18:20] + frame[23:24]
        reassemblies = self.reassemblies
        pieces = reassemblies.get(key)
        if pieces is not None:
            if pieces >= self.max_pieces:
                return "fragment_policed"
            reassemblies[key] = pieces + 1
            return None
        if not self.fragments.take(now()):
            return "fragment_policed"
        reassemblies[key] = 1
        if len(reassemblies) > self.max_reassemblies:
            del reassemblies[next(iter(reassemblies))]
        return None


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
        stray_rate: int = 1000,
        fragment_rate: int = 10_000,
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
        # Where the interface says at once whether it took a frame, a frame
        # goes out without a coroutine (see write_now).
        self._write_now = network.write_now if isinstance(network, ImmediateNetwork) else None
        self._write_segmented_now = (
            network.write_segmented_now
            if self._write_segmented is not None and isinstance(network, ImmediateSegmentingNetwork)
            else None
        )
        # The last frame header sent: destination, EtherType, header.
        self._head: tuple[bytes, int, bytes] = (b"", -1, b"")
        self._handlers: dict[int, EthernetHandler] = {}
        self._whole_handlers: dict[int, Callable[[bytes, bool], None]] = {}
        self.counters: Counter[str] = Counter()
        self.last_handler_error: Exception | None = None
        # What runs once a wake-up's frames are all in (see after_batch);
        # in_batch: frames of such a wake-up are being handed up now.
        self._batch_ends: list[Callable[[], None]] = []
        self.in_batch = False
        self._batching = False
        if isinstance(network, BatchingNetwork):
            network.after_batch(self._end_batch)
            self._batching = True
        # Connection requests (TCP SYNs) beyond syn_rate a second, after a
        # burst of syn_burst, segments and datagrams of no known flow beyond
        # stray_rate and new IPv4 reassemblies beyond fragment_rate are
        # dropped before any parsing (with a Time device only): see
        # FramePolicy.
        self._time = time
        now = time.now_ns() if time is not None else 0
        self.policy = FramePolicy(
            now,
            syn_rate=syn_rate,
            syn_burst=syn_burst,
            stray_rate=stray_rate,
            fragment_rate=fragment_rate,
        )
        self.policy.counters = self.counters

    @property
    def syn_burst(self) -> int:
        return self.policy.syn.burst

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

    def register(
        self,
        ethertype: int,
        handler: EthernetHandler,
        *,
        whole: Callable[[bytes, bool], None] | None = None,
    ) -> None:
        """Hand frames of ``ethertype`` to ``handler``; with ``whole``, those
        untagged and sent to our own MAC to ``whole`` instead, given the
        frame as it came and whether its checksum was verified: it must do
        what ``handler`` does with that frame's source, our MAC and its
        payload (the common frame's path, with no payload copied or
        address object looked up for it)."""
        self._handlers[ethertype] = handler
        if whole is None:
            self._whole_handlers.pop(ethertype, None)
        else:
            self._whole_handlers[ethertype] = whole

    def after_batch(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` each time the interface has handed up all the
        frames one wake-up found, in the same turn of the event loop (so a
        layer can end its pass there: flush ACKs, send, re-arm timers).
        False when the interface does not say (a layer then ends its pass
        on the next turn of the loop); while :attr:`in_batch` is true, the
        callback is sure to follow."""
        self._batch_ends.append(callback)
        return self._batching

    def _end_batch(self) -> None:
        self.in_batch = False
        for callback in self._batch_ends:
            try:
                callback()
            except Exception as error:
                self.counters["handler_error"] += 1
                self.last_handler_error = error

    @property
    def frame_handler(self) -> FrameHandler:
        """What the interface is to hand received frames to: :meth:`input`,
        marking the frames of a wake-up the interface ends (after_batch)."""
        return self._input_batched if self._batching else self.input

    def _input_batched(self, frame: bytes, checksum_verified: bool = False) -> None:
        self.in_batch = True
        self.input(frame, checksum_verified)

    def input(self, frame: bytes, checksum_verified: bool = False) -> None:
        counters = self.counters
        if self._time is not None and type(frame) is bytes:
            if not frame.startswith(self._mac) and len(frame) >= 6 and not frame[0] & 1:
                # Another host's unicast: it must not spend our budgets.
                counters["not_for_us"] += 1
                return
            reason = self.policy.verdict(frame, self._time.now_ns)
            if reason is not None:
                counters[reason] += 1
                return
        if type(frame) is bytes and len(frame) >= wire.HEADER_LENGTH:
            # The common untagged frame, read without a header object.
            ethertype = frame[12] << 8 | frame[13]
            if ethertype >= 0x0600 and ethertype != _VLAN and ethertype != _QINQ:
                whole = self._whole_handlers.get(ethertype)
                if whole is not None and frame.startswith(self._mac):
                    counters["rx_frames"] += 1
                    try:
                        whole(frame, checksum_verified)
                    except Exception as error:  # (as _dispatch)
                        counters["handler_error"] += 1
                        self.last_handler_error = error
                    return
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
        pending = self.write_now(destination, ethertype, payload, segment_size=segment_size)
        if pending is not None:
            await pending

    def write_now(
        self,
        destination: MacAddress,
        ethertype: int,
        payload: bytes,
        *,
        segment_size: int | None = None,
    ) -> Awaitable[None] | None:
        """:meth:`write` without a coroutine when the interface takes the
        frame at once (:class:`ImmediateNetwork`): None once it is sent,
        else what finishes sending it, to be awaited."""
        head = self._head
        if head[0] is not destination or head[1] != ethertype:
            self._head = head = (
                destination,
                ethertype,
                destination + self._mac + ethertype.to_bytes(2, "big"),
            )
        frame = head[2] + payload
        self.counters["tx_frames"] += 1
        self.policy.sent(frame)
        if segment_size is not None:
            if self._write_segmented is None:
                raise ValueError(
                    "this network interface cannot segment TCP packets: "
                    "give segment_size only when capabilities.segmentation is set"
                )
            segmented_now = self._write_segmented_now
            if segmented_now is not None:
                return segmented_now(frame, segment_size)
            return self._write_segmented(frame, segment_size)
        write_now = self._write_now
        if write_now is not None:
            return write_now(frame)
        return self._network.write(frame)
