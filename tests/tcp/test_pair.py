"""Two looming TCP layers over an in-memory wire with seeded faults."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable

import pytest

from looming.devices.stack import TcpFlow
from looming.errors import Closed, ConnectionRefused, ConnectionReset, ConnectionTimeout
from looming.net.tcp import State, TcpConfig, TcpLayer, TcpStream
from looming.net.tcp.config import MS, SECOND
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.tcp.ipv4_pair import Faults, wire_pair

SIZE = 3 * 1024 * 1024


def _layers(faults: Faults, config: TcpConfig | None = None) -> tuple[TcpLayer, TcpLayer]:
    a, b = wire_pair(faults)
    return (
        TcpLayer(a, UnixTime(), UnixRandom(1), config=config),
        TcpLayer(b, UnixTime(), UnixRandom(2), config=config),
    )


async def _eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for ``condition`` without racing the event loop (or a busy machine)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def _read_all(flow: TcpFlow) -> bytes:
    parts = []
    while chunk := await flow.read():
        parts.append(chunk)
    return b"".join(parts)


async def _exchange(client: TcpLayer, server: TcpLayer, up: bytes, down: bytes) -> None:
    """Send ``up`` to a server that answers with ``down``; check both by hash."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def serve(flow: TcpFlow) -> None:
        async def send_down() -> None:
            await flow.write(down)
            await flow.shutdown()

        sender = asyncio.create_task(send_down())
        received.set_result(await _read_all(flow))
        await sender

    listener = await server.listen(80, serve)
    flow = await client.connect("10.9.0.2", 80, timeout=10)
    sender = asyncio.create_task(flow.write(up))
    got_down = await _read_all(flow)
    await sender
    await flow.shutdown()
    got_up = await asyncio.wait_for(received, 60)
    assert hashlib.sha256(got_up).hexdigest() == hashlib.sha256(up).hexdigest()
    assert hashlib.sha256(got_down).hexdigest() == hashlib.sha256(down).hexdigest()
    await flow.close()
    await listener.close()


@pytest.mark.parametrize(
    "faults",
    [
        Faults(),
        Faults(loss=0.01, seed=2),
        Faults(loss=0.05, seed=3),
        Faults(reorder=0.05, duplicate=0.02, seed=4),
        Faults(corrupt=0.02, loss=0.01, seed=5),
    ],
    ids=["clean", "loss1", "loss5", "reorder-dup", "corrupt"],
)
def test_bulk_both_ways(faults: Faults) -> None:
    up = random.Random(1).randbytes(SIZE)
    down = random.Random(2).randbytes(SIZE)

    async def main() -> None:
        client, server = _layers(faults)
        await asyncio.wait_for(_exchange(client, server, up, down), 120)
        if faults.loss:
            assert client.stats.retransmits + server.stats.retransmits > 0
        if faults.corrupt:
            assert client.stats.checksum_errors + server.stats.checksum_errors > 0
        await client.close()
        await server.close()

    asyncio.run(main())


def test_connections_leave_every_table_and_timer() -> None:
    config = TcpConfig(time_wait_ns=50_000_000)

    async def main() -> None:
        client, server = _layers(Faults(), config)

        async def echo(flow: TcpFlow) -> None:
            await flow.write(await flow.read())

        await server.listen(7, echo)
        for i in range(50):
            flow = await client.connect("10.9.0.2", 7)
            await flow.write(b"ping %d" % i)
            assert await flow.read() == b"ping %d" % i
            assert await flow.read() == b""
            await flow.close()
        await _eventually(lambda: client.connection_count + server.connection_count == 0)
        for layer in (client, server):
            assert layer.connection_count == 0
            assert layer.timer_count == 0
            assert not layer._streams
        await client.close()
        await server.close()

    asyncio.run(main())


