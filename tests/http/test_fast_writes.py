"""The fast path holds whole responses back to the end of the loop's turn
(FastAsgiConnection.write_soon): the responses of every connection
answered in one turn are written together at the start of the next, never
more than HELD_WRITES bytes a connection, and never out of order with what
is written at once. What the clients read must be what the usual path
sends, byte for byte (Date lines aside), however many connections are
answered in the same turn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.http import AsgiAdapter, ServerConfig, fast_asgi, streaming
from looming.http.asgi import Scope
from looming.http.fast_asgi import APART, HELD_WRITES, FastAsgiConnection
from looming.http.server import HttpServer
from looming.unix.clock import UnixClock

from .serving import RunningServer, serve_in_thread

CONFIG = ServerConfig(parser="httptools")


async def sized_app(scope: Scope, receive: Any, send: Any) -> None:
    """``/whole/N``: N bytes in one message; ``/stream/N``: N bytes in
    three pieces; ``/close/N``: N bytes, then the connection closes."""
    if scope["type"] != "http":
        return
    _, kind, size = scope["path"].split("/")
    body = bytes(range(256)) * (int(size) // 256) + b"z" * (int(size) % 256)
    headers = [(b"content-type", b"application/octet-stream")]
    if kind == "close":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if kind == "stream":
        third = len(body) // 3
        for piece in (body[:third], body[third : 2 * third]):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        body = body[2 * third :]
    await send({"type": "http.response.body", "body": body})


class Transport:
    """Counts what is written, and when (the loop's turn it was written in)."""

    def __init__(self) -> None:
        self.written: list[tuple[int, bytes]] = []
        self.turn = 0
        self.paused_protocol: Any = None

    def write(self, data: bytes) -> None:
        self.written.append((self.turn, data))

    def writelines(self, pieces: tuple[bytes, ...]) -> None:
        self.written.append((self.turn, b"".join(pieces)))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass


class Flow:
    local_address = ("127.0.0.1", 80)
    remote_address = ("127.0.0.1", 5000)

    def __init__(self) -> None:
        self.transport = Transport()

    def lend_transport(self, protocol: Any) -> Transport:
        return self.transport

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def request(target: str, *fields: str) -> bytes:
    return ("\r\n".join([f"GET {target} HTTP/1.1", "Host: x", *fields]) + "\r\n\r\n").encode()


def test_responses_of_one_turn_are_written_together_in_the_next() -> None:
    """Every connection's response of a turn is written at the start of the
    next, one write each; one above HELD_WRITES is written in its callback."""
    big = HELD_WRITES + 1

    async def main() -> list[Flow]:
        server = HttpServer(AsgiAdapter(sized_app), CONFIG, clock=UnixClock())
        flows = [Flow() for _ in range(5)]
        connections = [
            FastAsgiConnection(server, server.handler, flow, lambda: None)  # type: ignore[arg-type]
            for flow in flows
        ]
        targets = ["/whole/10", "/whole/16384", f"/whole/{big}", "/whole/0", "/whole/10"]
        # Two requests pipelined on the last connection: both held, one write.
        reads = [request(t) for t in targets[:-1]] + [request(targets[-1]) * 2]
        loop = asyncio.get_running_loop()
        for connection, data in zip(connections, reads, strict=True):
            loop.call_soon(connection.data_received, data)  # (as a transport calls it)
        await asyncio.sleep(0)  # the turn those callbacks run in
        for flow in flows:
            flow.transport.turn = 1
        await asyncio.sleep(0)  # the next
        for connection in connections:
            connection.connection_lost(None)
        return flows

    flows = asyncio.run(main())
    turns = [[turn for turn, _ in flow.transport.written] for flow in flows]
    assert turns == [[1], [1], [0], [1], [1]]
    bodies = [b"".join(data for _, data in flow.transport.written) for flow in flows]
    assert bodies[2].startswith(b"HTTP/1.1 200 OK\r\n")
    assert (
        bodies[2].endswith(b"z" * (big % 256))
        and f"content-length: {big}\r\n".encode() in bodies[2]
    )
    assert bodies[4].count(b"HTTP/1.1 200 OK\r\n") == 2


def test_what_is_held_goes_out_before_a_close_and_before_a_streamed_body() -> None:
    async def main() -> Flow:
        server = HttpServer(AsgiAdapter(sized_app), CONFIG, clock=UnixClock())
        flow = Flow()
        connection = FastAsgiConnection(server, server.handler, flow, lambda: None)  # type: ignore[arg-type]
        pipelined = request("/whole/5") + request("/stream/9") + request("/close/3")
        asyncio.get_running_loop().call_soon(connection.data_received, pipelined)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        connection.connection_lost(None)
        return flow

    flow = asyncio.run(main())
    data = b"".join(data for _, data in flow.transport.written)
    # The streamed response's head and pieces are written at once, after
    # the held response before it; the closing one before the close.
    assert flow.transport.written[0][0] == 0
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 3
    first, second, third = data.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert b"content-length: 5\r\n" in first and b"transfer-encoding: chunked" in second
    assert b"connection: close" in third and third.endswith(b"\r\n\r\nzzz")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RunningServer]]:
    configs = {
        "fast-uvloop": ("uvloop", True),
        "fast-asyncio": ("asyncio", True),
        "flow-uvloop": ("uvloop", False),
    }
    running: dict[str, RunningServer] = {}
    with contextlib.ExitStack() as stack:
        # The clients half-close after their requests: a server takes that
        # for a client gone once a response runs past a short delay. Here
        # the answers are compared, not that delay, so it is made long
        # enough that a loaded machine's scheduling cannot cut one short.
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setattr(streaming, "WATCH_DELAY", 5.0)
        patch.setattr(fast_asgi, "GONE_DELAY", 5.0)
        for name, (loop, fast) in configs.items():
            config = ServerConfig(parser="httptools", fast_path=fast)
            running[name] = stack.enter_context(
                serve_in_thread(lambda: AsgiAdapter(sized_app), config, loop=loop)
            )
        yield running


