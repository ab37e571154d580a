"""The ASGI HTTP contract (ASGI 3.0, HTTP spec 2.4) as raw clients see it:
backpressure on send(), disconnects told to applications that are not
reading, request bodies in pieces, trailers, and framing attacks refused."""

from __future__ import annotations

import asyncio
import contextvars
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from looming.http import AsgiAdapter, ServerConfig

from .serving import RunningServer, serve_in_thread, wait_until_stalled

CHUNK = 64 * 1024
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class Recorder:
    """A raw ASGI application whose routes record what they saw."""

    def __init__(self) -> None:
        self.chunks_sent = 0
        self.disconnects = 0
        self.send_errors: list[BaseException] = []
        self.bodies: list[list[tuple[int, bool]]] = []
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.scopes.append(scope)
        route = getattr(self, "route_" + scope["path"].strip("/").replace("-", "_"))
        await route(receive, send)

    async def route_context(self, receive: Any, send: Any) -> None:
        # What the previous request on the connection set must not show here.
        seen = REQUEST_ID.get()
        REQUEST_ID.set(f"set by request {len(self.scopes)}")
        await asyncio.sleep(0)  # suspended mid-request: the value stays its own
        mine = REQUEST_ID.get()
        body = f"{seen}|{mine}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def route_endless(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await send({"type": "http.response.body", "body": b"x" * CHUNK, "more_body": True})
            self.chunks_sent += 1

    async def route_poll(self, receive: Any, send: Any) -> None:
        # A long poll that listens for the disconnect, as Starlette's does.
        message = await receive()
        assert message["type"] == "http.request"
        message = await receive()
        if message["type"] == "http.disconnect":
            self.disconnects += 1
            try:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            except OSError as error:
                self.send_errors.append(error)

    async def route_deaf(self, receive: Any, send: Any) -> None:
        # Never reads again and never answers.
        await asyncio.Event().wait()

    async def route_upload(self, receive: Any, send: Any) -> None:
        seen: list[tuple[int, bool]] = []
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            seen.append((len(message["body"]), message["more_body"]))
            if not message["more_body"]:
                break
        self.bodies.append(seen)
        total = sum(n for n, _ in seen)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % total})

    async def route_trailers(self, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"trailer", b"x-checksum")],
                "trailers": True,
            }
        )
        await send({"type": "http.response.body", "body": b"hello", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})

    async def route_scope(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})


