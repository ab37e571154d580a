"""Request bodies over the buffered-body cap: streamed to an ASGI app in
full; refused with 413 only where the body would be held whole."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from looming.http import HttpServer, ServerConfig
from looming.http.asgi import AsgiAdapter
from looming.http.message import Request, Response
from looming.http.service import HttpSettings
from tests.http.serving import serve_in_thread

SIZE = 20 * 1024 * 1024  # over the default cap of 16 MiB


async def _count(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    total = 0
    while True:
        message = await receive()
        total += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"got %d" % total})


def _post(port: int, size: int, chunked: bool) -> bytes:
    piece = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % size
        sock.sendall(
            b"POST /up HTTP/1.1\r\nhost: x\r\nconnection: close\r\n" + framing + b"\r\n\r\n"
        )
        try:
            for _ in range(size // len(piece)):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end: the answer says why
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


@pytest.mark.parametrize("parser", ["h11", "httptools"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_streamed_body_has_no_whole_body_cap(parser: str, chunked: bool) -> None:
    pytest.importorskip(parser)
    with serve_in_thread(lambda: AsgiAdapter(_count), ServerConfig(parser=parser)) as running:
        out = _post(running.port, SIZE, chunked)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"got %d" % SIZE), out[:200]


class _Whole:
    """A handler that takes the body whole (not streamed)."""

    async def __call__(self, request: Request) -> Response:
        return Response(200, [], b"got %d" % len(request.body))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_held_whole_is_capped_by_max_body_size(chunked: bool) -> None:
    settings = HttpSettings.from_keys(max_body_size=2 * 1024 * 1024)
    config = ServerConfig(max_body_bytes=settings.max_body_size)
    with serve_in_thread(_Whole, config) as running:
        assert isinstance(running.server, HttpServer)
        assert _post(running.port, 2 * 1024 * 1024, chunked).endswith(b"got 2097152")
        out = _post(running.port, 3 * 1024 * 1024, chunked)
    assert out.startswith(b"HTTP/1.1 413 "), out[:200]


CURL_H2 = ["curl", "--silent", "--show-error", "--max-time", "20", "--http2-prior-knowledge"]


def _curl_h2(url: str, upload: Path) -> bytes:
    return subprocess.run(
        [*CURL_H2, "--data-binary", f"@{upload}", "--write-out", " %{http_code}", url],
        capture_output=True,
        check=True,
    ).stdout


def test_http2_applies_the_same_rules(tmp_path: Path) -> None:
    """Over h2c: a body streamed to an ASGI app has no cap; one held whole
    gets 413 over --max-body-size, as on HTTP/1.1."""
    pytest.importorskip("h2")
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"x" * (2 * 1024 * 1024))
    large.write_bytes(b"x" * SIZE)
    with serve_in_thread(lambda: AsgiAdapter(_count)) as running:
        assert _curl_h2(f"{running.url}/up", large) == b"got %d 200" % SIZE
    config = ServerConfig(
        max_body_bytes=HttpSettings.from_keys(max_body_size=3 << 20).max_body_size
    )
    with serve_in_thread(_Whole, config) as running:
        assert _curl_h2(f"{running.url}/up", small) == b"got 2097152 200"
        assert _curl_h2(f"{running.url}/up", large).endswith(b" 413")
