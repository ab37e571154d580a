"""A WebSocket opening handshake RFC 6455 section 4.2.1 does not allow is
refused with a whole response (400, or 426 naming version 13), counted and
logged at debug level only, and looming accepts exactly the handshakes the
``websockets`` library's server accepts (hypothesis draws the keys and
versions)."""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.server import ServerProtocol

import looming.http.websocket as websocket
from looming.http import AsgiAdapter

from .serving import RunningServer, serve_in_thread


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread(lambda: AsgiAdapter(app)) as running:
        yield running


def head(keys: list[bytes], versions: list[bytes]) -> bytes:
    lines = [b"GET /ws HTTP/1.1", b"Host: x", b"Upgrade: websocket", b"Connection: Upgrade"]
    lines += [b"Sec-WebSocket-Key: " + key for key in keys]
    lines += [b"Sec-WebSocket-Version: " + version for version in versions]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def answer(port: int, request: bytes) -> tuple[int, dict[bytes, bytes]]:
    """The status and header fields of the server's answer to ``request``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed without a response (got {data!r})"
            data += chunk
    status_line, *fields = data.split(b"\r\n\r\n")[0].split(b"\r\n")
    headers = dict(field.lower().split(b": ", 1) for field in fields)
    return int(status_line.split()[1]), headers


def websockets_accepts(request: bytes) -> bool:
    """Whether the websockets library's server accepts this handshake."""
    protocol = ServerProtocol()
    protocol.receive_data(request)
    [parsed] = protocol.events_received()
    return protocol.accept(parsed).status_code == 101  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keys", "versions", "status"),
    [
        pytest.param([], [b"13"], 400, id="no-key"),
        pytest.param([b"short"], [b"13"], 400, id="key-short"),
        pytest.param([base64.b64encode(b"x" * 15)], [b"13"], 400, id="key-15-bytes"),
        pytest.param(
            [b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZQ=="], [b"13"], 400, id="two-keys"
        ),
        pytest.param([b"dGhlIHNhbXBsZSBub25jZQ=="], [], 400, id="no-version"),
        pytest.param([b"dGhlIHNhbXBsZSBub25jZQ=="], [b"8"], 426, id="version-8"),
        pytest.param([b"dGhlIHNhbXBsZSBub25jZQ=="], [b"13, 8"], 426, id="two-versions"),
    ],
)
def test_a_bad_handshake_is_refused_without_a_traceback(
    server: RunningServer,
    caplog: pytest.LogCaptureFixture,
    keys: list[bytes],
    versions: list[bytes],
    status: int,
) -> None:
    before = websocket.abuse["bad_handshake"]
    request = head(keys, versions)
    with caplog.at_level(logging.DEBUG, logger="looming"):
        got, headers = answer(server.port, request)
    assert got == status
    assert not websockets_accepts(request)
    assert headers[b"content-length"] == b"0"
    if versions != [b"13"]:
        assert headers[b"sec-websocket-version"] == b"13"
    if status == 426:
        assert headers[b"upgrade"] == b"websocket"
    assert websocket.abuse["bad_handshake"] == before + 1
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == []
    refused = [r for r in caplog.records if "refused websocket handshake" in r.getMessage()]
    assert len(refused) == 1


BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
keys = st.one_of(
    st.binary(min_size=0, max_size=24).map(base64.b64encode),
    st.text(BASE64, min_size=1, max_size=30).map(str.encode),
    st.text(BASE64 + "!*-_. ", min_size=1, max_size=30).map(lambda text: text.strip().encode()),
).filter(bool)
versions = st.sampled_from([b"13", b"8", b"12", b"14", b"013", b"13, 13", b"x"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.lists(keys, min_size=0, max_size=2),
    versions=st.lists(versions, min_size=0, max_size=2),
)
def test_accepted_exactly_when_the_websockets_server_accepts(
    server: RunningServer, keys: list[bytes], versions: list[bytes]
) -> None:
    request = head(keys, versions)
    status, _ = answer(server.port, request)
    assert (status == 101) == websockets_accepts(request), (request, status)
    assert status in (101, 400, 426)
