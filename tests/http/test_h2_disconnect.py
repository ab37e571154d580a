"""An ASGI application whose ``send()`` is held by HTTP/2 flow control (the
client never opens its window) when the client goes away: by closing or
resetting the TCP connection, by GOAWAY (every stream), or by RST_STREAM on
that one stream (the connection's other streams go on). As over HTTP/1.1
(tests/http/test_audit_fixes.py): the pending send() raises an OSError,
receive() gives ``http.disconnect``, the application has its grace, then is
cancelled, and no task, stream or buffered data is left behind. The h2
library is the raw client; curl checks a real client's abort."""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from looming.http import AsgiAdapter
from looming.http.http2 import H2Session

from .serving import RunningServer, serve_in_thread, wait_until_stalled

GRACE = 0.3
CHUNK = 16 * 1024


class Held:
    """Streams until send() fails; records how it failed, what receive()
    said next, and (on /stubborn, which ignores the disconnect) when the
    grace ran out."""

    def __init__(self) -> None:
        self.chunks: dict[str, int] = {}
        self.raised: dict[str, type[BaseException]] = {}
        self.received: dict[str, str] = {}
        self.cancelled_after: dict[str, float] = {}
        self.served: list[str] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        key = scope["path"] + "?" + scope["query_string"].decode()
        assert (await receive())["type"] == "http.request"  # the (empty) body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/small":
            await send({"type": "http.response.body", "body": b"ok"})
            self.served.append(key)
            return
        self.chunks[key] = 0
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * CHUNK, "more_body": True})
                self.chunks[key] += 1
        except BaseException as error:
            self.raised[key] = type(error)
            if not isinstance(error, OSError):
                raise
        self.received[key] = (await receive())["type"]
        if scope["path"] != "/stubborn":
            return
        raised_at = time.monotonic()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled_after[key] = time.monotonic() - raised_at
            raise


@pytest.fixture
def served() -> Iterator[tuple[Held, RunningServer]]:
    app = Held()
    adapter = AsgiAdapter(app)
    adapter.disconnect_grace = GRACE
    with serve_in_thread(lambda: adapter) as running:
        yield app, running


def on_loop(running: RunningServer, what: Any) -> Any:
    """``what()`` run on the server's loop (its tasks are only seen there)."""

    async def call() -> Any:
        return what()

    return asyncio.run_coroutine_threadsafe(call(), running.loop).result(5)


def task_count(running: RunningServer) -> int:
    return int(on_loop(running, lambda: len(asyncio.all_tasks())))


def sessions() -> list[H2Session]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, H2Session)]


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


