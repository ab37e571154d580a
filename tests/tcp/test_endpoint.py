"""The connection table without I/O: resets for strangers, backlog, cookies, ISNs."""

from __future__ import annotations

from ipaddress import IPv4Address

from looming.net.tcp.config import SECOND, TcpConfig, TcpStats
from looming.net.tcp.connection import State
from looming.net.tcp.endpoint import TcpEndpoint
from looming.net.tcp.isn import IsnGenerator, SynCookies
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK, RST, SYN, TcpHeader

US = IPv4Address("10.0.0.1")
THEM = IPv4Address("10.0.0.2")
SECRET = bytes(range(32))


def _endpoint(config: TcpConfig | None = None) -> TcpEndpoint:
    return TcpEndpoint(config or TcpConfig(), TcpStats(), secret=SECRET, mtu_for=lambda _: 1480)


def _send(
    endpoint: TcpEndpoint, header: TcpHeader, payload: bytes = b"", now: int = 0
) -> list[TcpHeader]:
    endpoint.input(THEM, US, wire.emit(header, payload, src=THEM, dst=US), now)
    replies = []
    for destination, segment, _ in endpoint.take_outbox():
        assert destination == THEM
        assert wire.checksum_ok(segment, US, THEM)
        replies.append(wire.parse(segment)[0])
    return replies


def test_syn_to_a_closed_port_gets_rst_ack() -> None:
    endpoint = _endpoint()
    (reply,) = _send(endpoint, TcpHeader(5555, 81, 1000, 0, SYN, 1000))
    assert reply.flags == RST | ACK and reply.seq == 0 and reply.ack == 1001
    assert endpoint.stats.no_connection == 1


def test_ack_to_a_closed_port_gets_rst_from_the_ack() -> None:
    endpoint = _endpoint()
    (reply,) = _send(endpoint, TcpHeader(5555, 81, 1000, 777, ACK, 1000), b"data")
    assert reply.flags == RST and reply.seq == 777


def test_reset_is_never_answered() -> None:
    endpoint = _endpoint()
    assert _send(endpoint, TcpHeader(5555, 81, 1000, 777, RST | ACK, 0)) == []
    assert _send(endpoint, TcpHeader(5555, 81, 1000, 0, RST, 0)) == []


def test_malformed_and_bad_checksum_are_counted_and_dropped() -> None:
    endpoint = _endpoint()
    endpoint.input(THEM, US, b"\x00" * 7, 0)
    segment = bytearray(wire.emit(TcpHeader(5555, 81, 1, 0, SYN, 0), src=THEM, dst=US))
    segment[5] ^= 1
    endpoint.input(THEM, US, bytes(segment), 0)
    assert endpoint.stats.malformed_dropped == 2
    assert endpoint.stats.checksum_errors == 1
    assert endpoint.take_outbox() == []


def test_backlog_full_answers_with_cookies_and_a_valid_cookie_connects() -> None:
    endpoint = _endpoint(TcpConfig(syn_backlog=1))
    endpoint.listen(80, None, backlog=1)
    (first,) = _send(endpoint, TcpHeader(5000, 80, 100, 0, SYN, 1000, mss=1460))
    assert first.flags == SYN | ACK
    assert len(endpoint.connections) == 1
    syn = TcpHeader(
        5001,
        80,
        200,
        0,
        SYN,
        1000,
        mss=1460,
        window_scale=7,
        sack_permitted=True,
        timestamps=(9, 0),
    )
    (cookie_reply,) = _send(endpoint, syn)
    assert endpoint.stats.cookies_sent == 1
    assert len(endpoint.connections) == 1  # no state kept for it
    assert cookie_reply.timestamps is not None and cookie_reply.window_scale is not None
    # A forged cookie is refused with a reset.
    (reset,) = _send(endpoint, TcpHeader(5001, 80, 201, cookie_reply.seq + 2, ACK, 1000))
    assert reset.flags == RST
    assert endpoint.stats.cookies_rejected == 1
    # The real one is accepted, with the options carried in the echoed TSval.
    ack = TcpHeader(
        5001, 80, 201, cookie_reply.seq + 1, ACK, 1000, timestamps=(10, cookie_reply.timestamps[0])
    )
    _send(endpoint, ack, b"hi")
    assert endpoint.stats.cookies_accepted == 1
    ((port, _, conn),) = [a for a in endpoint.take_accepted() if a[1][3] == 5001]
    assert port == 80 and conn.state is State.ESTABLISHED
    assert conn.snd_scale == 7 and conn.sack_ok and conn.ts_ok and conn.peer_mss == 1460
    assert conn.receive(0) == b"hi"


def test_cookies_expire() -> None:
    cookies = SynCookies(SECRET)
    key = (US, 80, THEM, 5000)
    cookie = cookies.make(key, 1234, 1460, 0)
    assert cookies.check(key, 1234, cookie, 0) == 1460
    assert cookies.check(key, 1234, cookie, 100 * SECOND) == 1460
    assert cookies.check(key, 1234, cookie, 200 * SECOND) is None
    assert cookies.check(key, 1235, cookie, 0) is None
    assert cookies.check((US, 80, THEM, 5001), 1234, cookie, 0) is None


