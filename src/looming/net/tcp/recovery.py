"""What an acknowledgment tells the sender, and the loss recovery it drives.

* SACK blocks fill the per-segment :class:`~looming.net.tcp.scoreboard.Scoreboard`
  (RFC 2018); a first block below the cumulative ACK, or inside the second
  one, is a D-SACK (RFC 2883).
* Losses are found by RACK (RFC 8985) on connections with SACK, by three
  duplicate ACKs and partial ACKs (RFC 5681, RFC 6582) without.
* Fast recovery (RFC 6675) retransmits what is deemed lost, paced by
  Proportional Rate Reduction (RFC 6937); a retransmission timeout deems
  everything outstanding lost and restarts from one segment.
* A recovery or timeout that proves spurious is undone: by timestamps (the
  ACK echoes a time before the first retransmission, RFC 4015's Eifel
  detection), by D-SACKs covering every retransmission, or, after a
  timeout, by F-RTO (RFC 5682 section 3): new data is sent instead of
  retransmissions, and an ACK for data never retransmitted means the
  timeout was spurious.

Like the rest of the core this reads no clock: ``now`` comes in.
"""

from __future__ import annotations

from looming.net.tcp.config import MS
from looming.net.tcp.congestion import DUPACK_THRESHOLD
from looming.net.tcp.prr import ProportionalRateReduction
from looming.net.tcp.rack import rack_detect
from looming.net.tcp.scoreboard import Segment
from looming.net.tcp.seq import MASK, before32, unwrap
from looming.net.tcp.tcb import ECE, Event, Recovery, State, TransmissionControlBlock
from looming.net.wire.tcp import TcpHeader

# Enum members the per-segment paths test, read once: Python 3.11 reads a
# member through its class by EnumType's __getattr__ hook, some 0.1 us each.
_OPEN, _RECOVERY, _LOSS = Recovery.OPEN, Recovery.RECOVERY, Recovery.LOSS
_CLOSED, _WRITABLE = State.CLOSED, Event.WRITABLE


