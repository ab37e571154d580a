"""HTTP/2 against a hostile client: the h2 library and raw frames as the
attacker (CONTINUATION floods, oversized frames and header blocks, window
overflows, streams over the limit, rapid resets with stubborn handlers,
PING/PRIORITY/empty-DATA floods, a client that never reads, a zero window),
each answered with GOAWAY or RST_STREAM, counted, with memory bounded; and
one connection's many streams taking turns with the other connections."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame

import looming.http.http2 as http2
from looming.http import AsgiAdapter, Request, Response

from .serving import RunningServer, serve_in_thread, wait_until_stalled

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
produced: list[int] = []
running_now = [0, 0]  # handlers running now, the most at once


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    running_now[0] += 1
    running_now[1] = max(running_now)
    try:
        if path == "/endless":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while True:
                await send({"type": "http.response.body", "body": b"y" * 65536, "more_body": True})
                produced.append(65536)
        if path == "/stubborn":
            await asyncio.sleep(0.8)  # does not listen for the disconnect
        elif path == "/half":
            await receive()  # one piece of the body, then the rest arrives unread
            await asyncio.sleep(0.2)
        elif path == "/echo":
            size, more = 0, True
            while more:
                message = await receive()
                size += len(message.get("body", b""))
                more = message.get("more_body", False)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": str(size).encode()})
            return
        body = b"x" * 100_000 if path == "/big" else b"ok"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    finally:
        running_now[0] -= 1


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread(lambda: AsgiAdapter(app)) as running:
        yield running


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


def hpack_get(path: str) -> bytes:
    """A request's header block (HPACK) as h2's own encoder writes it."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    return bytes(conn.encoder.encode(headers(path)))


def headers(path: str, method: str = "GET") -> list[tuple[str, str]]:
    return [(":method", method), (":path", path), (":scheme", "http"), (":authority", "x")]


def attack(port: int, payload: bytes, chunk: int = 65536) -> list[Frame]:
    """Send the preface, an empty SETTINGS and ``payload``; the frames the
    server sent until it closed the connection (it must close it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = PREFACE + frame(0x4, 0, 0) + payload
    try:
        for start in range(0, len(data), chunk):
            sock.sendall(data[start : start + chunk])
    except OSError:
        pass  # the server closed first
    return frames_until_closed(sock)


def frames_until_closed(sock: socket.socket) -> list[Frame]:
    received = b""
    with sock:
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
    frames: list[Frame] = []
    while len(received) >= 9:
        found, length = Frame.parse_frame_header(memoryview(received[:9]))
        found.parse_body(memoryview(received[9 : 9 + length]))
        frames.append(found)
        received = received[9 + length :]
    return frames


def goaway(frames: list[Frame]) -> int:
    """The error code of the server's GOAWAY (it must have sent one)."""
    codes = [f.error_code for f in frames if isinstance(f, GoAwayFrame)]
    assert codes, f"no GOAWAY among {[type(f).__name__ for f in frames]}"
    return int(codes[-1])


def counted(reason: str) -> int:
    return http2.abuse[reason]


def still_serves(port: int) -> None:
    sock, conn = raw_client(port)
    conn.send_headers(1, headers("/"), end_stream=True)
    sock.sendall(conn.data_to_send())
    body = b""
    while True:
        events = conn.receive_data(sock.recv(65536))
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                body += event.data
            if isinstance(event, h2.events.StreamEnded):
                sock.close()
                assert body == b"ok"
                return


def raw_client(
    port: int, settings: dict[int, int] | None = None
) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    if settings:
        conn.update_settings(settings)
    sock.sendall(conn.data_to_send())
    return sock, conn


def test_a_continuation_flood_of_big_frames_is_cut_at_the_block_limit(
    server: RunningServer,
) -> None:
    before = counted("header_block")
    flood = frame(0x1, 0, 1, hpack_get("/"))  # HEADERS without END_HEADERS
    flood += frame(0x9, 0, 1, b"\x00" * 16384) * 40  # 640 KiB of CONTINUATION
    assert goaway(attack(server.port, flood)) == CALM
    assert counted("header_block") == before + 1
    still_serves(server.port)


def test_a_continuation_flood_of_empty_frames_is_refused(server: RunningServer) -> None:
    before = counted("protocol_error")
    flood = frame(0x1, 0, 1, hpack_get("/")) + frame(0x9, 0, 1) * 100_000
    assert goaway(attack(server.port, flood)) == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert counted("protocol_error") == before + 1