def test_refused_and_reset_and_timeout() -> None:
    async def main() -> None:
        faults = Faults()
        client, server = _layers(faults)
        with pytest.raises(ConnectionRefused):
            await client.connect("10.9.0.2", 81)

        accepted: asyncio.Queue[TcpFlow] = asyncio.Queue()

        async def hold(flow: TcpFlow) -> None:
            await accepted.put(flow)
            await asyncio.sleep(3600)

        await server.listen(82, hold)
        flow = await client.connect("10.9.0.2", 82)
        peer = await accepted.get()
        await flow.write(b"unread")
        assert isinstance(peer, TcpStream)
        await _eventually(lambda: peer.connection.readable_bytes == 6)
        await peer.close()  # unread data: an abort, the client sees a reset
        with pytest.raises(ConnectionReset):
            await flow.read()
        with pytest.raises(ConnectionReset):
            await flow.write(b"more")

        faults.loss = 1.0
        with pytest.raises(ConnectionTimeout):
            await client.connect("10.9.0.2", 82, timeout=0.3)
        await client.close()
        await server.close()

    asyncio.run(main())


def test_write_after_shutdown_is_closed_and_half_close_still_reads() -> None:
    async def main() -> None:
        client, server = _layers(Faults())

        async def serve(flow: TcpFlow) -> None:
            data = await _read_all(flow)
            await flow.write(data[::-1])

        await server.listen(9, serve)
        flow = await client.connect("10.9.0.2", 9)
        assert isinstance(flow, TcpFlow)  # the device interface, checked at run time
        await flow.write(b"abc")
        await flow.shutdown()
        with pytest.raises(Closed):
            await flow.write(b"x")
        assert await _read_all(flow) == b"cba"
        await flow.close()
        with pytest.raises(Closed):
            await flow.read()
        await client.close()
        await server.close()

    asyncio.run(main())


def test_backpressure_with_a_slow_reader() -> None:
    config = TcpConfig(send_buffer=64 * 1024, receive_buffer=32 * 1024)

    async def main() -> None:
        client, server = _layers(Faults(), config)
        got = bytearray()
        done = asyncio.Event()

        async def slow(flow: TcpFlow) -> None:
            while chunk := await flow.read():
                got.extend(chunk)
                await asyncio.sleep(0.002)
            done.set()

        await server.listen(10, slow)
        flow = await client.connect("10.9.0.2", 10)
        data = random.Random(3).randbytes(1024 * 1024)
        await flow.write(data)
        await flow.shutdown()
        await asyncio.wait_for(done.wait(), 60)
        assert bytes(got) == data
        await _eventually(lambda: flow.state in (State.FIN_WAIT_2, State.TIME_WAIT))
        await client.close()
        await server.close()

    asyncio.run(main())


def test_syn_flood_is_answered_with_cookies_and_cookies_connect() -> None:
    """Two half-open connections fill the backlog, and the next three SYNs
    are answered with cookies. The half-open ones stay half-open however
    long the test takes: the server resends their SYN-ACKs (from 50 ms on,
    ten times, for over a minute) and the ACKs answering those are lost
    too. (Once a pause of a busy machine outlasted the server's RTO, the
    resent SYN-ACKs completed them, the backlog had room again and a SYN
    got no cookie.) The client's SYNs all arrive and it resends none (a
    resent SYN would get a second cookie)."""
    faults = Faults()
    a, b = wire_pair(faults)
    client = TcpLayer(a, UnixTime(), UnixRandom(1), config=TcpConfig(rto_initial_ns=30 * SECOND))
    server_config = TcpConfig(
        syn_backlog=2, rto_initial_ns=50 * MS, rto_min_ns=50 * MS, synack_retries=10
    )
    server = TcpLayer(b, UnixTime(), UnixRandom(2), config=server_config)

    async def main() -> None:
        async def echo(flow: TcpFlow) -> None:
            await flow.write(await flow.read())

        await server.listen(11, echo, backlog=2)
        # Fill the backlog with half-open connections whose final ACK is lost.
        faults.drop_filter = lambda src, payload: str(src) == "10.9.0.1" and payload[13] == 0x10
        pending = [asyncio.create_task(client.connect("10.9.0.2", 11)) for _ in range(2)]
        await _eventually(lambda: server._endpoint.listeners[11].half_open == 2)
        await _eventually(lambda: all(task.done() for task in pending))
        held = {task.result().local_address[1] for task in pending}
        faults.drop_filter = lambda src, payload: (
            str(src) == "10.9.0.1"
            and payload[13] == 0x10
            and int.from_bytes(payload[:2], "big") in held
        )
        await asyncio.sleep(0.2)  # the server resends their SYN-ACKs meanwhile
        assert server.stats.retransmits >= 2
        assert server._endpoint.listeners[11].half_open == 2
        flows = [await client.connect("10.9.0.2", 11) for _ in range(3)]
        assert server.stats.cookies_sent == 3
        assert server.stats.cookies_accepted == 3
        for i, flow in enumerate(flows):
            await flow.write(b"cookie %d" % i)
            assert await flow.read() == b"cookie %d" % i
            # Options survive the cookie through the timestamp echo.
            assert flow.connection.sack_ok and flow.connection.ws_ok and flow.connection.ts_ok
        for task in pending:
            (await task).connection  # noqa: B018  (the half-open ones completed too)
        await client.close()
        await server.close()

    asyncio.run(main())


