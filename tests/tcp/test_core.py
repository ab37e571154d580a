"""The sans-I/O TCP core, transition by transition, with scripted segments."""

from __future__ import annotations

from dataclasses import replace

import pytest

from looming.net.tcp.config import MS, SECOND, TcpConfig
from looming.net.tcp.connection import Event, State
from looming.net.tcp.tcb import Recovery
from tests.tcp.script import IRS, ISS, PLAIN, active, established, passive, render, seg

A = ISS + 1  # our first data byte
B = IRS + 1  # the peer's first data byte


# ---------------------------------------------------------------- opening


def test_active_open() -> None:
    s = active()
    assert s.state is State.SYN_SENT
    (syn,) = s.expect(f"S {ISS}:{ISS}(0)")
    assert syn[0].mss == 1000
    s.recv(seg("SA", IRS, A, mss=1460))
    s.expect(f"A {A}:{A}(0) ack {B}")
    assert s.state is State.ESTABLISHED
    assert s.take_events() == [Event.CONNECTED]
    # MSS clamped to our path: the peer's 1460 does not fit our 1000.
    assert s.conn.send_mss == 1000


def test_passive_open() -> None:
    s = passive(seg("S", IRS, mss=1460))
    assert s.state is State.SYN_RECEIVED
    s.expect(f"SA {ISS}:{ISS}(0) ack {B}")
    s.recv(seg("A", B, A))
    assert s.state is State.ESTABLISHED
    assert s.take_events() == [Event.CONNECTED]
    s.expect()


def test_syn_sent_rejects_a_bad_ack_with_a_reset() -> None:
    s = active()
    s.take()
    s.recv(seg("SA", IRS, ISS + 77))
    s.expect(f"R {ISS + 77}:{ISS + 77}(0)")
    assert s.state is State.SYN_SENT


def test_syn_sent_retries_soon_after_resetting_an_old_connection() -> None:
    """The peer still holds a connection on these ports and answers our
    SYN with an ACK of its own sequence space (a challenge ACK): our reset
    ends that connection, and the SYN goes again 2 ms later, not after the
    initial 1 s timeout. Once only: later bad ACKs leave the backed-off
    timer alone."""
    s = active()
    s.take()
    s.recv(seg("A", IRS, ISS + 5000))
    s.expect(f"R {ISS + 5000}:{ISS + 5000}(0)")
    s.advance(1.9)
    s.expect()
    s.advance(0.2)
    s.expect(f"S {ISS}:{ISS}(0)")
    assert s.state is State.SYN_SENT
    s.recv(seg("A", IRS, ISS + 5000))  # the old connection again
    s.expect(f"R {ISS + 5000}:{ISS + 5000}(0)")
    s.advance(1000)
    s.expect()  # the timer backed off to 2 s, and stays there
    s.advance(1001)
    s.expect(f"S {ISS}:{ISS}(0)")
    s.recv(seg("SA", IRS, ISS + 1))
    assert s.state is State.ESTABLISHED


def test_syn_sent_bad_reset_does_not_hasten_the_syn() -> None:
    s = active()
    s.take()
    s.recv(seg("RA", 0, ISS + 9))  # answered by nothing, so no reason to retry
    s.advance(999)
    s.expect()
    s.advance(1)
    s.expect(f"S {ISS}:{ISS}(0)")


def test_syn_sent_reset_is_refused_and_a_bad_reset_ignored() -> None:
    s = active()
    s.take()
    s.recv(seg("RA", 0, ISS + 9))  # unacceptable ACK: ignored, never answered
    s.expect()
    assert s.state is State.SYN_SENT
    s.recv(seg("RA", 0, A))
    s.expect()
    assert s.take_events() == [Event.REFUSED, Event.CLOSED]
    assert s.state is State.CLOSED


