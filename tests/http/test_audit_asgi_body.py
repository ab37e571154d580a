"""A request body the server has whole reaches the application as one
``http.request`` message with ``more_body`` false, as uvicorn sends it; a
body arriving in pieces still adds up, and its last message ends it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.http import AsgiAdapter, ServerConfig

from .serving import serve_in_thread
from .test_background import under_uvicorn

PATHS = {
    "httptools": ("httptools", True),
    "h11": ("h11", False),
}


async def show_messages(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    messages = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        messages.append([message.get("body", b"").decode("latin-1"), message.get("more_body")])
        if not message.get("more_body"):
            break
    body = json.dumps(messages).encode()
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": length})
    await send({"type": "http.response.body", "body": body})


def messages_for(port: int, pieces: list[bytes]) -> list[list[Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(0.02)  # each its own read, mostly
            sock.sendall(piece)
        out = b""
        while b"\r\n\r\n" not in out or len(out.partition(b"\r\n\r\n")[2]) < int(
            out.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0] or b"0"
        ):
            piece = sock.recv(65536)
            if not piece:
                break
            out += piece
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out[:200]
    result: list[list[Any]] = json.loads(body)
    return result


def post(body: bytes, *, chunked: bool = False) -> bytes:
    if chunked:
        framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        return b"POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + framed
    return b"POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.fixture(scope="module", params=list(PATHS))
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    parser, fast = PATHS[request.param]
    config = ServerConfig(parser=parser, fast_path=fast)
    with serve_in_thread(lambda: AsgiAdapter(show_messages), config) as running:
        yield running.port


@pytest.fixture(scope="module")
def uvicorn_port() -> Iterator[int]:
    with under_uvicorn(show_messages) as port:
        yield port


@pytest.mark.parametrize("body", [b"hello", b"x" * 3000, b"a"])
def test_a_whole_body_is_one_message_as_uvicorn_sends_it(
    port: int, uvicorn_port: int, body: bytes
) -> None:
    ours = messages_for(port, [post(body)])
    assert ours == [[body.decode(), False]]
    assert ours == messages_for(uvicorn_port, [post(body)])


def test_a_whole_chunked_body_is_one_message(port: int) -> None:
    assert messages_for(port, [post(b"hello", chunked=True)]) == [["hello", False]]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(min_size=1, max_size=200).map(lambda b: bytes(c % 26 + 97 for c in b)),
    cuts=st.lists(st.integers(1, 400), max_size=3),
    chunked=st.booleans(),
)
def test_a_body_in_pieces_adds_up_and_ends_once(
    port: int, body: bytes, cuts: list[int], chunked: bool
) -> None:
    data = post(body, chunked=chunked)
    points = sorted({c for c in cuts if c < len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    messages = messages_for(port, pieces)
    assert "".join(m[0] for m in messages) == body.decode()
    assert [m[1] for m in messages] == [True] * (len(messages) - 1) + [False]
    assert all(m[0] for m in messages[:-1])  # only the last may be empty