def test_an_oversized_frame_gets_frame_size_error(server: RunningServer) -> None:
    flood = frame(0x1, 0x5, 1, hpack_get("/"))
    flood += frame(0x0, 0, 1, b"z" * (1 << 20))  # DATA of 1 MiB: the limit is 16 KiB
    assert goaway(attack(server.port, flood)) == h2.errors.ErrorCodes.FRAME_SIZE_ERROR


def test_a_header_list_over_the_limit_is_refused(server: RunningServer) -> None:
    sock, conn = raw_client(server.port)
    big = [*headers("/"), ("x-big", "v" * (http2.MAX_HEADER_LIST_SIZE + 1000))]
    conn.send_headers(1, big, end_stream=True)
    sock.sendall(conn.data_to_send())
    frames = frames_until_closed(sock)
    refused = [f for f in frames if isinstance(f, RstStreamFrame | GoAwayFrame)]
    assert refused, "a header list over the limit was served"
    still_serves(server.port)


def test_a_connection_window_overflow_is_a_connection_error(server: RunningServer) -> None:
    overflow = frame(0x8, 0, 0, struct.pack(">I", 0x7FFFFFFF))
    assert goaway(attack(server.port, overflow)) == h2.errors.ErrorCodes.FLOW_CONTROL_ERROR


