"""The sending half of a TCP connection: what goes out when, with the
persist, keepalive, retransmission, tail-loss-probe and reordering timers
(RFC 9293 3.10.7.4, RFC 6298, RFC 3042, RFC 8985 section 7).

What an acknowledgment tells us, and the loss recovery it drives, is in
:mod:`looming.net.tcp.recovery`.
"""

from __future__ import annotations

from looming.net.tcp.plpmtud import expire_probe, probe_lost_at
from looming.net.tcp.rack import probe_timeout
from looming.net.tcp.recovery import LossRecovery
from looming.net.tcp.scoreboard import Segment
from looming.net.tcp.tcb import SENDING, SYNCHRONIZED, Event, Recovery, State
from looming.net.wire.tcp import ACK, FIN, PSH
from looming.sim.buggify import buggify

# Enum members the per-segment paths test, read once: Python 3.11 reads a
# member through its class by EnumType's __getattr__ hook, some 0.1 us each.
_OPEN, _RECOVERY = Recovery.OPEN, Recovery.RECOVERY


class TcpSender(LossRecovery):
    """Output, retransmission and timers."""

    def next_deadline(self) -> int | None:
        deadlines = [
            t
            for t in (
                self.rto_at,
                self.persist_at,
                self.delack_at,
                self.ack_repeat_at,
                self.time_wait_at,
                self.fin_wait_2_at,
                self.keepalive_deadline,
                self.tlp_at,
                self.reorder_at,
                probe_lost_at(self),
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
        if self.reorder_at is not None and now >= self.reorder_at:
            self.reorder_at = None
            self._on_reorder_timeout(now)
        if expire_probe(self, now):
            self._output(now)  # a lost path-MTU probe's bytes, at the old size
        if self.tlp_at is not None and now >= self.tlp_at:
            self.tlp_at = None
            self._send_tail_loss_probe(now)
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
        if self.ack_repeat_at is not None and now >= self.ack_repeat_at:
            self.send_ack(now)  # the same ACK again (see _ack_repeat_deadline)
            self.ack_repeat_at = None  # once
            self.stats.acks_repeated += 1
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
                    self._send_reset(self.snd_max, now)
                self._fail(Event.TIMED_OUT)
            return
        self.rtt.back_off()
        self.rtt_seq = None  # Karn: no samples from retransmitted data
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED):
            self.stats.retransmits += 1
            self._send_syn(now, with_ack=self.state == State.SYN_RECEIVED)
            self.rto_at = now + self.rtt.rto
            return
        self._enter_loss(now)
        if self.snd_wnd == 0:
            self._send_window_probe(now)
        else:
            self._output(now, force_one=True)
        self.rto_at = now + self.rtt.rto

    def _send_window_probe(self, now: int) -> None:
        # An ACK with an old sequence number makes the peer answer with its
        # current window, without putting data beyond that window.
        self._emit(ACK, self.snd_una - 1, b"", now, resent=True)

    def _on_persist(self, now: int) -> None:
        if self.state not in SENDING or not self._has_unsent() or self.snd_max > self.snd_una:
            self.persist_backoff = 0
            return
        if self.snd_wnd > 0:
            # The window is open but smaller than silly-window avoidance
            # sends into, and nothing is in flight to bring an ACK that
            # widens it (its update may have been lost): the override
            # timeout of RFC 9293 3.8.6.2.1 sends what fits.
            self._output(now, override_sws=True)
            if self.snd_max > self.snd_una:
                return
        else:
            if self._window_probes_exhausted(now):
                return
            self._send_window_probe(now)
        self.persist_backoff = min(self.persist_backoff + 1, 16)
        self._arm_persist(now)

    def _window_probes_exhausted(self, now: int) -> bool:
        """RFC 1122 4.2.2.17: a receiver that answers the window probes keeps
        the connection however long its window stays shut, but a probe that
        gets no answer at all counts as an unanswered retransmission (RFC
        9293's R2, Linux's tcp_retries2): past ``data_retries`` of them in a
        row the peer is gone, and the connection is aborted."""
        heard = self.heard_since_timeout
        self.heard_since_timeout = False
        self.window_probes_unanswered = 0 if heard else self.window_probes_unanswered + 1
        if self.window_probes_unanswered <= self.config.data_retries:
            return False
        self.stats.window_probe_timeouts += 1
        self._send_reset(self.snd_max, now)
        self._fail(Event.TIMED_OUT)
        return True

    def _arm_persist(self, now: int) -> None:
        base = max(self.rtt.rto, self.config.persist_min_ns)
        self.persist_at = now + min(base << self.persist_backoff, self.config.persist_max_ns)

    def _on_keepalive(self, now: int) -> None:
        if self.keepalive_probes >= self.config.keepalive_probes:
            self._send_reset(self.snd_max, now)
            self._fail(Event.TIMED_OUT)
            return
        self.keepalive_probes += 1
        self._emit(ACK, self.snd_una - 1, b"", now, resent=True)

    def _has_unsent(self) -> bool:
        return self.snd_max < self.send_buffer.end or (
            self.fin_queued and self.snd_max <= self.send_buffer.end
        )

    def _send_budget(self, force_one: bool) -> int:
        """Bytes the congestion state lets out now: PRR's allowance in fast
        recovery, else the window less the pipe (RFC 6675 section 5)."""
        mss = self.send_mss
        if self.recovery is _RECOVERY and self.prr is not None:
            budget = self.prr_allowance
        else:
            window = self.cc.cwnd
            if self.dupacks and self.recovery is _OPEN:
                # Limited transmit (RFC 3042): a new segment for each of the
                # first two duplicate ACKs, to keep ACKs coming.
                window += min(self.dupacks, 2) * mss
            budget = window - self.board.pipe(self.snd_max - self.snd_una)
        if self.frto_new_segments:
            budget = max(budget, self.frto_new_segments * mss)
        if force_one:
            budget = max(budget, mss)
        return budget

    def _output(self, now: int, *, force_one: bool = False, override_sws: bool = False) -> None:
        """Send lost segments again, then new data, as far as the windows,
        Nagle and silly-window avoidance allow."""
        if self.state not in SENDING:
            return
        board = self.board
        if not self._has_unsent() and not board.has_lost_to_send:
            # Nothing new and nothing to resend: the common case on a
            # connection that is only receiving.
            if self.snd_max > self.snd_una and self.rto_at is None:
                self.rto_at = now + self.rtt.rto
            return
        budget = self._send_budget(force_one)
        start_budget = budget
        frto_only_new = self.frto_new_segments > 0
        while budget > 0:
            if frto_only_new and not self.frto_new_segments:
                break  # F-RTO step 2b: this ACK sends new data only
            segment = None if frto_only_new else board.first_lost_to_send()
            if segment is not None:
                resent = self._resend(segment, now)
                if not resent:
                    break  # beyond the window: the persist or RTO timer will come back
                budget -= resent
                continue
            sent = self._send_new(now, budget, override_sws=override_sws)
            if sent <= 0:
                break
            budget -= sent
            if self.frto_new_segments:
                self.frto_new_segments = max(self.frto_new_segments - 1, 0)
        if budget < self.send_mss and (self._has_unsent() or board.has_lost_to_send):
            self.cwnd_limited_to = self.snd_max  # the window, not the application, held data back
        if self.prr is not None and self.recovery is _RECOVERY:
            used = start_budget - budget
            self.prr.on_sent(used)
            self.prr_allowance = max(self.prr_allowance - used, 0)
        self.frto_new_segments = 0
        self.snd_nxt = self.snd_max
        if self.snd_max > self.snd_una:
            if self.rto_at is None:
                early = buggify("tcp.early_rto")  # fires spuriously, as after a delay spike
                self.rto_at = now + (self.rtt.rto // 8 if early else self.rtt.rto)
            self.persist_at = None
            self._arm_tail_loss_probe(now)
        elif self._has_unsent() and self.persist_at is None:
            # Held back with nothing in flight: by a zero window, or by one
            # too small to send into; the persist timer comes back for it.
            self._arm_persist(now)

    def _send_new(self, now: int, budget: int, *, override_sws: bool = False) -> int:
        """Send one packet of new data (or the FIN) within ``budget``;
        returns the sequence space it took, 0 when nothing may go."""
        seq = self.snd_max
        data_end = self.send_buffer.end
        if seq >= data_end:
            if self.fin_queued and seq == data_end:
                self._emit(ACK | FIN, seq, b"", now)
                self.board.sent(seq, seq + 1, now)
                self.snd_max = seq + 1
                return 1
            return 0
        mss = self.data_mss
        offload = self.offload_bytes  # (burst_bytes, without data_mss again)
        length = min(max(mss, offload - offload % mss), data_end - seq)
        room = min(self.snd_una + self.snd_wnd - seq, budget)
        if self.mtu_search is not None and self.recovery is _OPEN:
            length = self.mtu_search.take(now, seq, data_end - seq, room, self) or length
        if room < length and length > mss and room >= mss:
            length = room - room % mss  # an offloaded burst of whole segments
        elif room < length:
            # Sender silly-window avoidance: a window-limited partial
            # segment only when it is at least half the peer's largest window.
            if room <= 0 or (room < self.max_snd_wnd // 2 and not override_sws):
                return 0
            length = room
        elif (
            length < mss
            and not self.nodelay
            and self.snd_max > self.snd_una
            and not self.fin_queued
        ):
            return 0  # Nagle: hold a small segment while data is unacknowledged
        end = seq + length
        flags = ACK
        fin = end == data_end and self.fin_queued
        if end == data_end:
            flags |= PSH | (FIN if fin else 0)
        if self.rtt_seq is None and not self.ts_ok:
            self.rtt_seq = seq
            self.rtt_sent_at = now
        self._emit(flags, seq, self.send_buffer.slice(seq, length), now)
        for start in range(seq, end, mss):
            self.board.sent(start, min(start + mss, end), now)
        if fin:
            self.board.segments[-1].end += 1
            end += 1
        self.snd_max = end
        return end - seq

    def _resend(self, segment: Segment, now: int) -> int:
        """Retransmit one segment; returns its length, 0 when the peer's
        window no longer reaches it."""
        data_end = self.send_buffer.end
        start, end = segment.start, segment.end
        if self.mtu_search is not None:
            self.mtu_search.resent(start, end)
        fin = self.fin_queued and end == data_end + 1
        payload_end = min(end, data_end)
        edge = self.snd_una + self.snd_wnd
        if payload_end > start and payload_end > edge:
            # The peer shrank its window below what it once offered (Linux
            # does when its reader stalls) and drops a segment that ends past
            # it while it holds unread data: resend only what still fits.
            if start >= edge:
                return 0
            payload_end = edge
            fin = False
        flags = ACK
        if payload_end == data_end and start < data_end:
            flags |= PSH
        if fin:
            flags |= FIN
        self.stats.retransmits += 1
        if self.rtt_seq is not None and self.rtt_seq < end:
            self.rtt_seq = None  # Karn: no sample from retransmitted data
        payload = self.send_buffer.slice(start, payload_end - start) if payload_end > start else b""
        self._emit(flags, start, payload, now, resent=True)
        if self.retransmit_ts is None:
            self.retransmit_ts = self._ts_now(now) if self.ts_ok else None
        self.undo_retransmitted += segment.length
        self.board.retransmitted(segment, now)
        return segment.length

    # -- RACK-TLP timers (RFC 8985) ------------------------------------------

    def _arm_tail_loss_probe(self, now: int) -> None:
        if (
            not self.sack_ok
            or not self.config.tail_loss_probe
            or self.recovery is not _OPEN
            or self.tlp_high is not None
            or self.rtt.srtt is None
        ):
            return
        segments = len(self.board)
        self.tlp_at = now + probe_timeout(
            self.rtt.srtt, segments, self.config.delayed_ack_ns, self.rtt.rto
        )
        if self.rto_at is not None and self.rto_at < self.tlp_at:
            self.tlp_at = None

    def _send_tail_loss_probe(self, now: int) -> None:
        """RFC 8985 7.3: new data if the windows allow, else the last segment again."""
        if self.recovery is not _OPEN or self.snd_una >= self.snd_max:
            return
        if self.state not in SENDING or self.tlp_high is not None:
            return
        self.stats.tail_loss_probes += 1
        # A probe is no recovery: a D-SACK or an old echo for it undoes nothing.
        self.undo_state = None
        self.retransmit_ts = None
        before = self.snd_max
        if self._has_unsent() and self.snd_max < self.snd_una + self.snd_wnd:
            self._send_new(now, self.send_mss)
        if self.snd_max == before:
            last = self.board.segments[-1] if self.board else None
            if last is None or last.sacked:
                return
            self._resend(last, now)
        self.tlp_high = self.snd_max
        self.rto_at = now + self.rtt.rto

    def _on_reorder_timeout(self, now: int) -> None:
        """RFC 8985 6.3: the reordering window passed; look for losses again."""
        if self.state not in SENDING or self.snd_una >= self.snd_max:
            return
        self._detect_losses(now)
        self._output(now)
