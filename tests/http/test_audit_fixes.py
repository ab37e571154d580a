"""What an outside audit of looming.http found, each kept fixed: a send()
held by backpressure wakes with an OSError when the client leaves (the
application then has its grace), and a malformed chunked body read by a
running application gets a 400, counted as a protocol error and logged."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from looming.http import AsgiAdapter, ServerConfig

from .serving import RunningServer, serve_in_thread, wait_until_stalled

CHUNK = 64 * 1024
GRACE = 0.3

PATHS = [
    pytest.param(("httptools", True), id="fast"),
    pytest.param(("httptools", False), id="usual-httptools"),
    pytest.param(("h11", False), id="usual-h11"),
]


class Streamer:
    """Streams to a client that does not read; records how send() ended."""

    def __init__(self) -> None:
        self.chunks = 0
        self.raised: list[tuple[type[BaseException], float]] = []
        self.cancelled_at: float | None = None
        self.bodies: list[bytes] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/echo":
            await self.echo(receive, send)
            return
        if scope["path"] == "/answer-then-read":
            await self.answer_then_read(receive, send)
            return
        if scope["path"] == "/no-read":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"not read"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * CHUNK, "more_body": True})
                self.chunks += 1
        except BaseException as error:
            self.raised.append((type(error), time.monotonic()))
            if not isinstance(error, OSError) or scope["path"] != "/stubborn":
                raise
        # Ignores the disconnect: cancelled once its grace is over.
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled_at = time.monotonic()
            raise

    async def answer_then_read(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"begun", "more_body": True})
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message["more_body"]:
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def echo(self, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message["body"]
            if not message["more_body"]:
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(params=PATHS)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Streamer, RunningServer]]:
    parser, fast = request.param
    app = Streamer()
    adapter = AsgiAdapter(app)
    adapter.disconnect_grace = GRACE
    config = ServerConfig(parser=parser, fast_path=fast)
    with serve_in_thread(lambda: adapter, config) as running:
        yield app, running


def stalled_client(app: Streamer, running: RunningServer, path: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", running.port))
    sock.sendall(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path.encode())
    wait_until_stalled(lambda: app.chunks, quiet=0.5)
    return sock


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_a_send_held_by_backpressure_raises_oserror_when_the_client_leaves(
    served: tuple[Streamer, RunningServer], reset: bool
) -> None:
    app, running = served
    sock = stalled_client(app, running, "/endless")
    assert app.raised == []  # held in send(), not failed
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    wait_for(lambda: app.raised)
    assert len(app.raised) == 1
    kind, _ = app.raised[0]
    # ASGI HTTP 2.4: send() raises an OSError, not the task's cancellation.
    assert issubclass(kind, OSError), kind


def test_an_application_ignoring_the_disconnect_is_cancelled_after_its_grace(
    served: tuple[Streamer, RunningServer],
) -> None:
    app, running = served
    sock = stalled_client(app, running, "/stubborn")
    sock.close()
    wait_for(lambda: app.cancelled_at is not None)
    assert len(app.raised) == 1
    kind, raised_at = app.raised[0]
    assert issubclass(kind, OSError), kind
    assert app.cancelled_at is not None, "never cancelled"
    waited = app.cancelled_at - raised_at
    assert GRACE * 0.8 <= waited < GRACE + 2.0, waited


HEAD = b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
BAD_BODIES = {
    "no-crlf-after-data": b"3\r\nabcXX0\r\n\r\n",
    "content-length-in-trailer": b"3\r\nabc\r\n0\r\ncontent-length: 50\r\n\r\n",
    "transfer-encoding-in-trailer": b"3\r\nabc\r\n0\r\ntransfer-encoding: chunked\r\n\r\n",
}


def read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize("split", [False, True], ids=["whole", "after-start"])
@pytest.mark.parametrize("bad", list(BAD_BODIES))
def test_a_malformed_chunked_body_read_by_the_application_gets_400(
    served: tuple[Streamer, RunningServer], bad: str, split: bool
) -> None:
    app, running = served
    server = running.server
    seen: list[tuple[str, str, int]] = []
    server.observer = lambda request, status, sent, seconds: seen.append(
        (request.method, request.target, status)
    )
    before = server.protocol_errors, server.clients_gone
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    if split:
        sock.sendall(HEAD)
        time.sleep(0.2)  # the application waits for the body now
        sock.sendall(BAD_BODIES[bad])
    else:
        sock.sendall(HEAD + BAD_BODIES[bad])
    answer = read_to_end(sock)  # and the server closes
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert answer.count(b"HTTP/1.1 ") == 1
    assert app.bodies == []
    wait_for(lambda: seen)
    assert (server.protocol_errors, server.clients_gone) == (before[0] + 1, before[1])
    assert seen == [("POST", "/echo", 400)]


@pytest.mark.parametrize("path", ["/answer-then-read", "/no-read"])
def test_a_malformed_body_after_the_response_began_is_a_protocol_error(
    served: tuple[Streamer, RunningServer], path: str
) -> None:
    """No 400 can follow a response begun (or done): the connection just
    closes, and the count says why."""
    _app, running = served
    server = running.server
    before = server.protocol_errors, server.clients_gone
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    sock.sendall(HEAD.replace(b"/echo", path.encode()))
    time.sleep(0.2)  # the response has begun
    sock.sendall(BAD_BODIES["no-crlf-after-data"])
    answer = read_to_end(sock)  # and the server closes
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 400" not in answer, answer
    wait_for(lambda: server.protocol_errors > before[0])
    assert (server.protocol_errors, server.clients_gone) == (before[0] + 1, before[1])


def test_a_good_chunked_body_is_still_echoed(served: tuple[Streamer, RunningServer]) -> None:
    app, running = served
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    sock.sendall(HEAD.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n"))
    sock.sendall(b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 1\r\n\r\n")
    answer = read_to_end(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"abcde"), answer
    assert app.bodies == [b"abcde"]


@pytest.mark.parametrize("peer", ["looming", "uvicorn"])
@pytest.mark.parametrize("bad", list(BAD_BODIES))
def test_looming_refuses_malformed_chunked_bodies_as_uvicorn_does(peer: str, bad: str) -> None:
    """The same bad bodies, sent after the application began reading:
    uvicorn (httptools) answers 400, and so does looming."""
    from .test_background import SERVERS

    app = Streamer()
    with SERVERS[peer](app) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(HEAD)
        time.sleep(0.2)  # the application waits for the body now
        sock.sendall(BAD_BODIES[bad])
        answer = read_to_end(sock)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert app.bodies == []
