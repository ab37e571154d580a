"""Request smuggling attempts against the ASGI server, on both request parsers.

Each request hides a second request (``GET /smuggled``) in bytes whose
framing is ambiguous or broken: both Content-Length and Transfer-Encoding,
a repeated or malformed Content-Length, a folded header line, a bad chunk
size. The server must answer 400 (or 501 for an unknown coding) or close
the connection, and must never answer the hidden request.
"""

from __future__ import annotations

import logging
import socket

import pytest

from looming.http import ServerConfig
from looming.http.asgi import AsgiAdapter, Receive, Scope, Send
from looming.http.message import Request, Response
from tests.http.serving import serve_in_thread

HIDDEN = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def _post(headers: bytes, body: bytes) -> bytes:
    return b"POST /outer HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body


CASES = {
    "cl-and-te": _post(
        b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + HIDDEN
    ),
    "te-and-cl": _post(
        b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", b"0\r\n\r\n" + HIDDEN
    ),
    "two-content-lengths": _post(b"Content-Length: 0\r\nContent-Length: 36\r\n", HIDDEN),
    "same-content-length-twice": _post(b"Content-Length: 36\r\nContent-Length: 36\r\n", HIDDEN),
    "content-length-list": _post(b"Content-Length: 36, 36\r\n", HIDDEN),
    "content-length-plus": _post(b"Content-Length: +36\r\n", HIDDEN),
    "content-length-hex": _post(b"Content-Length: 0x24\r\n", HIDDEN),
    "space-before-colon": _post(b"Content-Length : 0\r\n", HIDDEN),
    "folded-transfer-encoding": _post(
        b"X-A: a\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 36\r\n", HIDDEN
    ),
    "unknown-coding": _post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + HIDDEN),
    "chunked-not-last": _post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n" + HIDDEN),
    "bad-chunk-size": _post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n" + HIDDEN),
    "negative-chunk-size": _post(
        b"Transfer-Encoding: chunked\r\n", b"-3\r\nabc\r\n0\r\n\r\n" + HIDDEN
    ),
    "overflowing-chunk-size": _post(
        b"Transfer-Encoding: chunked\r\n", b"10000000000000003\r\nabc\r\n0\r\n\r\n" + HIDDEN
    ),
    "chunk-size-of-20-digits": _post(
        b"Transfer-Encoding: chunked\r\n", b"00010000000000000003\r\nabc\r\n0\r\n\r\n" + HIDDEN
    ),
    "chunk-longer-than-size": _post(
        b"Transfer-Encoding: chunked\r\n", b"3\r\nabcdef\r\n0\r\n\r\n" + HIDDEN
    ),
}


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    path = str(scope["path"]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"answered " + path})


def _exchange(port: int, data: bytes, wait: float) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed within ``wait`` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            return out, False
        except ConnectionResetError:
            pass
        return out, True


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_ambiguous_framing_is_refused_and_never_smuggles(
    parser: str, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip(parser)
    with serve_in_thread(lambda: AsgiAdapter(_app), ServerConfig(parser=parser)) as server:
        for name, data in CASES.items():
            out, closed = _exchange(server.port, data, 2.0)
            assert b"answered /smuggled" not in out, (parser, name, out)
            assert b"answered /outer" not in out, (parser, name, out)
            status = out.split(b"\r\n", 1)[0]
            assert closed, (parser, name, out)
            assert status in (b"", b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 501 Not Implemented"), (
                parser,
                name,
                out,
            )
    # Bad input is counted and dropped, not logged as the server's failure.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send(
        {
            "type": "http.response.body",
            "body": b"path=%s body=%s;" % (str(scope["path"]).encode(), body),
        }
    )


UPGRADE_HEADS = {
    "unknown-protocol": b"Connection: Upgrade\r\nUpgrade: foo\r\n",
    "h2c-with-body": (
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
    ),
}


@pytest.mark.parametrize("parser", ["h11", "httptools"])
@pytest.mark.parametrize("upgrade", sorted(UPGRADE_HEADS))
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_declined_upgrade_gets_its_body_and_hides_no_request(
    parser: str, upgrade: str, chunked: bool
) -> None:
    """An upgrade the server does not take: the body, framed by its
    Content-Length or chunks, is the app's; the request pipelined behind it
    is answered after it; nothing in the body is read as a request."""
    pytest.importorskip(parser)
    if chunked:
        framing, body = (
            b"Transfer-Encoding: chunked\r\n",
            b"%x\r\n%s\r\n0\r\n\r\n"
            % (
                len(HIDDEN),
                HIDDEN,
            ),
        )
    else:
        framing, body = b"Content-Length: %d\r\n" % len(HIDDEN), HIDDEN
    data = (
        _post(UPGRADE_HEADS[upgrade] + framing, body)
        + b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    with serve_in_thread(lambda: AsgiAdapter(_echo), ServerConfig(parser=parser)) as server:
        out, closed = _exchange(server.port, data, 2.0)
    assert closed, out
    answers = [part.split(b";")[0] for part in out.split(b"path=")[1:]]
    assert answers == [b"/outer body=" + HIDDEN, b"/next body="], out


class _WholeEcho:
    """A handler that takes the body whole, as the static site's does."""

    async def __call__(self, request: Request) -> Response:
        return Response(200, [], b"path=%s body=%s;" % (request.target.encode(), request.body))


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_a_declined_upgrade_to_a_whole_body_handler_hides_no_request(parser: str) -> None:
    pytest.importorskip(parser)
    framing = b"Content-Length: %d\r\n" % len(HIDDEN)
    data = _post(UPGRADE_HEADS["unknown-protocol"] + framing, HIDDEN)
    data += b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with serve_in_thread(_WholeEcho, ServerConfig(parser=parser)) as server:
        out, closed = _exchange(server.port, data, 2.0)
    assert closed, out
    answers = [part.split(b";")[0] for part in out.split(b"path=")[1:]]
    assert answers == [b"/outer body=" + HIDDEN, b"/next body="], out


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_a_declined_upgrade_asking_100_continue_gets_it_and_its_body(parser: str) -> None:
    """The body of a declined upgrade sent only after the 100 Continue (as
    curl --http2 sends a POST): invited, then read as the request's."""
    pytest.importorskip(parser)
    head = _post(
        UPGRADE_HEADS["h2c-with-body"] + b"Expect: 100-continue\r\nContent-Length: 7\r\n", b""
    )
    with (
        serve_in_thread(lambda: AsgiAdapter(_echo), ServerConfig(parser=parser)) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as sock,
    ):
        sock.sendall(head)
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello=1")
        out = b""
        while b";" not in out and (chunk := sock.recv(65536)):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200 "), out
    assert out.endswith(b"path=/outer body=hello=1;"), out