def test_isn_depends_on_tuple_secret_and_clock() -> None:
    isn = IsnGenerator(SECRET)
    key = (US, 80, THEM, 5000)
    assert isn.isn(key, 0) != isn.isn((US, 80, THEM, 5001), 0)
    assert isn.isn(key, 0) != IsnGenerator(bytes(32)).isn(key, 0)
    # M advances every 4 microseconds (RFC 6528).
    assert (isn.isn(key, 4000 * 250) - isn.isn(key, 0)) % (1 << 32) == 250


def test_time_wait_reopened_by_a_newer_syn() -> None:
    endpoint = _endpoint(TcpConfig(timestamps=False))
    endpoint.listen(80, None, backlog=8)
    (syn_ack,) = _send(endpoint, TcpHeader(5000, 80, 100, 0, SYN, 1000))
    _send(endpoint, TcpHeader(5000, 80, 101, syn_ack.seq + 1, ACK, 1000))
    ((_, key, conn),) = endpoint.take_accepted()
    conn.shutdown(0)
    endpoint.collect(key, conn)
    endpoint.take_outbox()
    _send(endpoint, TcpHeader(5000, 80, 101, syn_ack.seq + 2, ACK | 1, 1000))  # ACK + FIN
    assert conn.state is State.TIME_WAIT
    (new_syn_ack,) = _send(endpoint, TcpHeader(5000, 80, 90_000, 0, SYN, 1000))
    assert new_syn_ack.flags == SYN | ACK and new_syn_ack.ack == 90_001
    assert endpoint.connections[key] is not conn


def test_segments_after_a_reopened_time_wait_reach_the_new_connection() -> None:
    """The endpoint takes the last segment's connection again for the next
    one of the same flow: not once that connection has closed."""
    endpoint = _endpoint(TcpConfig(timestamps=False))
    endpoint.listen(80, None, backlog=8)
    (syn_ack,) = _send(endpoint, TcpHeader(5000, 80, 100, 0, SYN, 1000))
    _send(endpoint, TcpHeader(5000, 80, 101, syn_ack.seq + 1, ACK, 1000))
    ((_, key, conn),) = endpoint.take_accepted()
    conn.shutdown(0)
    endpoint.collect(key, conn)
    endpoint.take_outbox()
    _send(endpoint, TcpHeader(5000, 80, 101, syn_ack.seq + 2, ACK | 1, 1000))  # ACK + FIN
    (new_syn_ack,) = _send(endpoint, TcpHeader(5000, 80, 90_000, 0, SYN, 1000))
    _send(
        endpoint,
        TcpHeader(
            5000,
            80,
            90_001,
            new_syn_ack.seq + 1,
            ACK,
            1000,
        ),
        b"hi",
    )
    ((_, new_key, new_conn),) = endpoint.take_accepted()
    assert new_key == key and endpoint.connections[key] is new_conn is not conn
    assert conn.state is State.CLOSED and new_conn.state is State.ESTABLISHED
    assert new_conn.receive(0) == b"hi"


def test_interleaved_flows_each_reach_their_own_connection() -> None:
    """Segments of two flows alternate, with address objects equal but not
    the same, and each goes to its own connection."""
    endpoint = _endpoint(TcpConfig(timestamps=False))
    endpoint.listen(80, None, backlog=8)
    conns = {}
    for port in (5000, 5001):
        (syn_ack,) = _send(endpoint, TcpHeader(port, 80, 100, 0, SYN, 1000))
        _send(endpoint, TcpHeader(port, 80, 101, syn_ack.seq + 1, ACK, 1000))
        ((_, _, conns[port]),) = endpoint.take_accepted()
    for index in range(6):
        port = 5000 + index % 2
        seq = 101 + index // 2
        ack = conns[port].snd_max & 0xFFFFFFFF
        header = TcpHeader(port, 80, seq, ack, ACK, 1000)
        segment = wire.emit(header, bytes([index]), src=THEM, dst=US)
        source = IPv4Address(str(THEM)) if index % 3 else THEM
        endpoint.input(source, IPv4Address(str(US)), segment, 0)
    assert conns[5000].receive(0) == bytes([0, 2, 4])
    assert conns[5001].receive(0) == bytes([1, 3, 5])


def test_listener_bound_to_one_address_ignores_others() -> None:
    endpoint = _endpoint()
    endpoint.listen(80, IPv4Address("10.0.0.9"), backlog=8)
    (reply,) = _send(endpoint, TcpHeader(5000, 80, 100, 0, SYN, 1000))
    assert reply.flags == RST | ACK


def test_a_checksum_the_interface_vouched_for_is_not_summed_again() -> None:
    # The checksum field is wrong (as it would be while still partial), but
    # a vnet TAP completed or checked it: the segment is taken as it is.
    endpoint = _endpoint()
    segment = bytearray(wire.emit(TcpHeader(5555, 81, 1000, 0, SYN, 1000), src=THEM, dst=US))
    segment[16] ^= 0xFF
    endpoint.input(THEM, US, bytes(segment), 0, checksum_verified=True)
    assert endpoint.stats.checksum_errors == 0
    (reply,) = [wire.parse(s)[0] for _, s, _ in endpoint.take_outbox()]
    assert reply.flags == RST | ACK and reply.ack == 1001
    endpoint.input(THEM, US, bytes(segment), 0)
    assert endpoint.stats.checksum_errors == 1
