"""The receiver's ACKs with holes in what arrived (RFC 5681 4.2, RFC 2018
section 4), checked on generated arrival orders: every out-of-order range
is reported, data segments carry the SACK blocks too (cut smaller so that
segment and options fit the MSS), and a filled hole is ACKed at once."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from looming.net.tcp.config import MS, TcpConfig, TcpStats
from looming.net.tcp.endpoint import TcpEndpoint
from looming.net.tcp.seq import unwrap
from looming.net.tcp.tcb import sack_option_space
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK, SYN, TcpHeader
from tests.tcp.script import ISS, PLAIN, Script, established, seg

A = ISS + 1
B = 5001  # IRS + 1 in tests/tcp/script.py
MSS = 1000
SEGMENTS = 24  # the peer's data, in segments of MSS bytes


def pieces(header: TcpHeader, payload: bytes, mss: int) -> list[int]:
    """The payload sizes of the segments a packet leaves as: an interface
    cuts a packet longer than one segment at the size the endpoint gives
    (the MSS less the packet's SACK option)."""
    size = mss - sack_option_space(len(header.sack_blocks))
    return [min(size, len(payload) - at) for at in range(0, len(payload), size)] or [0]


class ReceiverWithHoles(RuleBasedStateMachine):
    """The peer's segments arrive in any order, with some never arriving,
    in bursts handed over the way the TCP layer does; the application
    answers with data now and then."""

    def __init__(self) -> None:
        super().__init__()
        config = replace(PLAIN, sack=True, coalesce_acks=True, congestion_control="cubic")
        self.s: Script = established(config, sack_permitted=True, window=1 << 16)
        self.s.conn.defer_output = True
        self.s.conn.cc.cwnd = 64 * MSS
        self.arrived: set[int] = set()
        self.sent: list[tuple[TcpHeader, bytes, bool]] = []  # and: holes when sent

    def _flush(self) -> None:
        s = self.s
        s.conn.flush_ack(s.now)
        s._collect()
        for header, payload in s.take():
            self.sent.append((header, payload, s.conn.receive_buffer.has_gaps))

    @rule(
        burst=st.lists(st.integers(0, SEGMENTS - 1), min_size=1, max_size=6),
        answer=st.integers(0, 3 * MSS),
    )
    def arrive(self, burst: list[int], answer: int) -> None:
        s = self.s
        self.sent = []
        for index in burst:
            s.recv(seg("A", B + index * MSS, A), bytes([index]) * MSS)
            self.arrived.add(index)
            for header, payload in s.take():
                self.sent.append((header, payload, s.conn.receive_buffer.has_gaps))
        if answer:
            s.call("send", b"r" * answer)
        self._flush()
        self._check_burst(burst)

    def _check_burst(self, burst: list[int]) -> None:
        rcv_nxt = B + MSS * next(i for i in range(SEGMENTS + 1) if i not in self.arrived)
        conn = self.s.conn
        if not self.sent:
            # Only one full segment in order since the last ACK: delayed.
            assert not conn.receive_buffer.has_gaps and conn.delack_at is not None
            assert rcv_nxt - conn.acknowledged_to < 2 * MSS
            return
        last, _, _ = self.sent[-1]
        assert unwrap(last.ack, B) == rcv_nxt, "the burst's last segment ACKs all in order"
        if conn.receive_buffer.has_gaps:
            # RFC 2018 4: every ACK while data is held out of order has SACK blocks.
            assert last.sack_blocks, "the burst's last segment reports the holes"
        reported = [
            (unwrap(left, B), unwrap(right, B))
            for h, _, _ in self.sent
            for left, right in h.sack_blocks
        ]
        for index in burst:
            # The sender hears of each arrival: the cumulative ACK passed
            # it, or a block of a segment sent for the burst holds it.
            at = B + index * MSS
            assert at < rcv_nxt or any(left <= at < right for left, right in reported), index

    @rule()
    def quiet(self) -> None:
        """Time passes: the delayed ACK, if any, goes; nothing we must send waits."""
        self.s.advance(50)
        self.s.take()

    @invariant()
    def segments_fit_the_mss(self) -> None:
        mss = self.s.conn.send_mss
        for header, payload, _ in self.sent:
            blocks = sack_option_space(len(header.sack_blocks))
            for size in pieces(header, payload, mss):
                assert size + blocks <= mss or not payload, (size, blocks, mss)

    @invariant()
    def data_sent_with_holes_reports_them(self) -> None:
        for header, payload, holes in self.sent:
            if payload and holes and len(payload) + sack_option_space(1) <= MSS:
                assert header.sack_blocks, "a data segment sent while holes remain has SACKs"

    @invariant()
    def sack_blocks_are_what_arrived(self) -> None:
        for header, _, _ in self.sent:
            ack = unwrap(header.ack, B)
            for left_wire, right_wire in header.sack_blocks:
                left, right = unwrap(left_wire, B), unwrap(right_wire, B)
                assert left < right
                if left < ack:
                    continue  # a D-SACK: data that arrived twice
                for at in range(left, right, MSS):
                    assert (at - B) // MSS in self.arrived


TestReceiverWithHoles = ReceiverWithHoles.TestCase
TestReceiverWithHoles.settings = settings(max_examples=60, stateful_step_count=12, deadline=None)


US, THEM = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")


def test_an_offloaded_burst_with_sack_blocks_is_cut_to_fit_the_mss() -> None:
    """With a hole in what the peer sent, our data leaves in packets the
    interface cuts into segments of the MSS less the SACK option, each
    carrying the blocks, so no segment is larger than the path allows."""
    endpoint = TcpEndpoint(
        TcpConfig(),
        TcpStats(),
        secret=bytes(range(32)),
        mtu_for=lambda _: 1500,
        segment_limit_for=lambda _: 65536,
    )
    endpoint.listen(80, None, 8)

    def arrive(header: TcpHeader, payload: bytes = b"") -> list[tuple[TcpHeader, int | None]]:
        endpoint.input(THEM, US, wire.emit(header, payload, src=THEM, dst=US), 0)
        out = []
        for _, segment, size in endpoint.take_outbox():
            out.append((wire.parse(segment)[0], size))
        return out

    options = {"timestamps": (1, 0), "sack_permitted": True, "mss": 1460, "window_scale": 7}
    ((syn_ack, _),) = arrive(TcpHeader(5555, 80, 1000, 0, SYN, 65535, **options))  # type: ignore[arg-type]
    ours = syn_ack.seq + 1
    arrive(TcpHeader(5555, 80, 1001, ours, ACK, 8192, timestamps=(2, syn_ack.timestamps[0])))
    (_, _, conn), *_ = endpoint.take_accepted()
    hole = TcpHeader(5555, 80, 1001 + 1448, ours, ACK, 8192, timestamps=(3, 1))
    ((ack, _),) = arrive(hole, b"x" * 1448)  # the first segment is missing
    assert ack.sack_blocks == ((2449, 3897),)
    conn.send(b"d" * 40_000, 0)
    key = next(iter(endpoint.connections))
    endpoint.collect(key, conn)
    packets = endpoint.take_outbox()
    assert packets
    for _, segment, size in packets:
        header, payload = wire.parse(segment)
        assert header.sack_blocks == ((2449, 3897),)
        assert size == conn.send_mss - sack_option_space(1) or (size is None and payload)
        assert (size or len(payload)) + sack_option_space(1) <= conn.send_mss


def test_after_a_pause_longer_than_the_rto_each_segment_is_acked_at_once() -> None:
    """A sender back from its retransmission timeout restarts from one
    segment: after a pause in its data longer than our RTO we ACK every
    in-order segment at once, 16 times (Linux's quickack mode), then every
    second one again, with the delayed-ACK timer for a lone one."""
    s = established(replace(PLAIN, sack=True), sack_permitted=True)
    s.recv(seg("A", B, A), b"a" * MSS)
    assert s.take() == []  # one full segment: the delayed-ACK timer holds it
    s.recv(seg("A", B + MSS, A), b"b" * MSS)
    assert len(s.take()) == 1  # the second full segment: ACKed at once
    s.advance(s.conn.rtt.rto / MS + 10)  # the peer is silent past our RTO
    ((repeated, _),) = s.take()  # (that ACK once more, the peer being silent)
    assert unwrap(repeated.ack, B) == B + 2 * MSS
    at = B + 2 * MSS
    for _ in range(16):
        s.recv(seg("A", at, A), b"c" * MSS)
        at += MSS
        ((ack, _),) = s.take()
        assert unwrap(ack.ack, B) == at
    s.recv(seg("A", at, A), b"d" * MSS)
    assert s.take() == []  # quick ACKs used up: every second segment again
    s.recv(seg("A", at + MSS, A), b"e" * MSS)
    ((ack, _),) = s.take()
    assert unwrap(ack.ack, B) == at + 2 * MSS