def exchanges(port: int, scripts: list[bytes]) -> list[bytes]:
    """Send each script on a connection of its own (all before reading any),
    end each connection's sending side, and read each to its end."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in scripts]
    try:
        for sock, script in zip(socks, scripts, strict=True):
            sock.sendall(script)
            sock.shutdown(socket.SHUT_WR)
        answers = []
        for sock in socks:
            received = []
            while data := sock.recv(262144):
                received.append(data)
            lines = b"".join(received).split(b"\r\n")
            answers.append(b"\r\n".join(line for line in lines if not line.startswith(b"date: ")))
        return answers
    finally:
        for sock in socks:
            sock.close()


SIZES = st.sampled_from(
    [0, 1, 100, APART - 1, APART, 16384, HELD_WRITES - 200, HELD_WRITES, HELD_WRITES + 1, 200_000]
)
TARGET = st.tuples(st.sampled_from(["whole", "whole", "stream"]), SIZES)


@settings(max_examples=25, deadline=None)
@given(
    connections=st.lists(
        st.tuples(st.lists(TARGET, min_size=1, max_size=6), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_many_connections_answered_together_get_what_the_usual_path_sends(
    servers: dict[str, RunningServer], connections: list[tuple[list[tuple[str, int]], bool]]
) -> None:
    scripts = []
    for targets, close in connections:
        script = b"".join(request(f"/{kind}/{size}") for kind, size in targets)
        scripts.append(script + (request("/close/7") if close else b""))
    expected = exchanges(servers["flow-uvloop"].port, scripts)
    for answer, (targets, close) in zip(expected, connections, strict=True):
        assert answer.count(b"HTTP/1.1 200 OK\r\n") == len(targets) + close
    for name in ("fast-uvloop", "fast-asyncio"):
        assert exchanges(servers[name].port, scripts) == expected, name
