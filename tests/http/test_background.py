"""Background work after a response: Starlette's ``BackgroundTask`` and
FastAPI's ``BackgroundTasks`` run inside the application call after it sent
its last body message. The client must have its whole response then, not
when the task ends, as under uvicorn, which serves the same app in the same
test (a differential check: both deliver before the task ends). HTTP/2 (h2c,
with curl) is checked in test_http2.py."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import BackgroundTasks, FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from looming.http.asgi import AsgiAdapter

from .serving import serve_in_thread

TASK_SECONDS = 1.5
"""How long each background task sleeps."""
PROMPT = 0.8
"""The bound on a response's time: well under the task's, with margin."""


class Log:
    """When each background task started and ended (monotonic seconds)."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.ended: list[float] = []
        self.cancelled = 0

    async def work(self, seconds: float = TASK_SECONDS) -> None:
        self.started.append(time.monotonic())
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.ended.append(time.monotonic())

    def wait_ended(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ended) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.ended) >= count, f"{len(self.ended)} of {count} background tasks ran"


def starlette_app(done: Log) -> Starlette:
    async def slow(request: Request) -> PlainTextResponse:
        return PlainTextResponse("sent\n", background=BackgroundTask(done.work))

    async def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("plain\n")

    async def stream(request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(3):
                yield b"part %d\n" % i

        return StreamingResponse(parts(), background=BackgroundTask(done.work))

    class Counted(StreamingResponse):
        """Counts the cancellation of the response's whole run: it lands in
        the generator's sleep or in send() (which yields once a HEAD's head
        is out), wherever the task waits when the grace ends."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                await super().__call__(scope, receive, send)
            except asyncio.CancelledError:
                done.cancelled += 1
                raise

    async def endless(request: Request) -> StreamingResponse:
        async def forever() -> AsyncIterator[bytes]:
            while True:
                yield b"tick\n"
                await asyncio.sleep(0.01)

        return Counted(forever(), background=BackgroundTask(done.work))

    async def fails() -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("the background task broke")

    async def boom(request: Request) -> PlainTextResponse:
        return PlainTextResponse("whole\n", background=BackgroundTask(fails))

    routes = [Route("/slow", slow), Route("/plain", plain), Route("/stream", stream)]
    more = [Route("/boom", boom), Route("/endless", endless)]
    return Starlette(routes=[*routes, *more, *failing_routes()])


def failing_routes() -> list[Route]:
    """Background tasks failing at once, or after a streamed response."""

    async def fails_at_once() -> None:
        raise RuntimeError("the background task broke")

    async def fails_later() -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("the background task broke")

    async def boom_now(request: Request) -> PlainTextResponse:
        return PlainTextResponse("whole\n", background=BackgroundTask(fails_at_once))

    async def boom_stream(request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"who"
            yield b"le\n"

        return StreamingResponse(parts(), background=BackgroundTask(fails_later))

    return [Route("/boom-now", boom_now), Route("/boom-stream", boom_stream)]


def fastapi_app(done: Log) -> FastAPI:
    app = FastAPI()

    @app.post("/signup")
    async def signup(background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(done.work)  # "send the welcome email"
        return {"status": "ok"}

    return app


@contextmanager
def under_uvicorn(app: Any, **keys: Any) -> Iterator[int]:
    """``app`` served by uvicorn (its default choices: httptools and uvloop
    when installed, and ``keys``, its Config's) on a free port, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", **keys)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def under_looming(app: Any) -> Iterator[int]:
    with serve_in_thread(lambda: AsgiAdapter(app)) as running:
        yield running.port


SERVERS: dict[str, Callable[[Any], Any]] = {"looming": under_looming, "uvicorn": under_uvicorn}


def timed(conn: http.client.HTTPConnection, method: str, path: str) -> tuple[float, int, bytes]:
    """(seconds until the whole response was read, status, body)."""
    began = time.monotonic()
    conn.request(method, path)
    response = conn.getresponse()
    body = response.read()
    return time.monotonic() - began, response.status, body


@pytest.mark.parametrize("name", sorted(SERVERS))
@pytest.mark.parametrize(
    ("make", "method", "path", "expected"),
    [
        (starlette_app, "GET", "/slow", b"sent\n"),
        (starlette_app, "GET", "/stream", b"part 0\npart 1\npart 2\n"),
        (fastapi_app, "POST", "/signup", b'{"status":"ok"}'),
    ],
    ids=["starlette", "streaming", "fastapi"],
)
def test_the_response_does_not_wait_for_the_background_task(
    name: str, make: Callable[[Log], Any], method: str, path: str, expected: bytes
) -> None:
    done = Log()
    with SERVERS[name](make(done)) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        took, status, body = timed(conn, method, path)
        received = time.monotonic()
        # Keep-alive: the next request on the connection is not held back either.
        again, status2, body2 = timed(conn, method, path)
        print(f"{name} {path}: {took * 1000:.1f} ms, then {again * 1000:.1f} ms")
        assert (status, body, status2, body2) == (200, expected, 200, expected)
        assert took < PROMPT, f"{name}: the response took {took:.2f} s"
        assert again < PROMPT, f"{name}: the next response took {again:.2f} s"
        done.wait_ended(2)  # the tasks did run, after their responses
        assert done.ended[0] - done.started[0] >= TASK_SECONDS - 0.05  # (timer grain)
        assert received < done.ended[0]
        conn.close()


@pytest.mark.parametrize("target", ["/boom", "/boom-now", "/boom-stream"])
def test_a_failing_background_task_is_logged_not_answered(
    caplog: pytest.LogCaptureFixture, target: str
) -> None:
    """Whenever the task fails (at once, before the server has taken the
    response, or later) and whatever the response (whole or streamed), the
    failure is logged and the connection, whose response was whole, goes on
    (uvicorn closes it instead: looming keeps a correctly framed exchange)."""
    done = Log()
    with (
        caplog.at_level(logging.ERROR, "looming.http.asgi"),
        under_looming(starlette_app(done)) as port,
    ):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % target.encode())
        first = b""
        ending = b"le\n\r\n0\r\n\r\n" if target == "/boom-stream" else b"whole\n"
        while not first.endswith(ending):
            piece = sock.recv(4096)
            assert piece, f"closed before the whole response: {first!r}"
            first += piece
        deadline = time.monotonic() + 10
        while "after its response was complete" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "the background task broke" in caplog.text
        # No second response, no traceback to the client; the connection,
        # whose response was whole, still serves.
        sock.sendall(b"GET /plain HTTP/1.1\r\nhost: x\r\n\r\n")
        second = b""
        while not second.endswith(b"plain\n"):
            piece = sock.recv(4096)
            assert piece, f"closed: {second!r}"
            second += piece
        sock.close()
    assert first.startswith(b"HTTP/1.1 200 ") and first.count(b"HTTP/1.1") == 1
    assert second.startswith(b"HTTP/1.1 200 ") and second.count(b"HTTP/1.1") == 1
    assert b"Traceback" not in first + second


def test_shutdown_waits_for_background_tasks_then_cancels() -> None:
    done = Log()
    app = starlette_app(done)
    with serve_in_thread(lambda: AsgiAdapter(app)) as running:
        adapter = running.server.handler
        assert isinstance(adapter, AsgiAdapter)
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
        for _ in range(2):
            took, status, _body = timed(conn, "GET", "/slow")
            assert status == 200 and took < PROMPT
        conn.close()
        assert adapter.running_after_response == 2

        async def stop(grace: float) -> None:
            await adapter.finish_background(grace)

        # A short grace: both tasks are cancelled, none is left running.
        asyncio.run_coroutine_threadsafe(stop(0.1), running.loop).result(10)
        assert (adapter.running_after_response, done.cancelled, done.ended) == (0, 2, [])
        # A long enough one: the task finishes.
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
        timed(conn, "GET", "/slow")
        conn.close()
        asyncio.run_coroutine_threadsafe(stop(10), running.loop).result(15)
        assert adapter.running_after_response == 0 and len(done.ended) == 1


async def returns_early(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Starts a streamed response, then returns without its last message."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"half", "more_body": True})


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_a_response_left_unfinished_is_cut_not_completed(name: str) -> None:
    # The body must not look whole (no last chunk): the connection is closed.
    with SERVERS[name](returns_early) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        received = b""
        while piece := sock.recv(4096):
            received += piece
        sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
    assert body == b"4\r\nhalf\r\n", f"{name}: {body!r}"


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_a_head_request_still_runs_the_background_task(name: str) -> None:
    done = Log()
    with SERVERS[name](starlette_app(done)) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        took, status, body = timed(conn, "HEAD", "/stream")
        print(f"{name} HEAD /stream: {took * 1000:.1f} ms")
        assert (status, body) == (200, b"") and took < PROMPT
        done.wait_ended(1)
        assert done.cancelled == 0
        conn.close()


def test_a_head_request_to_an_endless_stream_is_cut_after_the_grace() -> None:
    # Its body goes nowhere: the application gets the disconnect grace to
    # finish, then is cancelled (and its background task never starts).
    done = Log()
    with under_looming(starlette_app(done)) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        began = time.monotonic()
        took, status, body = timed(conn, "HEAD", "/endless")
        assert (status, body) == (200, b"") and took < PROMPT
        while not done.cancelled and time.monotonic() < began + 10:
            time.sleep(0.02)
        cut = time.monotonic() - began  # from before the request: at least the grace
        assert done.cancelled == 1, "the endless stream was never cut"
        grace = AsgiAdapter.head_grace
        assert grace - 0.05 <= cut < grace + 2  # (0.05: the loop's timer grain)
        assert done.started == [] and done.ended == []
        assert timed(conn, "GET", "/plain")[1:] == (200, b"plain\n")  # the connection goes on
        conn.close()


class _Console:
    """A console that hands over the first line it is given."""

    def __init__(self) -> None:
        self.first: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def log(self, message: str) -> None:
        if not self.first.done():
            self.first.set_result(message)

    async def write(self, data: bytes) -> None:
        pass

    async def read(self) -> bytes:
        return b""


def test_a_stop_lets_background_tasks_finish_before_the_lifespan_shutdown() -> None:
    from contextlib import asynccontextmanager

    from looming.http.service import HttpSettings, serve_asgi
    from looming.unix.clock import UnixClock
    from looming.unix.socket_stack import SocketStack

    events: list[str] = []
    done = Log()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        events.append(f"lifespan shutdown, {len(done.ended)} task(s) ended")

    app = starlette_app(done)
    app.router.lifespan_context = lifespan

    async def main() -> float:
        console = _Console()
        stack = await SocketStack.connect("127.0.0.1")
        settings = HttpSettings(shutdown_timeout=5.0)
        service = asyncio.create_task(
            serve_asgi(app, console, stack, clock=UnixClock(), port=0, settings=settings)
        )
        port = int((await asyncio.wait_for(console.first, 10)).rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"\r\n\r\nsent\n")
        writer.close()
        stopping = time.monotonic()
        service.cancel()  # how a unikernel is stopped (SIGTERM)
        with contextlib.suppress(asyncio.CancelledError):
            await service
        await stack.disconnect()
        return time.monotonic() - stopping

    took = asyncio.run(main())
    assert events == ["lifespan shutdown, 1 task(s) ended"]
    assert took < TASK_SECONDS + 1.0


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_a_pipelined_request_is_answered_while_the_task_runs(name: str) -> None:
    done = Log()
    with SERVERS[name](starlette_app(done)) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        began = time.monotonic()
        sock.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\nGET /plain HTTP/1.1\r\nhost: x\r\n\r\n")
        received = b""
        while not received.endswith(b"plain\n"):
            piece = sock.recv(4096)
            assert piece, f"closed: {received!r}"
            received += piece
        took = time.monotonic() - began
        sock.close()
        print(f"{name} pipelined /slow + /plain: {took * 1000:.1f} ms")
        assert received.count(b"HTTP/1.1 200 ") == 2 and b"sent\n" in received
        assert took < PROMPT and not done.ended
        done.wait_ended(1)


def test_a_stop_takes_one_timeout_for_responses_and_background_tasks() -> None:
    """A response that never ends and a background task that never ends
    share the one shutdown timeout (not one each); both are cancelled."""
    from looming.http.server import CUT_GRACE
    from looming.http.service import HttpSettings, serve_asgi
    from looming.unix.clock import UnixClock
    from looming.unix.socket_stack import SocketStack

    timeout = 1.0
    done = Log()
    stuck_response_cancelled: list[bool] = []

    async def forever(request: Request) -> PlainTextResponse:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stuck_response_cancelled.append(True)
            raise
        return PlainTextResponse("never\n")

    async def lingering(request: Request) -> PlainTextResponse:
        return PlainTextResponse("sent\n", background=BackgroundTask(done.work, 3600))

    app = Starlette(routes=[Route("/forever", forever), Route("/lingering", lingering)])

    async def main() -> float:
        console = _Console()
        stack = await SocketStack.connect("127.0.0.1")
        settings = HttpSettings(shutdown_timeout=timeout)
        service = asyncio.create_task(
            serve_asgi(app, console, stack, clock=UnixClock(), port=0, settings=settings)
        )
        port = int((await asyncio.wait_for(console.first, 10)).rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /lingering HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"\r\n\r\nsent\n")
        writer.close()
        stuck_reader, stuck_writer = await asyncio.open_connection("127.0.0.1", port)
        stuck_writer.write(b"GET /forever HTTP/1.1\r\nhost: x\r\n\r\n")
        while len(done.started) < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the /forever request is in the application
        stopping = time.monotonic()
        service.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await service
        took = time.monotonic() - stopping
        assert await asyncio.wait_for(stuck_reader.read(), 5) == b""  # cut, no response
        stuck_writer.close()
        await stack.disconnect()
        return took

    took = asyncio.run(main())
    assert stuck_response_cancelled == [True]
    assert done.cancelled == 1 and done.ended == []
    # Waited for the response in flight, then cut both: one timeout, plus
    # the grace each cut gets to unwind (and the loop's timer grain).
    assert timeout - 0.05 <= took < timeout + 2 * CUT_GRACE + 0.3
