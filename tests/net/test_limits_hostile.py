"""The stack-wide TCP limits under hostile input: SYN floods from spoofed
sources and the connection limit, the receive-memory reserve, the keys'
validation and the counters a running unikernel reports."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.devices.stack import TcpFlow
from looming.net.tcp.config import TcpConfig, TcpStats
from looming.net.tcp.connection import State
from looming.net.tcp.endpoint import TcpEndpoint
from looming.net.tcp.receive_buffer import MemoryPool, ReceiveBuffer
from looming.net.tcp.send_buffer import SendBuffer
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


def _fill(buffer: ReceiveBuffer, window: int) -> None:
    """Insert in-order segments while the window offered has room."""
    while (space := buffer.window_space(window)) > 0:
        size = min(space, 1400)
        frame = bytes(size + 66)  # a segment's payload as a view into its frame
        if not buffer.insert(buffer.rcv_nxt, memoryview(frame)[66:]):
            break


def test_connections_that_never_read_leave_every_other_one_its_reserve() -> None:
    """Peers that send and never read fill the pool; a new connection is
    still offered a window and may hold its reserve, and the limit holds."""
    window = 512 * 1024
    pool = MemoryPool(limit=1024 * 1024)
    hogs = [ReceiveBuffer(0, 64, memory_limit=3 * window, pool=pool) for _ in range(24)]
    for hog in hogs:
        _fill(hog, window)
    newcomer = ReceiveBuffer(0, 64, memory_limit=3 * window, pool=pool)
    space = newcomer.window_space(window)
    assert space >= 4 * 1400 // 2
    _fill(newcomer, window)
    assert len(newcomer.ready) >= 4 * 1400 // 2
    # Past the limit by at most the reserve of the one that came when full.
    assert pool.held <= pool.limit + pool.reserve  # type: ignore[operator]
    assert pool.refused == 0  # what was offered found room
    newcomer.read()
    assert newcomer.window_space(window) >= space


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(1, 4000), st.booleans()),
        max_size=400,
    )
)
def test_the_pool_limit_holds_and_the_biggest_holders_shrink_first(
    steps: list[tuple[int, int, bool]],
) -> None:
    window = 64 * 1024
    pool = MemoryPool(limit=256 * 1024)
    buffers = [ReceiveBuffer(0, 64, memory_limit=3 * window, pool=pool) for _ in range(8)]
    for which, length, read in steps:
        buffer = buffers[which]
        space = buffer.window_space(window)
        if space > 0:
            frame = bytes(min(length, space) + 66)
            buffer.insert(buffer.rcv_nxt, memoryview(frame)[66:])
        if read:
            buffer.read(length)
        assert pool.held == sum(b.charged for b in buffers) <= 256 * 1024
        assert pool.excess == sum(max(b.charged - pool.reserve, 0) for b in buffers)
        charged = sorted(buffers, key=lambda b: b.charged)
        if pool.shared - pool.excess < pool.shared // 4:  # under pressure
            offers = [b.window_space(window) for b in charged]
            assert offers == sorted(offers, reverse=True)
    for buffer in buffers:
        buffer.release()
    assert pool.held == pool.excess == pool.members == 0


def test_an_echo_gets_through_while_peers_that_never_read_hold_the_memory() -> None:
    """Two direct stacks: eight connections fill the server's receive
    memory and are never read; a new connection's echo still completes."""
    from tests.net.test_limits import A, limited_pair

    async def main() -> None:
        server, client = await limited_pair(memory_limit=1024 * 1024)
        never = asyncio.Event()

        async def hold(flow: TcpFlow) -> None:
            await never.wait()

        async def echo(flow: TcpFlow) -> None:
            while data := await flow.read():
                await flow.write(data)
            await flow.shutdown()

        await server.tcp.listen(80, hold)
        await server.tcp.listen(81, echo)
        hogs = [await client.tcp.connect(A.ip, 80, timeout=1) for _ in range(8)]
        writers = [asyncio.ensure_future(h.write(b"h" * 512 * 1024)) for h in hogs]
        for _ in range(100):
            await asyncio.sleep(0.02)
            if server.counters()["tcp.memory_limit_dropped"] or (
                server.counters()["tcp.receive_memory"] > 900 * 1024
            ):
                break
        flow = await client.tcp.connect(A.ip, 81, timeout=1)
        size = 256 * 1024

        async def read_all() -> int:
            total = 0
            while data := await flow.read():
                total += len(data)
            return total

        reader = asyncio.ensure_future(read_all())
        await asyncio.wait_for(flow.write(b"e" * size), 10)
        await flow.shutdown()
        assert await asyncio.wait_for(reader, 10) == size
        for writer in writers:
            writer.cancel()
        never.set()
        await server.disconnect()
        await client.disconnect()

    asyncio.run(main())


def test_send_queues_are_charged_and_each_keeps_its_reserve() -> None:
    """Send buffers count toward the stack's limit: queues that never drain
    fill only the shared part, and a new connection may still queue its
    reserve; acknowledged or closed, the bytes are given back."""
    pool = MemoryPool(limit=1024 * 1024)
    receivers = [ReceiveBuffer(0, 64, pool=pool) for _ in range(9)]  # the members
    stuck = [SendBuffer(1, 512 * 1024) for _ in range(8)]
    for buffer in stuck:
        buffer.join(pool)
        buffer.append(bytes(512 * 1024))
    assert pool.send_held == sum(len(b) for b in stuck)
    assert pool.send_held + pool.held <= pool.limit  # type: ignore[operator]
    assert all(b.space == 0 for b in stuck)
    newcomer = SendBuffer(1, 512 * 1024)
    newcomer.join(pool)
    assert newcomer.append(bytes(64 * 1024)) >= pool.send_reserve
    receivers[0].insert(0, memoryview(bytes(1400 + 66))[66:])  # receiving still works
    assert receivers[0].rcv_nxt == 1400
    newcomer.release_to(1 + len(newcomer))
    assert newcomer.space >= pool.send_reserve
    for buffer in [*stuck, newcomer]:
        buffer.release()
    assert pool.send_held == pool.send_excess == 0
