"""All TCP connections of one host, without I/O: demultiplexing, listeners,
the SYN backlog with SYN cookies, and resets for segments that belong to no
connection (RFC 9293 3.10.7.1 and 3.10.7.2).

The owner feeds received segments to :meth:`TcpEndpoint.input`, calls user
operations on connections and then :meth:`TcpEndpoint.collect`, and takes
:meth:`TcpEndpoint.take_outbox` (segments to transmit, already encoded with
their checksum) and :meth:`TcpEndpoint.take_touched` (connections with their
new events, whose timers may have moved).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from looming.errors import AddressInUse, Malformed
from looming.net.tcp.config import MS, TcpConfig, TcpStats
from looming.net.tcp.connection import Event, State, TcpConnection
from looming.net.tcp.isn import (
    COOKIE_MAX_AGE_PERIODS,
    COOKIE_PERIOD_NS,
    FourTuple,
    IsnGenerator,
    SynCookies,
)
from looming.net.tcp.receive_buffer import MemoryPool
from looming.net.tcp.seq import MASK, unwrap
from looming.net.tcp.tcb import sack_option_space
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK, PSH, RST, SYN, TcpHeader

# Resets sent in answer to segments of no connection, at most this many a
# second after a burst (FreeBSD's net.inet.icmp.icmplim is 200).
RESET_RATE = 200
RESET_BURST = 50
# How long a cookie sent stays valid (SynCookies.check).
_COOKIE_LIFETIME_NS = (COOKIE_MAX_AGE_PERIODS + 1) * COOKIE_PERIOD_NS

Address = IPv4Address | IPv6Address

TCP_HEADER_LENGTH = 20
ECT0 = 0b10  # RFC 3168: the ECN field of an ECN-capable packet
# States every segment's path tests, read once: Python 3.11 reads an enum
# member through its class by EnumType's __getattr__ hook, some 0.1 us each.
_CLOSED, _TIME_WAIT, _SYN_RECEIVED = State.CLOSED, State.TIME_WAIT, State.SYN_RECEIVED


@dataclass(slots=True)
class ListenerState:
    """A listening port and how many of its connections are half open."""

    port: int
    host: Address | None
    backlog: int
    half_open: int = 0


Touched = tuple[FourTuple, TcpConnection, list[Event]]
# A segment as it arrived: source, destination, the segment, whether the
# interface verified its checksum, whether its IP header was marked CE.
Arrival = tuple[Address, Address, bytes, bool, bool]


@dataclass(slots=True)
class _Merge:
    """Data segments of one connection from one burst that follow each
    other, alike in every header field but the sequence number and PSH."""

    src: Address
    dst: Address
    header: TcpHeader  # the first one's
    # Each one's header; None for one taken by its bytes alone (see
    # _continues), parsed only should the run go one by one after all.
    headers: list[TcpHeader | None]
    segments: list[bytes]
    options: bytes
    ce: bool
    payloads: list[memoryview]
    end: int  # the wire sequence number after the last
    # The first one's fixed header but the sequence number, checksum and
    # urgent pointer, as _FIXED reads them, PSH left out of the flags.
    fixed: tuple[int, int, int, int, int]
    header_length: int


class TcpEndpoint:
    """The connection table and listeners of one TCP layer."""

    def __init__(
        self,
        config: TcpConfig,
        stats: TcpStats,
        *,
        secret: bytes,
        mtu_for: Callable[[Address], int],
        segment_limit_for: Callable[[Address], int] | None = None,
        max_connections: int | None = None,
        memory_limit: int | None = None,
        defer_output: bool = False,
    ) -> None:
        """``defer_output``: connections send what arriving segments let out
        only at ``flush_ack`` (see :attr:`Event.ACK_DUE`), once per burst."""
        self.config = config
        self.defer_output = defer_output
        # Connections in any state (TIME-WAIT too); None for no limit.
        self.max_connections = max_connections
        # Receive memory of all connections together, charged by true size.
        self.pool = MemoryPool(memory_limit)
        self.connection_limit_dropped = 0
        self.stats = stats
        self._mtu_for = mtu_for
        self._segment_limit_for = segment_limit_for
        self._isn = IsnGenerator(secret[:16] + secret[-16:])
        self._cookies = SynCookies(secret[16:] + secret[:16])
        # When the last cookie went out: an ACK is checked as one only while
        # a cookie sent could still be valid (Linux: after a recent SYN-queue
        # overflow); otherwise a stray ACK costs no cookie check.
        self._cookie_sent_ns: int | None = None
        # Resets answering segments of no connection: a token bucket of
        # RESET_RATE a second (FreeBSD's default), beyond counted in
        # rst_ratelimited.
        self._reset_tokens = float(RESET_BURST)
        self._reset_refilled_ns = 0
        self.connections: dict[FourTuple, TcpConnection] = {}
        # Told of each key entering and leaving connections (the link's
        # frame policy lets the segments of those in it pass).
        self.on_adopt: Callable[[FourTuple], None] | None = None
        self.on_release: Callable[[FourTuple], None] | None = None
        self._recent: tuple[TcpConnection, FourTuple] | None = None
        self.listeners: dict[int, ListenerState] = {}
        self._half_open: dict[FourTuple, int] = {}
        self._outbox: list[tuple[Address, bytes, int | None, int, Address]] = []
        self._touched: list[Touched] = []
        self.accepted: list[tuple[int, FourTuple, TcpConnection]] = []
        low, high = config.ephemeral_ports
        self._port_span = high - low + 1
        self._port_cursor = int.from_bytes(secret[:4], "big") % self._port_span

    # ------------------------------------------------------------------ output

    def take_outbox(self) -> list[tuple[Address, bytes, int | None]]:
        """(destination, encoded segment, segment size) to transmit, in order.

        The segment size is given for a packet of several segments that the
        interface is to cut up (segmentation offload), else it is None.
        """
        return [(d, segment, size) for d, segment, size, _, _ in self.take_marked_outbox()]

    def take_marked_outbox(self) -> list[tuple[Address, bytes, int | None, int, Address]]:
        """As :meth:`take_outbox`, with each packet's IP ToS byte: 2 (ECT(0),
        RFC 3168) for new data on a connection that agreed to ECN, else 0;
        and the source address its checksum was computed with (the IP layer
        must send from that address, whatever it would choose itself)."""
        out = self._outbox
        self._outbox = []
        return out

    def take_touched(self) -> list[Touched]:
        touched = self._touched
        self._touched = []
        return touched

    def take_accepted(self) -> list[tuple[int, FourTuple, TcpConnection]]:
        accepted = self.accepted
        self.accepted = []
        return accepted

    def _send(self, key: FourTuple, header: TcpHeader, payload: bytes = b"") -> None:
        local_ip, _, remote_ip, _ = key
        self._outbox.append(
            (remote_ip, wire.emit(header, payload, src=local_ip, dst=remote_ip), None, 0, local_ip)
        )

    def collect(self, key: FourTuple, conn: TcpConnection) -> None:
        """Move a connection's segments and events out after any call on it."""
        local_ip, _, remote_ip, _ = key
        segments = conn.outbox
        if segments:
            # (What conn.take_outbox_marked gives, without pairing them first.)
            marks = conn.outbox_ect
            conn.outbox = []
            conn.outbox_ect = []
            emit = wire.emit
            mss = conn.send_mss
            # (A path-MTU probe is one larger segment, sent whole with DF.)
            search = conn.mtu_search
            probe = search.probe_wire_seq if search is not None else -1
            outbox = self._outbox
            # A packet of several segments goes to an interface that cuts it
            # up and checksums each piece: summing it here would be wasted,
            # so it leaves with only the pseudo-header sum (the IPv4 layer
            # finishes it should it not be offloaded after all).
            for (header, payload), ect in zip(segments, marks, strict=True):
                size: int | None = None
                if payload:
                    # Segments carrying SACK blocks were cut smaller to leave room.
                    blocks = header.sack_blocks
                    whole = mss - sack_option_space(len(blocks)) if blocks else mss
                    if len(payload) > whole and header.seq != probe:
                        size = whole
                segment = emit(
                    header, payload, src=local_ip, dst=remote_ip, partial_checksum=size is not None
                )
                outbox.append((remote_ip, segment, size, ECT0 if ect else 0, local_ip))
        events = conn.take_events()
        for event in events:
            if event is Event.CONNECTED:
                port = self._half_open.pop(key, None)
                if port is not None:
                    self._leave_backlog(port)
                    self.stats.connections_accepted += 1
                    self.accepted.append((port, key, conn))
            elif event is Event.CLOSED:
                conn.receive_buffer.release()
                conn.send_buffer.release()
                if self.connections.get(key) is conn:
                    del self.connections[key]
                    if self.on_release is not None:
                        self.on_release(key)
                port = self._half_open.pop(key, None)
                if port is not None:
                    self._leave_backlog(port)
        self._touched.append((key, conn, events))

    def _leave_backlog(self, port: int) -> None:
        listener = self.listeners.get(port)
        if listener is not None:
            listener.half_open = max(listener.half_open - 1, 0)

    # ------------------------------------------------------------------ user side

    def path_mss(self, remote: Address) -> int:
        """MSS for ``remote``: the IPv4 layer's largest unfragmented payload less our header."""
        try:
            ip_payload = self._mtu_for(remote)
        except Exception:
            ip_payload = 556  # the 576-byte datagram every host must accept, less IP
        return max(ip_payload - TCP_HEADER_LENGTH, 88)

    def offload_bytes(self, remote: Address) -> int:
        """Payload bytes one offloaded packet to ``remote`` may carry (0: none)."""
        if self._segment_limit_for is None or not self.config.segmentation_offload:
            return 0
        try:
            limit = self._segment_limit_for(remote)
        except Exception:
            return 0
        # Leave room for the largest TCP header (60 bytes with options).
        return max(limit - 60, 0)

    def listen(self, port: int, host: Address | None, backlog: int) -> int:
        if port == 0:
            port = self._free_listen_port()
        if port in self.listeners:
            raise AddressInUse(f"TCP port {port} already has a listener: pick another port")
        self.listeners[port] = ListenerState(port, host, max(backlog, 1))
        return port

    def _free_listen_port(self) -> int:
        low, _ = self.config.ephemeral_ports
        for _ in range(self._port_span):
            self._port_cursor = (self._port_cursor + 1) % self._port_span
            port = low + self._port_cursor
            if port not in self.listeners:
                return port
        raise AddressInUse("no free TCP port to listen on")

    def unlisten(self, port: int, now: int) -> None:
        """Stop listening; half-open connections of this port are reset."""
        self.listeners.pop(port, None)
        for key, owner in list(self._half_open.items()):
            if owner == port:
                conn = self.connections.get(key)
                if conn is not None:
                    conn.abort(now)
                    self.collect(key, conn)

    def connect(
        self, local_ip: Address, remote_ip: Address, remote_port: int, now: int
    ) -> tuple[FourTuple, TcpConnection]:
        low, _ = self.config.ephemeral_ports
        for _ in range(self._port_span):
            self._port_cursor = (self._port_cursor + 1) % self._port_span
            port = low + self._port_cursor
            key = (local_ip, port, remote_ip, remote_port)
            if key not in self.connections and port not in self.listeners:
                break
        else:
            raise AddressInUse(f"no free local TCP port to reach {remote_ip}:{remote_port}")
        if self._at_connection_limit():
            raise AddressInUse(
                f"{len(self.connections)} TCP connections are open, the configured limit: "
                "close some or raise the limit (max_connections)"
            )
        conn = TcpConnection.connect(
            self.config,
            self.stats,
            local_port=port,
            remote_port=remote_port,
            iss=self._isn.isn(key, now),
            path_mss=self.path_mss(remote_ip),
            timestamp_offset=self._isn.timestamp_offset(key),
            now=now,
        )
        conn.offload_bytes = self.offload_bytes(remote_ip)
        self._adopt(key, conn)
        self.stats.connections_opened += 1
        self.collect(key, conn)
        return key, conn

    def _at_connection_limit(self) -> bool:
        """Whether the connections past the handshake (TIME-WAIT included)
        fill ``max_connections``; counted as a drop when they do. Half-open
        ones do not count: each listener's backlog bounds them, and spoofed
        SYNs that never complete must not lock legitimate clients out."""
        limit = self.max_connections
        if limit is not None and len(self.connections) - len(self._half_open) >= limit:
            self.connection_limit_dropped += 1
            return True
        return False

    def _adopt(self, key: FourTuple, conn: TcpConnection) -> None:
        self.connections[key] = conn
        if self.on_adopt is not None:
            self.on_adopt(key)
        conn.defer_output = self.defer_output
        conn.receive_buffer.join(self.pool)
        conn.send_buffer.join(self.pool)

    def icmp_target(
        self, local: Address, remote: Address, quoted: bytes
    ) -> tuple[FourTuple, TcpConnection] | str:
        """The connection an ICMP error quoting ``quoted`` (the first 8 bytes
        of a segment we sent) is about, or why it is ignored: RFC 5927 4.1
        (ports of a connection we have) and 5.1 (a sequence number we sent
        and not yet acknowledged), so that a blind forger must guess both."""
        src_port = int.from_bytes(quoted[0:2], "big")
        dst_port = int.from_bytes(quoted[2:4], "big")
        key = (local, src_port, remote, dst_port)
        conn = self.connections.get(key)
        if conn is None:
            return "icmp_no_connection"
        seq = unwrap(int.from_bytes(quoted[4:8], "big"), conn.snd_una)
        if not conn.snd_una <= seq < max(conn.snd_max, conn.snd_una + 1):
            return "icmp_out_of_window"
        return key, conn

    def on_timer(self, key: FourTuple, now: int) -> None:
        conn = self.connections.get(key)
        if conn is not None:
            conn.on_timer(now)
            self.collect(key, conn)

    def abort_all(self, now: int) -> None:
        for key, conn in list(self.connections.items()):
            conn.abort(now)
            self.collect(key, conn)
        self.listeners.clear()

    # ------------------------------------------------------------------ network side

    def input(
        self,
        src: Address,
        dst: Address,
        segment: bytes,
        now: int,
        *,
        checksum_verified: bool = False,
        ce: bool = False,
    ) -> None:
        """Handle one received segment; bad ones are counted and dropped.

        ``checksum_verified``: the interface already vouched for the
        checksum (checksum offload), so it is not summed again. ``ce``: the
        IP header was marked Congestion Experienced (RFC 3168)."""
        parsed = self._parse_checked(src, dst, segment, checksum_verified)
        if parsed is not None:
            self._input_parsed(src, dst, parsed[0], parsed[1], now, ce)

    def input_burst(self, arrivals: list[Arrival], now: int) -> None:
        """Handle the segments of one burst (what the interface had ready),
        in order, as :meth:`input` would one by one; but data segments of
        one connection that follow each other, alike in every field but the
        sequence number and PSH (which asks only not to hold data back, and
        the burst is in already), options included (SACK blocks too: taken
        again with the same ACK they would mark nothing new), are taken as
        one when the connection can
        (:meth:`TcpConnection.takes_merged`): one pass through the
        connection, one insert, one ACK decision that counts each full
        segment, as Linux's GRO merges. Counted in ``segments_merged``."""
        merge: _Merge | None = None
        # A data segment that may start a run: its _Merge is built only once
        # a segment that may continue it follows (a burst's last, often its
        # only one, and one an echo's next segment acknowledging more of our
        # data follows, go their way without).
        lone: _Lone | None = None
        stats = self.stats
        for src, dst, segment, checksum_verified, ce in arrivals:
            if lone is not None and _may_continue(lone, segment):
                merge = _start_merge(*lone)
                lone = None
            if merge is not None and _continues(merge, src, dst, segment, ce):
                # The next of the run, known by its bytes: what parsing it
                # and _extends would find, without a header object.
                if not checksum_verified and not wire.checksum_ok(segment, src, dst):
                    stats.checksum_errors += 1
                    stats.malformed_dropped += 1
                    continue
                payload = memoryview(segment)[merge.header_length :]
                stats.segments_in += 1
                _add(merge, None, segment, payload)
                continue
            parsed = self._parse_checked(src, dst, segment, checksum_verified)
            if parsed is None:
                continue
            header, payload = parsed
            if merge is not None and _extends(merge, src, dst, header, payload, segment, ce):
                continue
            if merge is not None:
                self._input_merge(merge, now)
                merge = None
            elif lone is not None:
                self._input_lone(lone, now)
                lone = None
            if header.flags & ~PSH == ACK and payload:
                lone = (src, dst, header, payload, segment, ce)
            else:
                self._input_parsed(src, dst, header, payload, now, ce)
        if lone is not None:
            self._input_lone(lone, now)
        elif merge is not None:
            self._input_merge(merge, now)

    def _input_lone(self, lone: _Lone, now: int) -> None:
        """A data segment no other of its burst continued: as a run of one."""
        src, dst, header, payload, _, ce = lone
        self._input_parsed(src, dst, header, payload, now, ce)

    def _input_merge(self, merge: _Merge, now: int) -> None:
        header, payloads = merge.header, merge.payloads
        src, dst = merge.src, merge.dst
        if len(payloads) > 1:
            found = self._connection_for(src, dst, header)
            if found is not None:
                conn, key = found
                length = (merge.end - header.seq) & MASK  # (all the payloads' bytes)
                if conn.takes_merged(header.seq, length, len(payloads), header):
                    self.stats.segments_merged += len(payloads) - 1
                    self.stats.bytes_in += length
                    merged = tuple(map(len, payloads))
                    conn.input(header, b"".join(payloads), now, ce=merge.ce, merged=merged)
                    self.collect(key, conn)
                    return
        for each, segment, payload in zip(merge.headers, merge.segments, payloads, strict=True):
            if each is None:
                each = wire.parse(segment)[0]  # (it parsed as the first did)
            self._input_parsed(src, dst, each, payload, now, merge.ce)

    def _parse_checked(
        self, src: Address, dst: Address, segment: bytes, checksum_verified: bool
    ) -> tuple[TcpHeader, memoryview] | None:
        """The header and payload of a segment with a good checksum and
        ports, counted in; None (counted) for anything else."""
        try:
            header, payload = wire.parse(segment)
        except Malformed:
            self.stats.malformed_dropped += 1
            return None
        if not checksum_verified and not wire.checksum_ok(segment, src, dst):
            self.stats.checksum_errors += 1
            self.stats.malformed_dropped += 1
            return None
        self.stats.segments_in += 1
        if header.src_port == 0 or header.dst_port == 0:
            self.stats.malformed_dropped += 1
            return None
        return header, payload

    def _connection_for(
        self, src: Address, dst: Address, header: TcpHeader
    ) -> tuple[TcpConnection, FourTuple] | None:
        """The connection a segment belongs to, if any."""
        recent = self._recent_connection(src, dst, header)
        if recent is not None:
            return recent
        key = (dst, header.dst_port, src, header.src_port)
        conn = self.connections.get(key)
        if conn is None:
            return None
        self._recent = (conn, key)
        return conn, key

    def _input_parsed(
        self,
        src: Address,
        dst: Address,
        header: TcpHeader,
        payload: memoryview,
        now: int,
        ce: bool,
    ) -> None:
        """:meth:`input` after the segment was parsed and checked."""
        conn: TcpConnection | None
        recent = self._recent_connection(src, dst, header)
        if recent is not None:
            conn, key = recent
        else:
            key = (dst, header.dst_port, src, header.src_port)
            conn = self.connections.get(key)
            if conn is not None:
                self._recent = (conn, key)
        if conn is not None:
            if conn.state is _TIME_WAIT and header.syn and conn.accepts_new_syn(header):
                conn.on_timer(conn.time_wait_at or now)  # end TIME-WAIT now
                self.collect(key, conn)
            elif (
                conn.state is _SYN_RECEIVED
                and header.flags & (ACK | SYN | RST) == ACK
                and key in self._half_open
                and self._at_connection_limit()
            ):
                # The handshake's last ACK while the limit is reached:
                # dropped (Linux's accept-queue overflow); our SYN-ACK is
                # resent, and the peer's answer is admitted once a slot frees.
                return
            else:
                # Counted once a connection takes it: a stray's payload is not ours.
                self.stats.bytes_in += len(payload)
                conn.input(header, payload, now, ce=ce)
                self.collect(key, conn)
                return
        listener = self.listeners.get(header.dst_port)
        if listener is not None and listener.host is not None and listener.host != dst:
            listener = None
        if listener is not None and not header.rst:
            if header.syn and not header.has_ack:
                self._on_syn(listener, key, header, now)
                return
            if (
                header.has_ack
                and not header.syn
                and self.config.syn_cookies
                and self._cookie_sent_ns is not None
                and now - self._cookie_sent_ns < _COOKIE_LIFETIME_NS
                and self._on_cookie_ack(listener, key, header, payload, now)
            ):
                return
        self.stats.no_connection += 1
        if self._reset_allowed(now):
            self._reset_for(key, header, len(payload))

    def _recent_connection(
        self, src: Address, dst: Address, header: TcpHeader
    ) -> tuple[TcpConnection, FourTuple] | None:
        """The connection the last segment went to, if this one is for it
        too: the same address objects (the memo in ``wire._cache`` gives
        every segment of a flow the same ones) and ports. Hashing a key of
        two addresses costs more than the rest of the lookup. A connection
        leaves :attr:`connections` only once closed, so one not closed is
        still the one its key maps to."""
        recent = self._recent
        if recent is None:
            return None
        conn, key = recent
        if (
            key[2] is src
            and key[0] is dst
            and key[3] == header.src_port
            and key[1] == header.dst_port
            and conn.state is not _CLOSED
        ):
            return recent
        return None

    def _reset_allowed(self, now: int) -> bool:
        """Whether one more reset to a segment of no connection may go now."""
        tokens = self._reset_tokens + (now - self._reset_refilled_ns) * RESET_RATE / 1e9
        self._reset_refilled_ns = now
        if tokens < 1.0:
            self._reset_tokens = tokens
            self.stats.rst_ratelimited += 1
            return False
        self._reset_tokens = min(tokens, float(RESET_BURST)) - 1.0
        return True

    def _reset_for(self, key: FourTuple, header: TcpHeader, payload_length: int) -> None:
        """RFC 9293 3.10.7.1: answer with a reset, but never answer a reset."""
        if header.rst:
            return
        if header.has_ack:
            reply = TcpHeader(header.dst_port, header.src_port, header.ack, 0, RST, 0)
        else:
            length = payload_length + (1 if header.syn else 0) + (1 if header.fin else 0)
            reply = TcpHeader(
                header.dst_port, header.src_port, 0, (header.seq + length) & MASK, RST | ACK, 0
            )
        self.stats.resets_sent += 1
        self._send(key, reply)

    def _on_syn(self, listener: ListenerState, key: FourTuple, syn: TcpHeader, now: int) -> None:
        if self._at_connection_limit():
            # Dropped, as Linux drops a SYN while its accept queue is full:
            # the peer retries, maybe after others closed.
            return
        limit = min(listener.backlog, self.config.syn_backlog)
        if listener.half_open >= limit:
            if self.config.syn_cookies:
                self._send_cookie(key, syn, now)
            else:
                self.stats.backlog_dropped += 1
            return
        _, _, remote_ip, _ = key
        conn = TcpConnection.accept_syn(
            self.config,
            self.stats,
            syn,
            iss=self._isn.isn(key, now),
            path_mss=self.path_mss(remote_ip),
            timestamp_offset=self._isn.timestamp_offset(key),
            now=now,
        )
        conn.offload_bytes = self.offload_bytes(remote_ip)
        self._adopt(key, conn)
        self._half_open[key] = listener.port
        listener.half_open += 1
        self.collect(key, conn)

    def _send_cookie(self, key: FourTuple, syn: TcpHeader, now: int) -> None:
        _, _, remote_ip, _ = key
        path_mss = self.path_mss(remote_ip)
        peer_mss = syn.mss if syn.mss else self.config.default_mss
        cookie = self._cookies.make(key, syn.seq, min(peer_mss, path_mss), now)
        timestamps = None
        window_scale = None
        sack_permitted = False
        if self.config.timestamps and syn.timestamps is not None:
            offered_scale = syn.window_scale if self.config.window_scaling else None
            offered_sack = syn.sack_permitted and self.config.sack
            bits = SynCookies.encode_options(offered_scale, offered_sack)
            ts_now = (now // MS + self._isn.timestamp_offset(key)) & MASK
            # Stay at or below the clock so later TSvals never go backwards.
            tsval = ((ts_now - 64) & MASK & ~0x3F) | bits
            timestamps = (tsval, syn.timestamps[0])
            if offered_scale is not None:
                window_scale = self.config.window_scale
            sack_permitted = offered_sack
        header = TcpHeader(
            src_port=syn.dst_port,
            dst_port=syn.src_port,
            seq=cookie,
            ack=(syn.seq + 1) & MASK,
            flags=SYN | ACK,
            window=min(self.config.receive_buffer, 0xFFFF),
            mss=min(path_mss, 0xFFFF),
            window_scale=window_scale,
            sack_permitted=sack_permitted,
            timestamps=timestamps,
        )
        self.stats.cookies_sent += 1
        self._cookie_sent_ns = now
        self._send(key, header)

    def _on_cookie_ack(
        self,
        listener: ListenerState,
        key: FourTuple,
        header: TcpHeader,
        payload: memoryview,
        now: int,
    ) -> bool:
        cookie = (header.ack - 1) & MASK
        peer_isn = (header.seq - 1) & MASK
        mss = self._cookies.check(key, peer_isn, cookie, now)
        if mss is None:
            self.stats.cookies_rejected += 1
            return False
        if self._at_connection_limit():
            return True  # dropped (not reset): the peer retries
        window_scale: int | None = None
        sack_permitted = False
        if header.timestamps is not None and self.config.timestamps:
            window_scale, sack_permitted = SynCookies.decode_options(header.timestamps[1] & 0x3F)
        _, _, remote_ip, _ = key
        conn = TcpConnection.from_cookie(
            self.config,
            self.stats,
            header,
            mss=mss,
            window_scale=window_scale,
            sack_permitted=sack_permitted,
            path_mss=self.path_mss(remote_ip),
            timestamp_offset=self._isn.timestamp_offset(key),
            now=now,
        )
        self.stats.cookies_accepted += 1
        self.stats.connections_accepted += 1
        conn.offload_bytes = self.offload_bytes(remote_ip)
        self._adopt(key, conn)
        conn.take_events()  # CONNECTED is reported through the accepted list
        self.accepted.append((listener.port, key, conn))
        conn.input(header, payload, now)
        self.collect(key, conn)
        return True


# A data segment parsed and checked: source, destination, header, payload,
# the segment, whether its IP header was marked CE.
_Lone = tuple[Address, Address, TcpHeader, memoryview, bytes, bool]
# A TCP header's sequence and acknowledgment numbers (from its fifth byte).
_SEQ_ACK = struct.Struct("!II")


def _may_continue(lone: _Lone, segment: bytes) -> bool:
    """Whether ``segment`` (not yet parsed) has the sequence number where
    ``lone`` ends and its acknowledgment number, as :func:`_continues` and
    :func:`_extends` both require of a segment continuing a run (the parser
    reads these fields from the same bytes)."""
    if len(segment) < TCP_HEADER_LENGTH:
        return False  # (malformed: the parser drops it)
    fields: tuple[int, int] = _SEQ_ACK.unpack_from(segment, 4)
    seq, ack = fields
    header = lone[2]
    return seq == (header.seq + len(lone[3])) & MASK and ack == header.ack


def _options(segment: bytes) -> bytes:
    """The option bytes of a segment that parsed."""
    return bytes(segment[TCP_HEADER_LENGTH : (segment[12] >> 4) * 4])


def _start_merge(
    src: Address, dst: Address, header: TcpHeader, payload: memoryview, segment: bytes, ce: bool
) -> _Merge:
    ports, _, ack, offset, flags, window, _, _ = _FIXED.unpack_from(segment)
    return _Merge(
        src,
        dst,
        header,
        [header],
        [segment],
        _options(segment),
        ce,
        [payload],
        (header.seq + len(payload)) & MASK,
        (ports, ack, offset, flags & ~PSH, window),
        (offset >> 4) * 4,
    )


# A TCP header's fixed part as _continues compares it: both ports as one
# number, the sequence and acknowledgment numbers, the data offset byte,
# the flags, the window, the checksum and the urgent pointer.
_FIXED = struct.Struct("!IIIBBHHH")


def _continues(merge: _Merge, src: Address, dst: Address, segment: bytes, ce: bool) -> bool:
    """Whether ``segment`` (not yet parsed) continues ``merge`` by the
    first one's very bytes: the same ports, ACK, data offset, flags but
    PSH, window and option bytes, sequence number where the run ends, some
    payload, the same ECN mark and addresses. Such a segment parses as the
    first did (its options are the same bytes) and :func:`_extends` takes
    it; a False sends it the general way (which may still take it, as a
    difference in bytes the parser ignores does not stop a run there)."""
    header_length = merge.header_length
    if len(segment) <= header_length or ce != merge.ce:
        return False
    ports, seq, ack, offset, flags, window, _, _ = _FIXED.unpack_from(segment)
    return (
        seq == merge.end
        and (ports, ack, offset, flags & ~PSH, window) == merge.fixed
        and (src is merge.src or src == merge.src)
        and (dst is merge.dst or dst == merge.dst)
        and segment[TCP_HEADER_LENGTH:header_length] == merge.options
    )


def _add(merge: _Merge, header: TcpHeader | None, segment: bytes, payload: memoryview) -> None:
    """``segment`` (its header, if parsed) the last of ``merge``."""
    merge.payloads.append(payload)
    merge.headers.append(header)
    merge.segments.append(segment)
    merge.end = (merge.end + len(payload)) & MASK


def _extends(
    merge: _Merge,
    src: Address,
    dst: Address,
    header: TcpHeader,
    payload: memoryview,
    segment: bytes,
    ce: bool,
) -> bool:
    """Whether a segment continues ``merge`` (and if so it is added):
    the next bytes of the same connection, with the same ACK, window,
    options and ECN mark, and no flag but ACK (and PSH)."""
    first = merge.header
    length = len(payload)
    if (
        header.seq != merge.end
        or header.flags & ~PSH != ACK
        or not length
        or header.ack != first.ack
        or header.window != first.window
        or header.src_port != first.src_port
        or header.dst_port != first.dst_port
        or ce != merge.ce
        or not (src is merge.src or src == merge.src)
        or not (dst is merge.dst or dst == merge.dst)
        or _options(segment) != merge.options
    ):
        return False
    _add(merge, header, segment, payload)
    return True