def test_simultaneous_open() -> None:
    s = active()
    s.take()
    s.recv(seg("S", IRS))
    assert s.state is State.SYN_RECEIVED
    s.expect(f"SA {ISS}:{ISS}(0) ack {B}")
    s.recv(seg("SA", IRS, A))  # the peer's own SYN-ACK
    assert s.state is State.ESTABLISHED
    assert Event.CONNECTED in s.take_events()


def test_repeated_syn_in_syn_received_repeats_the_syn_ack() -> None:
    s = passive(seg("S", IRS))
    s.take()
    s.recv(seg("S", IRS))
    s.expect(f"SA {ISS}:{ISS}(0) ack {B}")


def test_syn_retransmission_with_backoff_then_timeout() -> None:
    s = active(replace(PLAIN, syn_retries=2))
    s.take()
    s.advance(1000)
    s.expect(f"S {ISS}:{ISS}(0)")
    s.advance(1999)
    s.expect()
    s.advance(1)
    s.expect(f"S {ISS}:{ISS}(0)")
    s.advance(4000)
    assert s.take_events() == [Event.TIMED_OUT, Event.CLOSED]
    assert s.conn.next_deadline() is None


def test_mss_clamped_to_the_path() -> None:
    s = active(path_mss=536)
    (syn,) = s.take()
    assert syn[0].mss == 536
    s.recv(seg("SA", IRS, A, mss=1460))
    assert s.conn.send_mss == 536


# ---------------------------------------------------------------- options


def test_window_scale_timestamps_and_sack_need_both_syns() -> None:
    config = TcpConfig()
    s = active(config)
    (syn,) = s.take()
    header = syn[0]
    assert header.window_scale == config.window_scale == 4
    assert header.sack_permitted and header.timestamps == (0, 0)
    # A peer offering nothing: every option stays off.
    s.recv(seg("SA", IRS, A, window=1000))
    assert not (s.conn.ws_ok or s.conn.ts_ok or s.conn.sack_ok)
    assert s.conn.rcv_scale == 0 and s.conn.snd_scale == 0
    (ack,) = s.take()
    assert ack[0].window == 0xFFFF  # unscaled, so capped
    assert ack[0].timestamps is None


def test_window_scaling_applies_after_the_handshake() -> None:
    config = TcpConfig(timestamps=False, sack=False)
    s = active(config)
    s.take()
    s.recv(seg("SA", IRS, A, window=2000, window_scale=7))
    assert s.conn.snd_wnd == 2000  # the SYN-ACK's window is never scaled
    s.recv(seg("A", B, A, window=100))
    assert s.conn.snd_wnd == 100 << 7
    (ack,) = s.take()
    assert ack[0].window == (512 * 1024) >> 4


def test_passive_answers_only_offered_options() -> None:
    s = passive(seg("S", IRS, mss=1460, sack_permitted=True), TcpConfig())
    (syn_ack,) = s.take()
    assert syn_ack[0].sack_permitted
    assert syn_ack[0].window_scale is None and syn_ack[0].timestamps is None


def test_timestamps_echo_and_paws() -> None:
    config = TcpConfig(sack=False, window_scaling=False)
    s = active(config)
    s.take()
    s.recv(seg("SA", IRS, A, timestamps=(500, 0)))
    (ack,) = s.take()
    assert ack[0].timestamps == (0, 500)
    s.now += 5 * MS
    s.recv(seg("PA", B, A, timestamps=(510, 0)), b"x" * 10)
    s.advance(40)
    (ack,) = s.take()
    assert ack[0].timestamps == (45, 510)
    # An old timestamp: PAWS drops the segment and answers with an ACK.
    s.recv(seg("PA", B + 10, A, timestamps=(400, 0)), b"y" * 10)
    (ack,) = s.take()
    assert ack[0].ack == B + 10
    assert s.conn.stats.paws_dropped == 1
    assert s.conn.receive(s.now) == b"x" * 10


# ---------------------------------------------------------------- closing


