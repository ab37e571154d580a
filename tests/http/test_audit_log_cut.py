"""Every response begun gets exactly one access-log record, also those the
client cuts off (marked aborted, with the status sent and the bytes sent
before the cut, as uvicorn logs ``"GET /big" 200``), websocket sessions
(101, or the refusal's 403) and the server's own refusals (400, 431, 503),
on both paths of the server."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from wsproto.events import CloseConnection

import looming.http.websocket  # noqa: F401  (see test_websocket: imported before the thread)
from looming.http import AsgiAdapter, ServerConfig
from looming.http.service import AccessLog
from looming.unix.clock import UnixClock

from . import ws_h2_app
from .serving import RunningServer, serve_in_thread
from .test_background import under_uvicorn
from .test_websocket_h2 import H2WebSockets

CHUNK = 65536


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        if scope["path"] == "/deny":
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            await send({"type": "websocket.send", "text": message.get("text", "")})
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    path = scope["path"]
    if path == "/ok":
        await send({"type": "http.response.body", "body": b"ok"})
    elif path == "/big":  # 1 GiB: the client leaves long before
        for _ in range(16384):
            await send({"type": "http.response.body", "body": b"b" * CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/sse":  # an endless event stream
        while True:
            await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
            await asyncio.sleep(0.05)
    else:
        await send({"type": "http.response.body", "body": b"not found"})


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # (and no second record for the same response)
        return self.lines


@pytest.fixture(params=["fast", "usual"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[RunningServer, Records]]:
    access = logging.getLogger("looming.http.access")
    records = Records()
    access.addHandler(records)
    level = access.level
    access.setLevel(logging.INFO)
    config = ServerConfig(fast_path=request.param == "fast", max_connections=2)
    try:
        with serve_in_thread(lambda: AsgiAdapter(app), config) as running:
            running.server.observer = AccessLog("json", UnixClock())
            yield running, records
    finally:
        access.removeHandler(records)
        access.setLevel(level)


def cut_after(port: int, path: str, wanted: int) -> int:
    """Read ``wanted`` bytes of the response to ``GET path``, then leave."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        got = 0
        while got < wanted:
            data = sock.recv(65536)
            assert data
            got += len(data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # a reset
    return got


def one_record(records: Records, check: Callable[[], None]) -> dict[str, Any]:
    before = len(records.lines)
    check()
    lines = records.wait_for(before + 1)
    assert len(lines) == before + 1, lines[before:]
    return lines[-1]


@pytest.mark.parametrize(("path", "wanted"), [("/big", 256 * 1024), ("/sse", 20)])
def test_a_response_the_client_cuts_off_is_logged_once(
    server: tuple[RunningServer, Records], path: str, wanted: int
) -> None:
    running, records = server
    record = one_record(records, lambda: cut_after(running.port, path, wanted))
    assert (record["target"], record["status"], record["aborted"]) == (path, 200, True)
    assert 0 < record["bytes"] < 16384 * CHUNK
    whole = one_record(records, lambda: cut_after(running.port, "/ok", 1))
    assert (whole["target"], whole["status"], whole["aborted"]) == ("/ok", 200, False)


def test_websocket_sessions_are_logged(server: tuple[RunningServer, Records]) -> None:
    running, records = server

    async def talk() -> None:
        async with connect(f"ws://127.0.0.1:{running.port}/ws") as client:
            await client.send("hi")
            assert await client.recv() == "hi"

    async def refused() -> None:
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://127.0.0.1:{running.port}/deny"):
                pass

    accepted = one_record(records, lambda: asyncio.run(talk()))
    assert (accepted["target"], accepted["status"]) == ("/ws", 101)
    assert accepted["bytes"] > 0
    denied = one_record(records, lambda: asyncio.run(refused()))
    assert (denied["target"], denied["status"], denied["bytes"]) == ("/deny", 403, 0)


def ask(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("request_bytes", "status", "target"),
    [
        (b"GET /x HTTP/1.1\r\nHost: x\r\nBig: " + b"a" * 70000 + b"\r\n\r\n", 431, "/x"),
        (b"BLAH\x01 / HTTP/1.1\r\n\r\n", 400, ""),
        (
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "",  # (refused with the head, which is then not read)
        ),
    ],
    ids=["431", "400-bad-line", "400-two-lengths"],
)
def test_the_server_s_own_refusals_are_logged(
    server: tuple[RunningServer, Records], request_bytes: bytes, status: int, target: str
) -> None:
    running, records = server
    record = one_record(
        records, lambda: ask(running.port, request_bytes).startswith(b"HTTP/1.1 %d" % status)
    )
    assert (record["status"], record["target"], record["client"]) == (status, target, "127.0.0.1")
    assert record["bytes"] > 0


BIG = b"a" * 70000
SPLIT_HEADS = {
    "whole": [b"GET /x HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nBig: " + BIG + b"\r\n\r\n"],
    "cut-in-a-field": [
        b"GET /x HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nBig: " + BIG[:1000],
        BIG[1000:] + b"\r\n\r\n",
    ],
    "cut-in-the-first-field": [
        b"GET /x HTTP/1.1\r\nBig: " + BIG[:30000],
        BIG[30000:] + b"\r\nHost: x\r\n\r\n",
    ],
    "behind-another-request": [
        b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nBig: " + BIG[:100],
        BIG[100:] + b"\r\nHost: x\r\n\r\n",
    ],
    "with-a-fragment": [
        b"GET /x#f HTTP/1.1\r\nHost: x\r\nBig: " + BIG[:5000],
        BIG[5000:] + b"\r\n\r\n",
    ],
}


@pytest.mark.parametrize("parser", ["httptools", "h11"])
@pytest.mark.parametrize("cut", list(SPLIT_HEADS))
def test_a_head_too_large_is_logged_by_its_request_line_however_it_arrives(
    parser: str, cut: str
) -> None:
    """A 431's record carries the request line (and no field of the
    refused head), whether the head came whole or in pieces, alone or
    behind another request in the same read, on both paths."""
    access = logging.getLogger("looming.http.access")
    records = Records()
    access.addHandler(records)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        for fast in (True, False):
            config = ServerConfig(parser=parser, fast_path=fast)
            with serve_in_thread(lambda: AsgiAdapter(app), config) as running:
                running.server.observer = AccessLog("json", UnixClock())
                before = len(records.lines)
                with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
                    for piece in SPLIT_HEADS[cut]:
                        sock.sendall(piece)
                        time.sleep(0.05)  # (read on its own)
                    answer = b""
                    while chunk := sock.recv(65536):
                        answer += chunk
                assert b"HTTP/1.1 431 " in answer
                refused = records.wait_for(before + 1 + (cut == "behind-another-request"))[-1]
                line = [refused[key] for key in ("status", "method", "target", "http_version")]
                assert line == [431, "GET", "/x", "1.1"], (fast, refused)
                assert refused["user_agent"] == ""
    finally:
        access.removeHandler(records)
        access.setLevel(level)


def test_a_connection_over_the_limit_is_logged_as_503(
    server: tuple[RunningServer, Records],
) -> None:
    running, records = server
    held = [socket.create_connection(("127.0.0.1", running.port), timeout=10) for _ in range(2)]
    try:
        for sock in held:  # both served, so both counted as open
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        records.wait_for(2)
        answer: list[bytes] = []
        record = one_record(
            records, lambda: answer.append(ask(running.port, b"GET / HTTP/1.1\r\n\r\n"))
        )
        assert answer[0].startswith(b"HTTP/1.1 503")
        assert (record["status"], record["method"]) == (503, "")
    finally:
        for sock in held:
            sock.close()


class _Statuses(logging.Handler):
    """The statuses of uvicorn's access records (its args end with the status)."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert isinstance(record.args, tuple)
        self.statuses.append(int(record.args[-1]))


def test_a_cut_response_is_logged_as_uvicorn_logs_it(
    server: tuple[RunningServer, Records],
) -> None:
    """uvicorn logs one record, with the status sent, for a download its
    client cut off: looming logs the same one, marked aborted. (Not the
    endless stream: uvicorn's stop would wait for it.)"""
    path = "/big"
    running, records = server
    access = logging.getLogger("uvicorn.access")
    statuses = _Statuses()
    with under_uvicorn(app, access_log=True) as port:
        level = access.level
        access.setLevel(logging.INFO)
        access.addHandler(statuses)
        try:
            cut_after(port, path, 64 * 1024)
            deadline = time.monotonic() + 5
            while not statuses.statuses and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
        finally:
            access.removeHandler(statuses)
            access.setLevel(level)
    record = one_record(records, lambda: cut_after(running.port, path, 64 * 1024))
    assert statuses.statuses == [record["status"]] == [200]
    assert record["aborted"] is True


def test_http2_websockets_are_logged() -> None:
    """An RFC 8441 websocket is 200 (accepted) or its refusal's 403."""
    access = logging.getLogger("looming.http.access")
    records = Records()
    access.addHandler(records)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        with serve_in_thread(lambda: AsgiAdapter(ws_h2_app.app)) as running:
            running.server.observer = AccessLog("json", UnixClock())
            client = H2WebSockets(running.port)
            try:
                stream_id, _ = client.open("/echo")
                client.send(stream_id, CloseConnection(1000))
                client.wait_ended(stream_id)
                refused, _ = client.open("/refuse")
                client.wait_ended(refused)
            finally:
                client.close()
            lines = records.wait_for(2)
    finally:
        access.removeHandler(records)
        access.setLevel(level)
    assert sorted((r["target"], r["status"], r["http_version"]) for r in lines) == [
        ("/echo", 200, "2"),
        ("/refuse", 403, "2"),
    ]
