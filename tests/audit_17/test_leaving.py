"""Clients that leave early: normal traffic, never an ERROR in the log."""

from __future__ import annotations

import logging
import socket
import struct
import time
from typing import Any

import pytest

from looming.http import ServerConfig
from looming.http.asgi import AsgiAdapter
from tests.http.serving import serve_in_thread

CHUNK = 64 * 1024


async def _endless(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        await send({"type": "http.response.body", "body": b"x" * CHUNK, "more_body": True})


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("parser", ["h11", "httptools"])
@pytest.mark.parametrize("how", ["half-close", "close", "reset"])
def test_a_client_leaving_mid_stream_is_counted_not_logged_as_an_error(
    parser: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The response stream of a client that went away (as on --net direct,
    where every connection is read through its flow) ends quietly."""
    pytest.importorskip(parser)
    config = ServerConfig(parser=parser, fast_path=False)
    with serve_in_thread(lambda: AsgiAdapter(_endless), config) as running:
        for left in range(1, 4):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=2)
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            got = 0
            while got < 4 * CHUNK:
                got += len(sock.recv(1 << 20))
            if how == "half-close":
                # The server reads the end of the request stream first (as
                # a FIN reads on --net direct), then its writes fail.
                sock.shutdown(socket.SHUT_WR)
                time.sleep(0.05)
            elif how == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            deadline = time.monotonic() + 5
            while running.server.clients_gone < left and time.monotonic() < deadline:
                time.sleep(0.01)
            assert running.server.clients_gone == left
    assert _errors(caplog) == []


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_reset_before_it_is_accepted_is_dropped_quietly(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Connect, then RST at once (SO_LINGER 0), while the server's loop is
    busy: the socket it accepts has no peer any more. It is counted and
    closed; the next client is served."""
    pytest.importorskip(loop)
    from looming.unix.socket_stack import SocketTcpFlow

    before = SocketTcpFlow.reset_before_served
    with serve_in_thread(lambda: AsgiAdapter(_hello), loop=loop) as running:
        running.loop.call_soon_threadsafe(time.sleep, 0.15)  # the loop is busy
        time.sleep(0.05)
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", running.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        with socket.create_connection(("127.0.0.1", running.port), timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
        assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"hello"), out
    assert _errors(caplog) == []
    assert SocketTcpFlow.reset_before_served - before == 5
    assert _errors(caplog) == []