def test_active_close_through_time_wait() -> None:
    s = established(replace(PLAIN, time_wait_ns=2 * SECOND))
    s.call("shutdown")
    assert s.state is State.FIN_WAIT_1
    s.expect(f"FA {A}:{A}(0) ack {B}")
    s.recv(seg("A", B, A + 1))
    assert s.state is State.FIN_WAIT_2
    s.recv(seg("FA", B, A + 1))
    assert s.state is State.TIME_WAIT
    s.expect(f"A {A + 1}:{A + 1}(0) ack {B + 1}")
    assert Event.PEER_CLOSED in s.take_events()
    # A repeated FIN is acknowledged again and restarts the 2 MSL timer.
    s.advance(1500)
    s.recv(seg("FA", B, A + 1))
    s.expect(f"A {A + 1}:{A + 1}(0) ack {B + 1}")
    s.advance(1999)
    assert s.state is State.TIME_WAIT
    s.advance(1)
    assert s.state is State.CLOSED
    assert s.take_events() == [Event.CLOSED]
    assert s.conn.next_deadline() is None


def test_passive_close_through_last_ack() -> None:
    s = established()
    s.recv(seg("FA", B, A))
    assert s.state is State.CLOSE_WAIT
    s.expect(f"A {A}:{A}(0) ack {B + 1}")
    assert s.take_events() == [Event.PEER_CLOSED]
    s.call("shutdown")
    assert s.state is State.LAST_ACK
    s.expect(f"FA {A}:{A}(0) ack {B + 1}")
    s.recv(seg("A", B + 1, A + 1))
    assert s.state is State.CLOSED
    assert s.take_events() == [Event.CLOSED]


def test_fin_wait_1_straight_to_time_wait() -> None:
    s = established()
    s.call("shutdown")
    s.take()
    s.recv(seg("FA", B, A + 1))  # their FIN acknowledges ours in one segment
    assert s.state is State.TIME_WAIT
    s.expect(f"A {A + 1}:{A + 1}(0) ack {B + 1}")


def test_close_in_syn_received_sends_fin_once_established() -> None:
    s = passive(seg("S", IRS))
    s.take()
    s.call("shutdown")
    assert s.state is State.SYN_RECEIVED
    s.expect()  # the FIN waits for the handshake
    s.recv(seg("A", B, A))
    assert s.take_events() == [Event.CONNECTED]
    assert s.state is State.FIN_WAIT_1
    s.expect(f"FA {A}:{A}(0) ack {B}")


def test_close_in_syn_sent_just_closes() -> None:
    s = active()
    s.take()
    s.call("close")
    assert s.state is State.CLOSED
    assert s.take_events() == [Event.CLOSED]
    assert s.conn.next_deadline() is None
    s.expect()


def test_simultaneous_close() -> None:
    s = established(replace(PLAIN, time_wait_ns=SECOND))
    s.call("shutdown")
    s.expect(f"FA {A}:{A}(0) ack {B}")
    s.recv(seg("FA", B, A))  # their FIN crossed ours
    assert s.state is State.CLOSING
    s.expect(f"A {A + 1}:{A + 1}(0) ack {B + 1}")
    s.recv(seg("A", B + 1, A + 1))
    assert s.state is State.TIME_WAIT
    s.advance(1000)
    assert s.state is State.CLOSED


def test_fin_with_data_and_out_of_order_fin() -> None:
    s = established()
    s.recv(seg("FA", B + 5, A), b"world")  # arrives before "hello"
    assert s.state is State.ESTABLISHED
    s.expect(f"A {A}:{A}(0) ack {B}")
    s.recv(seg("A", B, A), b"hello")
    assert s.state is State.CLOSE_WAIT
    assert s.conn.receive(s.now) == b"helloworld"
    assert s.take()[-1][0].ack == B + 11


