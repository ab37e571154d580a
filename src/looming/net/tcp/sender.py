"""The sending half of a TCP connection: what goes out when, and what an
acknowledgment tells us (RFC 9293 3.10.7.4, RFC 6298, RFC 5681/6582, RFC
2018, RFC 3042), with the persist, keepalive and retransmission timers."""

from __future__ import annotations

from looming.net.tcp.config import MS
from looming.net.tcp.congestion import DUPACK_THRESHOLD
from looming.net.tcp.seq import MASK, unwrap
from looming.net.tcp.tcb import SENDING, SYNCHRONIZED, Event, State, TransmissionControlBlock
from looming.net.wire.tcp import ACK, FIN, PSH, TcpHeader


class TcpSender(TransmissionControlBlock):
    """Output, retransmission, timers and ACK processing."""

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
        self._emit(ACK, self.snd_una - 1, b"", now, resent=True)

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
            self._send_reset(self.snd_max, now)
            self._fail(Event.TIMED_OUT)
            return
        self.keepalive_probes += 1
        self._emit(ACK, self.snd_una - 1, b"", now, resent=True)

    def _has_unsent(self) -> bool:
        return self.snd_nxt < self.send_buffer.end or (
            self.fin_queued and self.snd_max <= self.send_buffer.end
        )

    def _output(self, now: int, *, force_one: bool = False) -> None:
        """Send what the windows, Nagle and silly-window avoidance allow."""
        if self.state not in SENDING:
            return
        if (
            not self.fin_queued
            and self.snd_nxt >= self.send_buffer.end
            and self.snd_nxt >= self.snd_max
        ):
            # Nothing new and nothing to resend: the common case on a
            # connection that is only receiving.
            if self.snd_max > self.snd_una and self.rto_at is None:
                self.rto_at = now + self.rtt.rto
            return
        mss = self.send_mss
        burst = self.burst_bytes
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
                is_new = seq >= self.snd_max
                length = min(burst if is_new else mss, data_end - seq)
                if self.scoreboard and seq < self.snd_max:
                    following = self.scoreboard.next_sacked_start(seq)
                    if following is not None:
                        length = min(length, following - seq)
                room = window_edge - seq
                if room < length and length > mss and room >= mss:
                    length = room - room % mss  # an offloaded burst of whole segments
                elif room < length:
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
                self._emit(flags, seq, payload, now, resent=not is_new)
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
        self._emit(flags, seq, self.send_buffer.slice(seq, length), now, resent=True)
        return end + (1 if flags & FIN else 0)

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