def test_a_transfer_goes_on_after_timeouts_lower_the_segment_size() -> None:
    """Three timeouts in a row make TCP suspect a path-MTU black hole and
    halve its segments (``black_hole_mss_lowered``); a segment sent before
    that, when resent, is larger than the new size and leaves as one packet
    for the IP layer to cut or send whole. It must still arrive: at 5% loss
    this happens now and then, and the transfer then stalled for good."""
    up = random.Random(3).randbytes(300_000)

    async def main() -> None:
        faults = Faults()
        client, server = _layers(faults)
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def serve(flow: TcpFlow) -> None:
            received.set_result(await _read_all(flow))

        listener = await server.listen(80, serve)
        flow = await client.connect("10.9.0.2", 80, timeout=10)
        await flow.write(up[:50_000])
        # Every data segment from the client is lost until the MSS falls.
        faults.drop_filter = lambda src, payload: str(src) == "10.9.0.1" and len(payload) > 100
        sender = asyncio.create_task(flow.write(up[50_000:]))
        await _eventually(lambda: client.icmp_counters["black_hole_mss_lowered"] >= 1)
        faults.drop_filter = None
        await sender
        await flow.shutdown()
        got = await asyncio.wait_for(received, 30)
        assert hashlib.sha256(got).digest() == hashlib.sha256(up).digest()
        assert client.transmit_errors == 0
        assert flow.connection.send_mss < 1448
        await flow.close()
        await listener.close()
        await client.close()
        await server.close()

    asyncio.run(main())


def test_a_handler_ended_by_the_peers_reset_is_not_logged_as_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reset is a connection's ordinary end: counted, logged at debug level,
    never a traceback per connection (which any client could cause)."""

    async def main() -> None:
        client, server = _layers(Faults())
        ended = asyncio.Event()

        async def echo(flow: TcpFlow) -> None:
            try:
                await flow.write(b"greeting the client never reads")
                while data := await flow.read():
                    await flow.write(data)
            finally:
                ended.set()

        async def broken(flow: TcpFlow) -> None:
            raise RuntimeError("a real bug in the handler")

        await server.listen(83, echo)
        await server.listen(84, broken)
        flow = await client.connect("10.9.0.2", 83)
        assert isinstance(flow, TcpStream)
        await _eventually(lambda: flow.connection.readable_bytes > 0)
        await flow.close()  # unread data: an abort, the server's read sees a reset
        await asyncio.wait_for(ended.wait(), 10)
        await _eventually(lambda: server.counters["handler_ended_by_peer"] == 1)
        assert server.counters["handler_errors"] == 0
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

        other = await client.connect("10.9.0.2", 84)
        await _eventually(lambda: server.counters["handler_errors"] == 1)
        assert [r for r in caplog.records if r.levelno >= logging.ERROR]
        await other.close()
        await client.close()
        await server.close()

    with caplog.at_level(logging.DEBUG, logger="looming"):
        asyncio.run(main())
