"""The transmission control block: the variables of one TCP connection
(RFC 9293 section 3.3.1) and the ways it puts segments together.

:class:`~looming.net.tcp.connection.TcpConnection` builds on this through
:class:`~looming.net.tcp.sender.TcpSender`; nothing here reads a clock or
does I/O. Sequence numbers are unwrapped integers (see
:mod:`looming.net.tcp.seq`).
"""

from __future__ import annotations

import enum

from looming.net.tcp.config import MS, SECOND, TcpConfig, TcpStats
from looming.net.tcp.congestion import CongestionControl, NewReno
from looming.net.tcp.cubic import Cubic
from looming.net.tcp.plpmtud import MtuSearch
from looming.net.tcp.prr import ProportionalRateReduction
from looming.net.tcp.rack import Rack
from looming.net.tcp.receive_buffer import ReceiveBuffer
from looming.net.tcp.rtt import RttEstimator
from looming.net.tcp.scoreboard import Scoreboard
from looming.net.tcp.send_buffer import SendBuffer
from looming.net.tcp.seq import MASK, wrap
from looming.net.wire.tcp import ACK, FIN, RST, SYN, TcpFlags, TcpHeader
from looming.sim.buggify import buggify

ECE = int(TcpFlags.ECE)
CWR = int(TcpFlags.CWR)

TIMESTAMP_OPTION_SPACE = 12  # NOP NOP kind len TSval TSecr
# In-order segments ACKed at once, not every second one, after the peer's
# data paused longer than our RTO: a sender restarting from a window of one
# or two segments after its retransmission timeout is then not held by the
# delayed-ACK timer every round (a Linux receiver does the same: through
# the loss relay it ACKed each segment after such a pause; TCP_MAX_QUICKACKS).
QUICK_ACKS = 16
# A pure ACK is the one segment nothing retransmits: when it was the last
# thing we sent and the peer stays quiet this long (or two of our smoothed
# round trips, if longer, up to half the RTO), it goes once more (see
# TransmissionControlBlock._ack_repeat_deadline).
ACK_REPEAT_FLOOR_NS = 10_000_000


def sack_option_space(blocks: int) -> int:
    """Header bytes a SACK option of ``blocks`` blocks takes (NOP NOP kind
    len, then 8 bytes a block; none for no blocks)."""
    return 4 + 8 * blocks if blocks else 0


MAX_WINDOW_SCALE = 14


def congestion_control(config: TcpConfig, mss: int) -> CongestionControl:
    """The algorithm the configuration names, for a connection of this MSS."""
    if config.congestion_control == "newreno":
        return NewReno(mss)
    return Cubic(mss)


class Recovery(enum.Enum):
    """The sender's loss-recovery state (Linux's CA states, in RFC terms)."""

    OPEN = "open"  # no loss known
    RECOVERY = "recovery"  # fast recovery (RFC 6675) paced by PRR (RFC 6937)
    LOSS = "loss"  # after a retransmission timeout


class State(enum.Enum):
    # Members are compared by identity: hashing them so too keeps the
    # per-segment state-set tests (``state in SENDING``) out of Enum's
    # Python-level __hash__.
    __hash__ = object.__hash__

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

    __hash__ = object.__hash__  # (as State's)

    CONNECTED = "connected"  # the handshake completed
    READABLE = "readable"  # new bytes are ready for receive()
    PEER_CLOSED = "peer closed"  # the peer's FIN arrived: end of stream
    WRITABLE = "writable"  # send-buffer space was freed
    RESET = "reset"  # the peer reset the connection
    REFUSED = "refused"  # the peer answered our SYN with a reset
    TIMED_OUT = "timed out"  # retransmissions or keepalive gave up
    CLOSED = "closed"  # the connection is gone: release it and its timers
    ACK_DUE = "ack due"  # call flush_ack once the current burst of input is handled
    # (an ACK is owed, or with defer_output, output is)


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


