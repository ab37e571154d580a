"""A frame whose header announces a payload over the limit is refused on
its header (1009 at once, none of its payload read), as the ``websockets``
library refuses it; hypothesis checks the header follower against the
frames it was cut from. The server's close frames give fixed reasons with
the codes the ``websockets`` library's server gives for the same bad
frames, never a parser's error text."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from wsproto.events import CloseConnection

import looming.http.websocket as websocket
from looming.http import AsgiAdapter
from looming.http.websocket import FrameSizes

from . import ws_h2_app
from .serving import RunningServer, serve_in_thread
from .test_websocket_h2 import H2WebSockets
from .test_websocket_hostile import handshake, ws_frame

LIMIT = 1 << 20


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


def adapter() -> AsgiAdapter:
    made = AsgiAdapter(app)
    made.websocket_max_message_bytes = LIMIT
    return made


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread(adapter) as running:
        yield running


@pytest.fixture(scope="module")
def websockets_port() -> Iterator[int]:
    """A server of the websockets library, with the same limit."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def echo(connection: ServerConnection) -> None:
        async for _ in connection:
            pass

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, max_size=LIMIT, compression=None) as running:
            state["port"] = running.sockets[0].getsockname()[1]
            state["stop"] = stop = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield int(state["port"])
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(10)


def close_frame(sock: socket.socket, timeout: float = 3.0) -> tuple[int, bytes]:
    """The code and reason of the server's close frame, read within ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    sock.close()
    while len(data) >= 2:
        opcode, size, at = data[0] & 0x0F, data[1] & 0x7F, 2
        if size == 126:
            size, at = struct.unpack(">H", data[2:4])[0], 4
        if opcode == 0x8:
            payload = data[at : at + size]
            return struct.unpack(">H", payload[:2])[0], payload[2:]
        data = data[at + size :]
    raise AssertionError("no close frame within the time allowed")


def announcing(size: int) -> bytes:
    return bytes([0x82, 0x80 | 127]) + struct.pack(">Q", size) + b"\0\0\0\0"


@pytest.mark.parametrize("size", [LIMIT + 1, 64 << 20, (1 << 63) - 1, 1 << 63])
def test_a_frame_announcing_too_much_is_refused_on_its_header(
    server: RunningServer, websockets_port: int, size: int
) -> None:
    """Only the header is sent: a server that waits for the payload never closes."""
    before = websocket.abuse["message_too_big"]
    sock = handshake(server.port)
    sock.sendall(ws_frame(0x1, b"fine") + announcing(size))
    code, reason = close_frame(sock)
    assert (code, reason) == (1009, b"message too big")
    assert websocket.abuse["message_too_big"] == before + 1
    if size < 1 << 63:  # (the websockets library refuses a length with the top bit as 1002)
        peer = handshake(websockets_port)
        peer.sendall(announcing(size))
        assert close_frame(peer)[0] == 1009


BAD_FRAMES = {
    "bad-utf8": ws_frame(0x1, b"\xff\xfe"),
    "bad-utf8-fragments": ws_frame(0x1, b"ok\xe2", fin=False) + ws_frame(0x0, b"(x"),
    "text-mid-message": ws_frame(0x1, b"a", fin=False) + ws_frame(0x1, b"b"),
    "continuation-first": ws_frame(0x0, b"x"),
    "reserved-opcode": ws_frame(0x3, b"x"),
    "rsv1-without-extension": ws_frame(0x1, b"hi", rsv1=True),
    "close-code-999": ws_frame(0x8, struct.pack(">H", 999)),
    "close-reason-bad-utf8": ws_frame(0x8, struct.pack(">H", 1000) + b"\xff"),
    "ping-126": ws_frame(0x9, b"p" * 126),
}


@pytest.mark.parametrize("frames", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_bad_frames_close_with_the_websockets_code_and_a_fixed_reason(
    server: RunningServer, websockets_port: int, frames: bytes
) -> None:
    sock = handshake(server.port)
    sock.sendall(frames)
    code, reason = close_frame(sock)
    peer = handshake(websockets_port)
    peer.sendall(frames)
    assert code == close_frame(peer)[0]
    assert reason in (b"protocol error", b"invalid UTF-8"), reason


frames = st.lists(
    st.tuples(
        st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA]),
        st.one_of(st.integers(0, 300), st.integers(LIMIT - 2, LIMIT + 2)),
        st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(frames=frames, cuts=st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_the_header_follower_finds_the_first_oversized_frame(
    frames: list[tuple[int, int, bool]], cuts: list[int]
) -> None:
    """Frames cut into reads anywhere: the offset reported is that of the
    first data frame over the limit (a compressed one may go a little over)."""
    wire = b""
    expected = -1
    for opcode, size, rsv1 in frames:
        limit = LIMIT + (LIMIT >> 10) + websocket.DEFLATE_SLACK if rsv1 else LIMIT
        if expected < 0 and opcode < 0x8 and size > limit:
            expected = len(wire)
        wire += ws_frame(opcode, bytes(size), rsv1=rsv1)
    follower = FrameSizes(LIMIT)
    at, found = 0, -1
    for cut in cuts * (len(wire) // sum(cuts) + 1):
        piece = wire[at : at + cut * 4096 if at > 2 else at + cut]
        if not piece:
            break
        where = follower.oversized_at(piece)
        if where >= 0:
            # In the read that completes the header: where it begins, or 0
            # when it began in an earlier read.
            assert expected < at + len(piece)
            found = at + where
            break
        at += len(piece)
    assert found == (max(expected, at) if expected >= 0 else -1)


def test_over_http2_too_a_frame_announcing_too_much_is_refused_on_its_header() -> None:
    """An RFC 8441 websocket: only the frame's header is sent on the stream."""
    with serve_in_thread(lambda: AsgiAdapter(ws_h2_app.app)) as running:
        client = H2WebSockets(running.port)
        try:
            stream_id, response = client.open("/echo")
            assert response[b":status"] == b"200"
            client.conn.send_data(stream_id, announcing(1 << 40))
            client.conn.send_data(stream_id, b"\0" * 1000)
            client._flush()
            event = client.next_event(stream_id)
            assert isinstance(event, CloseConnection)
            assert (event.code, event.reason) == (1009, "message too big")
        finally:
            client.close()
