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

The variables live in :mod:`looming.net.tcp.tcb`, sending and the timers in
:mod:`looming.net.tcp.sender`; this module opens, receives and closes.
"""

from __future__ import annotations

from dataclasses import replace

from looming.net.tcp.config import TcpConfig, TcpStats
from looming.net.tcp.sender import TcpSender
from looming.net.tcp.seq import MASK, before32, unwrap, wrap
from looming.net.tcp.tcb import (
    CWR,
    ECE,
    MAX_WINDOW_SCALE,
    QUICK_ACKS,
    RECEIVING,
    SENDING,
    SYNCHRONIZED,
    Event,
    State,
    congestion_control,
)
from looming.net.wire.tcp import ACK, FIN, RST, SYN, TcpHeader
from looming.sim.buggify import buggify

# Enum members the per-segment paths test, read once: Python 3.11 reads a
# member through its class by EnumType's __getattr__ hook, some 0.1 us each.
_CLOSED, _SYN_SENT, _SYN_RECEIVED = State.CLOSED, State.SYN_SENT, State.SYN_RECEIVED
_READABLE, _ACK_DUE = Event.READABLE, Event.ACK_DUE

__all__ = ["Event", "State", "TcpConnection"]

# What one received segment may cost beyond its bytes, at most (a view and
# the frame around it): merged segments must fit as they would one by one.
MERGE_MARGIN = 1024
# The states whose data merged segments may carry (ours may be shut already).
_MERGING = frozenset((State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2))
# The shortest delayed-ACK time once the path's round trip is known (see
# TcpConnection.delayed_ack_timeout): a timer much below a millisecond would
# fire before the event loop could hand over the segment a burst holds next.
DELACK_FLOOR_NS = 1_000_000
# How soon a SYN goes again after our reset answered an ACK that is not for
# it (see TcpConnection._input_syn_sent): long enough for the reset, which
# left first on the same path, to end the peer's old connection.
SYN_RETRY_AFTER_RESET_NS = 2_000_000


class TcpConnection(TcpSender):
    """The state of one connection; see the module documentation."""

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
        conn.cc = congestion_control(config, conn.send_mss)
        conn.recover = iss + 1
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
        if syn.has_ack:
            # Our SYN asked for ECN; a SYN-ACK with ECE and without CWR agrees.
            self.ecn_ok = self.config.ecn == "on" and (syn.flags & (ECE | CWR)) == ECE
        else:
            # A SYN asking for ECN carries both ECE and CWR (RFC 3168 6.1.1).
            self.ecn_ok = self.config.ecn != "off" and (syn.flags & (ECE | CWR)) == ECE | CWR
        if self.ecn_ok:
            self.stats.ecn_negotiated += 1
        if self.config.timestamps and syn.timestamps is not None:
            self.ts_ok = True
            self.ts_recent = syn.timestamps[0]
        # A SYN's window is never scaled (RFC 7323 2.2).
        self.snd_wnd = syn.window
        self.max_snd_wnd = syn.window
        self.cc = congestion_control(self.config, self.send_mss)
        self.last_receive = now

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
        # In SYN-RECEIVED the FIN waits for ESTABLISHED (RFC 9293 3.10.4),
        # which then becomes FIN-WAIT-1 at once.
        if self.state == State.ESTABLISHED:
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
            self._send_reset(self.snd_max, now)
        self._become_closed()

    def input(
        self,
        header: TcpHeader,
        payload: bytes | memoryview,
        now: int,
        *,
        ce: bool = False,
        merged: tuple[int, ...] | None = None,
    ) -> None:
        """Process one received segment addressed to this connection; ``ce``
        says its IP header was marked Congestion Experienced. ``merged``:
        the payload is that of segments of these sizes that followed each
        other in one burst (see :meth:`takes_merged`), and is taken as they
        would be one by one, with one ACK decision."""
        if header.flags & RST:
            self.stats.resets_received += 1
        if self.state is _CLOSED:
            return
        if self.ecn_ok and self.state in SYNCHRONIZED:
            self._ecn_input(header, ce, now)
        if self.state is _SYN_SENT:
            self._input_syn_sent(header, now)
            return
        self._input_synchronizing(header, payload, now, merged)

    def takes_merged(
        self,
        seq: int,
        length: int,
        count: int,
        header: TcpHeader | None = None,
    ) -> bool:
        """Whether ``count`` segments, ``length`` bytes in all, that follow
        each other from wire sequence number ``seq`` on may be handed to
        :meth:`input` merged: taken one by one,
        each would have been taken whole and alike. The connection is
        established (or only our side is closing), the segments fit the
        window and the memory limits, and either they start at the next
        byte expected and no hole is open, or (with SACK) they lie beyond
        it, touching no range already held. The SACK blocks of their
        ``header`` (the same in each) hold no D-SACK: each segment would
        report it again."""
        if self.state not in _MERGING or self.app_closed:
            return False
        if header is not None and header.sack_blocks and self._reports_dsack(header):
            return False
        if not (self.defer_output and self.config.coalesce_acks):
            return False  # each segment's ACK decision is its own
        buffer = self.receive_buffer
        if buffer.dsack:
            return False
        rcv_nxt = buffer.rcv_nxt
        start = unwrap(seq, rcv_nxt)
        # Within the window advertised: its right edge never moves back, so
        # each segment alone would have been in the window whole (the
        # window's free space may shrink by more than each one's bytes).
        if start < rcv_nxt or start + length > self.rcv_adv:
            return False
        # Each alone is charged at most its size and a frame's overheads.
        if not buffer.can_hold(length + count * MERGE_MARGIN):
            return False
        if start == rcv_nxt:
            return not buffer.has_gaps
        return self.sack_ok and buffer.holds_none_of(start, start + length)

    def _ecn_input(self, header: TcpHeader, ce: bool, now: int) -> None:
        """RFC 3168 6.1.3: echo CE with ECE until the peer says CWR."""
        if header.flags & CWR:
            self.ece_pending = False
        if ce:
            self.stats.ecn_ce_received += 1
            self.ece_pending = True

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
                    self._retry_syn_soon(now)
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

    def _retry_syn_soon(self, now: int) -> None:
        """An ACK not for our SYN came back, and our reset answered it: the
        peer still holds an older connection on these ports (one whose end
        it never heard, or our SYN met its challenge ACK, RFC 5961 4.2).
        The reset ends that connection, so the first SYN goes again in
        :data:`SYN_RETRY_AFTER_RESET_NS` rather than after the initial
        retransmission timeout (1 s): a client reusing the ports of a
        connection the server still holds would otherwise wait a second.
        Once a connection, as Linux does (before any retransmission):
        forged ACKs cannot make a SYN flood."""
        if self.retries == 0 and self.rto_at is not None:
            self.rto_at = min(self.rto_at, now + SYN_RETRY_AFTER_RESET_NS)

    def _segment_acceptable(self, seq: int, length: int) -> bool:
        rcv_nxt = self.receive_buffer.rcv_nxt
        if seq == rcv_nxt:
            # In order (most segments): what the tests below give, without
            # the window when there is no data.
            return length == 0 or self.receive_window > 0
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
        self,
        header: TcpHeader,
        payload: bytes | memoryview,
        now: int,
        merged: tuple[int, ...] | None = None,
    ) -> None:
        """A segment in SYN-RECEIVED or later: RFC 9293 3.10.7.4, step by step."""
        # (The control bits are tested on the flags field directly: the
        # properties are a call each, and this runs for every segment.)
        rcv_nxt = self.receive_buffer.rcv_nxt
        seq = unwrap(header.seq, rcv_nxt)
        flags = header.flags
        if flags & SYN and seq == self.irs and not flags & RST:
            repeated = self._input_repeated_syn(header, seq, now)
            if repeated is None:
                return
            header = repeated
            flags = header.flags
            seq += 1
        # First: the sequence number (with PAWS).
        if not self._input_sequence_ok(header, seq, rcv_nxt, len(payload), now):
            return
        # Second: RST. Fourth: SYN (RFC 5961 section 4: a challenge ACK).
        if flags & RST:
            self._input_reset(seq, now)
            return
        if flags & SYN:
            self._challenge_ack(now)
            return
        # Fifth: ACK.
        if not flags & ACK:
            return
        if self.state is _SYN_RECEIVED and not self._input_ack_of_syn(header, seq, now):
            return
        # The window as the last of merged segments would have left it (RFC
        # 9293 SND.WL1): its sequence number is above the first one's, so an
        # update the first would have made the last makes too, and the last
        # one's stands (the window is the same in each).
        window_seq = seq if merged is None else seq + len(payload) - merged[-1]
        if not self._process_ack(header, window_seq, len(payload), now):
            return
        if self.state is _CLOSED:
            return
        # Timestamp to echo (RFC 7323 section 4.3).
        if self.ts_ok and header.timestamps is not None and seq <= rcv_nxt:
            self.ts_recent = header.timestamps[0]
        # Sixth: URG. The urgent pointer is not supported; it is ignored.
        if flags & FIN and self.peer_fin is None:
            # Known before the text's ACK goes: SACK blocks cover a FIN held.
            self.peer_fin = seq + len(payload)
        # Seventh: segment text (data in states past the peer's FIN is ignored).
        if payload and self.state in RECEIVING and not self._input_text(seq, payload, now, merged):
            return
        # Eighth: FIN.
        if flags & FIN or self.peer_fin is not None:
            self._input_fin(header, seq + len(payload), now)
        self._output_after_input(now)

    def _output_after_input(self, now: int) -> None:
        """Send what the segment let out, or with ``defer_output`` say that
        :meth:`flush_ack` is to, once for the whole burst."""
        if not (self._has_unsent() or self.board.has_lost_to_send):
            # What _output does with nothing to send or resend: the
            # retransmission timer for data in flight, if it is not running.
            if self.snd_max > self.snd_una and self.rto_at is None and self.state in SENDING:
                self.rto_at = now + self.rtt.rto
        elif not self.defer_output:
            self._output(now)
        elif not self.output_due:
            self.output_due = True
            if not self.ack_due:
                self.events.append(_ACK_DUE)

    def _input_repeated_syn(self, header: TcpHeader, seq: int, now: int) -> TcpHeader | None:
        """The peer's SYN again (``seq`` is IRS): answer it and return None,
        or, for a SYN-ACK in a simultaneous open, the header without its SYN."""
        if self.state != State.SYN_RECEIVED:
            # A repeated SYN-ACK after our ACK was lost: its SYN is behind us.
            self.send_ack(now)
            if self.state == State.TIME_WAIT:
                self.time_wait_at = now + self.config.time_wait_ns
            return None
        if not header.has_ack:
            # The peer repeated its SYN: our SYN-ACK was lost.
            self._send_syn(now, with_ack=True)
            return None
        # Simultaneous open: the peer's SYN-ACK. Its SYN is already
        # counted, so process the rest as a plain ACK (RFC 9293 figure 7).
        return replace(header, flags=header.flags & ~SYN, seq=wrap(seq + 1))

    def _input_sequence_ok(
        self, header: TcpHeader, seq: int, rcv_nxt: int, length: int, now: int
    ) -> bool:
        """RFC 9293 3.10.7.4 first step, after PAWS (RFC 7323 section 5):
        False when the segment was dropped (and answered if it should be)."""
        flags = header.flags
        if (
            self.ts_ok
            and header.timestamps is not None
            and not flags & RST
            and before32(header.timestamps[0], self.ts_recent)
        ):
            self.stats.paws_dropped += 1
            self.send_ack(now)
            return False
        seg_len = length
        if flags & (SYN | FIN):
            seg_len += (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        if self.sack_ok and length and seq + length <= rcv_nxt:
            # All of it came before: a D-SACK tells the sender (RFC 2883).
            self.receive_buffer.note_duplicate(seq, seq + length)
        if not self._segment_acceptable(seq, seg_len):
            self._input_out_of_window(header, seq, rcv_nxt, now)
            return False
        self.last_receive = now
        self.keepalive_probes = 0
        self.heard_since_timeout = True
        if seg_len:
            self.ack_repeat_at = None  # the peer is sending: its ACK comes anyway
        return True

    def _input_out_of_window(self, header: TcpHeader, seq: int, rcv_nxt: int, now: int) -> None:
        """An unacceptable segment: counted, ACKed unless it is a RST."""
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

    def _input_ack_of_syn(self, header: TcpHeader, seq: int, now: int) -> bool:
        """SYN-RECEIVED: an ACK of our SYN completes the handshake; any
        other ACK gets a RST and False."""
        ack = unwrap(header.ack, self.snd_una)
        if not self.snd_una < ack <= self.snd_max:
            self._push(
                TcpHeader(self.local_port, self.remote_port, header.ack, 0, RST, 0),
                b"",
                now,
            )
            self.stats.resets_sent += 1
            return False
        self.state = State.FIN_WAIT_1 if self.fin_queued else State.ESTABLISHED
        self.snd_wnd = header.window << self.snd_scale
        self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        self.events.append(Event.CONNECTED)
        return True

    def _input_text(
        self,
        seq: int,
        payload: bytes | memoryview,
        now: int,
        merged: tuple[int, ...] | None = None,
    ) -> bool:
        """Take the segment's data; False when the connection was reset
        because the application let go of it."""
        if self.app_closed:
            # Nobody will read this: tell the peer (RFC 9293 3.10.7.4, as Linux does).
            self._send_reset(self.snd_max, now)
            self._fail(Event.RESET)
            return False
        self._receive_data(seq, payload, now, merged)
        return True

    def _input_fin(self, header: TcpHeader, fin_seq: int, now: int) -> None:
        """A FIN at ``fin_seq`` (if the header has one) and a FIN that the
        data has now reached; a retransmitted FIN is ACKed again."""
        if header.fin and self.peer_fin is None:
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

    def _receive_data(
        self,
        seq: int,
        payload: bytes | memoryview,
        now: int,
        merged: tuple[int, ...] | None = None,
    ) -> None:
        buffer = self.receive_buffer
        rcv_nxt = buffer.rcv_nxt
        right_edge = rcv_nxt + self.receive_window
        if seq + len(payload) > right_edge:
            payload = payload[: max(right_edge - seq, 0)]
        had_gaps = buffer.has_gaps
        advanced = buffer.insert(seq, payload)
        if not self.sack_ok:
            # No SACK option to report it in: a D-SACK kept would stay for
            # good, and takes_merged would merge nothing from then on.
            buffer.dsack = None
        full = 0
        if merged is not None:
            full = self._estimate_mss(merged)
        elif len(payload) > self.rcv_mss:
            self.rcv_mss = min(len(payload), self.path_mss)
        if not advanced:
            # Out of order or duplicate: ACK at once so the sender learns (RFC 5681 4.2).
            self._ack_for_sender(now)
            return
        self.events.append(_READABLE)
        if had_gaps:
            self._ack_hole_filled(now)
            return
        if merged is not None:
            self.full_segments_unacked += full
        elif len(payload) >= self.rcv_mss:
            self.full_segments_unacked += 1
        last, self.data_received_at = self.data_received_at, now
        if last is not None and now - last > self.rtt.rto:
            self.quick_acks = QUICK_ACKS  # the sender restarts, likely from one segment
        # buggify: an ACK for two full segments held for the delayed-ACK timer.
        quick = self.full_segments_unacked >= 2 or self.quick_acks > 0
        if quick and not buggify("tcp.delay_ack"):
            unacknowledged = self.receive_buffer.rcv_nxt - self.acknowledged_to
            if not self.config.coalesce_acks or unacknowledged >= self.config.receive_buffer // 4:
                # Coalescing stops at a quarter of the window, so that a long
                # burst does not leave the sender waiting for its window.
                self.send_ack(now)
            elif not self.ack_due:
                self.ack_due = True
                if not self.output_due:
                    self.events.append(_ACK_DUE)
        elif self.delack_at is None:
            self.delack_at = now + self.delayed_ack_timeout()

    def delayed_ack_timeout(self) -> int:
        """How long in-order data may wait for its ACK: the configured time
        (40 ms), but no longer than two of the path's shortest round trips
        (RACK's min_RTT, from our own data's ACKs; at least
        :data:`DELACK_FLOOR_NS`). A delayed ACK waits for the next segment
        of the same flight, which follows within a round trip if it comes at
        all; one that has not come by then is held by a sender waiting for
        this ACK (its window spent, or its application slow). Through the
        loss relay the Linux sender, its window cut to a few segments,
        sent a lone segment and waited 40 ms for our ACK, a few times an
        echo: 0.08-0.14 s of a 0.98-1.2 s echo at 3% loss. Linux's own
        floor is 40 ms (TCP_DELACK_MIN) whatever the round trip."""
        configured = self.config.delayed_ack_ns
        min_rtt = self.rack.min_rtt
        if min_rtt is None:
            return configured
        return min(configured, max(2 * min_rtt, DELACK_FLOOR_NS))

    def _estimate_mss(self, sizes: tuple[int, ...]) -> int:
        """The receiver's MSS estimate as segments of ``sizes`` bytes, one
        after the other, leave it; returns how many of them were full sized
        (each counts towards the ACK every second full segment earns)."""
        mss, path_mss, full = self.rcv_mss, self.path_mss, 0
        for size in sizes:
            if size > mss:
                mss = min(size, path_mss)
            if size >= mss:
                full += 1
        self.rcv_mss = mss
        return full

    def _ack_hole_filled(self, now: int) -> None:
        """A segment filled a hole (RFC 5681 4.2: an immediate ACK). The
        last hole filled is ACKed on its own at once, not with the rest of
        the burst: the sender is recovering, where Linux arms no tail loss
        probe, and a burst that also holds the rest of its flight would
        otherwise answer all of it with one ACK. In a capture at 5% loss
        that ACK was lost and the Linux sender waited 200 ms for its
        retransmission timeout; now one of two ACKs has to arrive."""
        if self.defer_output and not self.receive_buffer.has_gaps:
            self.send_ack(now)
        else:
            self._ack_for_sender(now)

    def _ack_for_sender(self, now: int) -> None:
        """The immediate ACK of RFC 5681 4.2 (out-of-order data, a filled
        hole). A shell that hands over arrivals in bursts (``defer_output``)
        gets, on a SACK connection, one per out-of-order range a burst grows:
        segments that only extend the range the pending ACK will report
        first wait for :meth:`flush_ack`, as Linux's GRO merges them (at 5%
        loss looming sent some 2,700 such ACKs per 10 MB echo, mostly runs of
        five or six growing one range within 30 us). A segment that starts
        or changes another range is ACKed at once, with the pending range as
        its second block, so that no range waits unreported behind others
        (an ACK holds three blocks). Data the burst lets out carries the
        blocks too, and then stands in for the pending ACK. Through the
        loss relay Linux, the sender, retransmitted a third more with one ACK
        per burst and a fifth more with this, while timeouts fell on both
        sides and looming's echoes got shorter (see the commit's figures).
        A segment that arrived twice is ACKed at once too: its D-SACK
        block reports "the most recent packet" (RFC 2883 section 4), not a
        later one, and goes in one ACK whatever else the burst holds."""
        if not (self.defer_output and self.sack_ok) or self.receive_buffer.dsack is not None:
            self.send_ack(now)
            return
        latest = self.receive_buffer.latest_range
        if self.sack_due and latest != self.sack_due_range:
            self.send_ack(now)  # reports this range first, the pending one after it
            self.sack_due_range = latest
            return
        self.sack_due_range = latest
        self.sack_due = True
        if not self.ack_due and not self.output_due:
            self.events.append(_ACK_DUE)
        self.ack_due = True

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

    def push(self, now: int) -> None:
        """Send what may go now (after Nagle's algorithm is turned off)."""
        self._output(now)

    def flush_ack(self, now: int) -> None:
        """Send what :attr:`Event.ACK_DUE` announced: the output the burst of
        arrivals let out (with ``defer_output``), then the ACK it earned,
        unless a segment already carried it."""
        if self.output_due:
            self.output_due = False
            self._output(now)
        buffer = self.receive_buffer
        # Data segments carry SACK blocks too, but a retransmission may have had no room.
        sack_owed = self.sack_due and (buffer.has_gaps or bool(buffer.dsack))
        if (self.ack_due or sack_owed) and self.state in SYNCHRONIZED:
            self.send_ack(now)
        self.ack_due = False
        self.sack_due = False

    def accepts_new_syn(self, syn: TcpHeader) -> bool:
        """Whether a SYN may reopen this TIME-WAIT connection (RFC 6191)."""
        if self.state != State.TIME_WAIT or syn.has_ack or syn.rst:
            return False
        if self.ts_ok and syn.timestamps is not None:
            return before32(self.ts_recent, syn.timestamps[0])
        return unwrap(syn.seq, self.receive_buffer.rcv_nxt) > self.receive_buffer.rcv_nxt