class TransmissionControlBlock:
    """Connection state shared by the sending and receiving halves."""

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
        self._init_send(iss)
        self._init_recovery(iss, now)
        self._init_receive(config)
        self._init_options(config, path_mss, timestamp_offset)
        self._init_timers(now)
        self._init_estimators(config)

    # The initialisers below run once per connection, in this order (the
    # attribute order is the same for every block).

    def _init_send(self, iss: int) -> None:
        """Send sequence space and buffer, all starting at ``iss``."""
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = iss
        self.max_snd_wnd = 0
        self.snd_scale = 0
        self.send_buffer = SendBuffer(iss + 1, self.config.send_buffer)
        self.fin_queued = False
        self.board = Scoreboard()
        self.rack = Rack()
        self.recovery = Recovery.OPEN
        self.recover = iss  # snd_max when the current recovery began (RFC 6582 "recover")
        self.prr: ProportionalRateReduction | None = None
        self.prr_allowance = 0
        self.dupacks = 0

    def _init_recovery(self, iss: int, now: int) -> None:
        """Loss recovery, undo, ECN, tail loss probes and retries."""
        # Undo of spurious recoveries (RFC 2883 D-SACK, RFC 4015 timestamps, RFC 5682).
        self.undo_state: tuple[int, ...] | None = None
        self.undo_retransmitted = 0  # bytes resent this episode not yet D-SACKed
        self.retransmit_ts: int | None = None  # TSval of the episode's first retransmission
        self.frto = False  # a timeout's F-RTO check is running
        self.frto_new_segments = 0
        # ECN (RFC 3168): agreed in the handshake; ECE owed on our ACKs until
        # the peer's CWR; CWR owed on our next new data after reducing.
        self.ecn_ok = False
        self.ece_pending = False
        self.cwr_pending = False
        self.ecn_high = iss  # one reduction per window of data
        self.outbox_ect: list[bool] = []  # per outbox entry: send it as ECT(0)
        self.tlp_at: int | None = None
        self.tlp_high: int | None = None  # snd_max when the outstanding probe left
        self.reorder_at: int | None = None
        self.retries = 0
        self.heard_since_timeout = False
        self.last_send = now

    def _init_receive(self, config: TcpConfig) -> None:
        """Receive side (set properly when the peer's SYN arrives)."""
        self.irs = 0
        # Charged by true size, never past three windows (tiny segments).
        self.receive_buffer = ReceiveBuffer(
            0, config.max_out_of_order_segments, memory_limit=3 * config.receive_buffer
        )
        self.rcv_scale = 0
        self.rcv_adv = 0
        self.peer_fin: int | None = None  # sequence number of the peer's FIN
        self.fin_received = False
        self.full_segments_unacked = 0
        self.ack_due = False
        # In-order data ACKed at once, not every second segment, after a
        # silence longer than the RTO (Linux's quickack mode).
        self.quick_acks = 0
        self.data_received_at: int | None = None
        # Out-of-order data or a filled hole came in this burst: its SACK
        # blocks are owed at flush_ack, unless data we send carries them.
        self.sack_due = False
        self.sack_due_range: int | None = None  # its first block's left edge
        self.acknowledged_to = 0  # rcv_nxt as of the last ACK we sent
        self.rcv_mss = 536

    def _init_options(self, config: TcpConfig, path_mss: int, timestamp_offset: int) -> None:
        """Negotiated options and segment sizes."""
        self.path_mss = path_mss
        self.mtu_search: MtuSearch | None = None  # after a black hole (plpmtud.py)
        # Payload bytes one offloaded packet may carry (0: no offload).
        self.offload_bytes = 0
        # Set by a shell that handles arrivals in bursts: what a segment
        # lets out is sent at flush_ack, once for the burst, so that the
        # packets freed by a burst of ACKs leave as one offloaded packet.
        self.defer_output = False
        self.output_due = False
        self.peer_mss = config.default_mss
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_offset = timestamp_offset
        self.sack_ok = False
        self.ws_ok = False

    def _init_timers(self, now: int) -> None:
        """Timers: absolute deadlines in ns, None when not running."""
        self.rto_at: int | None = None
        self.persist_at: int | None = None
        self.persist_backoff = 0
        self.window_probes_unanswered = 0
        self.delack_at: int | None = None
        self.ack_repeat_at: int | None = None  # our last pure ACK goes again
        self.time_wait_at: int | None = None
        self.fin_wait_2_at: int | None = None
        self.keepalive_probes = 0
        self.last_receive = now

    def _init_estimators(self, config: TcpConfig) -> None:
        """RTT estimation, congestion control and challenge-ACK limiting."""
        self.rtt = RttEstimator(config.rto_initial_ns, config.rto_min_ns, config.rto_max_ns)
        self.rtt_seq: int | None = None
        self.rtt_sent_at = 0
        self.cc = congestion_control(config, self.send_mss)
        # snd_max when the congestion window last held data back: the window
        # counts as used (may grow) until the ACKs reach it, as in Linux.
        self.cwnd_limited_to = 0
        self.challenge_window_start = -SECOND
        self.challenge_count = 0

    @property
    def send_mss(self) -> int:
        """Largest payload of a data segment: the smaller MSS, less the timestamp option."""
        peer, path = self.peer_mss, self.path_mss
        mss = peer if peer < path else path
        if self.ts_ok:
            mss -= TIMESTAMP_OPTION_SPACE
        return mss if mss > 64 else 64

    def sack_blocks_on_data(self) -> int:
        """How many SACK blocks a data segment sent now carries. RFC 2018
        section 4 asks for them on every ACK while data is held out of
        order, data segments included (as Linux sends them): a sender whose
        only ACKs are our data would otherwise learn nothing of what
        arrived, and wait for its timeout when a retransmission is lost.
        None when the blocks would take over a third of the segment."""
        if not self.sack_ok:
            return 0
        buffer = self.receive_buffer
        if not buffer.has_gaps and buffer.dsack is None:
            return 0
        blocks = buffer.sack_block_count(3 if self.ts_ok else 4)
        return blocks if 3 * sack_option_space(blocks) <= self.send_mss else 0

    @property
    def data_mss(self) -> int:
        """Payload of a new data segment: the send MSS less the room the
        SACK blocks it carries take (Linux's tcp_current_mss does the same)."""
        return self.send_mss - sack_option_space(self.sack_blocks_on_data())

    @property
    def burst_bytes(self) -> int:
        """The most new data one outgoing packet may carry: whole segments
        of :attr:`data_mss` when the interface segments for us, else one."""
        mss = self.data_mss
        return max(mss, self.offload_bytes - self.offload_bytes % mss)

    @property
    def receive_window(self) -> int:
        """Bytes we can still accept above rcv_nxt (what we advertised, at least)."""
        buffer = self.receive_buffer
        advertised = self.rcv_adv - buffer.rcv_nxt
        free = buffer.window_space(self.config.receive_buffer)
        # max(advertised, free, 0) without the calls: this runs twice a segment.
        if free < advertised:
            free = advertised
        return free if free > 0 else 0

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

    def _window_field(self, syn: bool) -> int:
        rcv_nxt = self.receive_buffer.rcv_nxt
        buffer = self.config.receive_buffer
        free = self.receive_buffer.window_space(buffer)
        if free < 0:
            free = 0
        rcv_adv = self.rcv_adv
        if syn:
            window = min(free, 0xFFFF)
            self.rcv_adv = max(rcv_adv, rcv_nxt + window)
            return window
        # (Comparisons instead of min and max calls below: every segment
        # sent comes here.)
        edge = rcv_nxt + free
        # Receiver silly-window avoidance (RFC 9293 3.8.6.2.2): move the right
        # edge only by a worthwhile step, and never move it back.
        step = edge - rcv_adv
        half = buffer // 2
        if step < (half if half < self.path_mss else self.path_mss) or buggify("tcp.hold_window"):
            edge = rcv_adv if rcv_adv > rcv_nxt else rcv_nxt
        scale = self.rcv_scale
        field = (edge - rcv_nxt + (1 << scale) - 1) >> scale
        if field > 0xFFFF:
            field = 0xFFFF
        right = rcv_nxt + (field << scale)
        if right > rcv_adv:
            self.rcv_adv = right
        return field

    def _emit(
        self, flags: int, seq: int, payload: bytes, now: int, *, resent: bool = False
    ) -> None:
        sack_blocks: tuple[tuple[int, int], ...] = ()
        # SACK blocks ride on data too, as many as fit below the MSS (new
        # data is cut smaller to leave room for them; see data_mss).
        buffer = self.receive_buffer
        if self.sack_ok and flags & ACK and (buffer.has_gaps or buffer.dsack):
            limit = 3 if self.ts_ok else 4
            if payload:
                limit = self._sack_blocks_fitting(seq, len(payload))
            if limit:
                sack_blocks = self._sack_option_blocks(limit)
                self.sack_due = False
                if payload:
                    self.stats.data_segments_with_sack += 1
        ect = False
        if self.ecn_ok:
            if self.ece_pending and flags & ACK:
                flags |= ECE
            # RFC 3168 6.1.5: only new data is ECN-capable, never a retransmission.
            if payload and not resent:
                ect = True
                if self.cwr_pending:
                    flags |= CWR
                    self.cwr_pending = False
        # (Positional, wrap() and _ts_now() written out: every segment sent
        # comes here.)
        header = TcpHeader(
            self.local_port,
            self.remote_port,
            seq & MASK,
            buffer.rcv_nxt & MASK if flags & ACK else 0,
            flags,
            self._window_field(False),
            0,
            None,
            None,
            False,
            sack_blocks,
            ((now // MS + self.ts_offset) & MASK, self.ts_recent) if self.ts_ok else None,
        )
        self._push(header, payload, now, carries_ack=not resent, ect=ect)

    def _sack_option_blocks(self, limit: int) -> tuple[tuple[int, int], ...]:
        """The SACK blocks of the next segment, in wire form. A block that
        ends where the peer's FIN sits covers the FIN too (its sequence
        number is held, RFC 2018 section 3 counts it), as Linux's do: Linux
        marks a segment SACKed only when a block covers all of it, FIN
        included, so a block that stopped short of the FIN told it nothing.
        Through the loss relay it then waited for its retransmission timeout
        with the hole below its last segment reported, 200 ms at the end of
        some echoes."""
        fin = self.peer_fin
        return tuple(
            (wrap(left), wrap(right + 1 if right == fin else right))
            for left, right in self.receive_buffer.sack_blocks(limit)
        )

    def _sack_blocks_fitting(self, seq: int, length: int) -> int:
        """SACK blocks a data packet of ``length`` payload bytes may carry:
        those of :meth:`sack_blocks_on_data` (a packet of several segments
        was cut to leave room for them), fewer when one segment (a
        retransmission, sent at its old size) leaves less room, none on a
        path-MTU probe (its size is the one being probed)."""
        if self.mtu_search is not None and self.mtu_search.probe_wire_seq == wrap(seq):
            return 0
        blocks = self.sack_blocks_on_data()
        mss = self.send_mss
        if length > mss:
            return blocks
        while blocks and length + sack_option_space(blocks) > mss:
            blocks -= 1
        return blocks

    def _push(
        self,
        header: TcpHeader,
        payload: bytes,
        now: int,
        *,
        carries_ack: bool = True,
        ect: bool = False,
    ) -> None:
        # A resent segment may be old news to the peer, which then drops it
        # whole, ACK field included: it does not settle an ACK we owe.
        if carries_ack and header.flags & ACK:
            if self.quick_acks and self.receive_buffer.rcv_nxt > self.acknowledged_to:
                self.quick_acks -= 1
            self.delack_at = None
            self.full_segments_unacked = 0
            self.ack_due = False
            self.ack_repeat_at = self._ack_repeat_deadline(header, payload, now)
            self.acknowledged_to = self.receive_buffer.rcv_nxt
        self.outbox.append((header, payload))
        self.outbox_ect.append(ect)
        self.stats.segments_out += 1
        self.stats.bytes_out += len(payload)
        self.last_send = now

    def _ack_repeat_deadline(self, header: TcpHeader, payload: bytes, now: int) -> int | None:
        """When a pure ACK that told the peer something (data acknowledged,
        or SACK blocks) goes once more, should the peer send nothing after
        it: a lost ACK is otherwise found only by the peer's retransmission
        timeout. A Linux sender arms no tail loss probe while recovering,
        and for a lone segment in flight its probe waits as long as the
        timeout; through the loss relay at 3% loss 3 of 12 stalls of 200 ms
        were such ACKs (the hole-filling one, or the one for a lone segment
        while its window to us was shut), with nothing of ours following to
        carry the ACK again. Only on SACK connections whose peer may still
        send data: there a duplicate ACK that brings no new SACK information
        is no DupAck (RFC 6675 section 2), while without SACK three of them
        start a fast retransmit."""
        if (
            payload
            or header.flags & (SYN | FIN | RST)
            or not self.sack_ok
            or self.state not in RECEIVING  # the peer may still send data
        ):
            return None
        if self.receive_buffer.rcv_nxt == self.acknowledged_to and not header.sack_blocks:
            return None  # nothing the peer waits for (a window update, a challenge ACK)
        srtt = self.rtt.srtt
        if srtt is None:
            return now + ACK_REPEAT_FLOOR_NS
        # Never later than half our RTO (the peer's is much the same): a
        # round trip swollen by a delayed ACK would make it come too late.
        ceiling = max(self.rtt.rto // 2, ACK_REPEAT_FLOOR_NS)
        return now + min(max(2 * srtt, ACK_REPEAT_FLOOR_NS), ceiling)

    def _send_syn(self, now: int, *, with_ack: bool) -> None:
        config = self.config
        if with_ack:
            # Answer with exactly the options the peer offered and we support.
            timestamps = (self._ts_now(now), self.ts_recent) if self.ts_ok else None
            window_scale = self.rcv_scale if self.ws_ok else None
            sack_permitted = self.sack_ok
            ecn_flags = ECE if self.ecn_ok else 0  # RFC 3168 6.1.1: ECE alone agrees
        else:
            ecn_flags = ECE | CWR if config.ecn == "on" else 0
            timestamps = (self._ts_now(now), 0) if config.timestamps else None
            window_scale = config.window_scale if config.window_scaling else None
            sack_permitted = config.sack
        header = TcpHeader(
            src_port=self.local_port,
            dst_port=self.remote_port,
            seq=wrap(self.iss),
            ack=wrap(self.receive_buffer.rcv_nxt) if with_ack else 0,
            flags=(SYN | ACK if with_ack else SYN) | ecn_flags,
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
        # snd_max, not snd_nxt: after a timeout snd_nxt goes back to resend,
        # and an ACK numbered below the peer's rcv_nxt would be unacceptable
        # to it, ACK field and all (as in BSD's tcp_output). But no further
        # than the peer's window reaches: a peer that dropped data it had
        # room for (Linux prunes its queues when the reader stalls) drops
        # a pure ACK beyond its window whole, and would never hear our ACK
        # (Linux's tcp_acceptable_seq makes the same choice).
        seq = max(self.snd_una, min(self.snd_max, self.snd_una + self.snd_wnd))
        self._emit(ACK, seq, b"", now)

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

    def _become_closed(self) -> None:
        if self.state == State.CLOSED and Event.CLOSED in self.events:
            return
        self.state = State.CLOSED
        self.rto_at = self.persist_at = self.delack_at = self.ack_repeat_at = None
        self.time_wait_at = self.fin_wait_2_at = None
        self.tlp_at = self.reorder_at = None
        self.events.append(Event.CLOSED)

    def _fail(self, event: Event) -> None:
        self.events.append(event)
        self._become_closed()

    def _enter_time_wait(self, now: int) -> None:
        self.state = State.TIME_WAIT
        self.rto_at = self.persist_at = self.delack_at = self.fin_wait_2_at = None
        self.tlp_at = self.reorder_at = self.ack_repeat_at = None
        self.time_wait_at = now + self.config.time_wait_ns

    def take_outbox(self) -> list[tuple[TcpHeader, bytes]]:
        out = self.outbox
        self.outbox = []
        self.outbox_ect = []
        return out

    def take_outbox_marked(self) -> list[tuple[TcpHeader, bytes, bool]]:
        """The outbox with, per segment, whether the IP layer should mark it
        ECN-capable (ECT(0)): new data on a connection that agreed to ECN."""
        marked = [
            (header, payload, ect)
            for (header, payload), ect in zip(self.outbox, self.outbox_ect, strict=True)
        ]
        self.outbox = []
        self.outbox_ect = []
        return marked

    def take_events(self) -> list[Event]:
        events = self.events
        self.events = []
        return events
