"""The host socket stack: TCP echo, end of stream, resets, back-pressure, UDP,
checked against the kernel's own sockets (Python's socket module) as the peer."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Coroutine
from ipaddress import IPv4Interface
from typing import Any

import pytest

from looming.devices import Stack, TcpFlow
from looming.devices.stack import Datagram
from looming.errors import AddressInUse, Closed, ConnectionRefused, ConnectionReset
from looming.unix import socket_stack
from looming.unix.socket_stack import RECEIVE_HIGH_WATER, SocketStack, SocketTcpFlow


async def echo(flow: TcpFlow) -> None:
    while data := await flow.read():
        await flow.write(data)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


async def peer_exchange(port: int, payload: bytes) -> bytes:
    """The kernel's own client: send, half-close, read everything back."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, payload)
    sock.shutdown(socket.SHUT_WR)
    chunks = []
    while chunk := await loop.sock_recv(sock, 65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def test_it_is_a_stack() -> None:
    stack = SocketStack()
    assert isinstance(stack, Stack)
    assert stack.addresses() == [IPv4Interface("0.0.0.0/0")]
    assert SocketStack("127.0.0.1").addresses() == [IPv4Interface("127.0.0.1/32")]


def test_echo_with_a_kernel_client() -> None:
    async def scenario() -> None:
        stack = await SocketStack.connect("127.0.0.1")
        listener = await stack.tcp.listen(0, echo)
        payload = bytes(range(256)) * 4096  # 1 MiB
        assert await peer_exchange(listener.port, payload) == payload
        replies = await asyncio.gather(
            *(peer_exchange(listener.port, b"n%d" % i) for i in range(20))
        )
        assert replies == [b"n%d" % i for i in range(20)]
        await stack.disconnect()

    run(scenario())


def test_connect_read_eof_and_addresses() -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        served: list[tuple[str, int]] = []

        async def greet_then_close(flow: TcpFlow) -> None:
            served.append(flow.remote_address)
            await flow.write(b"hello")
            await flow.shutdown()
            with pytest.raises(Closed):
                await flow.write(b"after shutdown")
            # Half-closed: we can still read what the client sends.
            assert await flow.read() == b"bye"

        listener = await stack.tcp.listen(0, greet_then_close)
        flow = await stack.tcp.connect("127.0.0.1", listener.port, timeout=5)
        assert isinstance(flow, TcpFlow)
        assert flow.remote_address == ("127.0.0.1", listener.port)
        flow.set_nodelay(True)
        flow.set_nodelay(False)
        received = b""
        while chunk := await flow.read():
            received += chunk
        assert received == b"hello"
        assert await flow.read() == b""  # EOF stays EOF
        await flow.write(b"bye")
        await flow.close()
        await flow.close()  # idempotent
        with pytest.raises(Closed):
            await flow.write(b"x")
        await asyncio.sleep(0.05)
        assert served == [flow.local_address]
        await stack.disconnect()

    run(scenario())


def test_reset_by_peer_raises_connection_reset() -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        outcome: asyncio.Future[BaseException | bytes] = asyncio.get_running_loop().create_future()

        async def reader(flow: TcpFlow) -> None:
            try:
                outcome.set_result(await flow.read() + await flow.read())
            except ConnectionReset as error:
                outcome.set_result(error)

        listener = await stack.tcp.listen(0, reader)
        sock = socket.create_connection(("127.0.0.1", listener.port))
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await asyncio.sleep(0.05)
        sock.close()
        result = await outcome
        assert isinstance(result, ConnectionReset)
        await stack.disconnect()

    run(scenario())


def test_connect_to_closed_port_is_refused() -> None:
    async def scenario() -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        with pytest.raises(ConnectionRefused):
            await SocketStack().tcp.connect("127.0.0.1", port, timeout=5)

    run(scenario())


def test_port_in_use() -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        listener = await stack.tcp.listen(0, echo)
        with pytest.raises(AddressInUse):
            await SocketStack("127.0.0.1").tcp.listen(listener.port, echo)
        await listener.close()
        await stack.disconnect()

    run(scenario())


def test_write_waits_while_the_peer_does_not_read() -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        progress: list[int] = []
        finished = asyncio.Event()

        async def flood(flow: TcpFlow) -> None:
            block = b"x" * 65536
            for index in range(256):  # 16 MiB, far beyond every buffer on the way
                await flow.write(block)
                progress.append(index)
            finished.set()

        listener = await stack.tcp.listen(0, flood)
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", listener.port))
        # Nobody reads: the writer must be held up, not buffer 16 MiB.
        await asyncio.sleep(0.3)
        stalled_at = len(progress)
        assert not finished.is_set()
        assert stalled_at < 128
        received = 0
        while received < 256 * 65536:
            chunk = await loop.sock_recv(sock, 1 << 20)
            assert chunk
            received += len(chunk)
        await asyncio.wait_for(finished.wait(), 5)
        assert len(progress) == 256
        sock.close()
        await stack.disconnect()

    run(scenario())


def test_failing_handler_is_logged_and_listener_lives(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        calls = 0

        async def sometimes_fails(flow: TcpFlow) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ValueError("first connection fails on purpose")
            await echo(flow)

        listener = await stack.tcp.listen(0, sometimes_fails)
        # Nothing sent, so the failed handler's close is a clean end of stream.
        assert await peer_exchange(listener.port, b"") == b""
        assert await peer_exchange(listener.port, b"second") == b"second"
        await stack.disconnect()

    with caplog.at_level(logging.ERROR, logger="looming.tcp"):
        run(scenario())
    assert any(
        "first connection fails on purpose" in r.exc_text for r in caplog.records if r.exc_text
    )


def test_disconnect_closes_listeners_and_connections() -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        started = asyncio.Event()

        async def hold(flow: TcpFlow) -> None:
            started.set()
            await flow.read()

        listener = await stack.tcp.listen(0, hold)
        client = await SocketStack().tcp.connect("127.0.0.1", listener.port, timeout=5)
        await started.wait()
        await stack.disconnect()
        # disconnect() aborts connections: the peer sees a reset, not a FIN.
        with pytest.raises(ConnectionReset):
            await client.read()
        with pytest.raises(ConnectionRefused):
            await SocketStack().tcp.connect("127.0.0.1", listener.port, timeout=5)

    run(scenario())


def test_udp_bind_and_send_both_ways() -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        received: asyncio.Queue[Datagram] = asyncio.Queue()

        async def answer(datagram: Datagram) -> None:
            await received.put(datagram)
            await stack.udp.send(
                datagram.source,
                datagram.source_port,
                datagram.data.upper(),
                source_port=datagram.destination_port,
            )

        listener = await stack.udp.bind(0, answer)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(peer, b"ping", ("127.0.0.1", listener.port))
        datagram = await received.get()
        assert datagram.data == b"ping"
        assert datagram.destination_port == listener.port
        assert (datagram.source, datagram.source_port) == peer.getsockname()
        reply, source = await loop.sock_recvfrom(peer, 2048)
        assert reply == b"PING"
        assert source == ("127.0.0.1", listener.port)
        # A plain send from an ephemeral port, and a synchronous handler.
        seen: list[bytes] = []
        other = await stack.udp.bind(0, lambda d: seen.append(d.data))
        await stack.udp.send("127.0.0.1", other.port, b"direct")
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == [b"direct"]
        await listener.close()
        peer.close()
        await stack.disconnect()

    run(scenario())


def test_reading_stops_while_the_application_does_not_read() -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        flows: list[SocketTcpFlow] = []
        go = asyncio.Event()
        received = bytearray()

        async def slow_reader(flow: TcpFlow) -> None:
            assert isinstance(flow, SocketTcpFlow)
            flows.append(flow)
            await go.wait()
            while data := await flow.read():
                received.extend(data)

        listener = await stack.tcp.listen(0, slow_reader)
        payload = bytes(range(251)) * (32 * 1024)  # about 8 MiB, a prime-sized pattern
        sender = asyncio.create_task(peer_exchange(listener.port, payload))
        await asyncio.sleep(0.3)
        (flow,) = flows
        # The protocol stopped taking data from the kernel near its high-water mark.
        assert flow._buffered <= RECEIVE_HIGH_WATER + 256 * 1024
        assert not sender.done()
        go.set()
        await asyncio.wait_for(sender, 10)
        assert bytes(received) == payload
        await stack.disconnect()

    run(scenario())


def test_close_gives_up_on_a_peer_that_never_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket_stack, "CLOSE_FLUSH_TIMEOUT", 0.2)

    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        closed = asyncio.Event()
        flows: list[SocketTcpFlow] = []
        pending: list[int] = []

        async def write_and_close(flow: TcpFlow) -> None:
            assert isinstance(flow, SocketTcpFlow)
            flows.append(flow)
            # Below the write high-water mark, so write() returns at once and
            # the bytes wait in the transport once the kernel buffers are full.
            assert flow._transport is not None
            # Small kernel buffers on both ends, so most bytes stay with us.
            flow._transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
            )
            for _ in range(3):
                await flow.write(b"y" * 65536)
            assert flow._transport is not None
            pending.append(flow._transport.get_write_buffer_size())
            closed.set()

        listener = await stack.tcp.listen(0, write_and_close)
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", listener.port))
        await closed.wait()
        # Fill the kernel buffers so some bytes stay in the transport.
        await asyncio.sleep(0.5)
        (flow,) = flows
        assert pending[0] > 0  # bytes were still waiting when the handler returned
        assert flow._lost  # given up after the grace time instead of waiting forever
        with pytest.raises(ConnectionResetError):
            while await loop.sock_recv(sock, 65536):
                pass
        sock.close()
        await stack.disconnect()

    run(scenario())