class LossRecovery(TransmissionControlBlock):
    """ACK processing, loss detection, recovery and undo."""

    def _output(self, now: int, *, force_one: bool = False) -> None:
        raise NotImplementedError  # the sender's

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
        max_window = self.max_snd_wnd
        if ack < self.snd_una - (max_window if max_window > 1 << 16 else 1 << 16):
            # RFC 5961 section 5.2: too old to be from the real peer.
            self._challenge_ack(now)
            return False
        window_changed = self._update_window(header, seq, ack)
        if self.ecn_ok and header.flags & ECE:
            self._on_ecn_echo(now)
        if header.sack_blocks:
            sacked, original = self._read_sack_blocks(header, ack, now)
        else:
            sacked, original = 0, False  # (what it gives for no blocks)
        if ack > self.snd_una:
            acked, original_acked = self._on_new_ack(ack, header, now)
            self._after_ack(now, sacked, acked, original or original_acked, advanced=True)
        elif (
            ack == self.snd_una
            and payload_length == 0
            and not header.fin
            and self.snd_max > self.snd_una
            and (not window_changed or sacked)
        ):
            self.dupacks += 1
            # RFC 6937: without SACK a duplicate ACK stands for one segment delivered.
            credit = 0 if self.sack_ok else self.send_mss
            self._after_ack(now, sacked, credit, original, advanced=False)
        elif sacked:
            self._after_ack(now, sacked, 0, original, advanced=False)
        return True

    def _on_ecn_echo(self, now: int) -> None:
        """RFC 3168 6.1.2: the network marked our data; reduce as for a loss,
        once per window of data, and say so with CWR."""
        if self.snd_una < self.ecn_high:
            return
        self.ecn_high = self.snd_max
        self.cwr_pending = True
        if self.recovery is not _OPEN:
            return  # already reduced for a loss in this window
        self.stats.ecn_echoes_received += 1
        self.cc.on_congestion(now, self.snd_max - self.snd_una)
        self.cc.cwnd = max(self.cc.ssthresh, self.send_mss)
        self.undo_state = None  # a mark is no spurious loss: nothing to undo

    def _update_window(self, header: TcpHeader, seq: int, ack: int) -> bool:
        window = header.window << self.snd_scale
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            changed = window != self.snd_wnd
            self.snd_wnd = window
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if window > self.max_snd_wnd:
                self.max_snd_wnd = window
            if window > 0:
                self.persist_at = None
                self.persist_backoff = 0
            return changed
        return False

    def _read_sack_blocks(self, header: TcpHeader, ack: int, now: int) -> tuple[int, bool]:
        """Fold the SACK blocks into the scoreboard; returns the bytes newly
        SACKed and whether any of them had never been retransmitted."""
        if not self.sack_ok or not header.sack_blocks:
            return 0, False
        blocks = [
            (unwrap(left, self.snd_una), unwrap(right, self.snd_una))
            for left, right in header.sack_blocks
        ]
        if _is_dsack(blocks, ack):
            self._on_dsack(*blocks[0])
            blocks = blocks[1:]
        delivered = 0
        original = False
        ts_original = self._echo_predates_retransmission(header)
        for left, right in blocks:
            if not ack <= left < right <= self.snd_max:
                continue
            for segment in self.board.sack(left, right):
                delivered += segment.length
                self.rack.delivered(segment, now, ts_says_original=ts_original)
                original |= self._original(segment)
        return delivered, original

    def _reports_dsack(self, header: TcpHeader) -> bool:
        """Whether the segment's SACK blocks begin with a D-SACK (RFC 2883)."""
        if not self.sack_ok or not header.sack_blocks:
            return False
        base = self.snd_una
        blocks = [(unwrap(left, base), unwrap(right, base)) for left, right in header.sack_blocks]
        return _is_dsack(blocks, unwrap(header.ack, base))

    def _original(self, segment: Segment) -> bool:
        """Sent before the episode began and never resent (Linux's FLAG_ORIG_SACK_ACKED)."""
        return not segment.ever_retransmitted and segment.end <= self.recover

    def _echo_predates_retransmission(self, header: TcpHeader) -> bool:
        """Whether the ACK echoes a timestamp from before this episode's
        first retransmission: it was sent for an original (RFC 4015 Eifel)."""
        return (
            self.ts_ok
            and self.retransmit_ts is not None
            and header.timestamps is not None
            and header.timestamps[1] != 0
            and before32(header.timestamps[1], self.retransmit_ts)
        )

    def _on_dsack(self, left: int, right: int) -> None:
        """RFC 2883: the receiver got [left, right) twice."""
        self.stats.dsacks_received += 1
        self.rack.on_dsack(self.snd_max, self.snd_una)
        if self.undo_state is None:
            return
        if self.undo_retransmitted <= 0:
            return  # nothing resent in this episode: reordering or a duplicate
        self.undo_retransmitted -= right - left
        if self.undo_retransmitted <= 0:
            # Every byte resent in the episode arrived twice: none was lost.
            self._undo(timeout=self.recovery is _LOSS)

    def _on_new_ack(self, ack: int, header: TcpHeader, now: int) -> tuple[int, bool]:
        """The cumulative ACK advanced; returns the bytes it newly delivered
        (less what was SACKed before) and whether an original was among them."""
        self._take_rtt_sample(ack, header, now)
        released = self.send_buffer.release_to(ack)
        self.snd_una = ack
        if self.mtu_search is not None:
            self.path_mss = self.mtu_search.acknowledged(ack, self.path_mss)
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        gone, fresh = self.board.acknowledge(ack)
        # (False without a retransmission in this episode, the usual case.)
        ts_original = self.retransmit_ts is not None and self._echo_predates_retransmission(header)
        original = False
        rack, recover = self.rack, self.recover
        for segment in gone:
            if not segment.sacked:
                rack.delivered(segment, now, ts_says_original=ts_original)
                if not segment.ever_retransmitted and segment.end <= recover:
                    original = True  # (self._original(segment))
        if ts_original and any(segment.ever_retransmitted for segment in gone):
            self._undo(timeout=self.recovery is _LOSS)
        self.retries = 0
        self.dupacks = 0
        if self.tlp_high is not None and ack >= self.tlp_high:
            self.tlp_high = None
        # RFC 6298 5.2 and 5.3: stop the timer when all is acknowledged, else restart it.
        self.rto_at = None if self.snd_una >= self.snd_max else now + self.rtt.rto
        if self.snd_una >= self.snd_max:
            self.tlp_at = self.reorder_at = None
        if not self.fin_queued:
            if released:
                self.events.append(_WRITABLE)
        else:
            self._after_our_fin_acked(now)
        return fresh, original

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

    # -- the recovery state machine -------------------------------------------

    def _after_ack(
        self, now: int, sacked: int, acked: int, original: bool, *, advanced: bool
    ) -> None:
        """Loss detection and the window after an ACK that delivered
        ``sacked`` bytes by SACK and ``acked`` more cumulatively."""
        if self.state is _CLOSED:
            return
        delivered = sacked + acked
        flight_before = self.snd_max - self.snd_una + acked
        if self.recovery is _LOSS and self.frto:
            self._frto_step(original, sacked, advanced)
        self._detect_losses(now, advanced=advanced)
        if self.recovery is _RECOVERY and self.snd_una >= self.recover:
            self._leave_recovery()
            return  # the window is ssthresh now; growth resumes with the next ACK
        elif self.recovery is _LOSS and self.snd_una >= self.recover:
            self.recovery = _OPEN
            self.frto = False
        if self.recovery is _RECOVERY and self.prr is not None:
            pipe = self.board.pipe(self.snd_max - self.snd_una)
            self.prr_allowance = self.prr.on_ack(delivered, pipe)
            self.cc.cwnd = max(pipe + self.prr_allowance, self.send_mss)
        elif advanced and delivered > 0:
            cwnd = self.cc.cwnd
            # Cwnd-limited (RFC 7661) over the round, not by this ACK alone:
            # the ACKs of a burst each see the flight their predecessors
            # shrank, with nothing sent in between (Linux's is_cwnd_limited).
            limited = (
                flight_before + self.send_mss >= cwnd
                or (cwnd < self.cc.ssthresh and 2 * flight_before >= cwnd)
                or self.snd_una <= self.cwnd_limited_to
            )
            self.cc.on_ack(delivered, now, self.rtt.srtt, limited)

    def _detect_losses(self, now: int, *, advanced: bool = False) -> None:
        """Mark lost segments (RACK with SACK, duplicate ACKs without) and
        enter fast recovery on the first."""
        board = self.board
        if not board:
            return
        newly: list[Segment] = []
        if self.sack_ok:
            if board.sacked_bytes or self.recovery is not _OPEN:
                newly, self.reorder_at = rack_detect(
                    self.rack,
                    board,
                    now,
                    self.rtt.srtt or self.rtt.rto,
                    in_recovery=self.recovery is not _OPEN,
                    dupthresh=DUPACK_THRESHOLD * self.send_mss,
                )
        elif self.recovery is _OPEN:
            if self.dupacks >= DUPACK_THRESHOLD and self.snd_una >= self.recover:
                newly = [board.segments[0]] if board.mark_lost(board.segments[0]) else []
        elif self.recovery is _RECOVERY and advanced and self.snd_una < self.recover:
            # RFC 6582 3.2 step 5: a partial ACK; the next segment was lost too.
            newly = [board.segments[0]] if board.mark_lost(board.segments[0]) else []
        if not newly:
            return
        self.stats.segments_deemed_lost += len(newly)
        if self.recovery is _OPEN:
            if self.mtu_search is not None and self.mtu_search.holds_only(newly):
                return  # a lost path-MTU probe is no congestion (RFC 8899 3): resend it
            self._enter_recovery(now)

    def _start_episode(self) -> None:
        if self.config.undo:
            self.undo_state = self.cc.save()
        self.undo_retransmitted = 0
        self.retransmit_ts = None

    def _enter_recovery(self, now: int) -> None:
        """RFC 6675 5 step 4, with RFC 6937's PRR initialisation."""
        self.stats.fast_retransmits += 1
        flight = self.snd_max - self.snd_una
        self._start_episode()
        self.cc.on_congestion(now, flight)
        self.recovery = _RECOVERY
        self.recover = self.snd_max
        self.prr = ProportionalRateReduction(self.cc.ssthresh, flight, self.send_mss)
        # The first lost segment is resent at once (RFC 6675 5 step 4.2),
        # also when RACK's reordering timer, not an ACK, began the episode.
        self.prr_allowance = self.send_mss
        self.tlp_at = None
        self.tlp_high = None

    def _leave_recovery(self) -> None:
        """RFC 6937: the window is ssthresh once the recovery point is acknowledged."""
        self.recovery = _OPEN
        if self.prr is not None:
            self.cc.cwnd = max(self.cc.ssthresh, self.send_mss)
        self.prr = None
        self.rack.on_recovery_end()

    def _enter_loss(self, now: int) -> None:
        """A retransmission timeout: everything outstanding is lost (RFC 6675 5.1).

        ssthresh falls once per congestion event (RFC 5681 section 3.1): at
        a timeout that no episode preceded, or one in the loss state after
        the data resent at the last timeout was acknowledged (a new loss, as
        Linux's tcp_enter_loss counts it). A timeout during fast recovery
        keeps the ssthresh recovery set, as does a repeated timeout for the
        same data; the window restarts from one segment either way."""
        flight = self.snd_max - self.snd_una
        first = self.recovery is not _LOSS
        if self.recovery is _OPEN or (not first and self.retries <= 1):
            self._start_episode()
            self.cc.on_timeout(now, flight)
        else:
            self.cc.cwnd = self.send_mss
        # F-RTO (RFC 5682) needs SACK here, as Linux's tcp_frto default.
        self.frto = first and self.sack_ok and self.config.undo
        if self.retries >= 2:
            # The receiver may have reneged on what it SACKed (RFC 2018 section 8).
            self.board.forget_sacks()
        self.board.mark_all_lost()
        self.recovery = _LOSS
        self.recover = self.snd_max
        self.prr = None
        self.dupacks = 0
        self.tlp_at = self.reorder_at = None
        self.tlp_high = None

    def _frto_step(self, original: bool, sacked: int, advanced: bool) -> None:
        """RFC 5682 section 3 (SACK-enhanced F-RTO), in Linux's form."""
        if self.snd_max > self.recover:
            # New data went out after the first ACK (step 2b).
            if original:
                self._undo(timeout=True)  # step 3b: data never resent arrived
            elif sacked or not advanced:
                self.frto = False  # step 3a: the loss is real
            return
        if advanced:
            if self.snd_una < self.snd_max and self._has_unsent():
                self.frto_new_segments = 2  # step 2b: two new segments, not retransmissions
            else:
                self.frto = False
        elif sacked or self.dupacks:
            self.frto = False  # step 2a

    def _has_unsent(self) -> bool:
        raise NotImplementedError  # the sender's

    def _undo(self, *, timeout: bool) -> None:
        """The episode was spurious: restore the window (RFC 4015 section 3)
        and stop resending what was deemed lost."""
        if self.undo_state is None or not self.config.undo:
            return
        self.cc.undo(self.undo_state)
        self.undo_state = None
        self.cwnd_limited_to = 0  # the reduced window was the one held back, not this
        self.board.unmark_lost()
        if timeout:
            self.stats.spurious_timeouts_undone += 1
        else:
            self.stats.spurious_recoveries_undone += 1
        if self.recovery is not _OPEN:
            self.recovery = _OPEN
            self.prr = None
        self.frto = False
        self.frto_new_segments = 0


def _is_dsack(blocks: list[tuple[int, int]], ack: int) -> bool:
    """RFC 2883: a first block below the cumulative ACK, or inside the second one."""
    first_left, first_right = blocks[0]
    return first_right <= ack or (
        len(blocks) > 1 and blocks[1][0] <= first_left and first_right <= blocks[1][1]
    )
