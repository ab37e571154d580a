"""WebSockets against a hostile client: raw frames and the `websockets`
client library as the attacker (oversized frames and messages, fragment
floods, permessage-deflate bombs, ping floods, bad UTF-8 and close codes,
a client that never reads); each closed with the right code and counted,
memory bounded, other clients served meanwhile."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import looming.http.websocket as websocket
from looming.http import AsgiAdapter

from .serving import RunningServer, serve_in_thread

LIMIT = 1024 * 1024
received: list[int] = []
stalled_sends: list[str] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    if scope["path"] == "/flood":
        try:
            while True:
                await send({"type": "websocket.send", "bytes": b"f" * 65536})
        except OSError as error:
            stalled_sends.append(str(error))
            return
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        size = len(message.get("bytes") or b"") + len(message.get("text") or "")
        received.append(size)
        await send({"type": "websocket.send", "text": str(size)})


def adapter() -> AsgiAdapter:
    made = AsgiAdapter(app)
    made.websocket_max_message_bytes = LIMIT
    return made


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread(adapter) as running:
        yield running


def handshake(port: int, deflate: bool = False, path: str = "/") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    head = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    head += b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key
    if deflate:
        head += b"\r\nSec-WebSocket-Extensions: permessage-deflate"
    sock.sendall(head + b"\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    if deflate:
        assert b"permessage-deflate" in answer
    return sock


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A masked client frame (mask of zeros: the payload goes as it is)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        head = bytes([first, 0x80 | size])
    elif size < 65536:
        head = bytes([first, 0x80 | 126]) + struct.pack(">H", size)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack(">Q", size)
    return head + b"\0\0\0\0" + payload


def server_frames(sock: socket.socket) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the server's frames until it closes the connection."""
    data = b""
    with sock:
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    frames = []
    while len(data) >= 2:
        opcode, size, at = data[0] & 0x0F, data[1] & 0x7F, 2
        if size == 126:
            size, at = struct.unpack(">H", data[2:4])[0], 4
        elif size == 127:
            size, at = struct.unpack(">Q", data[2:10])[0], 10
        frames.append((opcode, data[at : at + size]))
        data = data[at + size :]
    return frames


def close_code(frames: list[tuple[int, bytes]]) -> int:
    closes = [payload for opcode, payload in frames if opcode == 0x8]
    assert closes, f"no close frame among opcodes {[opcode for opcode, _ in frames]}"
    return int(struct.unpack(">H", closes[-1][:2])[0])


def send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server closed first


def test_a_frame_announcing_more_than_the_limit_closes_with_1009(server: RunningServer) -> None:
    before = websocket.abuse["message_too_big"]
    sock = handshake(server.port)
    head = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 1 << 62) + b"\0\0\0\0"
    send_quietly(sock, head + b"z" * (LIMIT + 65536))
    assert close_code(server_frames(sock)) == 1009
    assert websocket.abuse["message_too_big"] == before + 1


def test_fragments_over_the_limit_close_with_1009(server: RunningServer) -> None:
    sock = handshake(server.port)
    piece = b"p" * 65536
    flood = ws_frame(0x2, piece, fin=False) + ws_frame(0x0, piece, fin=False) * 20
    send_quietly(sock, flood)
    assert close_code(server_frames(sock)) == 1009


def test_a_flood_of_tiny_fragments_ends_in_the_one_message_it_is(server: RunningServer) -> None:
    """200,000 one-byte continuation frames: the message they make arrives
    whole (its fragments were joined as they came)."""
    sock = handshake(server.port)
    flood = ws_frame(0x1, b"head-", fin=False) + ws_frame(0x0, b"x", fin=False) * 200_000
    sock.sendall(flood + ws_frame(0x0, b"tail"))
    answer = b""
    while b"200009" not in answer:
        answer += sock.recv(4096)
    assert answer[2:] == b"200009"  # the text frame answering its size
    sock.close()


@pytest.mark.parametrize(
    "idle",
    [
        pytest.param(ws_frame(0x9, b"12345678"), id="pings"),
        pytest.param(ws_frame(0xA, b"12345678"), id="pongs"),
        pytest.param(ws_frame(0x0, b"", fin=False), id="empty-fragments"),
    ],
)
def test_a_flood_of_frames_carrying_nothing_closes_with_1008(
    server: RunningServer, idle: bytes
) -> None:
    before = websocket.abuse["frame_flood"]
    sock = handshake(server.port)
    opener = ws_frame(0x1, b"a", fin=False) if idle[0] & 0x0F == 0 else b""
    send_quietly(sock, opener + idle * (websocket.MAX_IDLE_FRAMES + 100))
    frames = server_frames(sock)
    assert close_code(frames) == 1008
    assert websocket.abuse["frame_flood"] == before + 1
    assert len([f for f in frames if f[0] == 0xA]) < 100  # pongs: the latest of a batch


