"""A response the application gets wrong is its error, never covered up: a
declared Content-Length differing from the body it sends, a second
``http.response.start``, trailers it did not announce. The server logs one
line and answers 500 (and closes) when nothing was sent yet, else closes
after what was sent; it never sends bytes that disagree with the declared
length, so no client takes a wrong body for a whole one. On the fast path,
the usual path (httptools, h11), beside uvicorn."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, MutableMapping
from typing import Any

import h11
import pytest

from looming.http import AsgiAdapter, ServerConfig

from .serving import serve_in_thread
from .test_background import under_uvicorn

PATHS = {
    "fast": ("httptools", True),
    "usual-httptools": ("httptools", False),
    "usual-h11": ("h11", False),
}


def start(length: int | None = None, trailers: bool = False) -> dict[str, Any]:
    headers = [] if length is None else [(b"content-length", b"%d" % length)]
    return {"type": "http.response.start", "status": 200, "headers": headers, "trailers": trailers}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


ROUTES: dict[str, list[dict[str, Any]]] = {
    "/short": [start(10), body(b"abc")],
    "/long": [start(2), body(b"abcdef")],
    "/double-start": [start(), start()],
    "/start-after-body": [start(), body(b"part", more=True), start()],
    "/unannounced-trailers": [
        start(),
        body(b"part", more=True),
        {"type": "http.response.trailers", "headers": []},
    ],
    "/stream-short": [start(10), body(b"abc", more=True), body(b"")],
    "/stream-long": [start(2), body(b"ab", more=True), body(b"cd")],
    "/fine": [start(4), body(b"fine")],
}
WHOLE_AS_DECLARED = {"/fine": b"fine", "/stream-long": b"ab"}
"""Paths whose client may get a whole 200: the body the application declared."""


async def mistaken(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    for message in ROUTES[scope["path"]]:
        try:
            await send(message)
        except Exception:
            return  # (uvicorn raises; looming ends the response)


def outcome(port: int, path: str) -> tuple[str, int | None, bytes]:
    """("whole", status, body) for a complete response, ("cut", status, body
    so far) for one the connection ended midway, as a client reads them."""
    client = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(client.send(h11.Request(method="GET", target=path, headers=[("Host", "x")])))
        status: int | None = None
        data = b""
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError:
                return "cut", status, data
            if event is h11.NEED_DATA:
                try:
                    client.receive_data(sock.recv(65536))
                except ConnectionResetError:
                    client.receive_data(b"")
                continue
            if type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.Data:
                data += event.data
            elif type(event) is h11.EndOfMessage:
                return "whole", status, data
            elif type(event) is h11.ConnectionClosed:
                return "cut", status, data


@pytest.fixture(scope="module", params=list(PATHS))
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    parser, fast = PATHS[request.param]
    config = ServerConfig(parser=parser, fast_path=fast)
    with serve_in_thread(lambda: AsgiAdapter(mistaken), config) as running:
        yield running.port


@pytest.fixture(scope="module")
def uvicorn_port() -> Iterator[int]:
    with under_uvicorn(mistaken) as port:
        yield port


@pytest.mark.parametrize("path", ["/short", "/long", "/double-start"])
def test_nothing_sent_yet_is_a_500_and_a_logged_error(
    port: int, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="looming"):
        assert outcome(port, path) == ("whole", 500, b"500 Internal Server Error\n")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None, [r.getMessage() for r in errors]


@pytest.mark.parametrize("path", ["/start-after-body", "/unannounced-trailers"])
def test_after_a_part_the_response_is_cut(
    port: int, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="looming"):
        assert outcome(port, path) == ("cut", 200, b"part")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot follow" in errors[0].getMessage()


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_no_wrong_body_passes_for_whole_under_either(
    port: int, uvicorn_port: int, path: str
) -> None:
    """The differential: where uvicorn's client gets no whole 200, neither
    does ours; a whole response is one with the body the application meant."""
    ours, theirs = outcome(port, path), outcome(uvicorn_port, path)
    for got in (ours, theirs):
        if got[0] == "whole" and got[1] == 200:
            assert got[2] == WHOLE_AS_DECLARED.get(path), (path, got)
    if path in ("/start-after-body", "/unannounced-trailers", "/fine", "/stream-short"):
        assert (ours[0], ours[1]) == (theirs[0], theirs[1]), (path, ours, theirs)
    elif path != "/stream-long":  # uvicorn sent the head already: cut; ours nothing yet: 500
        assert theirs[0] == "cut" and ours == ("whole", 500, b"500 Internal Server Error\n")


@pytest.mark.parametrize(
    ("path", "got"),
    [("/stream-short", ("cut", 200, b"abc")), ("/stream-long", ("whole", 200, b"ab"))],
)
def test_a_streamed_body_ends_at_its_declared_length_logged_in_a_line(
    port: int, path: str, got: tuple[str, int, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Not a byte past the declared length; the flow path logs one line (on
    the fast path send() raises to the application, as uvicorn's does)."""
    with caplog.at_level(logging.ERROR, logger="looming"):
        assert outcome(port, path) == got
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) <= 1 and all(r.exc_info is None for r in errors), [
        r.getMessage() for r in errors
    ]