class Client:
    """A raw HTTP/2 client that never opens its streams' windows (``window``
    0), or leaves them wide but never opens the connection's (65,535)."""

    def __init__(self, running: RunningServer, window: int = 0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.conn.initiate_connection()
        self.ended: set[int] = set()
        self.bodies: dict[int, bytes] = {}

    def get(self, stream_id: int, path: str, body: bytes = b"") -> None:
        """GET ``path``; with a ``body``, a POST whose body never ends."""
        method = "POST" if body else "GET"
        fields = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "x")]
        self.conn.send_headers(stream_id, fields, end_stream=not body)
        for start in range(0, len(body), 16384):
            self.conn.send_data(stream_id, body[start : start + 16384])
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def pump(self, until: Any, timeout: float = 10.0) -> None:
        """Read and act on the server's frames until ``until()``."""
        self.sock.settimeout(0.05)
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.bodies[event.stream_id] = (
                        self.bodies.get(event.stream_id, b"") + event.data
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    self.ended.add(event.stream_id)
            self.flush()


def hold(
    app: Held, running: RunningServer, paths: dict[int, str], window: int = 0, body: bytes = b""
) -> Client:
    """A client with ``paths`` requested on their streams, each held in send()."""
    client = Client(running, window)
    for stream_id, path in paths.items():
        client.get(stream_id, path, body)
    wait_for(lambda: all(p in app.chunks for p in paths.values()))
    wait_until_stalled(lambda: sum(app.chunks.values()), quiet=0.3)
    client.pump(lambda: False, timeout=0.2)
    assert app.raised == {}, "failed, not held"
    return client


def leave(client: Client, how: str) -> None:
    if how == "goaway":
        client.conn.close_connection()
        client.flush()
        time.sleep(0.1)
    elif how == "reset":
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()


@pytest.mark.parametrize("window", [0, 2**20], ids=["stream-window", "connection-window"])
@pytest.mark.parametrize("how", ["close", "reset", "goaway"])
def test_every_stream_held_by_the_window_is_told_when_the_connection_ends(
    served: tuple[Held, RunningServer], how: str, window: int
) -> None:
    app, running = served
    before = task_count(running)
    paths = {1: "/endless?1", 3: "/endless?3", 5: "/stubborn?5"}
    client = hold(app, running, paths, window)
    assert task_count(running) > before
    leave(client, how)
    wait_for(lambda: len(app.cancelled_after) == 1 and len(app.received) == 3)
    for path in paths.values():
        kind = app.raised.get(path)
        assert kind is not None and issubclass(kind, OSError), (path, kind)
        assert app.received[path] == "http.disconnect", path
    waited = app.cancelled_after["/stubborn?5"]
    assert GRACE * 0.8 <= waited < GRACE + 2.0, waited
    wait_for(lambda: task_count(running) == before)
    assert task_count(running) == before
    assert running.server.in_flight == 0
    assert sessions() == [], "the connection's session outlived it"


def test_a_reset_stream_held_by_the_window_is_told_and_the_others_go_on(
    served: tuple[Held, RunningServer],
) -> None:
    app, running = served
    before = task_count(running)
    # Each request's body (30,000 bytes) is read only in part: the rest is held.
    client = hold(app, running, {1: "/endless?1", 3: "/stubborn?3"}, body=b"b" * 30_000)
    (session,) = sessions()
    assert session.held > 0
    del session
    client.conn.reset_stream(3, h2.errors.ErrorCodes.CANCEL)
    client.flush()
    wait_for(lambda: "/stubborn?3" in app.cancelled_after)
    kind = app.raised.get("/stubborn?3")
    assert kind is not None and issubclass(kind, OSError), kind
    assert app.received["/stubborn?3"] == "http.disconnect"
    assert GRACE * 0.8 <= app.cancelled_after["/stubborn?3"] < GRACE + 2.0
    # Stream 1 is still held, not told anything; new streams are served.
    assert "/endless?1" not in app.raised
    client.get(5, "/small")
    client.conn.increment_flow_control_window(16, stream_id=5)
    client.flush()
    client.pump(lambda: 5 in client.ended)
    assert client.bodies.get(5) == b"ok"
    (session,) = sessions()
    assert set(session.streams) == {1}, "the reset stream was kept"
    assert session.held == session.streams[1].unread > 0  # stream 3's was let go
    assert len(session.tasks) == 1
    del session  # (the check below is that nothing else keeps it)
    # Opening stream 1's window lets it go on where it was held.
    client.conn.increment_flow_control_window(4 * CHUNK, stream_id=1)
    client.conn.increment_flow_control_window(4 * CHUNK)
    client.flush()
    client.pump(lambda: len(client.bodies.get(1, b"")) >= 4 * CHUNK)
    assert len(client.bodies.get(1, b"")) >= 4 * CHUNK
    assert "/endless?1" not in app.raised
    leave(client, "close")
    wait_for(lambda: task_count(running) == before)
    assert task_count(running) == before
    assert sessions() == []


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_leaving_a_stream_held_by_the_window_is_told(
    served: tuple[Held, RunningServer],
) -> None:
    app, running = served
    before = task_count(running)
    # curl reads 1 KiB a second (--limit-rate), so the application is held
    # in send() (by the window or the socket); curl gives up after --max-time.
    process = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--http2-prior-knowledge",
            "--limit-rate",
            "1K",
            "--max-time",
            "1.5",
            running.url + "/stubborn?curl",
        ],
        check=False,
        timeout=20,
    )
    assert process.returncode == 28, process.returncode  # timed out, as asked
    wait_for(lambda: "/stubborn?curl" in app.cancelled_after)
    kind = app.raised.get("/stubborn?curl")
    assert kind is not None and issubclass(kind, OSError), kind
    assert app.received["/stubborn?curl"] == "http.disconnect"
    wait_for(lambda: task_count(running) == before)
    assert task_count(running) == before
    assert sessions() == []