def test_fin_is_retransmitted() -> None:
    s = established()
    s.call("shutdown")
    s.take()
    # The handshake measured a tiny RTT, so the RTO is its 200 ms floor.
    s.advance(199)
    s.expect()
    s.advance(1)
    s.expect(f"FA {A}:{A}(0) ack {B}")


def test_close_with_unread_data_resets() -> None:
    s = established()
    s.recv(seg("PA", B, A), b"unread")
    s.take()
    s.call("close")
    s.expect(f"R {A}:{A}(0)")
    assert s.state is State.CLOSED


def test_data_after_close_is_answered_with_reset() -> None:
    s = established()
    s.call("close")
    s.expect(f"FA {A}:{A}(0) ack {B}")
    s.recv(seg("PA", B, A + 1), b"late")
    s.expect(f"R {A + 1}:{A + 1}(0)")
    assert s.state is State.CLOSED


def test_orphaned_fin_wait_2_times_out() -> None:
    s = established(replace(PLAIN, fin_wait_2_timeout_ns=3 * SECOND))
    s.call("close")
    s.recv(seg("A", B, A + 1))
    assert s.state is State.FIN_WAIT_2
    s.advance(3000)
    assert s.state is State.CLOSED


# ---------------------------------------------------------------- resets, RFC 5961


def test_reset_with_exact_sequence_resets() -> None:
    s = established()
    s.recv(seg("R", B))
    assert s.take_events() == [Event.RESET, Event.CLOSED]
    s.expect()


def test_reset_in_window_gets_a_challenge_ack() -> None:
    s = established()
    s.recv(seg("R", B + 100))
    s.expect(f"A {A}:{A}(0) ack {B}")
    assert s.state is State.ESTABLISHED
    assert s.conn.stats.challenge_acks == 1


def test_reset_outside_window_is_dropped_silently() -> None:
    s = established()
    s.recv(seg("R", B + 10_000_000))
    s.expect()
    assert s.state is State.ESTABLISHED


def test_syn_in_established_gets_a_rate_limited_challenge_ack() -> None:
    s = established(replace(PLAIN, challenge_acks_per_second=2))
    for _ in range(5):
        s.recv(seg("S", B + 10))
    s.expect(f"A {A}:{A}(0) ack {B}", f"A {A}:{A}(0) ack {B}")
    assert s.state is State.ESTABLISHED
    s.advance(1000)
    s.recv(seg("S", B + 10))
    s.expect(f"A {A}:{A}(0) ack {B}")


def test_ack_of_unsent_data_gets_a_challenge_and_is_dropped() -> None:
    s = established()
    s.recv(seg("PA", B, A + 500), b"data")
    s.expect(f"A {A}:{A}(0) ack {B}")
    assert s.conn.readable_bytes == 0


def test_reset_in_syn_received_returns_to_nothing() -> None:
    s = passive(seg("S", IRS))
    s.take()
    s.recv(seg("R", B))
    assert s.state is State.CLOSED
    s.expect()


def test_out_of_window_segment_is_acknowledged() -> None:
    s = established()
    s.recv(seg("PA", B - 2000, A), b"old")
    s.expect(f"A {A}:{A}(0) ack {B}")


# ---------------------------------------------------------------- receiving


def test_delayed_ack_every_second_full_segment() -> None:
    s = established()
    s.recv(seg("A", B, A), b"a" * 1000)
    s.expect()
    s.recv(seg("A", B + 1000, A), b"b" * 1000)
    s.expect(f"A {A}:{A}(0) ack {B + 2000}")
    s.recv(seg("PA", B + 2000, A), b"c" * 10)
    s.expect()
    s.advance(39)
    s.expect()
    s.advance(1)
    s.expect(f"A {A}:{A}(0) ack {B + 2010}")


def test_coalesced_ack_waits_for_the_end_of_the_burst() -> None:
    s = established(replace(PLAIN, coalesce_acks=True))
    for i in range(6):
        s.recv(seg("A", B + 1000 * i, A), b"a" * 1000)
    s.expect()
    assert s.take_events().count(Event.ACK_DUE) == 1
    s.call("flush_ack")
    s.expect(f"A {A}:{A}(0) ack {B + 6000}")
    s.call("flush_ack")  # nothing more is owed
    s.expect()


