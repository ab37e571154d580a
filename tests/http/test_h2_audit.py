"""HTTP/2 findings of the #17 audit: a Starlette app polling
``request.is_disconnected()`` over h2c sees the client leave; receive() under
a cancel scope loses no message and leaves no task behind."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import socket
import subprocess
import time
from collections.abc import Iterator

import anyio
import h2.config
import h2.connection
import h2.errors
import h2.exceptions
import pytest
from hyperframe.exceptions import InvalidFrameError
from hyperframe.frame import Frame, GoAwayFrame
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import looming.http.http2  # noqa: F401  (imported here first, see test_http2.py)
from looming.http import AsgiAdapter, HttpServer, Request, Response, ServerConfig
from looming.http.h2c import valid_upgrade_settings
from looming.http.http2 import _Stream
from looming.http.service import AccessLog, Metrics
from looming.unix.clock import UnixClock

from .serving import RunningServer, serve_in_thread

events: list[str] = []


async def poll(request: StarletteRequest) -> PlainTextResponse:
    while not await request.is_disconnected():
        await asyncio.sleep(0.02)
    events.append("poll-disconnected")
    return PlainTextResponse("bye")


async def hello(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse("hello")


starlette_app = Starlette(routes=[Route("/poll", poll), Route("/hello", hello)])


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread(lambda: AsgiAdapter(starlette_app)) as running:
        yield running


def h2_get(port: int, path: str) -> socket.socket:
    """A prior-knowledge h2 connection with one GET sent on it."""
    sock = socket.create_connection(("127.0.0.1", port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]
    conn.send_headers(1, headers, end_stream=True)
    sock.sendall(conn.data_to_send())
    return sock


def test_polling_app_sees_the_connection_close(server: RunningServer) -> None:
    before = events.count("poll-disconnected")
    gone = server.server.clients_gone
    sockets = [h2_get(server.port, "/poll") for _ in range(3)]
    time.sleep(0.3)
    assert server.server.in_flight == 3
    for sock in sockets:
        sock.close()
    deadline = time.monotonic() + 5
    while events.count("poll-disconnected") < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events.count("poll-disconnected") == before + 3
    while server.server.clients_gone < gone + 3 and time.monotonic() < deadline:
        time.sleep(0.02)  # the application ends, then its handler
    assert server.server.clients_gone == gone + 3
    assert server.server.in_flight == 0


def test_polling_app_sees_its_stream_reset(server: RunningServer) -> None:
    before = events.count("poll-disconnected")
    sock = socket.create_connection(("127.0.0.1", server.port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "GET"), (":path", "/poll"), (":scheme", "http"), (":authority", "x")]
    conn.send_headers(1, headers, end_stream=True)
    sock.sendall(conn.data_to_send())
    time.sleep(0.2)
    conn.reset_stream(1)
    sock.sendall(conn.data_to_send())  # the connection stays open
    deadline = time.monotonic() + 5
    while events.count("poll-disconnected") == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert events.count("poll-disconnected") == before + 1
    sock.close()


class _Session:
    """What a _Stream needs of its session."""

    acknowledged = 0

    async def acknowledge(self, stream_id: int, size: int) -> None:
        self.acknowledged += size


async def _cancelled_reads(stream: _Stream, times: int) -> None:
    for _ in range(times):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await stream.next_chunk()
        await asyncio.sleep(0)


def test_cancelled_reads_lose_no_chunk_and_leave_no_task() -> None:
    async def main() -> None:
        session = _Session()
        stream = _Stream(session, 1)  # type: ignore[arg-type]
        baseline = len(asyncio.all_tasks())
        callbacks = len(stream.watch._callbacks)
        await _cancelled_reads(stream, 50)
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == baseline
        assert len(stream.watch._callbacks) == callbacks
        stream.put(b"abc")
        stream.chunks.put_nowait(None)
        assert await stream.next_chunk() == (b"abc", True)
        assert await stream.next_chunk() == (b"", False)
        assert session.acknowledged == 3

    asyncio.run(main())
    gc.collect()


def test_a_cancelled_read_then_a_reset_gives_client_gone() -> None:
    from looming.http.message import ClientGone

    async def main() -> None:
        stream = _Stream(_Session(), 1)  # type: ignore[arg-type]
        await _cancelled_reads(stream, 3)
        reader = asyncio.ensure_future(stream.next_chunk())
        await asyncio.sleep(0)
        stream.watch.went_away()
        with pytest.raises(ClientGone):
            await asyncio.wait_for(reader, 2)

    asyncio.run(main())


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(["--http2-prior-knowledge"], id="prior-knowledge"),
        pytest.param(["--http2"], id="upgrade"),
    ],
)
def test_h2_responses_are_logged_and_counted(server: RunningServer, how: list[str]) -> None:
    metrics = Metrics()
    access = AccessLog("common", UnixClock())

    def observe(*args: object) -> None:
        access(*args)  # type: ignore[arg-type]
        metrics(*args)  # type: ignore[arg-type]

    lines = _Lines()
    logger = logging.getLogger("looming.http.access")
    logger.addHandler(lines)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    served = server.server.requests_served
    server.server.observer = observe
    try:
        url = f"http://127.0.0.1:{server.port}/hello"
        versions = [
            subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_version}", *how, url],
                capture_output=True,
                timeout=20,
                check=True,
            ).stdout
            for _ in range(2)
        ]
        deadline = time.monotonic() + 5  # the record follows the last byte sent
        while metrics.count < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        server.server.observer = None
        logger.removeHandler(lines)
        logger.setLevel(old_level)
    assert versions == [b"2", b"2"]
    hits = [line for line in lines.lines if '"GET /hello HTTP/2.0" 200 5' in line]
    assert len(hits) == 2, lines.lines
    assert metrics.by_status == {"2xx": 2}
    assert metrics.body_bytes == 10
    assert server.server.requests_served - served == 2
    assert server.server.in_flight == 0


def _frames(sock: socket.socket) -> list[Frame]:
    """The frames a server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    frames = []
    while len(received) >= 9:
        found, length = Frame.parse_frame_header(memoryview(received[:9]))
        found.parse_body(memoryview(received[9 : 9 + length]))
        frames.append(found)
        received = received[9 + length :]
    return frames