@pytest.fixture(
    params=[
        pytest.param(("asyncio", "h11"), id="asyncio-h11"),
        pytest.param(("asyncio", "httptools"), id="asyncio-httptools"),
        pytest.param(("uvloop", "httptools"), id="uvloop-httptools"),
        # httptools without the socket stack's fast path (see fast_asgi):
        # every connection read through its flow, as on --net direct.
        pytest.param(("uvloop", "httptools-flow"), id="uvloop-httptools-flow"),
    ]
)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Recorder, RunningServer]]:
    loop, parser = request.param
    app = Recorder()
    adapter = AsgiAdapter(app, root_path="/mount")
    adapter.disconnect_grace = 0.2
    fast_path = not parser.endswith("-flow")
    config = ServerConfig(parser=parser.removesuffix("-flow"), fast_path=fast_path)
    with serve_in_thread(lambda: adapter, config, loop=loop) as running:
        asyncio.run_coroutine_threadsafe(adapter.startup(), running.loop).result(10)
        yield app, running
        asyncio.run_coroutine_threadsafe(adapter.shutdown(), running.loop).result(10)


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def close_wait_count(port: int) -> int:
    """Sockets of the server's port in CLOSE-WAIT (state 08 in /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "08":
            count += 1
    return count


def test_send_waits_for_a_client_that_does_not_read(served: tuple[Recorder, RunningServer]) -> None:
    app, running = served
    sock = connect(running.port, rcvbuf=64 * 1024)
    sock.sendall(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n")
    stalled_at = wait_until_stalled(lambda: app.chunks_sent)
    # The application is held in send(): nothing more is produced, and what
    # was produced is what the socket buffers hold (a few MiB), not more.
    assert app.chunks_sent == stalled_at
    assert stalled_at * CHUNK < 16 * 1024 * 1024, stalled_at
    # Reading resumes the stream.
    got = 0
    while got < (stalled_at + 20) * CHUNK:
        got += len(sock.recv(1 << 20))
    assert app.chunks_sent > stalled_at
    sock.close()


def test_vanished_long_poll_clients_are_told_and_closed(
    served: tuple[Recorder, RunningServer],
) -> None:
    app, running = served
    clients = []
    for i in range(50):
        sock = connect(running.port)
        route = "/poll" if i % 2 == 0 else "/deaf"
        sock.sendall(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % route.encode())
        clients.append(sock)
    time.sleep(0.5)
    for sock in clients:
        sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (app.disconnects < 25 or close_wait_count(running.port)):
        time.sleep(0.05)
    assert app.disconnects == 25
    assert close_wait_count(running.port) == 0
    # send() after the disconnect raised an OSError, as HTTP spec 2.4 asks.
    assert len(app.send_errors) == 25
    assert all(isinstance(e, OSError) for e in app.send_errors)


def test_request_body_arrives_in_pieces(served: tuple[Recorder, RunningServer]) -> None:
    app, running = served
    sock = connect(running.port)
    # (The client does not half-close: an end of stream is a client gone.)
    sock.sendall(
        b"POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    for piece in (b"a" * 10, b"b" * 20, b"c" * 30):
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(0.1)
    sock.sendall(b"0\r\n\r\n")
    response = read_all(sock)
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\n60")
    (seen,) = app.bodies
    assert seen == [(10, True), (20, True), (30, True), (0, False)]
    # A large body with a Content-Length: many messages, every byte.
    body = bytes(range(256)) * 4096
    sock = connect(running.port)
    sock.sendall(
        b"POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
        % len(body)
    )
    sock.sendall(body)
    assert read_all(sock).endswith(b"\r\n\r\n%d" % len(body))
    assert len(app.bodies[1]) > 2


def test_trailers_follow_the_last_chunk(served: tuple[Recorder, RunningServer]) -> None:
    _app, running = served
    sock = connect(running.port)
    sock.sendall(b"GET /trailers HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    response = read_all(sock)
    assert b"transfer-encoding: chunked" in response.lower()
    assert response.endswith(b"5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n")


def test_scope_has_root_path_state_and_extensions(served: tuple[Recorder, RunningServer]) -> None:
    app, running = served
    sock = connect(running.port)
    sock.sendall(b"GET /scope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert read_all(sock).startswith(b"HTTP/1.1 204 ")
    scope = app.scopes[-1]
    assert scope["root_path"] == "/mount"
    assert scope["state"] == {}
    assert "http.response.trailers" in scope["extensions"]
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}


def bodies_of(stream: bytes) -> list[bytes]:
    """The bodies of the Content-Length framed responses in ``stream``."""
    bodies = []
    while stream:
        head, _, rest = stream.partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
        length = int(fields[b"content-length"])
        bodies.append(rest[:length])
        stream = rest[length:]
    return bodies


def test_context_variables_do_not_leak_between_requests(
    served: tuple[Recorder, RunningServer],
) -> None:
    """Each application call runs in its own copy of the context (as a task
    of its own would): a value it sets is not seen by the connection's next
    request, and stays its own across a suspension."""
    _app, running = served
    sock = connect(running.port)
    request = b"GET /context HTTP/1.1\r\nhost: x\r\n\r\n"
    last = b"GET /context HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    sock.sendall(request + request + last)
    assert bodies_of(read_all(sock)) == [
        b"unset|set by request 1",
        b"unset|set by request 2",
        b"unset|set by request 3",
    ]


@pytest.mark.parametrize(
    "head",
    [
        # Both framings: RFC 9112 section 6.3 (request smuggling).
        b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
        b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
        b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 5, 5\r\n\r\nhello",
        # obs-fold: a header line continued on the next.
        b"GET /scope HTTP/1.1\r\nhost: x\r\nx-folded: a\r\n b\r\n\r\n",
    ],
)
def test_ambiguous_framing_gets_400_and_a_close(
    served: tuple[Recorder, RunningServer], head: bytes
) -> None:
    app, running = served
    sock = connect(running.port)
    sock.sendall(head + b"GET /scope HTTP/1.1\r\nhost: x\r\n\r\n")
    response = read_all(sock)  # the server closes: read to the end
    assert response.startswith(b"HTTP/1.1 400 ")
    assert response.count(b"HTTP/1.1") == 1
    assert app.bodies == [] and app.scopes == []
