"""``tcp.bytes_in`` counts the payload connections take, not strays'.

It was counted at parsing, before the connection lookup, so the payload of
segments that match no connection (a flood of stray data segments, say)
showed as bytes received. Hand-over one by one and in bursts (merged as
GRO does) must agree.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.net.tcp.endpoint import Arrival
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK, TcpHeader
from tests.tcp.test_merge import MS, PEER_ISN, THEM, US, _accepted

# (stray: to a port with no connection, payload length)
_segment = st.tuples(st.booleans(), st.integers(1, 900))


@settings(max_examples=40, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=12), st.booleans())
def test_bytes_in_counts_only_what_connections_take(
    segments: list[tuple[bool, int]], burst: bool
) -> None:
    endpoint, _conn, our_seq = _accepted()
    before = endpoint.stats.bytes_in
    seq = PEER_ISN + 1
    taken = 0
    arrivals: list[Arrival] = []
    for stray, length in segments:
        port = 4001 if stray else 4000
        header = TcpHeader(port, 80, seq, our_seq, ACK, 512)
        arrivals.append(
            (THEM, US, wire.emit(header, b"d" * length, src=THEM, dst=US), False, False)
        )
        if not stray:
            seq += length
            taken += length
    if burst:
        endpoint.input_burst(arrivals, 2 * MS)
    else:
        for src, dst, segment, verified, ce in arrivals:
            endpoint.input(src, dst, segment, 2 * MS, checksum_verified=verified, ce=ce)
    assert endpoint.stats.bytes_in - before == taken
    assert endpoint.stats.segments_in >= len(segments)
