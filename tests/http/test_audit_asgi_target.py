"""The request target as the application gets it, alike on every path (the
fast path, the usual path on httptools and on h11) and as uvicorn gives it:
a ``#fragment`` is no part of the path or the query (RFC 9110 section 7.1),
and a request line without a version is a 400 on every path (as uvicorn on
h11 answers; on httptools it serves it)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.http import AsgiAdapter, ServerConfig

from .serving import serve_in_thread
from .test_background import under_uvicorn

PATHS = {
    "fast": ("httptools", True),
    "usual-httptools": ("httptools", False),
    "usual-h11": ("h11", False),
}


async def show_scope(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps(
        {
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query_string": scope["query_string"].decode("latin-1"),
        }
    ).encode()
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": length})
    await send({"type": "http.response.body", "body": body})


def exchange(port: int, data: bytes) -> bytes:
    """All the server answers to ``data``, up to its close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            out += piece
    return out


def status_and_body(port: int, data: bytes) -> tuple[bytes, bytes]:
    answer = exchange(port, data)
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b" ", 2)[1] if head else b"", body


@pytest.fixture(scope="module", params=list(PATHS))
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    parser, fast = PATHS[request.param]
    config = ServerConfig(parser=parser, fast_path=fast)
    with serve_in_thread(lambda: AsgiAdapter(show_scope), config) as running:
        yield running.port


@pytest.fixture(scope="module")
def uvicorn_port() -> Iterator[int]:
    with under_uvicorn(show_scope) as port:
        yield port


def get(target: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/scope?a=1#frag", "/scope", "a=1"),
        (b"/async#frag", "/async", ""),
        (b"/a%20b#x?y=1", "/a b", ""),
        (b"/p?q=#", "/p", "q="),
        (b"/p#", "/p", ""),
    ],
)
def test_the_fragment_is_dropped(port: int, target: bytes, path: str, query: str) -> None:
    status, body = status_and_body(port, get(target))
    assert status == b"200", body
    scope = json.loads(body)
    assert (scope["path"], scope["query_string"]) == (path, query)
    assert "#" not in scope["raw_path"]


_target_bytes = st.sampled_from(list(b"abcXYZ09-._~!$&'()*+,;=:@/%?#"))
targets = st.lists(_target_bytes, max_size=16).map(lambda b: b"/" + bytes(b))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=targets)
def test_scope_of_any_target_is_uvicorns(port: int, uvicorn_port: int, target: bytes) -> None:
    """The differential: path, raw path and query as uvicorn (httptools) gives
    them, or the same refusal."""
    ours = status_and_body(port, get(target))
    theirs = status_and_body(uvicorn_port, get(target))
    assert ours[0] == theirs[0], (target, ours, theirs)
    if ours[0] == b"200":
        assert json.loads(ours[1]) == json.loads(theirs[1]), target


@pytest.mark.parametrize(
    "line", [b"GET /async\r\n\r\n", b"GET /\r\nHost: x\r\n\r\n", b"GET /a?b=1\r\n\r\n"]
)
def test_a_request_line_without_version_is_400(port: int, line: bytes) -> None:
    """llhttp takes such a line as HTTP/0.9 (where the server said 505),
    h11 refuses it with 400: every path now answers as h11."""
    assert status_and_body(port, line)[0] == b"400"


@pytest.mark.slow
def test_uvicorn_on_h11_refuses_a_line_without_version_too() -> None:
    with under_uvicorn(show_scope, http="h11") as uvicorn_port:
        assert status_and_body(uvicorn_port, b"GET /async\r\n\r\n")[0] == b"400"