def test_a_deflate_bomb_is_inflated_no_further_than_the_limit(server: RunningServer) -> None:
    """256 MiB of zeros deflate to about 256 KiB: the server inflates at most
    the limit, closes with 1009, and its memory does not grow by the bomb."""
    before = websocket.abuse["message_too_big"]
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = b"\0" * (16 * 1024 * 1024)
    bomb = b"".join(squeezer.compress(zeros) for _ in range(16)) + squeezer.flush(zlib.Z_SYNC_FLUSH)
    rss = psutil.Process().memory_info().rss
    sock = handshake(server.port, deflate=True)
    send_quietly(sock, ws_frame(0x2, bomb[:-4], rsv1=True))
    assert close_code(server_frames(sock)) == 1009
    grew = psutil.Process().memory_info().rss - rss
    print(f"bomb of {len(bomb)} bytes (256 MiB inflated): RSS grew {grew / 1e6:.1f} MB")
    assert grew < 64 * 1024 * 1024
    assert websocket.abuse["message_too_big"] == before + 1


def test_pings_read_together_get_one_pong(server: RunningServer) -> None:
    """500 pings in one write: the latest of each batch read is answered
    (RFC 6455 section 5.5.3), so a ping flood gets back far less than it sends."""
    sock = handshake(server.port)
    pings = b"".join(ws_frame(0x9, b"%08d" % i) for i in range(500))
    sock.sendall(pings)
    answer = b""
    while not answer.endswith(b"00000499"):
        answer += sock.recv(65536)
    pongs = [answer[at + 2 : at + 10] for at in range(0, len(answer), 10)]
    assert 1 <= len(pongs) < 50 and all(answer[at] == 0x8A for at in range(0, len(answer), 10))
    sock.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(ws_frame(0x1, b"\xff\xfe bad"), 1007, id="invalid-utf8"),
        pytest.param(ws_frame(0x1, b"ok \xe2\x82", fin=True), 1007, id="truncated-utf8"),
        pytest.param(ws_frame(0x8, struct.pack(">H", 1005)), 1002, id="close-1005"),
        pytest.param(ws_frame(0x8, struct.pack(">H", 999)), 1002, id="close-999"),
        pytest.param(ws_frame(0x8, b"\x03"), 1002, id="close-one-byte"),
        pytest.param(ws_frame(0x9, b"x" * 126), 1002, id="control-over-125"),
        pytest.param(ws_frame(0x9, b"x", fin=False), 1002, id="fragmented-ping"),
        pytest.param(ws_frame(0x3, b"x"), 1002, id="reserved-opcode"),
        pytest.param(ws_frame(0x0, b"x"), 1002, id="continuation-first"),
        pytest.param(bytes([0x81, 0x02]) + b"hi", 1002, id="unmasked"),
    ],
)
def test_bad_frames_close_with_the_code_they_deserve(
    server: RunningServer, frame: bytes, code: int
) -> None:
    before = websocket.abuse["protocol_error"]
    sock = handshake(server.port)
    send_quietly(sock, frame)
    assert close_code(server_frames(sock)) == code
    assert websocket.abuse["protocol_error"] == before + 1


def test_the_limit_is_told_to_the_websockets_client(server: RunningServer) -> None:
    async def main() -> tuple[str, int | None]:
        async with connect(f"ws://127.0.0.1:{server.port}/", max_size=None) as client:
            await client.send(b"a" * 1000)
            first = str(await client.recv())
            await client.send(b"b" * (LIMIT + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv()
            assert closed.value.rcvd is not None
            return first, closed.value.rcvd.code

    assert asyncio.run(main()) == ("1000", 1009)


def test_a_client_that_never_reads_is_given_up_on(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(websocket, "SEND_TIMEOUT", 0.5)
    before = websocket.abuse["send_stalled"]
    stalled_sends.clear()
    sock = handshake(server.port, path="/flood")
    deadline = time.monotonic() + 20
    while not stalled_sends and time.monotonic() < deadline:
        time.sleep(0.05)
    sock.close()
    assert stalled_sends and "read nothing" in stalled_sends[0]
    assert websocket.abuse["send_stalled"] == before + 1


def test_a_connection_s_flood_of_frames_takes_turns(server: RunningServer) -> None:
    """80,000 one-byte fragments of one message: the server's loop is never
    held long by them (without turns: over 100 ms of CPU at a time),
    and the message still arrives whole."""
    gaps: list[float] = []

    async def watch() -> None:
        # The server loop's own CPU time between two turns of this watcher:
        # time the thread spends waiting for a CPU on a busy machine is not
        # the server holding its loop, so wall-clock gaps would not do.
        while True:
            began = time.thread_time()
            await asyncio.sleep(0.001)
            gaps.append(time.thread_time() - began)

    watcher = asyncio.run_coroutine_threadsafe(watch(), server.loop)
    pieces = ws_frame(0x0, b"x", fin=False) * 80_000
    flood = ws_frame(0x1, b"", fin=False) + pieces + ws_frame(0x0, b"end")
    received.clear()
    try:
        for _ in range(2):
            sock = handshake(server.port)
            sock.sendall(flood + ws_frame(0x8, struct.pack(">H", 1000)))
            assert close_code(server_frames(sock)) == 1000
    finally:
        watcher.cancel()
    assert received == [80_003, 80_003]
    longest = max(gaps)
    print(f"longest turn of the server's loop during the flood: {longest * 1000:.1f} ms")
    assert longest < 0.08, f"the loop was held {longest * 1000:.0f} ms"
