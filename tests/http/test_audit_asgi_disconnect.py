"""An application whose client leaves before its answer is not cancelled
(as under uvicorn): the work the client asked for (a POST that waits, then
writes) is done; it is told (``send()`` raises an OSError), and the socket is
closed at once (no CLOSE-WAIT while it works). Cancelling it is an opt-in
(``AsgiAdapter.disconnect_grace``, the ``cancel_on_disconnect`` key). On the
fast path, the usual path (httptools and h11) and HTTP/2, against uvicorn."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import h2.config
import h2.connection
import pytest

from looming.http import AsgiAdapter, ServerConfig

from .serving import serve_in_thread
from .test_asgi_contract import close_wait_count
from .test_background import under_uvicorn

WORK = 1.5
"""Seconds the handler works after the client left (beyond the old 1 s grace)."""
LEAVE_AFTER = 0.1

PATHS = {
    "fast": ("httptools", True),
    "usual-httptools": ("httptools", False),
    "usual-h11": ("h11", False),
}


class Charge:
    """POST /charge: reads the body, works, then records the charge and answers."""

    def __init__(self) -> None:
        self.charged: list[bytes] = []
        self.send_errors: list[BaseException] = []
        self.cancelled = 0
        self.lock = threading.Lock()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            await asyncio.sleep(WORK)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        with self.lock:
            self.charged.append(body)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"charged"})
        except OSError as error:
            self.send_errors.append(error)


def post_and_leave(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"POST /charge HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    time.sleep(LEAVE_AFTER)
    sock.close()


def post_h2_and_leave(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    fields = [(":method", "POST"), (":path", "/charge"), (":scheme", "http"), (":authority", "x")]
    conn.send_headers(1, fields)
    conn.send_data(1, b"abc", end_stream=True)
    sock.sendall(conn.data_to_send())
    time.sleep(LEAVE_AFTER)
    sock.close()


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def served(app: Charge, parser: str, fast: bool, grace: float | None = None) -> Any:
    adapter = AsgiAdapter(app)
    if grace is not None:
        adapter.disconnect_grace = grace
    return serve_in_thread(lambda: adapter, ServerConfig(parser=parser, fast_path=fast))


def check_finished_and_closed(app: Charge, port: int, clients: int) -> None:
    # The sockets close while the work goes on, not when it ends.
    assert wait_for(lambda: close_wait_count(port) == 0, WORK / 2), "left in CLOSE-WAIT"
    assert app.charged == []
    assert wait_for(lambda: len(app.charged) == clients, WORK + 3), app.cancelled
    assert app.charged == [b"abc"] * clients and app.cancelled == 0
    assert wait_for(lambda: len(app.send_errors) == clients, 2)
    assert all(isinstance(e, OSError) for e in app.send_errors)


@pytest.mark.slow
@pytest.mark.parametrize("path", list(PATHS))
def test_the_work_of_a_client_that_left_is_done(path: str) -> None:
    app = Charge()
    with served(app, *PATHS[path]) as running:
        for _ in range(3):
            post_and_leave(running.port)
        check_finished_and_closed(app, running.port, 3)


@pytest.mark.slow
def test_over_http2_too() -> None:
    app = Charge()
    with served(app, "httptools", True) as running:
        for _ in range(3):
            post_h2_and_leave(running.port)
        check_finished_and_closed(app, running.port, 3)


@pytest.mark.slow
def test_uvicorn_does_the_work_too() -> None:
    app = Charge()
    uvicorn: AbstractContextManager[int] = under_uvicorn(app)
    with uvicorn as port:
        for _ in range(3):
            post_and_leave(port)
        assert wait_for(lambda: len(app.charged) == 3, WORK + 3)
    assert app.cancelled == 0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fast", "usual-h11", "http2"])
def test_cancel_on_disconnect_is_an_opt_in(how: str) -> None:
    app = Charge()
    parser, fast = PATHS.get(how, ("httptools", True))
    with served(app, parser, fast, grace=0.3) as running:
        leave = post_h2_and_leave if how == "http2" else post_and_leave
        leave(running.port)
        assert wait_for(lambda: app.cancelled == 1, 3)
        assert wait_for(lambda: close_wait_count(running.port) == 0, 2)
    assert app.charged == []


def test_by_default_nothing_is_cancelled() -> None:
    assert AsgiAdapter.disconnect_grace is None
    assert AsgiAdapter(Charge()).disconnect_grace is None


@pytest.mark.slow
@pytest.mark.parametrize(("key", "cancelled"), [(0.0, 0), (0.3, 1)])
def test_the_key_chooses(key: float, cancelled: int) -> None:
    """``--cancel-on-disconnect``, through serve_asgi as a unikernel runs it."""
    import contextlib

    from looming.http.service import HttpSettings, serve_asgi
    from looming.unix.clock import UnixClock
    from looming.unix.socket_stack import SocketStack

    from .test_background import _Console

    app = Charge()

    async def main() -> None:
        console = _Console()
        stack = await SocketStack.connect("127.0.0.1")
        settings = HttpSettings.from_keys(cancel_on_disconnect=key)
        service = asyncio.create_task(
            serve_asgi(app, console, stack, clock=UnixClock(), port=0, settings=settings)
        )
        port = int((await asyncio.wait_for(console.first, 10)).rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /charge HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        await asyncio.sleep(LEAVE_AFTER)
        writer.close()
        await asyncio.sleep(WORK + 0.5)
        service.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await service
        await stack.disconnect()

    asyncio.run(main())
    assert (app.cancelled, len(app.charged)) == (cancelled, 1 - cancelled)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_bad_key_value_is_refused(bad: float) -> None:
    from looming.errors import UsageError
    from looming.http.service import HttpSettings

    with pytest.raises(UsageError, match="--cancel-on-disconnect"):
        HttpSettings.from_keys(cancel_on_disconnect=bad)


def test_the_key_is_an_http_key() -> None:
    from looming.config import http_keys

    (key,) = [k for k in http_keys() if k.name == "cancel_on_disconnect"]
    assert key.default == 0.0