def test_a_stream_window_overflow_resets_that_stream_only(server: RunningServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    opener = frame(0x1, 0x4, 1, hpack_get("/stubborn"))  # stream 1 stays open a while
    overflow = frame(0x8, 0, 1, struct.pack(">I", 0x7FFFFFFF))
    sock.sendall(PREFACE + frame(0x4, 0, 0) + opener + overflow)
    seen = frames_until(sock, lambda f: isinstance(f, RstStreamFrame))
    assert (seen[-1].stream_id, seen[-1].error_code) == (1, h2.errors.ErrorCodes.FLOW_CONTROL_ERROR)
    sock.sendall(frame(0x1, 0x5, 3, hpack_get("/")))  # the connection serves on
    seen = frames_until(sock, lambda f: "END_STREAM" in f.flags and f.stream_id == 3)
    assert b"".join(f.data for f in seen if f.type == 0x0 and f.stream_id == 3) == b"ok"
    sock.close()


def frames_until(sock: socket.socket, last: Any) -> list[Frame]:
    """Frames read until one for which ``last(frame)`` holds."""
    received, frames = b"", []
    while True:
        data = sock.recv(65536)
        assert data, f"closed after {frames}"
        received += data
        while len(received) >= 9:
            found, length = Frame.parse_frame_header(memoryview(received[:9]))
            if len(received) < 9 + length:
                break
            found.parse_body(memoryview(received[9 : 9 + length]))
            frames.append(found)
            received = received[9 + length :]
            if last(found):
                return frames


def test_streams_over_the_limit_are_refused(server: RunningServer) -> None:
    # (tests/http/test_http2_limits.py: the connection goes on after them)
    deadline = time.monotonic() + 5
    while running_now[0] and time.monotonic() < deadline:
        time.sleep(0.05)  # handlers of earlier connections get a grace to finish
    running_now[1] = 0
    count = http2.MAX_CONCURRENT_STREAMS + 20
    flood = b"".join(frame(0x1, 0x5, 1 + 2 * i, hpack_get("/stubborn")) for i in range(count))
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(PREFACE + frame(0x4, 0, 0) + flood)
    sock.shutdown(socket.SHUT_WR)  # the end comes after the flood
    frames = frames_until_closed(sock)
    refused = [f for f in frames if isinstance(f, RstStreamFrame) and f.error_code == 7]
    assert len(refused) == 20
    assert not [f for f in frames if isinstance(f, GoAwayFrame) and f.error_code]
    assert running_now[1] <= http2.MAX_CONCURRENT_STREAMS


def test_reset_streams_handlers_still_count_against_the_limit(server: RunningServer) -> None:
    """Rapid reset against handlers that ignore the disconnect: h2 frees
    the stream at once, the server keeps counting the handler; streams over
    the limit are refused (REFUSED_STREAM), and the handlers running at once
    stay within it."""
    deadline = time.monotonic() + 5
    while running_now[0] and time.monotonic() < deadline:
        time.sleep(0.05)  # handlers of earlier connections get a grace to finish
    running_now[1] = 0
    before = counted("refused_stream")
    count = http2.MAX_CONCURRENT_STREAMS + 50  # under MAX_RESETS: no GOAWAY
    flood = b"".join(
        frame(0x1, 0x5, 1 + 2 * i, hpack_get("/stubborn"))
        + frame(0x3, 0, 1 + 2 * i, struct.pack(">I", 8))
        for i in range(count)
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(PREFACE + frame(0x4, 0, 0) + flood)
    time.sleep(0.3)
    sock.close()
    assert running_now[1] <= http2.MAX_CONCURRENT_STREAMS
    assert counted("refused_stream") - before >= 40


@pytest.mark.parametrize(
    "idle",
    [
        pytest.param(frame(0x6, 0, 0, b"12345678"), id="ping"),
        pytest.param(frame(0x4, 0, 0), id="settings"),
        pytest.param(frame(0x2, 0, 1, b"\x00\x00\x00\x00\x10"), id="priority"),
        pytest.param(frame(0xEE, 0, 0, b"junk"), id="unknown"),
        pytest.param(frame(0x0, 0, 1), id="empty-data"),
    ],
)
def test_a_flood_of_frames_that_do_no_work_gets_goaway(server: RunningServer, idle: bytes) -> None:
    before = counted("control_flood")
    opener = frame(0x1, 0x4, 1, hpack_get("/stubborn"))  # stream 1 open for the DATA
    flood = opener + idle * (http2.MAX_CONTROL_FRAMES + 500)
    assert goaway(attack(server.port, flood)) == CALM
    assert counted("control_flood") == before + 1


def test_a_client_that_never_reads_holds_the_writers(server: RunningServer) -> None:
    """Windows opened wide and nothing read: the writers stop once the
    socket buffers are full; what the server produced stays bounded."""
    produced.clear()
    sock, conn = raw_client(server.port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    conn.increment_flow_control_window(2**31 - 1 - 65535)
    for i in range(10):
        conn.send_headers(1 + 2 * i, headers("/endless"), end_stream=True)
    sock.sendall(conn.data_to_send())
    stalled = wait_until_stalled(lambda: len(produced))
    # The socket buffers on both sides (a few MiB on loopback) and the server's
    # 256 KiB write buffer; nothing grows with time.
    assert stalled * 65536 < 48 * 1024 * 1024
    sock.close()


def test_a_zero_window_stalls_one_stream_then_ends_it(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http2, "STALL_TIMEOUT", 0.5)
    before = counted("stalled")
    sock, conn = raw_client(server.port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    conn.send_headers(1, headers("/big"), end_stream=True)
    conn.send_headers(3, headers("/big"), end_stream=True)
    sock.sendall(conn.data_to_send())
    time.sleep(0.1)
    conn.increment_flow_control_window(200_000, stream_id=3)  # stream 3 only
    conn.increment_flow_control_window(200_000)
    sock.sendall(conn.data_to_send())
    got: dict[int, int] = {1: 0, 3: 0}
    ended: set[int] = set()
    reset: set[int] = set()
    while ended | reset != {1, 3}:
        for event in conn.receive_data(sock.recv(65536)):
            if isinstance(event, h2.events.DataReceived):
                got[event.stream_id] += len(event.data)
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                reset.add(event.stream_id)
        sock.sendall(conn.data_to_send())
    sock.close()
    assert got == {1: 0, 3: 100_000} and ended == {3} and reset == {1}
    assert counted("stalled") == before + 1


def test_bodies_left_unread_do_not_shut_the_connection_window(server: RunningServer) -> None:
    """Handlers that answer without reading the body: what they left is
    acknowledged, so later uploads on the connection still flow."""
    sock, conn = raw_client(server.port)
    results: dict[int, bytes] = {}
    for i, (path, size) in enumerate([("/half", 60_000), ("/half", 60_000), ("/echo", 200_000)]):
        stream_id = 1 + 2 * i
        conn.send_headers(stream_id, headers(path, "POST"))
        sent = 0
        results[stream_id] = b""
        while sent < size or not results[stream_id]:
            room = min(conn.local_flow_control_window(stream_id), 16384, size - sent)
            if room > 0:
                conn.send_data(stream_id, b"u" * room, end_stream=sent + room == size)
                sent += room
            sock.sendall(conn.data_to_send())
            if sent == size and results[stream_id]:
                break
            if room <= 0 or sent == size:
                for event in conn.receive_data(sock.recv(65536)):
                    if isinstance(event, h2.events.DataReceived):
                        results[event.stream_id] += event.data
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                sock.sendall(conn.data_to_send())
    sock.close()
    assert results == {1: b"ok", 3: b"ok", 5: b"200000"}


class Recorder:
    """Notes the order requests reach it and answers at once (no await); at
    the first request of connection A it has connection B send its own."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.at_first: Any = None

    async def __call__(self, request: Request) -> Response:
        self.order.append(request.path)
        if self.at_first is not None:
            at_first, self.at_first = self.at_first, None
            at_first()
        return Response(200, [(b"content-type", b"text/plain")], b"ok\n")


def test_many_streams_on_one_connection_take_turns() -> None:
    """Connection A sends 96 requests in one write; connection B's one
    request, sent when A's first is seen, is not left behind all of A's."""
    recorder = Recorder()
    many = 96
    with serve_in_thread(lambda: recorder) as running:
        a = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        b = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        with a, b:
            recorder.at_first = lambda: b.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            block = hpack_get("/a")
            flood = b"".join(frame(0x1, 0x5, 1 + 2 * i, block) for i in range(many))
            a.sendall(PREFACE + frame(0x4, 0, 0) + flood)
            assert b.recv(65536).startswith(b"HTTP/1.1 200")
            deadline = time.monotonic() + 10
            while recorder.order.count("/a") < many and time.monotonic() < deadline:
                time.sleep(0.01)
    assert recorder.order.count("/a") == many
    before = recorder.order.index("/b")
    print(f"B's request came after {before} of A's {many}")
    assert before <= min(5 * http2.STREAMS_PER_TURN, many // 2), (
        f"B waited for {before} of A's {many}"
    )


def test_another_client_is_served_promptly_during_floods(server: RunningServer) -> None:
    """Attackers flood (resets, PINGs, CONTINUATIONs) in a loop; an ordinary
    HTTP/1.1 client's requests meanwhile all succeed, promptly."""
    stop = threading.Event()

    def flood() -> None:
        floods = [
            b"".join(
                frame(0x1, 0x5, 1 + 2 * i, hpack_get("/")) + frame(0x3, 0, 1 + 2 * i, b"\0\0\0\x08")
                for i in range(400)
            ),
            frame(0x6, 0, 0, b"12345678") * 2000,
            frame(0x1, 0, 1, hpack_get("/")) + frame(0x9, 0, 1, b"\0" * 16384) * 10,
        ]
        while not stop.is_set():
            for payload in floods:
                attack(server.port, payload)

    attackers = [threading.Thread(target=flood, daemon=True) for _ in range(2)]
    for thread in attackers:
        thread.start()
    took: list[float] = []
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            for _ in range(200):
                began = time.perf_counter()
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                reply = b""
                while not reply.endswith(b"ok"):
                    reply += sock.recv(65536)
                took.append(time.perf_counter() - began)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(10)
    took.sort()
    p99 = took[int(len(took) * 0.99) - 1]
    print(f"other client's p99 during the floods: {p99 * 1000:.1f} ms")
    assert p99 < 1.0, f"p99 {p99 * 1000:.0f} ms during the floods"


def test_a_connection_without_streams_is_closed_when_idle(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream running longer than the idle timeout is answered; after it,
    PINGs do not keep the connection: GOAWAY (NO_ERROR) and a close."""
    monkeypatch.setattr(http2, "IDLE_TIMEOUT", 0.3)
    before = counted("idle")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(PREFACE + frame(0x4, 0, 0) + frame(0x1, 0x5, 1, hpack_get("/stubborn")))
    time.sleep(0.9)  # the handler takes 0.8 s
    for _ in range(3):
        sock.sendall(frame(0x6, 0, 0, b"12345678"))
        time.sleep(0.05)
    frames = frames_until_closed(sock)
    assert b"".join(f.data for f in frames if f.type == 0x0 and f.stream_id == 1) == b"ok"
    assert goaway(frames) == h2.errors.ErrorCodes.NO_ERROR
    assert counted("idle") == before + 1


def test_a_write_blocked_by_a_client_that_never_reads_is_cut(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows wide open and nothing read: the write the socket holds back
    is cut after the stall timeout, and counted."""
    monkeypatch.setattr(http2, "STALL_TIMEOUT", 0.5)
    before = counted("stalled")
    sock, conn = raw_client(server.port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    conn.increment_flow_control_window(2**31 - 1 - 65535)
    conn.send_headers(1, headers("/endless"), end_stream=True)
    sock.sendall(conn.data_to_send())
    deadline = time.monotonic() + 20
    while counted("stalled") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    sock.close()
    assert counted("stalled") == before + 1