def test_out_of_order_data_is_acked_at_once_with_sack_blocks() -> None:
    config = replace(PLAIN, sack=True)
    s = active(config)
    s.take()
    s.recv(seg("SA", IRS, A, sack_permitted=True))
    s.take()
    s.recv(seg("A", B + 1000, A), b"x" * 1000)
    (ack,) = s.expect(f"A {A}:{A}(0) ack {B}")
    assert ack[0].sack_blocks == ((B + 1000, B + 2000),)
    s.recv(seg("A", B + 3000, A), b"y" * 1000)
    (ack,) = s.take()
    # The block holding the newest segment comes first (RFC 2018 section 4).
    assert ack[0].sack_blocks == ((B + 3000, B + 4000), (B + 1000, B + 2000))
    s.recv(seg("A", B, A), b"z" * 1000)  # fills the first hole
    (ack,) = s.expect(f"A {A}:{A}(0) ack {B + 2000}")
    assert ack[0].sack_blocks == ((B + 3000, B + 4000),)


def test_window_update_after_the_application_reads() -> None:
    config = replace(PLAIN, receive_buffer=4000)
    s = active(config)
    s.take()
    s.recv(seg("SA", IRS, A, mss=1000))
    s.take()
    for i in range(4):
        s.recv(seg("A", B + 1000 * i, A), b"d" * 1000)
    acks = s.take()
    assert acks[-1][0].window == 0
    # Zero window: new data is not accepted.
    s.recv(seg("A", B + 4000, A), b"e" * 1000)
    s.expect(f"A {A}:{A}(0) ack {B + 4000}")
    assert s.call("receive") == b"d" * 4000
    (update,) = s.expect(f"A {A}:{A}(0) ack {B + 4000}")
    assert update[0].window == 4000


# ---------------------------------------------------------------- sending


def _fill(s, count: int, size: int = 1000) -> None:  # type: ignore[no-untyped-def]
    assert s.call("send", b"x" * (count * size)) == count * size


def test_deferred_output_leaves_once_per_burst_as_one_packet() -> None:
    """With defer_output (the shell's setting), ACKs arriving together let
    out nothing until flush_ack; then what they allow leaves in one
    offloaded packet, and exactly what sending per ACK would have sent."""
    per_ack, deferred = established(), established()
    deferred.conn.defer_output = True
    for s in (per_ack, deferred):
        s.conn.offload_bytes = 64_000
        _fill(s, 20)
        assert [len(p) for _, p in s.take()] == [4000]
    per_ack.recv(seg("A", B, A + 1000))
    per_ack.recv(seg("A", B, A + 2000))
    packets = per_ack.take()
    assert len(packets) == 2  # one per ACK
    sent_per_ack = b"".join(bytes(p) for _, p in packets)
    deferred.recv(seg("A", B, A + 1000))
    deferred.recv(seg("A", B, A + 2000))
    deferred.expect()
    assert deferred.take_events().count(Event.ACK_DUE) == 1
    deferred.call("flush_ack")
    (packet,) = deferred.take()
    assert packet[0].seq == A + 4000 and bytes(packet[1]) == sent_per_ack
    deferred.call("flush_ack")  # nothing more is due
    deferred.expect()


def test_initial_window_and_slow_start() -> None:
    s = established()
    _fill(s, 20)
    sent = s.take()
    assert len(sent) == 4  # RFC 5681: 4 segments at an MSS of 1000
    s.recv(seg("A", B, A + 2000))
    assert len(s.take()) == 4  # cwnd grew by 2 MSS, 2 segments left the network


