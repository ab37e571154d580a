"""The opt-in /metrics endpoint shows HTTP/2 refusals and websockets closed
for abuse, by reason, as they happen: a refused stream and a websocket
protocol error are caused here and read back from the endpoint."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

import looming.http.http2 as http2
from looming.http import AsgiAdapter
from looming.http.service import Metrics, MetricsEndpoint

from .serving import RunningServer, serve_in_thread

SAMPLE = re.compile(r'^(looming_(?:http2|websocket)_abuse_total)\{reason="(\w+)"\} (\d+)$', re.M)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    if scope["type"] == "http":
        await asyncio.sleep(0.3)  # holds its stream while the next one arrives
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    monkeypatch.setattr(http2, "MAX_CONCURRENT_STREAMS", 1)
    metrics = Metrics()
    with serve_in_thread(lambda: MetricsEndpoint(AsgiAdapter(app), metrics, "/metrics")) as running:
        metrics.server = running.server
        yield running


def abuse_counts(port: int) -> dict[tuple[str, str], int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(name, reason): int(value) for name, reason, value in SAMPLE.findall(text)}


def refuse_one_stream(port: int) -> None:
    """Two streams at once where one is allowed: the second is refused."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    fields = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    conn.send_headers(1, fields, end_stream=True)
    conn.send_headers(3, fields, end_stream=True)
    sock.sendall(conn.data_to_send())
    while True:
        events = conn.receive_data(sock.recv(65536))
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        if resets:
            assert [(e.stream_id, e.error_code) for e in resets] == [
                (3, h2.errors.ErrorCodes.REFUSED_STREAM)
            ]
            sock.close()
            return


def break_a_websocket(port: int) -> None:
    """A client frame without a mask (RFC 6455 section 5.1): closed with 1002."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 ")
    sock.sendall(b"\x81\x02hi")  # FIN, text, unmasked
    closing = sock.recv(4096)
    assert closing[:1] == b"\x88" and closing[2:4] == (1002).to_bytes(2, "big")
    sock.close()


def test_metrics_show_http2_refusals_and_websocket_abuse_by_reason(
    server: RunningServer,
) -> None:
    before = abuse_counts(server.port)
    for reason in http2.abuse.keys() | {"refused_stream", "rapid_reset", "control_flood"}:
        assert ("looming_http2_abuse_total", reason) in before
    refuse_one_stream(server.port)
    break_a_websocket(server.port)
    after = abuse_counts(server.port)
    changed = {
        key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)
    }
    assert changed == {
        ("looming_http2_abuse_total", "refused_stream"): 1,
        ("looming_websocket_abuse_total", "protocol_error"): 1,
    }