def test_an_h2_client_over_the_connection_limit_gets_goaway() -> None:
    async def hello(request: Request) -> Response:
        return Response(200, (), b"hi")

    with serve_in_thread(lambda: hello, ServerConfig(max_connections=1)) as running:
        server = running.server
        assert isinstance(server, HttpServer)
        held = socket.create_connection(("127.0.0.1", running.port))
        deadline = time.monotonic() + 5
        while server.connections_open < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        extra = h2_get(running.port, "/")
        extra.settimeout(5)
        frames = _frames(extra)
        goaways = [frame for frame in frames if isinstance(frame, GoAwayFrame)]
        assert len(goaways) == 1, frames
        assert goaways[0].error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        assert goaways[0].last_stream_id == 0
        assert server.connections_refused == 1
        # An HTTP/1.1 client is still answered 503.
        plain = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        plain.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert plain.recv(4096).startswith(b"HTTP/1.1 503 ")
        for sock in (held, extra, plain):
            sock.close()


def _upgrade(port: int, settings: bytes) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\n"
        b"upgrade: h2c\r\nhttp2-settings: " + settings + b"\r\n\r\n"
    )
    answer = sock.recv(4096)
    sock.close()
    return answer


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(b"!!!notbase64", id="not-base64"),
        pytest.param(b"AAIAAAAC", id="enable-push-2"),
        pytest.param(b"AAMAAABkAA", id="not-whole-settings"),
        pytest.param(b"AAUAAAAA", id="max-frame-size-0"),
        pytest.param(b"A", id="bad-length"),
    ],
)
def test_invalid_http2_settings_are_answered_without_upgrade(
    server: RunningServer, settings: bytes
) -> None:
    answer = _upgrade(server.port, settings)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert answer.endswith(b"hello")


def test_valid_http2_settings_upgrade(server: RunningServer) -> None:
    assert _upgrade(server.port, b"AAMAAABkAAQAoAAAAAIAAAAA").startswith(b"HTTP/1.1 101 ")


cancelled_at: list[float] = []


async def stubborn(scope: dict[str, object], receive: object, send: object) -> None:
    if scope["type"] == "http":
        try:
            await asyncio.sleep(30)  # does not listen for the disconnect
        except asyncio.CancelledError:
            cancelled_at.append(time.monotonic())
            raise


def test_a_stop_out_of_time_cancels_h2_handlers_without_a_grace() -> None:
    with serve_in_thread(lambda: AsgiAdapter(stubborn)) as running:
        sock = h2_get(running.port, "/")
        deadline = time.monotonic() + 5
        while running.server.in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        stop = asyncio.run_coroutine_threadsafe(running.server.shutdown(0.2), running.loop)
        stop.result(10)
        while not cancelled_at and time.monotonic() < started + 5:
            time.sleep(0.01)
        sock.close()
    assert cancelled_at
    assert cancelled_at[-1] - started < 1.0


def _h2_accepts(value: bytes) -> bool:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    try:
        conn.initiate_upgrade_connection(value)
    except (h2.exceptions.ProtocolError, ValueError, InvalidFrameError):
        return False
    return True


_IDS = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 8, 9, 0xFF])
_EDGES = st.sampled_from([0, 1, 2, 2**14 - 1, 2**14, 2**24 - 1, 2**24, 2**31 - 1, 2**31])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_IDS, _EDGES | st.integers(0, 2**32 - 1), max_size=5),
    st.binary(max_size=3),
    st.booleans(),
)
def test_http2_settings_checked_as_the_h2_library_does(
    values: dict[int, int], junk: bytes, padded: bool
) -> None:
    """Differential: base64url SETTINGS payloads (each setting once) are
    valid for the server exactly when h2 accepts them in an upgrade."""
    payload = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items())
    value = base64.urlsafe_b64encode(payload + junk)
    if not padded:
        value = value.rstrip(b"=")
    assert valid_upgrade_settings(value) == _h2_accepts(value)


def test_a_session_given_settings_of_a_bad_length_ends_quietly() -> None:
    """H2Session used directly (no server check before it): settings whose
    length is not a multiple of 6 are counted, not raised."""
    from looming.http.http2 import H2Session, abuse

    class _Flow:
        written = b""

        async def write(self, data: bytes) -> None:
            self.written += data

        async def read(self) -> bytes:
            return b""

    async def handler(request: Request) -> Response:
        return Response(200, (), b"")

    async def main() -> None:
        session = H2Session(
            _Flow(),  # type: ignore[arg-type]
            handler,
            server_name=b"t",
            date_line=lambda: b"",
            clock=time.monotonic,
        )
        request = Request("GET", "/", [], b"", "2", None, None)
        await session.run(b"", (base64.urlsafe_b64encode(b"\0\0\0"), request))

    before = abuse["protocol_error"]
    asyncio.run(main())
    assert abuse["protocol_error"] == before + 1