def test_nagle_holds_small_segments_until_acked() -> None:
    s = established()
    s.call("send", b"a")
    s.expect(f"PA {A}:{A + 1}(1) ack {B}")
    s.call("send", b"b")
    s.call("send", b"c")
    s.expect()
    s.recv(seg("A", B, A + 1))
    s.expect(f"PA {A + 1}:{A + 3}(2) ack {B}")


def test_nodelay_sends_at_once() -> None:
    s = established()
    s.conn.nodelay = True
    s.call("send", b"a")
    s.call("send", b"b")
    s.expect(f"PA {A}:{A + 1}(1) ack {B}", f"PA {A + 1}:{A + 2}(1) ack {B}")


def test_rto_backoff_and_karn() -> None:
    s = established()
    s.call("send", b"q" * 100)
    s.take()
    assert s.conn.rtt.rto == 200 * MS  # the floor, after the handshake's sample
    s.advance(200)
    s.expect(f"PA {A}:{A + 100}(100) ack {B}")
    assert s.conn.rtt.rto == 400 * MS
    s.advance(400)
    s.expect(f"PA {A}:{A + 100}(100) ack {B}")
    s.advance(100)
    s.recv(seg("A", B, A + 100))
    # Karn: the ACK of a retransmitted segment gives no RTT sample, so the
    # backed-off RTO stays until a fresh measurement.
    assert s.conn.rtt.rto == 800 * MS
    s.call("send", b"r" * 100)
    s.take()
    s.advance(10)
    s.recv(seg("A", B, A + 200))
    assert s.conn.rtt.rto == TcpConfig().rto_min_ns


def test_pure_acks_after_a_timeout_carry_the_highest_sequence() -> None:
    # After an RTO, snd_nxt goes back to resend; an ACK numbered from there
    # would fall below the peer's rcv_nxt and be dropped whole by it.
    s = established()
    _fill(s, 4)
    s.take()
    s.advance(200)
    s.expect(f"A {A}:{A + 1000}(1000) ack {B}")
    s.recv(seg("PA", B, A), b"q" * 10)
    s.advance(40)
    s.expect(f"A {A + 4000}:{A + 4000}(0) ack {B + 10}")


def test_data_retries_give_up_with_reset() -> None:
    s = established(replace(PLAIN, data_retries=2))
    s.call("send", b"q")
    s.take()
    s.advance(200 + 400)
    assert len(s.take()) == 2
    s.advance(800)
    s.expect(f"R {A + 1}:{A + 1}(0)")
    assert s.take_events()[-2:] == [Event.TIMED_OUT, Event.CLOSED]


def _in_flight(s, count: int) -> None:  # type: ignore[no-untyped-def]
    """Open cwnd enough, then put ``count`` 1000-byte segments in flight."""
    s.conn.cc.cwnd = 100_000
    _fill(s, count)
    assert len(s.take()) == count


def test_fast_retransmit_and_newreno_recovery() -> None:
    s = established()
    _in_flight(s, 10)
    for _ in range(3):
        s.recv(seg("A", B, A))
    s.expect(f"A {A}:{A + 1000}(1000) ack {B}")
    cc = s.conn.cc
    assert s.conn.recovery is Recovery.RECOVERY and cc.ssthresh == 5000
    assert s.conn.stats.fast_retransmits == 1
    # Partial ACK (segments 1 and 2 arrived, 3 was lost too): resend 3 at once.
    s.recv(seg("A", B, A + 2000))
    s.expect(f"A {A + 2000}:{A + 3000}(1000) ack {B}")
    assert s.conn.recovery is Recovery.RECOVERY
    # Full ACK: leave recovery with cwnd = ssthresh (RFC 6937).
    s.recv(seg("A", B, A + 10_000))
    assert s.conn.recovery is Recovery.OPEN
    assert cc.cwnd == 5000


