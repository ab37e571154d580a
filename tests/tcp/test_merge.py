"""Bursts of arrivals merged as GRO does (TcpEndpoint.input_burst) against
the same segments handed over one by one: the same bytes delivered, the same
final ACK (number, window, SACK blocks), the same counters but the merge's.
And the layer's other per-burst saving: a blocked writer woken in steps."""

from __future__ import annotations

import asyncio
import hashlib
import random
from ipaddress import IPv4Address

from hypothesis import example, given, settings
from hypothesis import strategies as st

from looming.devices.stack import TcpFlow
from looming.net.tcp import TcpLayer
from looming.net.tcp.config import TcpConfig, TcpStats
from looming.net.tcp.connection import State, TcpConnection
from looming.net.tcp.endpoint import Arrival, TcpEndpoint
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK, FIN, PSH, SYN, TcpHeader
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.tcp.ipv4_pair import Faults, wire_pair

US = IPv4Address("10.0.0.1")
THEM = IPv4Address("10.0.0.2")
SECRET = bytes(range(32))
PEER_ISN = 5000
MSS = 1000
MS = 1_000_000


def _accepted(*, sack: bool = True) -> tuple[TcpEndpoint, TcpConnection, int]:
    """An endpoint (deferring output, as the layer makes it) with one
    connection past the handshake (SACK agreed if ``sack``); and our ISN."""
    endpoint = TcpEndpoint(
        TcpConfig(), TcpStats(), secret=SECRET, mtu_for=lambda _: 1040, defer_output=True
    )
    endpoint.listen(80, None, backlog=8)
    syn = TcpHeader(
        4000,
        80,
        PEER_ISN,
        0,
        SYN,
        65535,
        mss=MSS,
        window_scale=7,
        sack_permitted=sack,
        timestamps=(100, 0),
    )
    endpoint.input(THEM, US, wire.emit(syn, b"", src=THEM, dst=US), 0)
    ((_, synack, _),) = endpoint.take_outbox()
    ours = wire.parse(synack)[0]
    assert ours.timestamps is not None
    ack = TcpHeader(
        4000, 80, PEER_ISN + 1, ours.seq + 1, ACK, 512, timestamps=(101, ours.timestamps[0])
    )
    endpoint.input(THEM, US, wire.emit(ack, b"", src=THEM, dst=US), MS)
    endpoint.take_outbox()
    endpoint.take_touched()
    (conn,) = endpoint.connections.values()
    assert conn.state is State.ESTABLISHED
    return endpoint, conn, ours.seq + 1


# A burst: (skip, length, extra flags, TSval step, window step) per segment.
_segment = st.tuples(
    st.integers(0, 15),  # 10: a hole before it; 11: three segments again
    st.sampled_from([MSS, MSS, MSS, MSS, 400, 1]),
    st.sampled_from([0, 0, 0, 0, 0, PSH, FIN]),
    st.sampled_from([0, 0, 0, 0, 1]),
    st.sampled_from([0, 0, 0, 0, 1]),
)


def _burst(spec: list[tuple[int, int, int, int, int]], our_seq: int) -> list[Arrival]:
    """Segments mostly in order (index 0 is the next expected), some skipped,
    repeated or with another TSval, window or flag: every reason not to merge."""
    arrivals: list[Arrival] = []
    offset, ts = 0, 200
    for skip, length, extra, ts_step, window_step in spec:
        if skip in (10, 11):  # a hole, or a step back (duplicates)
            offset += MSS if skip == 10 else -3 * MSS
        ts += ts_step
        seq = (PEER_ISN + 1 + max(offset, 0)) & 0xFFFFFFFF
        header = TcpHeader(
            4000, 80, seq, our_seq, ACK | extra, 512 + window_step, timestamps=(ts, 1)
        )
        data = bytes((offset + i) % 251 for i in range(length))
        arrivals.append((THEM, US, wire.emit(header, data, src=THEM, dst=US), False, False))
        offset = max(offset, 0) + length
    return arrivals


def _replies(endpoint: TcpEndpoint, conn: TcpConnection, now: int) -> list[TcpHeader]:
    conn.flush_ack(now)
    (key,) = endpoint.connections
    endpoint.collect(key, conn)
    return [wire.parse(segment)[0] for _, segment, _ in endpoint.take_outbox()]


