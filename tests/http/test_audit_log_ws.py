"""A common access-log line escapes ``"``, ``\\`` and control bytes as
nginx does (``\\xHH``), so a log parser reads the request whole; a refused
WebSocket handshake is a whole response with its reason phrase and a Date,
as uvicorn's is."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator, MutableMapping
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

import looming.http.websocket  # noqa: F401  (see test_websocket: imported before the thread)
from looming.http import AsgiAdapter, ServerConfig
from looming.http.message import Request
from looming.http.service import AccessLog, escaped
from looming.unix.clock import UnixClock

from .serving import RunningServer, serve_in_thread
from .test_background import under_uvicorn

COMMON = re.compile(r'^(\S+) - - \[([^\]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-)$')
"""A common log line as parsers read it: the request quoted, ``\\`` escaping."""


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1000})  # refused before accept
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"no"})


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ('/a"b', r"/a\x22b"),
        ("/a\\b", r"/a\x5Cb"),
        ("/a\x1bb\x7f", r"/a\x1Bb\x7F"),
        ("/caf\xc3\xa9", r"/caf\xC3\xA9"),
        ("/plain?q=1&r=%22", "/plain?q=1&r=%22"),
    ],
)
def test_the_request_is_escaped(target: str, shown: str, caplog: pytest.LogCaptureFixture) -> None:
    assert escaped(target) == shown
    request = Request("GET", target, (), http_version="1.1", client=("127.0.0.1", 5))
    with caplog.at_level(logging.INFO, logger="looming.http.access"):
        AccessLog("common", UnixClock())(request, 404, 2, 0.001)
    line = caplog.records[-1].getMessage()
    match = COMMON.match(line)
    assert match is not None, line
    assert match.group(3) == f"GET {shown} HTTP/1.1" and match.group(4) == "404"


@pytest.fixture(scope="module", params=["fast", "usual"])
def logged(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    config = ServerConfig(parser="httptools", fast_path=request.param == "fast")
    with serve_in_thread(lambda: AsgiAdapter(app), config) as running:
        running.server.observer = AccessLog("common", UnixClock())
        yield running


def ask(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out:
            piece = sock.recv(65536)
            if not piece:
                break
            out += piece
    return out


def test_a_quote_in_the_target_is_escaped_on_both_paths(
    logged: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="looming.http.access"):
        answer = ask(logged.port, b'GET /a"b\\c HTTP/1.1\r\nHost: x\r\n\r\n')
        assert answer.startswith(b"HTTP/1.1 404 ")
        for _ in range(100):
            if caplog.records:
                break
            time.sleep(0.01)
    line = caplog.records[-1].getMessage()
    match = COMMON.match(line)
    assert match is not None, line
    assert match.group(3) == r"GET /a\x22b\x5Cc HTTP/1.1"


HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def refusal_of(port: int) -> tuple[bytes, dict[bytes, bytes]]:
    answer = ask(port, HANDSHAKE)
    head = answer.partition(b"\r\n\r\n")[0].split(b"\r\n")
    fields = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    return head[0], fields


def test_a_refused_websocket_is_403_forbidden_with_a_date() -> None:
    with serve_in_thread(lambda: AsgiAdapter(app)) as running:
        line, fields = refusal_of(running.port)
    assert line == b"HTTP/1.1 403 Forbidden"
    assert parsedate_to_datetime(fields[b"date"].decode()).year >= 2024
    assert fields[b"content-length"] == b"0"


@pytest.mark.slow
def test_uvicorn_refuses_alike() -> None:
    with under_uvicorn(app) as port:
        line, fields = refusal_of(port)
    assert line == b"HTTP/1.1 403 Forbidden" and b"date" in fields