def test_sack_scoreboard_steers_retransmission() -> None:
    config = replace(PLAIN, sack=True)
    s = established(config, sack_permitted=True)
    _in_flight(s, 10)
    s.advance(5)
    # Segments 1 and 4 lost; the receiver SACKs 2-3 and 5-10.
    blocks = ((A + 1000, A + 3000), (A + 4000, A + 10_000))
    s.recv(seg("A", B, A, sack_blocks=blocks[:1]))
    s.expect()  # two segments SACKed: within the reordering window
    s.recv(seg("A", B, A, sack_blocks=blocks))
    # More than three segments' worth SACKed above both holes: RACK deems
    # them lost at once and PRR lets both out (the pipe is empty).
    s.expect(f"A {A}:{A + 1000}(1000) ack {B}", f"A {A + 3000}:{A + 4000}(1000) ack {B}")
    s.recv(seg("A", B, A, sack_blocks=((A + 1000, A + 10_000),)))
    s.expect()
    # The first retransmission was lost too: the RTO resends only what was never SACKed.
    s.advance(200)
    s.expect(f"A {A}:{A + 1000}(1000) ack {B}")
    assert s.conn.snd_nxt == A + 10_000  # everything else was SACKed
    s.recv(seg("A", B, A + 10_000))
    s.expect()
    assert not s.conn.board and s.conn.bytes_in_flight == 0


def test_zero_window_probe_with_backoff() -> None:
    s = established(window=0)
    s.call("send", b"z" * 500)
    s.expect()
    s.advance(200)
    s.expect(f"A {A - 1}:{A - 1}(0) ack {B}")  # an old sequence: the peer answers with its window
    s.recv(seg("A", B, A, window=0))
    s.advance(399)
    s.expect()
    s.advance(1)
    s.expect(f"A {A - 1}:{A - 1}(0) ack {B}")
    s.recv(seg("A", B, A, window=4000))
    s.expect(f"PA {A}:{A + 500}(500) ack {B}")
    assert s.conn.persist_at is None


def test_keepalive_probes_then_gives_up() -> None:
    config = replace(
        PLAIN,
        keepalive=True,
        keepalive_idle_ns=10 * SECOND,
        keepalive_interval_ns=SECOND,
        keepalive_probes=2,
    )
    s = established(config)
    s.advance(10_000)
    s.expect(f"A {A - 1}:{A - 1}(0) ack {B}")
    s.recv(seg("A", B, A))  # answered: idle again
    s.advance(9_999)
    s.expect()
    s.advance(1)
    s.expect(f"A {A - 1}:{A - 1}(0) ack {B}")
    s.advance(1000)
    s.expect(f"A {A - 1}:{A - 1}(0) ack {B}")
    s.advance(1000)
    s.expect(f"R {A}:{A}(0)")
    assert s.take_events() == [Event.TIMED_OUT, Event.CLOSED]


@pytest.mark.parametrize("flags", ["A", "PA", "FA"])
def test_render_helper_is_stable(flags: str) -> None:
    assert render(seg(flags, 1, 2), b"").startswith(flags)


def test_offloaded_bursts_of_whole_segments_and_single_retransmissions() -> None:
    s = established()
    s.conn.offload_bytes = 10_500  # room for ten 1000-byte segments
    s.conn.cc.cwnd = 100_000
    _fill(s, 25)
    s.expect(
        f"A {A}:{A + 10_000}(10000) ack {B}",
        f"A {A + 10_000}:{A + 20_000}(10000) ack {B}",
        f"PA {A + 20_000}:{A + 25_000}(5000) ack {B}",
    )
    # A window that fits two and a half segments sends two, as one packet.
    s.recv(seg("A", B, A + 25_000, window=0))
    _fill(s, 5)
    s.recv(seg("A", B, A + 25_000, window=2500))
    s.expect(f"A {A + 25_000}:{A + 27_000}(2000) ack {B}")
    s.advance(200)
    s.expect(f"A {A + 25_000}:{A + 26_000}(1000) ack {B}")  # resent one segment at a time
