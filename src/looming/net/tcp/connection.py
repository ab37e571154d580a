"""One TCP connection as a sans-I/O state machine (RFC 9293 section 3.10).

A :class:`TcpConnection` is driven by three kinds of input, each given the
current time in nanoseconds: :meth:`~TcpConnection.input` for a received
segment, the user calls (:meth:`~TcpConnection.send`,
:meth:`~TcpConnection.receive`, :meth:`~TcpConnection.shutdown`,
:meth:`~TcpConnection.close`, :meth:`~TcpConnection.abort`) and
:meth:`~TcpConnection.on_timer` once :meth:`~TcpConnection.next_deadline`
has passed. It answers with segments in :attr:`outbox` and events in
:attr:`events`, which the owner takes and acts on. It reads no clock and
performs no I/O.

Sequence numbers are unwrapped integers (see :mod:`looming.net.tcp.seq`).
"""

from __future__ import annotations

import enum
from dataclasses import replace

from looming.net.tcp.config import MS, SECOND, TcpConfig, TcpStats
from looming.net.tcp.congestion import DUPACK_THRESHOLD, NewReno
from looming.net.tcp.receive_buffer import ReceiveBuffer
from looming.net.tcp.rtt import RttEstimator
from looming.net.tcp.send_buffer import SackScoreboard, SendBuffer
from looming.net.tcp.seq import MASK, before32, unwrap, wrap
from looming.net.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader

TIMESTAMP_OPTION_SPACE = 12  # NOP NOP kind len TSval TSecr
MAX_WINDOW_SCALE = 14


class State(enum.Enum):
    CLOSED = "CLOSED"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


class Event(enum.Enum):
    """What the owner of a connection is told."""

    CONNECTED = "connected"  # the handshake completed
    READABLE = "readable"  # new bytes are ready for receive()
    PEER_CLOSED = "peer closed"  # the peer's FIN arrived: end of stream
    WRITABLE = "writable"  # send-buffer space was freed
    RESET = "reset"  # the peer reset the connection
    REFUSED = "refused"  # the peer answered our SYN with a reset
    TIMED_OUT = "timed out"  # retransmissions or keepalive gave up
    CLOSED = "closed"  # the connection is gone: release it and its timers


SYNCHRONIZED = frozenset(
    {
        State.ESTABLISHED,
        State.FIN_WAIT_1,
        State.FIN_WAIT_2,
        State.CLOSE_WAIT,
        State.CLOSING,
        State.LAST_ACK,
        State.TIME_WAIT,
    }
)
RECEIVING = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})
SENDING = frozenset(
    {State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.CLOSING, State.LAST_ACK}
)


