"""The socket stack's fast path for ASGI applications (looming.http.fast_asgi)
against the server's usual path, which reads each connection through its
flow: the same requests, pipelined and cut into pieces at random, must get
the same bytes back from both (Date lines aside), including the requests
the fast path hands back to the usual path midway through a connection."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.http import AsgiAdapter, ServerConfig, fast_asgi, streaming

from .serving import RunningServer, serve_in_thread, wait_until_stalled


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI application with one route per kind of response."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/fail":
        raise RuntimeError("fails on purpose before its response")
    if path == "/none":
        return  # no response at all
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    start: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": []}
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"text/plain")]
    echo = b"%s %s %s q=%s body=%s" % (
        scope["method"].encode(),
        scope["raw_path"],
        scope["http_version"].encode(),
        scope["query_string"],
        body,
    )
    if path == "/stream":
        await send({**start, "headers": headers})
        for piece in (b"one,", b"two,", echo):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body"})
    elif path == "/declared":
        await send({**start, "headers": [(b"content-length", b"%d" % (len(echo) + 2))]})
        await send({"type": "http.response.body", "body": b"<<", "more_body": True})
        await send({"type": "http.response.body", "body": echo})
    elif path == "/empty":
        await send({**start, "status": 204, "headers": [(b"x-kind", b"empty")]})
        await send({"type": "http.response.body"})
    elif path == "/injected":
        await send({**start, "headers": [(b"x-bad", b"a\r\nx-evil: 1")]})
        await send({"type": "http.response.body", "body": echo})
    elif path == "/close":
        await send({**start, "headers": [(b"connection", b"close")]})
        await send({"type": "http.response.body", "body": echo})
    elif path == "/trailers":
        await send({**start, "headers": headers, "trailers": True})
        await send({"type": "http.response.body", "body": echo})
        await send({"type": "http.response.trailers", "headers": [(b"x-sum", b"7")]})
    elif path == "/cut":
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
    else:
        await send({**start, "headers": [*headers, (b"content-length", b"%d" % len(echo))]})
        await send({"type": "http.response.body", "body": echo})


def _request(target: str, *fields: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: x", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


PLAIN = [
    _request("/"),
    _request("/plain?a=1&b=%20"),
    _request("/caf%C3%A9/x"),
    _request("/stream"),
    _request("/declared"),
    _request("/empty"),
    _request("/trailers"),
    _request("/fail"),
    _request("/none"),
    _request("/injected"),
    _request("/", "X-Trailing:   spaces   ", "Accept: */*"),
    _request("/", method="DELETE"),
    _request("/", method="OPTIONS"),
    _request("/", "X-Big: " + "a" * 60_000),
]
"""Requests the fast path answers itself."""

HANDED_BACK = [
    _request("/", method="HEAD"),
    _request("/stream", method="HEAD"),
    _request("/", method="POST", version="1.1").replace(
        b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\nhello"
    ),
    _request("/", "Transfer-Encoding: chunked", method="PUT") + b"3\r\nabc\r\n0\r\n\r\n",
    _request("/", "Expect: 100-continue", "Content-Length: 2", method="POST") + b"hi",
    _request("/", "Upgrade: something"),
    _request("/", "If-None-Match: x"),
    _request("/", "Connection: keep-alive"),
]
"""Requests the fast path hands back to the usual path (which serves the
rest of the connection)."""

LAST = [
    _request("/", "Connection: close"),
    _request("/close"),
    _request("/", version="1.0"),
    _request("/cut"),
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    b"NOT A REQUEST\r\n\r\n",
    _request("/", "X-Too-Big: " + "a" * 70_000),
]
"""Requests after which the server closes the connection."""


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RunningServer]]:
    """The fast path on both event loops, and the usual path (the reference)."""
    configs = {
        "fast-uvloop": ("uvloop", True),
        "fast-asyncio": ("asyncio", True),
        "flow-uvloop": ("uvloop", False),
    }
    running: dict[str, RunningServer] = {}
    with contextlib.ExitStack() as stack:
        # A client that half-closes after its requests is answered if the
        # answers are ready within a short delay, on both paths. Here the
        # answers are compared, not that delay: it is made long enough that a
        # loaded machine's scheduling cannot decide the outcome.
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setattr(streaming, "WATCH_DELAY", 5.0)
        patch.setattr(fast_asgi, "GONE_DELAY", 5.0)
        for name, (loop, fast) in configs.items():
            config = ServerConfig(parser="httptools", fast_path=fast)
            running[name] = stack.enter_context(
                serve_in_thread(lambda: AsgiAdapter(app), config, loop=loop)
            )
        yield running


def exchange(port: int, pieces: list[bytes], half_close: bool = False) -> bytes:
    """Send ``pieces`` (a short pause between them), with ``half_close``
    end the sending side, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for number, piece in enumerate(pieces):
            if number:
                time.sleep(0.002)
            sock.sendall(piece)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = []
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received.append(data)
    lines = b"".join(received).split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.startswith(b"date: "))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points``."""
    edges = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@settings(max_examples=100, deadline=None)
@given(
    plain=st.lists(st.sampled_from(PLAIN), max_size=5),
    handed_back=st.lists(st.sampled_from(HANDED_BACK), max_size=1),
    after=st.lists(st.sampled_from(PLAIN), max_size=2),
    last=st.sampled_from(LAST),
    points=st.lists(st.integers(min_value=0, max_value=4000), max_size=4),
    half_close=st.booleans(),
)
def test_both_paths_answer_alike(
    servers: dict[str, RunningServer],
    plain: list[bytes],
    handed_back: list[bytes],
    after: list[bytes],
    last: bytes,
    points: list[int],
    half_close: bool,
) -> None:
    requests = b"".join([*plain, *handed_back, *after, last])
    pieces = cut(requests, points)
    expected = exchange(servers["flow-uvloop"].port, pieces, half_close)
    assert expected.startswith(b"HTTP/1.1 ")
    for name in ("fast-uvloop", "fast-asyncio"):
        assert exchange(servers[name].port, pieces, half_close) == expected, name


def test_plain_requests_take_the_fast_path_and_others_are_handed_back(
    servers: dict[str, RunningServer],
) -> None:
    fast = servers["fast-uvloop"].server
    flow = servers["flow-uvloop"].server
    before = fast.connections_fast, fast.connections_handed_back
    answer = exchange(servers["fast-uvloop"].port, [PLAIN[0] + LAST[0]])
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    # Connection: close is the usual path's: the connection was handed back.
    assert (fast.connections_fast, fast.connections_handed_back) == (before[0] + 1, before[1] + 1)
    answer = exchange(servers["fast-uvloop"].port, [PLAIN[0], PLAIN[1], HANDED_BACK[2], LAST[1]])
    assert answer.count(b"HTTP/1.1 200 OK") == 4 and b"body=hello" in answer
    assert flow.connections_fast == 0


def test_requests_pipelined_before_the_client_s_end_are_all_answered(
    servers: dict[str, RunningServer],
) -> None:
    for name in ("fast-uvloop", "flow-uvloop"):
        answer = exchange(servers[name].port, [PLAIN[0] * 3 + PLAIN[3]], half_close=True)
        assert answer.count(b"HTTP/1.1 200 OK") == 4, name


def test_idle_and_slow_connections_time_out_on_the_fast_path() -> None:
    config = ServerConfig(parser="httptools", keep_alive_timeout=0.3, header_timeout=0.3)
    with serve_in_thread(lambda: AsgiAdapter(app), config, loop="uvloop") as running:
        # Silent from the start, idle after a response, and a head that
        # stops midway: closed, the last with 408.
        for sent, status in ((b"", b""), (PLAIN[0], b"200"), (b"GET / HTTP/1.1\r\nHo", b"408")):
            with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
                sock.sendall(sent)
                began = time.monotonic()
                received = b""
                while data := sock.recv(65536):
                    received += data
                assert 0.2 < time.monotonic() - began < 3
                assert received.startswith(b"HTTP/1.1 " + status) if status else received == b""
        assert running.server.connections_fast == 3
        assert running.server.timeouts == 3


def test_a_stop_lets_a_response_in_flight_finish() -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"finished"})

    config = ServerConfig(parser="httptools")
    with serve_in_thread(lambda: AsgiAdapter(slow), config, loop="uvloop") as running:
        busy = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        idle = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        busy.sendall(PLAIN[0])
        deadline = time.monotonic() + 5
        while running.server.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop = asyncio.run_coroutine_threadsafe(running.server.shutdown(5.0), running.loop)
        assert idle.recv(100) == b""  # the idle connection is closed at once
        received = b""
        while data := busy.recv(65536):
            received += data
        assert received.startswith(b"HTTP/1.1 200 OK") and received.endswith(b"finished")
        stop.result(5)
        assert running.server.connections_open == 0
        busy.close()
        idle.close()


def test_thousands_of_pipelined_requests_are_answered_in_order(
    servers: dict[str, RunningServer],
) -> None:
    count = 3000
    requests = b"".join(_request(f"/n{i}") for i in range(count)) + LAST[0]
    answer = exchange(servers["fast-uvloop"].port, [requests])
    assert answer.count(b"HTTP/1.1 200 OK") == count + 1
    order = [int(part.split(b" ", 1)[0]) for part in answer.split(b"GET /n")[1:]]
    assert order == list(range(count))


def test_a_dribbled_head_gets_408_at_the_header_timeout() -> None:
    config = ServerConfig(parser="httptools", header_timeout=0.4)
    with serve_in_thread(lambda: AsgiAdapter(app), config, loop="uvloop") as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            began = time.monotonic()
            received = b""
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 40:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.05)
                if time.monotonic() - began > 1.5:
                    break
            while data := sock.recv(65536):
                received += data
            took = time.monotonic() - began
        assert received.startswith(b"HTTP/1.1 408 ")
        assert 0.3 < took < 1.5


def test_a_pipelining_client_that_does_not_read_is_held_back() -> None:
    """Responses to pipelined requests wait while the client does not read
    them: the server stops answering (and reading) instead of buffering
    every response, and goes on once the client reads."""
    with serve_in_thread(lambda: AsgiAdapter(app), ServerConfig(parser="httptools")) as running:
        server = running.server
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", running.port))
        count = 60_000
        sender = threading.Thread(target=sock.sendall, args=(PLAIN[0] * count,), daemon=True)
        sender.start()
        answered = wait_until_stalled(lambda: server.requests_served, quiet=0.5)
        assert answered < count * 0.9  # the kernel holds a few MB of responses
        (connection,) = server._fast
        assert connection._transport.get_write_buffer_size() < 512 * 1024
        received = 0
        expected = len(exchange_bytes(running.port)) * count
        while received < expected:
            data = sock.recv(1 << 20)
            assert data, "the server closed the connection"
            received += len(data)
        sender.join(10)
        assert server.requests_served >= count
        sock.close()


def exchange_bytes(port: int) -> bytes:
    """The bytes of one response to ``PLAIN[0]`` (its Date line the same length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(PLAIN[0].replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        received = b""
        while data := sock.recv(65536):
            received += data
    return received.replace(b"connection: close\r\n", b"")


class SlottedFlow:
    """A flow no weak reference can be made to (as __slots__ classes are)."""

    __slots__ = ("incoming", "sent")

    def __init__(self, incoming: list[bytes]) -> None:
        self.incoming = incoming
        self.sent: list[bytes] = []

    local_address = ("127.0.0.1", 80)
    remote_address = ("127.0.0.1", 5000)

    async def read(self) -> bytes:
        return self.incoming.pop(0) if self.incoming else b""

    async def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    async def writev(self, buffers: Any) -> None:
        self.sent.append(b"".join(buffers))

    async def shutdown(self) -> None:
        pass

    async def close(self) -> None:
        pass


def test_any_flow_is_served_by_the_flow_path() -> None:
    """serve_flow keeps no weak reference to the flows it is given."""
    from looming.http import HttpServer
    from looming.unix.clock import UnixClock

    async def main() -> bytes:
        server = HttpServer(AsgiAdapter(app), ServerConfig(parser="httptools"), clock=UnixClock())
        flow = SlottedFlow([PLAIN[1] + LAST[0]])
        await server.serve_flow(flow)  # type: ignore[arg-type]
        return b"".join(flow.sent)

    answer = asyncio.run(main())
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and b"q=a=1&b=%20" in answer