def assert_same_counters(merged: TcpStats, single: TcpStats) -> None:
    """The counters of a burst taken merged equal those of it taken one by
    one, but for the merges and the segments sent (merging may save ACKs)."""
    counters = merged.as_dict()
    assert counters.pop("segments_merged") >= 0
    assert counters.pop("segments_out") <= single.segments_out
    expected = single.as_dict()
    del expected["segments_merged"], expected["segments_out"]
    assert counters == expected


@settings(max_examples=150, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=24), st.booleans(), st.booleans())
# Beyond a hole, three segments, then two of them again: a run inside a range held.
@example(
    spec=[
        (10, MSS, 0, 0, 0),
        (0, MSS, 0, 0, 0),
        (0, MSS, 0, 0, 0),
        (11, MSS, 0, 0, 0),
        (0, MSS, 0, 0, 0),
    ],
    shut=False,
    sack=True,
)
# Segment 14001 again after two runs and a range beyond: its D-SACK goes
# in its own ACK, whether the run before it was taken merged or not.
@example(
    spec=[(0, MSS, 0, 0, 0)] * 5
    + [(10, MSS, 0, 0, 0), (10, MSS, 0, 0, 0), (0, MSS, 0, 0, 0)]
    + [(10, MSS, 0, 0, 0), (11, MSS, 0, 0, 0), (0, MSS, 0, 0, 0)],
    shut=False,
    sack=True,
)
def test_a_merged_burst_is_taken_as_one_by_one(
    spec: list[tuple[int, int, int, int, int]], shut: bool, sack: bool
) -> None:
    merged, merged_conn, our_seq = _accepted(sack=sack)
    single, single_conn, _ = _accepted(sack=sack)
    if shut:  # our FIN is out (FIN-WAIT-1): data still comes in
        for endpoint, conn in ((merged, merged_conn), (single, single_conn)):
            conn.shutdown(MS)
            _replies(endpoint, conn, MS)
    arrivals = _burst(spec, our_seq)
    now = 2 * MS
    merged.input_burst(arrivals, now)
    for src, dst, segment, verified, ce in arrivals:
        single.input(src, dst, segment, now, checksum_verified=verified, ce=ce)
    last_merged = _replies(merged, merged_conn, now)[-1:]
    last_single = _replies(single, single_conn, now)[-1:]
    assert merged_conn.receive(now) == single_conn.receive(now)
    assert merged_conn.receive_buffer.rcv_nxt == single_conn.receive_buffer.rcv_nxt
    assert merged_conn.state is single_conn.state
    assert merged_conn.ts_recent == single_conn.ts_recent
    assert merged_conn.snd_wnd == single_conn.snd_wnd
    assert (merged_conn.snd_wl1, merged_conn.snd_wl2) == (single_conn.snd_wl1, single_conn.snd_wl2)
    assert merged_conn.rcv_mss == single_conn.rcv_mss
    # What is held beyond a hole, and what the next ACK's SACK blocks say.
    merged_buffer, single_buffer = merged_conn.receive_buffer, single_conn.receive_buffer
    assert merged_buffer.sack_blocks(4) == single_buffer.sack_blocks(4)
    # The ACK the burst ends with: its number, window and SACK blocks.
    assert [(h.ack, h.window, h.sack_blocks, h.flags) for h in last_merged] == [
        (h.ack, h.window, h.sack_blocks, h.flags) for h in last_single
    ]
    assert_same_counters(merged.stats, single.stats)


def test_in_order_full_segments_are_merged_and_acked_once_for_each_two() -> None:
    endpoint, conn, our_seq = _accepted()
    arrivals = _burst([(0, MSS, 0, 0, 0)] * 5 + [(0, 400, PSH, 0, 0)], our_seq)
    endpoint.input_burst(arrivals, 2 * MS)
    assert endpoint.stats.segments_merged == 5
    assert conn.receive_buffer.rcv_nxt == PEER_ISN + 1 + 5 * MSS + 400
    # Five full segments counted, not one: the ACK is due at the burst's end.
    assert conn.ack_due
    (reply,) = _replies(endpoint, conn, 2 * MS)
    assert reply.ack == PEER_ISN + 1 + 5 * MSS + 400
    assert conn.receive(2 * MS) == b"".join(
        bytes(i % 251 for i in range(n, n + MSS)) for n in range(0, 5 * MSS, MSS)
    ) + bytes((5 * MSS + i) % 251 for i in range(400))


