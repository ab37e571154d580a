"""WebSockets for ASGI applications, against the `websockets` client library
and curl's handshake: echo of text and bytes, permessage-deflate, close
codes both ways, ping/pong, refusal, oversized messages, a client that
never reads."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import looming.http.websocket  # noqa: F401  (imported once here, see below)
from looming.http import AsgiAdapter

from .serving import RunningServer, serve_in_thread, wait_until_stalled

# The server imports its websocket module when the first connection needs it, in
# the server's thread; imported here first, it is not compiled there while
# pytest compiles in the main thread (CPython 3.11's AST state is shared, and
# compiling in two threads at once fails with "recursion depth mismatch").

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
closes: list[int] = []
sent_to_deaf: list[int] = []


async def echo(websocket: WebSocket) -> None:
    await websocket.accept(
        subprotocol="echo" if "echo" in websocket.scope["subprotocols"] else None
    )
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                closes.append(message["code"])
                return
            if message.get("text") == "close-4001":
                await websocket.close(code=4001, reason="asked to")
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect as disconnect:
        closes.append(disconnect.code)


async def refuse(websocket: WebSocket) -> None:
    await websocket.close()


async def flood(websocket: WebSocket) -> None:
    await websocket.accept()
    chunk = b"x" * 65536
    while True:
        await websocket.send_bytes(chunk)
        sent_to_deaf.append(len(chunk))


app = Starlette(
    routes=[
        WebSocketRoute("/echo", echo),
        WebSocketRoute("/refuse", refuse),
        WebSocketRoute("/flood", flood),
    ]
)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    adapter = AsgiAdapter(app)
    with serve_in_thread(lambda: adapter) as running:
        yield running


def url(server: RunningServer, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def test_echo_text_and_bytes_with_compression(server: RunningServer) -> None:
    async def talk() -> tuple[list[Any], str | None, str | None]:
        async with connect(url(server, "/echo"), subprotocols=["echo"]) as ws:  # type: ignore[list-item]
            answers = []
            for message in ["hello", b"\x00\x01\x02" * 1000, "é" * 5000, b""]:
                await ws.send(message)
                answers.append(await ws.recv())
            # A ping is answered with a pong.
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            extensions = (
                ws.response.headers.get("sec-websocket-extensions") if ws.response else None
            )
            return answers, ws.subprotocol, extensions

    answers, subprotocol, extensions = asyncio.run(talk())
    assert answers == ["hello", b"\x00\x01\x02" * 1000, "é" * 5000, b""]
    assert subprotocol == "echo"
    assert extensions is not None and "permessage-deflate" in extensions


def test_close_codes_both_ways(server: RunningServer) -> None:
    async def talk() -> tuple[int | None, str | None]:
        async with connect(url(server, "/echo")) as ws:
            await ws.close(code=4321, reason="bye")
        async with connect(url(server, "/echo")) as ws:
            await ws.send("close-4001")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason

    code, reason = asyncio.run(talk())
    assert (code, reason) == (4001, "asked to")
    deadline = time.monotonic() + 5
    while 4321 not in closes and time.monotonic() < deadline:
        time.sleep(0.02)
    assert 4321 in closes


def test_refused_handshake_is_403(server: RunningServer) -> None:
    async def talk() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url(server, "/refuse")):
                pass
        return refused.value.response.status_code

    assert asyncio.run(talk()) == 403


def test_oversized_message_closes_with_1009(server: RunningServer) -> None:
    async def talk() -> int | None:
        async with connect(url(server, "/echo"), max_size=None, compression=None) as ws:
            with pytest.raises(ConnectionClosed):  # refused on the frame's header
                await ws.send(b"\x00" * (17 * 1024 * 1024))
                await ws.recv()
            return ws.close_code

    assert asyncio.run(talk()) == 1009


def test_compressed_bomb_closes_with_1009(server: RunningServer) -> None:
    # 64 MiB of zeros deflates to ~64 KiB: the server stops inflating at its limit.
    async def talk() -> int | None:
        async with connect(url(server, "/echo"), max_size=None) as ws:
            await ws.send(b"\x00" * (64 * 1024 * 1024))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(talk()) == 1009


def test_a_client_that_never_reads_holds_the_sender(server: RunningServer) -> None:
    key = base64.b64encode(b"0123456789abcdef")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(
        b"GET /flood HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-version: 13\r\nsec-websocket-key: " + key + b"\r\n\r\n"
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
    stalled = wait_until_stalled(lambda: len(sent_to_deaf))
    assert stalled * 65536 < 16 * 1024 * 1024
    sock.close()


def test_curl_handshake(server: RunningServer) -> None:
    key = base64.b64encode(b"looming-ws-key!!").decode()
    done = subprocess.run(
        [
            "curl", "--silent", "--include", "--max-time", "2", "--http1.1",
            "-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
            "-H", "Sec-WebSocket-Version: 13", "-H", f"Sec-WebSocket-Key: {key}",
            f"http://127.0.0.1:{server.port}/echo",
        ],
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    head = done.stdout.split(b"\r\n\r\n", 1)[0].decode().lower()
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode().lower()
    assert head.startswith("http/1.1 101")
    assert f"sec-websocket-accept: {accept}" in head
    assert "upgrade: websocket" in head


def test_websocket_request_to_a_plain_route_gets_a_refusal(server: RunningServer) -> None:
    async def talk() -> int:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url(server, "/nowhere")):
                pass
        return refused.value.response.status_code

    assert asyncio.run(talk()) == 403


def test_graceful_stop_closes_websockets_with_1001() -> None:
    adapter = AsgiAdapter(app)
    with serve_in_thread(lambda: adapter) as running:

        async def talk() -> tuple[int | None, float]:
            async with connect(f"ws://127.0.0.1:{running.port}/echo") as ws:
                await ws.send("still here")
                assert await ws.recv() == "still here"
                started = time.monotonic()
                stopping = asyncio.run_coroutine_threadsafe(
                    running.server.shutdown(5.0), running.loop
                )
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                await asyncio.wrap_future(stopping)
                return ws.close_code, time.monotonic() - started

        code, took = asyncio.run(talk())
        assert running.server.connections_open == 0
    assert code == 1001
    assert took < 4.0  # not the 5 s shutdown timeout
    assert 1001 in closes  # the application was told
