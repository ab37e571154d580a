"""An application's own ``Connection`` header: the server decides whether
the connection persists and says so once, whichever path answers."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.http import AsgiAdapter, ServerConfig

from .serving import serve_in_thread


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    value = scope["query_string"]
    headers = [(b"content-type", b"text/plain")]
    if value:
        headers.append((b"connection", value.replace(b"+", b" ")))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


def _exchange(port: int, query: bytes, version: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /?" + query + b" HTTP/" + version + b"\r\nhost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        parts = []
        while data := sock.recv(65536):
            parts.append(data)
    return b"".join(parts)


@pytest.mark.parametrize("fast", [True, False])
@settings(max_examples=20, deadline=None)
@given(
    tokens=st.lists(st.sampled_from([b"close", b"keep-alive", b"Close", b"x-other"]), max_size=3),
    version=st.sampled_from([b"1.1", b"1.0"]),
)
def test_the_connection_header_is_written_once(
    fast: bool, tokens: list[bytes], version: bytes
) -> None:
    query = b",+".join(tokens)
    config = ServerConfig(parser="httptools", fast_path=fast)
    with serve_in_thread(lambda: AsgiAdapter(app), config) as running:
        answer = _exchange(running.port, query, version)
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    lines = [line for line in head.split(b"\r\n") if line.startswith(b"connection:")]
    says_close = any(b"close" in line for line in lines)
    assert answer.startswith(b"HTTP/1.1 200")
    # At most one line that only says close or keep-alive, and none twice.
    assert len(lines) == len(set(lines))
    assert sum(line == b"connection: close" for line in lines) <= 1
    if b"close" in {t.lower() for t in tokens} or version == b"1.0":
        assert says_close  # the application's close, or an HTTP/1.0 client's end
    if b"x-other" in tokens:
        assert any(b"x-other" in line for line in lines)  # other tokens kept