def test_a_gap_a_changed_window_or_a_fin_stops_a_merge() -> None:
    endpoint, _, our_seq = _accepted()
    spec = [(0, MSS, 0, 0, 0), (10, MSS, 0, 0, 0), (0, MSS, 0, 0, 1), (0, MSS, FIN, 0, 0)]
    endpoint.input_burst(_burst(spec, our_seq), 2 * MS)
    assert endpoint.stats.segments_merged == 0


def test_data_received_twice_without_sack_does_not_stop_later_merges() -> None:
    """Without SACK there is no D-SACK to send: part of a segment arriving
    twice leaves nothing pending that would keep later runs apart."""
    endpoint, conn, our_seq = _accepted(sack=False)
    assert not conn.sack_ok
    spec = [(0, MSS, 0, 0, 0), (0, MSS, 0, 0, 0)]
    endpoint.input_burst(_burst(spec, our_seq), 2 * MS)
    # Half of the second segment again, and 500 bytes beyond it.
    header = TcpHeader(4000, 80, PEER_ISN + 1 + 1500, our_seq, ACK, 512, timestamps=(200, 1))
    again = wire.emit(header, bytes((1500 + i) % 251 for i in range(MSS)), src=THEM, dst=US)
    endpoint.input_burst([(THEM, US, again, False, False)], 3 * MS)
    assert conn.receive_buffer.rcv_nxt == PEER_ISN + 1 + 2500
    _replies(endpoint, conn, 3 * MS)
    run = [
        TcpHeader(4000, 80, PEER_ISN + 1 + n, our_seq, ACK, 512, timestamps=(200, 1))
        for n in (2500, 3500, 4500)
    ]
    endpoint.input_burst(
        [(THEM, US, wire.emit(h, bytes(MSS), src=THEM, dst=US), False, False) for h in run],
        4 * MS,
    )
    assert endpoint.stats.segments_merged == 1 + 2
    assert conn.receive_buffer.rcv_nxt == PEER_ISN + 1 + 5500


def test_psh_and_short_segments_inside_a_run_are_merged() -> None:
    endpoint, conn, our_seq = _accepted()
    spec = [(0, MSS, PSH, 0, 0), (0, 400, 0, 0, 0), (0, 1, PSH, 0, 0), (0, MSS, 0, 0, 0)]
    endpoint.input_burst(_burst(spec, our_seq), 2 * MS)
    assert endpoint.stats.segments_merged == 3
    # Two of the four were full sized: the ACK is due at the burst's end.
    assert conn.full_segments_unacked == 2 and conn.ack_due


def test_a_blocked_writer_is_woken_once_half_what_is_queued_is_free() -> None:
    """As Linux's sk_stream_write_space: a writer waiting on a full send
    buffer is woken when the space free is half the bytes queued, not for
    every ACK that frees a little; what it writes all arrives."""
    size, buffer = 2 * 1024 * 1024, 64 * 1024
    config = TcpConfig(send_buffer=buffer)

    async def main() -> None:
        a, b = wire_pair(Faults())
        client = TcpLayer(a, UnixTime(), UnixRandom(1), config=config)
        server = TcpLayer(b, UnixTime(), UnixRandom(2), config=config)
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def serve(flow: TcpFlow) -> None:
            parts = []
            while chunk := await flow.read():
                parts.append(chunk)
            received.set_result(b"".join(parts))

        await server.listen(80, serve)
        flow = await client.connect("10.9.0.2", 80)
        conn = flow.connection
        sends, original = [], conn.send

        def counted(data: bytes | bytearray | memoryview, now: int) -> int:
            sends.append(conn.send_buffer.space)  # the space the writer woke to
            return original(data, now)

        conn.send = counted  # type: ignore[method-assign]
        data = random.Random(5).randbytes(size)
        await flow.write(data)
        await flow.shutdown()
        assert hashlib.sha256(await asyncio.wait_for(received, 30)).digest() == (
            hashlib.sha256(data).digest()
        )
        # Every wake-up after the first found a third of the buffer free or
        # more (half of the rest queued), so there were few of them.
        assert all(3 * space >= buffer for space in sends[1:])
        assert len(sends) <= 3 * size // buffer
        await client.close()
        await server.close()

    asyncio.run(main())