class TcpConnection:
    """The state of one connection; see the module documentation."""

    def __init__(
        self,
        config: TcpConfig,
        stats: TcpStats,
        *,
        local_port: int,
        remote_port: int,
        iss: int,
        path_mss: int,
        timestamp_offset: int,
        now: int,
    ) -> None:
        self.config = config
        self.stats = stats
        self.local_port = local_port
        self.remote_port = remote_port
        self.state = State.CLOSED
        self.outbox: list[tuple[TcpHeader, bytes]] = []
        self.events: list[Event] = []
        self.nodelay = config.nodelay
        self.keepalive = config.keepalive
        self.app_closed = False  # the application let go; nobody reads any more
        self.passive = False
        # Send side.
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = iss
        self.max_snd_wnd = 0
        self.snd_scale = 0
        self.send_buffer = SendBuffer(iss + 1, config.send_buffer)
        self.fin_queued = False
        self.scoreboard = SackScoreboard()
        self.rtx_high = iss  # highest sequence retransmitted in this recovery
        self.retries = 0
        self.heard_since_timeout = False
        self.last_send = now
        # Receive side (set properly when the peer's SYN arrives).
        self.irs = 0
        self.receive_buffer = ReceiveBuffer(0, config.max_out_of_order_segments)
        self.rcv_scale = 0
        self.rcv_adv = 0
        self.peer_fin: int | None = None  # sequence number of the peer's FIN
        self.fin_received = False
        self.full_segments_unacked = 0
        self.rcv_mss = 536
        # Options and sizes.
        self.path_mss = path_mss
        self.peer_mss = config.default_mss
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_offset = timestamp_offset
        self.sack_ok = False
        self.ws_ok = False
        # Timers: absolute deadlines in ns, None when not running.
        self.rto_at: int | None = None
        self.persist_at: int | None = None
        self.persist_backoff = 0
        self.delack_at: int | None = None
        self.time_wait_at: int | None = None
        self.fin_wait_2_at: int | None = None
        self.keepalive_probes = 0
        self.last_receive = now
        # Estimators.
        self.rtt = RttEstimator(config.rto_initial_ns, config.rto_min_ns, config.rto_max_ns)
        self.rtt_seq: int | None = None
        self.rtt_sent_at = 0
        self.cc = NewReno(self.send_mss, iss)
        self.challenge_window_start = -SECOND
        self.challenge_count = 0

    # ------------------------------------------------------------------ opening

    @classmethod
    def connect(
        cls,
        config: TcpConfig,
        stats: TcpStats,
        *,
        local_port: int,
        remote_port: int,
        iss: int,
        path_mss: int,
        timestamp_offset: int,
        now: int,
    ) -> TcpConnection:
        """An active open: the SYN is in the outbox."""
        conn = cls(
            config,
            stats,
            local_port=local_port,
            remote_port=remote_port,
            iss=iss,
            path_mss=path_mss,
            timestamp_offset=timestamp_offset,
            now=now,
        )
        conn.state = State.SYN_SENT
        conn._send_syn(now, with_ack=False)
        return conn

    @classmethod
    def accept_syn(
        cls,
        config: TcpConfig,
        stats: TcpStats,
        syn: TcpHeader,
        *,
        iss: int,
        path_mss: int,
        timestamp_offset: int,
        now: int,
    ) -> TcpConnection:
        """A passive open from a listener: the SYN-ACK is in the outbox."""
        conn = cls(
            config,
            stats,
            local_port=syn.dst_port,
            remote_port=syn.src_port,
            iss=iss,
            path_mss=path_mss,
            timestamp_offset=timestamp_offset,
            now=now,
        )
        conn.passive = True
        conn._learn_syn(syn, now)
        conn.state = State.SYN_RECEIVED
        conn._send_syn(now, with_ack=True)
        return conn

    @classmethod
    def from_cookie(
        cls,
        config: TcpConfig,
        stats: TcpStats,
        ack: TcpHeader,
        *,
        mss: int,
        window_scale: int | None,
        sack_permitted: bool,
        path_mss: int,
        timestamp_offset: int,
        now: int,
    ) -> TcpConnection:
        """An ESTABLISHED connection rebuilt from the ACK that returned a SYN cookie."""
        iss = (ack.ack - 1) & MASK
        conn = cls(
            config,
            stats,
            local_port=ack.dst_port,
            remote_port=ack.src_port,
            iss=iss,
            path_mss=path_mss,
            timestamp_offset=timestamp_offset,
            now=now,
        )
        conn.passive = True
        conn.irs = (ack.seq - 1) & MASK
        conn.receive_buffer.rcv_nxt = conn.irs + 1
        conn.rcv_adv = conn.irs + 1
        conn.peer_mss = mss
        conn.ts_ok = config.timestamps and ack.timestamps is not None
        if conn.ts_ok and ack.timestamps is not None:
            conn.ts_recent = ack.timestamps[0]
            conn.ws_ok = config.window_scaling and window_scale is not None
            conn.sack_ok = config.sack and sack_permitted
        if conn.ws_ok and window_scale is not None:
            conn.snd_scale = min(window_scale, MAX_WINDOW_SCALE)
            conn.rcv_scale = config.window_scale
        conn.snd_una = conn.snd_nxt = conn.snd_max = iss + 1
        conn.snd_wl1 = conn.irs
        conn.snd_wl2 = iss + 1
        conn.snd_wnd = ack.window << conn.snd_scale
        conn.max_snd_wnd = conn.snd_wnd
        conn.cc = NewReno(conn.send_mss, iss + 1)
        conn.state = State.ESTABLISHED
        conn.events.append(Event.CONNECTED)
        return conn

    def _learn_syn(self, syn: TcpHeader, now: int) -> None:
        """Record what the peer's SYN tells us (RFC 7323: options only when both SYNs agree)."""
        self.irs = syn.seq
        self.receive_buffer.rcv_nxt = syn.seq + 1
        self.rcv_adv = syn.seq + 1
        self.snd_wl1 = syn.seq
        if syn.mss is not None and syn.mss > 0:
            self.peer_mss = syn.mss
        if self.config.window_scaling and syn.window_scale is not None:
            self.ws_ok = True
            self.snd_scale = min(syn.window_scale, MAX_WINDOW_SCALE)
            self.rcv_scale = self.config.window_scale
        self.sack_ok = self.config.sack and syn.sack_permitted
        if self.config.timestamps and syn.timestamps is not None:
            self.ts_ok = True
            self.ts_recent = syn.timestamps[0]
        # A SYN's window is never scaled (RFC 7323 2.2).
        self.snd_wnd = syn.window
        self.max_snd_wnd = syn.window
        self.cc = NewReno(self.send_mss, self.iss)
        self.last_receive = now

    # ------------------------------------------------------------------ sizes

    @property
    def send_mss(self) -> int:
        """Largest payload of a data segment: the smaller MSS, less the timestamp option."""
        mss = min(self.peer_mss, self.path_mss)
        if self.ts_ok:
            mss -= TIMESTAMP_OPTION_SPACE
        return max(mss, 64)

    @property
    def receive_window(self) -> int:
        """Bytes we can still accept above rcv_nxt (what we advertised, at least)."""
        free = max(self.config.receive_buffer - len(self.receive_buffer.ready), 0)
        return max(self.rcv_adv - self.receive_buffer.rcv_nxt, free)

    @property
    def rcv_nxt(self) -> int:
        return self.receive_buffer.rcv_nxt

    @property
    def bytes_in_flight(self) -> int:
        return self.snd_max - self.snd_una

    @property
    def send_space(self) -> int:
        if self.fin_queued or self.state not in (
            State.ESTABLISHED,
            State.CLOSE_WAIT,
            State.SYN_SENT,
            State.SYN_RECEIVED,
        ):
            return 0
        return self.send_buffer.space

    @property
    def readable_bytes(self) -> int:
        return len(self.receive_buffer.ready)

    @property
    def at_end_of_stream(self) -> bool:
        return self.fin_received and not self.receive_buffer.ready

    def _ts_now(self, now: int) -> int:
        return (now // MS + self.ts_offset) & MASK

    # ------------------------------------------------------------------ emitting

    def _window_field(self, syn: bool) -> int:
        rcv_nxt = self.receive_buffer.rcv_nxt
        buffer = self.config.receive_buffer
        free = max(buffer - len(self.receive_buffer.ready), 0)
        if syn:
            window = min(free, 0xFFFF)
            self.rcv_adv = max(self.rcv_adv, rcv_nxt + window)
            return window
        edge = rcv_nxt + free
        # Receiver silly-window avoidance (RFC 9293 3.8.6.2.2): move the right
        # edge only by a worthwhile step, and never move it back.
        if edge < self.rcv_adv or edge - self.rcv_adv < min(buffer // 2, self.path_mss):
            edge = max(self.rcv_adv, rcv_nxt)
        window = edge - rcv_nxt
        field = (window + (1 << self.rcv_scale) - 1) >> self.rcv_scale
        field = min(field, 0xFFFF)
        self.rcv_adv = max(self.rcv_adv, rcv_nxt + (field << self.rcv_scale))
        return field

    def _emit(self, flags: int, seq: int, payload: bytes, now: int) -> None:
        sack_blocks: tuple[tuple[int, int], ...] = ()
        if self.sack_ok and flags & ACK and self.receive_buffer.has_gaps:
            limit = 3 if self.ts_ok else 4
            sack_blocks = tuple(
                (wrap(left), wrap(right)) for left, right in self.receive_buffer.sack_blocks(limit)
            )
        header = TcpHeader(
            src_port=self.local_port,
            dst_port=self.remote_port,
            seq=wrap(seq),
            ack=wrap(self.receive_buffer.rcv_nxt) if flags & ACK else 0,
            flags=flags,
            window=self._window_field(False),
            sack_blocks=sack_blocks,
            timestamps=(self._ts_now(now), self.ts_recent) if self.ts_ok else None,
        )
        self._push(header, payload, now)

    def _push(self, header: TcpHeader, payload: bytes, now: int) -> None:
        if header.flags & ACK:
            self.delack_at = None
            self.full_segments_unacked = 0
        self.outbox.append((header, payload))
        self.stats.segments_out += 1
        self.stats.bytes_out += len(payload)
        self.last_send = now

    def _send_syn(self, now: int, *, with_ack: bool) -> None:
        config = self.config
        if with_ack:
            # Answer with exactly the options the peer offered and we support.
            timestamps = (self._ts_now(now), self.ts_recent) if self.ts_ok else None
            window_scale = self.rcv_scale if self.ws_ok else None
            sack_permitted = self.sack_ok
        else:
            timestamps = (self._ts_now(now), 0) if config.timestamps else None
            window_scale = config.window_scale if config.window_scaling else None
            sack_permitted = config.sack
        header = TcpHeader(
            src_port=self.local_port,
            dst_port=self.remote_port,
            seq=wrap(self.iss),
            ack=wrap(self.receive_buffer.rcv_nxt) if with_ack else 0,
            flags=SYN | ACK if with_ack else SYN,
            window=self._window_field(True),
            mss=min(self.path_mss, 0xFFFF),
            window_scale=window_scale,
            sack_permitted=sack_permitted,
            timestamps=timestamps,
        )
        self.snd_nxt = self.iss + 1
        self.snd_max = max(self.snd_max, self.iss + 1)
        self._push(header, b"", now)
        if self.rto_at is None:
            self.rto_at = now + self.rtt.rto
        if self.retries == 0 and self.rtt_seq is None:
            self.rtt_seq = self.iss
            self.rtt_sent_at = now

    def send_ack(self, now: int) -> None:
        self._emit(ACK, self.snd_nxt, b"", now)

    def _send_reset(self, seq: int, now: int) -> None:
        header = TcpHeader(
            src_port=self.local_port,
            dst_port=self.remote_port,
            seq=wrap(seq),
            ack=0,
            flags=RST,
            window=0,
        )
        self.stats.resets_sent += 1
        self._push(header, b"", now)

    def _challenge_ack(self, now: int) -> None:
        """RFC 5961 section 7: an ACK that a blind attacker cannot use, rate limited."""
        if now - self.challenge_window_start >= SECOND:
            self.challenge_window_start = now
            self.challenge_count = 0
        if self.challenge_count >= self.config.challenge_acks_per_second:
            return
        self.challenge_count += 1
        self.stats.challenge_acks += 1
        self.send_ack(now)

    # ------------------------------------------------------------------ user calls

    def send(self, data: bytes | bytearray | memoryview, now: int) -> int:
        """Queue data; returns how many bytes fit into the send buffer."""
        if self.send_space == 0:
            return 0
        if self.snd_una == self.snd_max and now - self.last_send > self.rtt.rto:
            self.cc.after_idle(self.rtt.rto, now - self.last_send)
        taken = self.send_buffer.append(data)
        if taken and self.state in SENDING:
            self._output(now)
        return taken

    def receive(self, now: int, limit: int | None = None) -> bytes:
        """Take received in-order bytes; may send a window update."""
        before = self.rcv_adv - self.receive_buffer.rcv_nxt
        data = self.receive_buffer.read(limit)
        if data and self.state in RECEIVING:
            free = self.config.receive_buffer - len(self.receive_buffer.ready)
            step = min(self.config.receive_buffer // 2, 2 * self.send_mss)
            if free - before >= step and before < step:
                # The window had nearly closed; tell the peer it has reopened.
                self.send_ack(now)
        return data

    def shutdown(self, now: int) -> None:
        """Queue our FIN after the data already written (RFC 9293 CLOSE call)."""
        if self.fin_queued:
            return
        if self.state in (State.CLOSED, State.SYN_SENT):
            self._become_closed()
            return
        self.fin_queued = True
        if self.state in (State.ESTABLISHED, State.SYN_RECEIVED):
            self.state = State.FIN_WAIT_1
        elif self.state == State.CLOSE_WAIT:
            self.state = State.LAST_ACK
        self._output(now)

    def close(self, now: int) -> None:
        """The application lets go. Unread data makes this an abort (RFC 9293 3.10.4)."""
        self.app_closed = True
        if self.receive_buffer.ready and self.state in SYNCHRONIZED:
            self.abort(now)
            return
        self.shutdown(now)
        if self.state == State.FIN_WAIT_2:
            self.fin_wait_2_at = now + self.config.fin_wait_2_timeout_ns

    def abort(self, now: int) -> None:
        """Send a reset (when synchronized) and drop everything."""
        if (self.state in SYNCHRONIZED and self.state != State.TIME_WAIT) or (
            self.state == State.SYN_RECEIVED
        ):
            self._send_reset(self.snd_nxt, now)
        self._become_closed()

    def _become_closed(self) -> None:
        if self.state == State.CLOSED and Event.CLOSED in self.events:
            return
        self.state = State.CLOSED
        self.rto_at = self.persist_at = self.delack_at = None
        self.time_wait_at = self.fin_wait_2_at = None
        self.events.append(Event.CLOSED)

    def _fail(self, event: Event) -> None:
        self.events.append(event)
        self._become_closed()

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> int | None:
        deadlines = [
            t
            for t in (
                self.rto_at,
                self.persist_at,
                self.delack_at,
                self.time_wait_at,
                self.fin_wait_2_at,
                self.keepalive_deadline,
            )
            if t is not None
        ]
        return min(deadlines) if deadlines else None

    @property
    def keepalive_deadline(self) -> int | None:
        if not self.keepalive or self.state not in (State.ESTABLISHED, State.CLOSE_WAIT):
            return None
        if self.keepalive_probes == 0:
            return self.last_receive + self.config.keepalive_idle_ns
        return (
            self.last_receive
            + self.config.keepalive_idle_ns
            + self.keepalive_probes * self.config.keepalive_interval_ns
        )

    def on_timer(self, now: int) -> None:
        """Handle every deadline that has passed; early calls are harmless."""
        if self.time_wait_at is not None and now >= self.time_wait_at:
            self._become_closed()
            return
        if self.fin_wait_2_at is not None and now >= self.fin_wait_2_at:
            if self.state == State.FIN_WAIT_2:
                self._become_closed()
                return
            self.fin_wait_2_at = None
        if self.rto_at is not None and now >= self.rto_at:
            self.rto_at = None
            self._on_retransmit_timeout(now)
            if self.state == State.CLOSED:
                return
        if self.persist_at is not None and now >= self.persist_at:
            self.persist_at = None
            self._on_persist(now)
        if self.delack_at is not None and now >= self.delack_at:
            self.delack_at = None
            self.send_ack(now)
        keepalive_at = self.keepalive_deadline
        if keepalive_at is not None and now >= keepalive_at:
            self._on_keepalive(now)

    def _on_retransmit_timeout(self, now: int) -> None:
        if self.snd_una >= self.snd_max:
            return
        heard = self.heard_since_timeout
        self.heard_since_timeout = False
        zero_window_probing = self.state in SYNCHRONIZED and self.snd_wnd == 0 and heard
        if not zero_window_probing:
            self.retries += 1
        self.stats.timeouts += 1
        limit = {
            State.SYN_SENT: self.config.syn_retries,
            State.SYN_RECEIVED: self.config.synack_retries,
        }.get(self.state, self.config.data_retries)
        if self.retries > limit:
            if self.state == State.SYN_RECEIVED:
                self._become_closed()
            else:
                if self.state in SYNCHRONIZED:
                    self._send_reset(self.snd_nxt, now)
                self._fail(Event.TIMED_OUT)
            return
        self.rtt.back_off()
        self.rtt_seq = None  # Karn: no samples from retransmitted data
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED):
            self.stats.retransmits += 1
            self._send_syn(now, with_ack=self.state == State.SYN_RECEIVED)
            self.rto_at = now + self.rtt.rto
            return
        self.cc.on_timeout(self.snd_max - self.snd_una, self.snd_max, first=self.retries <= 1)
        if self.retries >= 2:
            # The receiver may have reneged on what it SACKed (RFC 2018 section 8).
            self.scoreboard.clear()
        self.snd_nxt = self.snd_una
        self.rtx_high = self.snd_una
        if self.snd_wnd == 0:
            self._send_window_probe(now)
        else:
            self._output(now, force_one=True)
        self.rto_at = now + self.rtt.rto

    def _send_window_probe(self, now: int) -> None:
        # An ACK with an old sequence number makes the peer answer with its
        # current window, without putting data beyond that window.
        self._emit(ACK, self.snd_una - 1, b"", now)

    def _on_persist(self, now: int) -> None:
        if self.snd_wnd > 0 or self.state not in SENDING or not self._has_unsent():
            self.persist_backoff = 0
            return
        self._send_window_probe(now)
        self.persist_backoff = min(self.persist_backoff + 1, 16)
        self._arm_persist(now)

    def _arm_persist(self, now: int) -> None:
        base = max(self.rtt.rto, self.config.persist_min_ns)
        self.persist_at = now + min(base << self.persist_backoff, self.config.persist_max_ns)

    def _on_keepalive(self, now: int) -> None:
        if self.keepalive_probes >= self.config.keepalive_probes:
            self._send_reset(self.snd_nxt, now)
            self._fail(Event.TIMED_OUT)
            return
        self.keepalive_probes += 1
        self._emit(ACK, self.snd_una - 1, b"", now)

    # ------------------------------------------------------------------ sending

    def _has_unsent(self) -> bool:
        return self.snd_nxt < self.send_buffer.end or (
            self.fin_queued and self.snd_max <= self.send_buffer.end
        )

    def _output(self, now: int, *, force_one: bool = False) -> None:
        """Send what the windows, Nagle and silly-window avoidance allow."""
        if self.state not in SENDING:
            return
        mss = self.send_mss
        data_end = self.send_buffer.end
        while True:
            seq = self.snd_nxt
            if self.scoreboard and seq < self.snd_max:
                seq = min(self.scoreboard.skip_sacked(seq), self.snd_max)
                self.snd_nxt = seq
            congestion_window = self.cc.cwnd
            if self.cc.dupacks and not self.cc.in_recovery:
                # Limited transmit (RFC 3042): a new segment for each of the
                # first two duplicate ACKs, to keep ACKs coming.
                congestion_window += min(self.cc.dupacks, 2) * mss
            window_edge = self.snd_una + min(self.snd_wnd, congestion_window)
            if force_one:
                window_edge = max(window_edge, self.snd_una + mss)
            if seq < data_end:
                length = min(mss, data_end - seq)
                if self.scoreboard and seq < self.snd_max:
                    following = self.scoreboard.next_sacked_start(seq)
                    if following is not None:
                        length = min(length, following - seq)
                room = window_edge - seq
                is_new = seq >= self.snd_max
                if room < length:
                    # Sender silly-window avoidance: a window-limited partial
                    # segment only when it is at least half the peer's largest window.
                    if room <= 0 or (is_new and room < self.max_snd_wnd // 2):
                        break
                    length = room
                elif (
                    is_new
                    and length < mss
                    and not self.nodelay
                    and self.snd_max > self.snd_una
                    and not self.fin_queued
                ):
                    break  # Nagle: hold a small segment while data is unacknowledged
                end = seq + length
                flags = ACK
                if end == data_end:
                    flags |= PSH
                    if self.fin_queued:
                        flags |= FIN
                payload = self.send_buffer.slice(seq, length)
                if not is_new:
                    self.stats.retransmits += 1
                    if self.rtt_seq is not None and self.rtt_seq < end:
                        self.rtt_seq = None
                elif self.rtt_seq is None and not self.ts_ok:
                    self.rtt_seq = seq
                    self.rtt_sent_at = now
                self._emit(flags, seq, payload, now)
                self.snd_nxt = end + (1 if flags & FIN else 0)
                self.snd_max = max(self.snd_max, self.snd_nxt)
                force_one = False
            elif (
                self.fin_queued
                and seq == data_end
                and (self.snd_max <= data_end or seq < self.snd_max)
            ):
                if seq < self.snd_max:
                    self.stats.retransmits += 1
                self._emit(ACK | FIN, seq, b"", now)
                self.snd_nxt = seq + 1
                self.snd_max = max(self.snd_max, self.snd_nxt)
                break
            else:
                break
        if self.snd_max > self.snd_una:
            if self.rto_at is None:
                self.rto_at = now + self.rtt.rto
            self.persist_at = None
        elif self.snd_wnd == 0 and self._has_unsent() and self.persist_at is None:
            self._arm_persist(now)

    def _retransmit_one(self, seq: int, now: int) -> int:
        """Resend one segment starting at ``seq`` (fast retransmit); returns its end."""
        data_end = self.send_buffer.end
        if seq >= data_end:
            if self.fin_queued and seq == data_end:
                self.stats.retransmits += 1
                self._emit(ACK | FIN, seq, b"", now)
                return seq + 1
            return seq
        length = min(self.send_mss, data_end - seq)
        following = self.scoreboard.next_sacked_start(seq) if self.scoreboard else None
        if following is not None:
            length = min(length, following - seq)
        end = seq + length
        flags = ACK
        if end == data_end:
            flags |= PSH | (FIN if self.fin_queued else 0)
        self.stats.retransmits += 1
        if self.rtt_seq is not None and self.rtt_seq < end:
            self.rtt_seq = None
        self._emit(flags, seq, self.send_buffer.slice(seq, length), now)
        return end + (1 if flags & FIN else 0)

    # ------------------------------------------------------------------ receiving

    def input(self, header: TcpHeader, payload: bytes | memoryview, now: int) -> None:
        """Process one received segment addressed to this connection."""
        if header.rst:
            self.stats.resets_received += 1
        if self.state == State.CLOSED:
            return
        if self.state == State.SYN_SENT:
            self._input_syn_sent(header, now)
            return
        self._input_synchronizing(header, payload, now)

    def _input_syn_sent(self, header: TcpHeader, now: int) -> None:
        ack_ok = False
        if header.has_ack:
            ack = unwrap(header.ack, self.snd_una)
            if ack <= self.iss or ack > self.snd_max:
                if not header.rst:
                    self._push(
                        TcpHeader(self.local_port, self.remote_port, header.ack, 0, RST, 0),
                        b"",
                        now,
                    )
                    self.stats.resets_sent += 1
                return
            ack_ok = True
        if header.rst:
            if ack_ok:
                self._fail(Event.REFUSED)
            return
        if not header.syn:
            return
        self._learn_syn(header, now)
        self.heard_since_timeout = True
        if ack_ok:
            ack = unwrap(header.ack, self.snd_una)
            self._take_rtt_sample(ack, header, now)
            self.snd_una = ack
            self.snd_wl2 = ack
            self.retries = 0
            self.rto_at = None
            self.state = State.ESTABLISHED
            self.events.append(Event.CONNECTED)
            self.send_ack(now)
            self._output(now)
        else:
            # Simultaneous open (RFC 9293 figure 7).
            self.state = State.SYN_RECEIVED
            self._send_syn(now, with_ack=True)

    def _segment_acceptable(self, seq: int, length: int) -> bool:
        rcv_nxt = self.receive_buffer.rcv_nxt
        window = self.receive_window
        if length == 0:
            if window == 0:
                return seq == rcv_nxt
            return rcv_nxt <= seq < rcv_nxt + window
        if window == 0:
            return False
        end = seq + length - 1
        return rcv_nxt <= seq < rcv_nxt + window or rcv_nxt <= end < rcv_nxt + window

    def _input_synchronizing(
        self, header: TcpHeader, payload: bytes | memoryview, now: int
    ) -> None:
        rcv_nxt = self.receive_buffer.rcv_nxt
        seq = unwrap(header.seq, rcv_nxt)
        if header.syn and seq == self.irs and not header.rst:
            if self.state != State.SYN_RECEIVED:
                # A repeated SYN-ACK after our ACK was lost: its SYN is behind us.
                self.send_ack(now)
                if self.state == State.TIME_WAIT:
                    self.time_wait_at = now + self.config.time_wait_ns
                return
            if not header.has_ack:
                # The peer repeated its SYN: our SYN-ACK was lost.
                self._send_syn(now, with_ack=True)
                return
            # Simultaneous open: the peer's SYN-ACK. Its SYN is already
            # counted, so process the rest as a plain ACK (RFC 9293 figure 7).
            seq += 1
            header = replace(header, flags=header.flags & ~SYN, seq=wrap(seq))
        seg_len = len(payload) + (1 if header.syn else 0) + (1 if header.fin else 0)

        # PAWS (RFC 7323 section 5).
        if (
            self.ts_ok
            and header.timestamps is not None
            and not header.rst
            and before32(header.timestamps[0], self.ts_recent)
        ):
            self.stats.paws_dropped += 1
            self.send_ack(now)
            return

        if not self._segment_acceptable(seq, seg_len):
            self.stats.out_of_window += 1
            if header.rst:
                return
            self.send_ack(now)
            if header.fin and self.state == State.TIME_WAIT:
                self.time_wait_at = now + self.config.time_wait_ns
            if (
                header.has_ack
                and seq == rcv_nxt
                and self.receive_window == 0
                and self.state in SYNCHRONIZED
            ):
                # RFC 9293 3.10.7.4: still take ACKs while our window is shut.
                self._process_ack(header, seq, 0, now)
                self._output(now)
            return
        self.last_receive = now
        self.keepalive_probes = 0
        self.heard_since_timeout = True

        if header.rst:
            self._input_reset(seq, now)
            return
        if header.syn:
            # RFC 5961 section 4: any SYN here gets a challenge ACK.
            self._challenge_ack(now)
            return
        if not header.has_ack:
            return

        if self.state == State.SYN_RECEIVED:
            ack = unwrap(header.ack, self.snd_una)
            if not self.snd_una < ack <= self.snd_max:
                self._push(
                    TcpHeader(self.local_port, self.remote_port, header.ack, 0, RST, 0),
                    b"",
                    now,
                )
                self.stats.resets_sent += 1
                return
            self.state = State.FIN_WAIT_1 if self.fin_queued else State.ESTABLISHED
            self.snd_wnd = header.window << self.snd_scale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            self.events.append(Event.CONNECTED)

        if not self._process_ack(header, seq, len(payload), now):
            return
        if self.state == State.CLOSED:
            return

        # Timestamp to echo (RFC 7323 section 4.3).
        if self.ts_ok and header.timestamps is not None and seq <= rcv_nxt:
            self.ts_recent = header.timestamps[0]

        # (Data in states past the peer's FIN is ignored.)
        if payload and self.state in RECEIVING:
            if self.app_closed:
                # Nobody will read this: tell the peer (RFC 9293 3.10.7.4, as Linux does).
                self._send_reset(self.snd_nxt, now)
                self._fail(Event.RESET)
                return
            self._receive_data(seq, payload, now)
        if header.fin:
            fin_seq = seq + len(payload)
            if self.peer_fin is None:
                self.peer_fin = fin_seq
        if (
            self.peer_fin is not None
            and not self.fin_received
            and self.receive_buffer.rcv_nxt == self.peer_fin
        ):
            self._receive_fin(now)
        elif header.fin and self.fin_received:
            self.send_ack(now)  # a retransmitted FIN: our ACK was lost
            if self.state == State.TIME_WAIT:
                self.time_wait_at = now + self.config.time_wait_ns
        self._output(now)

    def _input_reset(self, seq: int, now: int) -> None:
        # RFC 5961 section 3: only an exact match resets; in-window gets a challenge.
        if seq != self.receive_buffer.rcv_nxt:
            self._challenge_ack(now)
            return
        if self.state == State.SYN_RECEIVED and self.passive:
            self._become_closed()
        elif self.state in (
            State.ESTABLISHED,
            State.FIN_WAIT_1,
            State.FIN_WAIT_2,
            State.CLOSE_WAIT,
        ):
            self._fail(Event.RESET)
        elif self.state == State.SYN_RECEIVED:
            self._fail(Event.REFUSED)
        else:
            self._become_closed()

    def _take_rtt_sample(self, ack: int, header: TcpHeader, now: int) -> None:
        if self.ts_ok and header.timestamps is not None and header.timestamps[1]:
            elapsed_ms = (self._ts_now(now) - header.timestamps[1]) & MASK
            if elapsed_ms < 60_000:
                self.rtt.sample(max(elapsed_ms, 1) * MS)
            return
        if self.rtt_seq is not None and ack > self.rtt_seq:
            self.rtt.sample(now - self.rtt_sent_at)
            self.rtt_seq = None

    def _process_ack(self, header: TcpHeader, seq: int, payload_length: int, now: int) -> bool:
        """The ACK field (RFC 9293 3.10.7.4 fifth check); False means drop the segment."""
        ack = unwrap(header.ack, self.snd_una)
        if ack > self.snd_max:
            self._challenge_ack(now)
            return False
        if ack < self.snd_una - max(self.max_snd_wnd, 1 << 16):
            # RFC 5961 section 5.2: too old to be from the real peer.
            self._challenge_ack(now)
            return False
        window = header.window << self.snd_scale
        window_changed = False
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            window_changed = window != self.snd_wnd
            self.snd_wnd = window
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            self.max_snd_wnd = max(self.max_snd_wnd, window)
            if window > 0:
                self.persist_at = None
                self.persist_backoff = 0
        new_sack = False
        if self.sack_ok and header.sack_blocks:
            for left_wire, right_wire in header.sack_blocks:
                left = unwrap(left_wire, self.snd_una)
                right = unwrap(right_wire, self.snd_una)
                if self.snd_una < left < right <= self.snd_max:
                    new_sack |= self.scoreboard.add(left, right)

        if ack > self.snd_una:
            self._on_new_ack(ack, header, now)
        elif (
            ack == self.snd_una
            and payload_length == 0
            and not header.fin
            and self.snd_max > self.snd_una
            and (not window_changed or new_sack)
        ):
            self._on_duplicate_ack(now)
        return True

    def _on_new_ack(self, ack: int, header: TcpHeader, now: int) -> None:
        acked = ack - self.snd_una
        flight_before = self.snd_max - self.snd_una
        self._take_rtt_sample(ack, header, now)
        released = self.send_buffer.release_to(ack)
        self.snd_una = ack
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        self.scoreboard.trim(ack)
        self.retries = 0
        cc = self.cc
        if cc.in_recovery:
            if ack >= cc.recover:
                cc.on_full_ack(self.snd_max - ack)
            else:
                cc.on_partial_ack(acked)
                # RFC 6582 3.2 step 5: retransmit the first unacknowledged segment.
                start = max(ack, self.rtx_high) if self.scoreboard else ack
                if start < self.snd_max:
                    hole = self.scoreboard.next_hole(start) if self.scoreboard else None
                    target = hole[0] if hole is not None else (ack if start == ack else None)
                    if target is not None:
                        self.rtx_high = self._retransmit_one(target, now)
        else:
            cc.on_new_ack(acked, flight_before)
        # RFC 6298 5.2 and 5.3: stop the timer when all is acknowledged, else restart it.
        self.rto_at = None if self.snd_una >= self.snd_max else now + self.rtt.rto
        if released and not self.fin_queued:
            self.events.append(Event.WRITABLE)
        self._after_our_fin_acked(now)

    def _after_our_fin_acked(self, now: int) -> None:
        if not self.fin_queued or self.snd_una <= self.send_buffer.end:
            return
        if self.state == State.FIN_WAIT_1:
            self.state = State.FIN_WAIT_2
            if self.app_closed:
                self.fin_wait_2_at = now + self.config.fin_wait_2_timeout_ns
        elif self.state == State.CLOSING:
            self._enter_time_wait(now)
        elif self.state == State.LAST_ACK:
            self._become_closed()

    def _on_duplicate_ack(self, now: int) -> None:
        cc = self.cc
        cc.dupacks += 1
        if cc.in_recovery:
            cc.on_dupack_in_recovery()
            # With SACK, spend this ACK's opportunity on the next known hole.
            if self.scoreboard:
                hole = self.scoreboard.next_hole(max(self.rtx_high, self.snd_una))
                if hole is not None:
                    self.rtx_high = self._retransmit_one(hole[0], now)
            return
        # Three duplicate ACKs, or (RFC 6675 IsLost) more than two segments'
        # worth SACKed above the cumulative ACK, mark the first segment lost.
        # RFC 6582 section 4.1: only for losses after the last recovery.
        lost = cc.dupacks >= DUPACK_THRESHOLD or (
            self.scoreboard.sacked_bytes > (DUPACK_THRESHOLD - 1) * self.send_mss
        )
        if lost and self.snd_una >= cc.recover:
            self.stats.fast_retransmits += 1
            cc.enter_recovery(self.snd_max - self.snd_una, self.snd_max)
            self.rtx_high = self._retransmit_one(self.snd_una, now)
            self.rtt_seq = None
            self.rto_at = now + self.rtt.rto

    def _receive_data(self, seq: int, payload: bytes | memoryview, now: int) -> None:
        buffer = self.receive_buffer
        rcv_nxt = buffer.rcv_nxt
        right_edge = rcv_nxt + self.receive_window
        if seq + len(payload) > right_edge:
            payload = payload[: max(right_edge - seq, 0)]
        had_gaps = buffer.has_gaps
        advanced = buffer.insert(seq, payload)
        if len(payload) > self.rcv_mss:
            self.rcv_mss = min(len(payload), self.path_mss)
        if not advanced:
            # Out of order or duplicate: ACK at once so the sender learns (RFC 5681 4.2).
            self.send_ack(now)
            return
        self.events.append(Event.READABLE)
        if had_gaps:
            self.send_ack(now)  # a hole was filled
            return
        if len(payload) >= self.rcv_mss:
            self.full_segments_unacked += 1
        if self.full_segments_unacked >= 2:
            self.send_ack(now)
        elif self.delack_at is None:
            self.delack_at = now + self.config.delayed_ack_ns

    def _receive_fin(self, now: int) -> None:
        self.fin_received = True
        self.receive_buffer.rcv_nxt += 1
        self.events.append(Event.PEER_CLOSED)
        if self.state in (State.SYN_RECEIVED, State.ESTABLISHED):
            self.state = State.CLOSE_WAIT
        elif self.state == State.FIN_WAIT_1:
            if self.snd_una > self.send_buffer.end:
                self._enter_time_wait(now)
            else:
                self.state = State.CLOSING
        elif self.state == State.FIN_WAIT_2:
            self._enter_time_wait(now)
        self.send_ack(now)

    def _enter_time_wait(self, now: int) -> None:
        self.state = State.TIME_WAIT
        self.rto_at = self.persist_at = self.delack_at = self.fin_wait_2_at = None
        self.time_wait_at = now + self.config.time_wait_ns

    def accepts_new_syn(self, syn: TcpHeader) -> bool:
        """Whether a SYN may reopen this TIME-WAIT connection (RFC 6191)."""
        if self.state != State.TIME_WAIT or syn.has_ack or syn.rst:
            return False
        if self.ts_ok and syn.timestamps is not None:
            return before32(self.ts_recent, syn.timestamps[0])
        return unwrap(syn.seq, self.receive_buffer.rcv_nxt) > self.receive_buffer.rcv_nxt

    def take_outbox(self) -> list[tuple[TcpHeader, bytes]]:
        out = self.outbox
        self.outbox = []
        return out

    def take_events(self) -> list[Event]:
        events = self.events
        self.events = []
        return events
