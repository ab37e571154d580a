"""A burst's run of data segments continued by their bytes alone (no header
parsed for a segment that continues the run: endpoint._continues) against
the same burst with every segment parsed and checked field by field: the
same bytes delivered, state, SACK blocks, ACK and counters, merges too. And
a data segment no run is built for, as its successor's bytes show that it
cannot continue it (endpoint._may_continue), against one built for every
data segment."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.net.tcp import endpoint as endpoint_module
from looming.net.tcp.endpoint import Arrival
from looming.net.wire import tcp
from tests.tcp.test_merge import MS, MSS, PEER_ISN, THEM, US, _accepted, _burst, _replies, _segment

# What may differ in a segment's bytes beyond what _burst varies: a payload
# byte (a bad checksum, unless the interface vouched for it), the reserved
# bits beside the data offset, the urgent pointer (no URG), the CE mark, an
# address equal to the connection's but another object.
_twist = st.sampled_from(
    ["", "", "", "", "corrupt", "verified_corrupt", "reserved", "urgent", "ce", "address"]
)


def _twisted(arrivals: list[Arrival], twists: list[str]) -> list[Arrival]:
    out: list[Arrival] = []
    for (src, dst, segment, verified, ce), twist in zip(arrivals, twists, strict=False):
        raw = bytearray(segment)
        if twist in ("corrupt", "verified_corrupt") and len(raw) > 32:
            raw[-1] ^= 0x5A
            verified = twist == "verified_corrupt"
        elif twist == "reserved":
            raw[12] |= 0x01  # (the parser ignores it; the checksum then fails)
        elif twist == "urgent":
            raw[18:20] = b"\x00\x07"
        elif twist == "ce":
            ce = True
        elif twist == "address":
            src = IPv4Address(str(src))
        out.append((src, dst, bytes(raw), verified, ce))
    out.extend(arrivals[len(twists) :])
    return out


def _outcome(arrivals: list[Arrival]) -> tuple[object, ...]:
    endpoint, conn, _ = _accepted()
    now = 2_000_000
    endpoint.input_burst(arrivals, now)
    replies = [(h.ack, h.window, h.sack_blocks, h.flags) for h in _replies(endpoint, conn, now)]
    buffer = conn.receive_buffer
    return (
        conn.receive(now),
        buffer.rcv_nxt,
        buffer.sack_blocks(4),
        conn.state,
        conn.ts_recent,
        replies,
        endpoint.stats.as_dict(),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=24), st.lists(_twist, max_size=24))
def test_runs_continued_by_their_bytes_are_runs_parsed(
    spec: list[tuple[int, int, int, int, int]], twists: list[str]
) -> None:
    _, _, our_seq = _accepted()
    arrivals = _twisted(_burst(spec, our_seq), twists)
    by_bytes = _outcome(arrivals)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(endpoint_module, "_continues", lambda *_: False)
        parsed = _outcome(arrivals)
    assert by_bytes == parsed


def test_a_run_continued_by_its_bytes_is_merged() -> None:
    """The shortcut is taken: a run of in-order segments is one merge, and
    had no segment after the first parsed."""
    _, _, our_seq = _accepted()
    arrivals = _burst([(0, 1000, 0, 0, 0)] * 6, our_seq)
    parsed: list[bytes] = []
    original = endpoint_module.wire.parse

    def counting(segment: bytes) -> object:
        parsed.append(segment)
        return original(segment)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(endpoint_module.wire, "parse", counting)
        outcome = _outcome(arrivals)
    stats = outcome[-1]
    assert isinstance(stats, dict)
    assert stats["segments_merged"] == 5
    segments = {segment for _, _, segment, _, _ in arrivals}
    assert [segment for segment in parsed if segment in segments] == [arrivals[0][2]]


# An echo's burst: (skip, length, how many of our segments it acknowledges,
# extra flags, twist) per segment; see tests.tcp.test_merge._burst.
_echo_segment = st.tuples(
    st.sampled_from([0, 0, 0, 0, 10, 11]),
    st.sampled_from([MSS, MSS, MSS, 400, 0]),
    st.integers(0, 4),
    st.sampled_from([0, 0, 0, tcp.PSH, tcp.FIN]),
    st.sampled_from(["", "", "", "", "corrupt", "short", "ce"]),
)


def _echo_outcome(spec: list[tuple[int, int, int, int, str]]) -> tuple[object, ...]:
    """A connection with four segments of ours in flight takes the burst."""
    endpoint, conn, our_seq = _accepted()
    conn.send(bytes(4 * conn.send_mss), MS)
    (key,) = endpoint.connections
    endpoint.collect(key, conn)
    sent = [tcp.parse(segment) for _, segment, _ in endpoint.take_outbox()]
    ends = [our_seq] + [(h.seq + len(p)) & 0xFFFFFFFF for h, p in sent if len(p)]
    arrivals: list[Arrival] = []
    offset = 0
    for skip, length, acked, extra, twist in spec:
        if skip in (10, 11):
            offset += MSS if skip == 10 else -3 * MSS
        seq = (PEER_ISN + 1 + max(offset, 0)) & 0xFFFFFFFF
        ack = ends[min(acked, len(ends) - 1)]
        header = tcp.TcpHeader(4000, 80, seq, ack, tcp.ACK | extra, 512, timestamps=(200, 1))
        segment = bytearray(tcp.emit(header, bytes(length), src=THEM, dst=US))
        if twist == "corrupt":
            segment[-1] ^= 0x5A
        elif twist == "short":
            del segment[10:]
        arrivals.append((THEM, US, bytes(segment), False, twist == "ce"))
        offset = max(offset, 0) + length
    now = 2 * MS
    endpoint.input_burst(arrivals, now)
    replies = [
        (h.seq, h.ack, h.window, h.sack_blocks, h.flags) for h in _replies(endpoint, conn, now)
    ]
    buffer = conn.receive_buffer
    return (
        conn.receive(now),
        buffer.rcv_nxt,
        buffer.sack_blocks(4),
        conn.state,
        (conn.snd_una, conn.snd_wnd, conn.snd_wl1, conn.snd_wl2, conn.cc.cwnd),
        replies,
        endpoint.stats.as_dict(),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(_echo_segment, min_size=1, max_size=16))
def test_a_lone_data_segment_goes_as_a_run_of_one(
    spec: list[tuple[int, int, int, int, str]],
) -> None:
    """A data segment whose successor cannot continue it (another
    acknowledgment number or sequence number, read from its bytes) is taken
    without a run built for it: the same bytes, state, replies and counters
    (merges included) as when every data segment starts a run."""
    shortcut = _echo_outcome(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(endpoint_module, "_may_continue", lambda *_: True)
        general = _echo_outcome(spec)
    assert shortcut == general
