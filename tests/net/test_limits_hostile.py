"""The stack-wide TCP limits under hostile input: SYN floods from spoofed
sources and the connection limit, the receive-memory reserve, the keys'
validation and the counters a running unikernel reports."""

from __future__ import annotations

from ipaddress import IPv4Address

from looming.net.tcp.config import TcpConfig, TcpStats
from looming.net.tcp.connection import State
from looming.net.tcp.endpoint import TcpEndpoint
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK, SYN, TcpHeader

US = IPv4Address("10.0.0.1")
SECRET = bytes(range(32))


def _endpoint(max_connections: int, backlog: int = 16) -> TcpEndpoint:
    endpoint = TcpEndpoint(
        TcpConfig(syn_backlog=backlog),
        TcpStats(),
        secret=SECRET,
        mtu_for=lambda _: 1480,
        max_connections=max_connections,
    )
    endpoint.listen(80, None, backlog=backlog)
    return endpoint


def _send(endpoint: TcpEndpoint, src: IPv4Address, header: TcpHeader) -> list[TcpHeader]:
    endpoint.input(src, US, wire.emit(header, b"", src=src, dst=US), 0)
    return [wire.parse(s)[0] for d, s, _ in endpoint.take_outbox() if d == src]


def _syn(endpoint: TcpEndpoint, src: IPv4Address, port: int) -> TcpHeader | None:
    replies = _send(endpoint, src, TcpHeader(port, 80, 1000, 0, SYN, 65535, mss=1460))
    return next((r for r in replies if r.flags == SYN | ACK), None)


def _finish(endpoint: TcpEndpoint, src: IPv4Address, port: int, synack: TcpHeader) -> None:
    _send(endpoint, src, TcpHeader(port, 80, 1001, (synack.seq + 1) & 0xFFFFFFFF, ACK, 65535))


def _established(endpoint: TcpEndpoint) -> int:
    return sum(c.state is State.ESTABLISHED for c in endpoint.connections.values())


def test_a_syn_flood_from_spoofed_sources_leaves_room_for_real_clients() -> None:
    """Half-open connections from sources that never answer must not fill
    the connection limit: a client completing its handshake gets in."""
    endpoint = _endpoint(max_connections=5)
    for i in range(1000):  # 1,000 spoofed SYNs, every one answered
        spoofed = IPv4Address(int(IPv4Address("10.88.1.0")) + i)
        assert _syn(endpoint, spoofed, 40000 + i) is not None
    client = IPv4Address("10.0.0.2")
    for port in range(5000, 5005):
        synack = _syn(endpoint, client, port)
        assert synack is not None
        _finish(endpoint, client, port, synack)
    assert len(endpoint.take_accepted()) == 5
    assert _established(endpoint) == 5
    assert endpoint.connection_limit_dropped == 0


def test_established_connections_stay_within_the_limit() -> None:
    """At the limit a SYN is dropped and counted, and so is the last ACK of
    handshakes begun before the limit was reached."""
    endpoint = _endpoint(max_connections=3)
    client = IPv4Address("10.0.0.2")
    synacks = [_syn(endpoint, client, port) for port in range(5000, 5005)]
    for port, synack in zip(range(5000, 5005), synacks, strict=True):
        assert synack is not None
        _finish(endpoint, client, port, synack)
    assert _established(endpoint) == 3
    assert len(endpoint.take_accepted()) == 3
    assert endpoint.connection_limit_dropped == 2
    assert _syn(endpoint, client, 6000) is None
    assert endpoint.connection_limit_dropped == 3
