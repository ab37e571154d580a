"""Hostile input to the whole TCP layer: nothing raises, memory stays bounded."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.net.tcp.config import TcpConfig, TcpStats
from looming.net.tcp.endpoint import TcpEndpoint
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK, SYN, TcpHeader

US = IPv4Address("10.0.0.1")
THEM = IPv4Address("10.0.0.2")

u32 = st.integers(0, 0xFFFFFFFF)


def _endpoint_with_a_connection() -> tuple[TcpEndpoint, int, int]:
    config = TcpConfig(syn_backlog=4, max_out_of_order_segments=8)
    endpoint = TcpEndpoint(config, TcpStats(), secret=bytes(32), mtu_for=lambda _: 1480)
    endpoint.listen(80, None, backlog=4)
    endpoint.input(
        THEM, US, wire.emit(TcpHeader(4444, 80, 100, 0, SYN, 65535), src=THEM, dst=US), 0
    )
    (_, syn_ack, _), *_ = endpoint.take_outbox()
    header, _ = wire.parse(syn_ack)
    ack = TcpHeader(4444, 80, 101, header.seq + 1, ACK, 65535)
    endpoint.input(THEM, US, wire.emit(ack, src=THEM, dst=US), 0)
    endpoint.take_outbox()
    endpoint.take_touched()
    return endpoint, 101, header.seq + 1


@st.composite
def segments(draw: st.DrawFn) -> TcpHeader:
    near = draw(st.booleans())
    return TcpHeader(
        src_port=draw(st.sampled_from([4444, 4445, 1]) if near else st.integers(1, 65535)),
        dst_port=draw(st.sampled_from([80, 81]) if near else st.integers(1, 65535)),
        seq=draw(st.integers(0, 200_000) if near else u32),
        ack=draw(u32),
        flags=draw(st.integers(0, 0xFF)),
        window=draw(st.integers(0, 0xFFFF)),
        mss=draw(st.none() | st.integers(0, 0xFFFF)),
        window_scale=draw(st.none() | st.integers(0, 255)),
        sack_permitted=draw(st.booleans()),
        sack_blocks=tuple(draw(st.lists(st.tuples(u32, u32), max_size=1))),
        timestamps=draw(st.none() | st.tuples(u32, u32)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(segments(), st.binary(max_size=300), st.integers(0, 10**9)), max_size=40))
def test_random_segments_never_raise_and_stay_bounded(
    inputs: list[tuple[TcpHeader, bytes, int]],
) -> None:
    endpoint, _, _ = _endpoint_with_a_connection()
    now = 0
    for header, payload, step in inputs:
        now += step
        endpoint.input(THEM, US, wire.emit(header, payload, src=THEM, dst=US), now)
        for key, conn in list(endpoint.connections.items()):
            conn.on_timer(now)
            endpoint.collect(key, conn)
        endpoint.take_outbox()
        endpoint.take_touched()
        endpoint.take_accepted()
    for conn in endpoint.connections.values():
        assert conn.receive_buffer.out_of_order_bytes <= 8 * 1480 * 2 + 300 * 40
        assert len(conn.receive_buffer.ready) <= conn.config.receive_buffer + 0xFFFF
    half_open = sum(
        1 for c in endpoint.connections.values() if c.passive and c.state.name == "SYN_RECEIVED"
    )
    assert half_open <= 4


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_are_counted_and_dropped(data: bytes) -> None:
    endpoint, _, _ = _endpoint_with_a_connection()
    before = endpoint.stats.malformed_dropped
    endpoint.input(THEM, US, data, 0)
    # Random bytes almost never carry a right checksum: they are dropped.
    assert endpoint.stats.malformed_dropped == before + 1 or wire.checksum_ok(data, THEM, US)
