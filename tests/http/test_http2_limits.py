"""HTTP/2 stream limits (RFC 9113 section 5.1.2): a stream over
SETTINGS_MAX_CONCURRENT_STREAMS is refused with RST_STREAM (REFUSED_STREAM)
and the connection and its other streams go on; refusals still count towards
the rapid-reset budget (CVE-2023-44487), and a flood of them gets GOAWAY
(ENHANCE_YOUR_CALM). The h2 library is the raw client (h2load: test_http2_h2load.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest

import looming.http.http2 as http2
from looming.http import AsgiAdapter

from .serving import RunningServer, serve_in_thread

REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM
LIMIT = 6
"""The servers here advertise this many streams at once (the module's
limit, patched while they run: it is read as each connection starts)."""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/slow":
        await asyncio.sleep(0.3)  # long enough to hold its stream while others arrive
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": path.encode()})


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    monkeypatch.setattr(http2, "MAX_CONCURRENT_STREAMS", LIMIT)
    with serve_in_thread(lambda: AsgiAdapter(app)) as running:
        yield running


def raw_client(port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    return sock, conn


def request(conn: h2.connection.H2Connection, stream_id: int, path: str) -> None:
    fields = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]
    conn.send_headers(stream_id, fields, end_stream=True)


def outcomes(
    sock: socket.socket, conn: h2.connection.H2Connection, streams: set[int]
) -> tuple[dict[int, bytes], dict[int, int], list[int]]:
    """Read until each of ``streams`` ended or was reset: the bodies of those
    that ended, the error codes of those reset, GOAWAY codes seen."""
    bodies: dict[int, bytes] = {}
    resets: dict[int, int] = {}
    goaways: list[int] = []
    ended: set[int] = set()
    while not streams <= ended | set(resets) and not goaways:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                resets[event.stream_id] = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                goaways.append(event.error_code)
        sock.sendall(conn.data_to_send())
    return {s: bodies.get(s, b"") for s in ended}, resets, goaways


def test_streams_over_the_limit_are_refused_and_the_connection_goes_on(
    server: RunningServer,
) -> None:
    before = http2.abuse["refused_stream"]
    sock, conn = raw_client(server.port)
    # Sent before the server's SETTINGS are read, as h2load and browsers do:
    # the client does not know the limit yet.
    ids = [1 + 2 * i for i in range(LIMIT + 4)]
    for stream_id in ids:
        request(conn, stream_id, "/slow")
    sock.sendall(conn.data_to_send())
    bodies, resets, goaways = outcomes(sock, conn, set(ids))
    assert goaways == []
    assert resets == {stream_id: REFUSED for stream_id in ids[LIMIT:]}
    assert bodies == {stream_id: b"/slow" for stream_id in ids[:LIMIT]}
    assert http2.abuse["refused_stream"] == before + 4
    # The same connection serves the next streams (now within the limit).
    later = [ids[-1] + 2 * i for i in range(1, LIMIT + 1)]
    for stream_id in later:
        request(conn, stream_id, "/again")
    sock.sendall(conn.data_to_send())
    bodies, resets, goaways = outcomes(sock, conn, set(later))
    assert (goaways, resets) == ([], {})
    assert bodies == {stream_id: b"/again" for stream_id in later}
    sock.close()


def test_refusals_count_towards_the_rapid_reset_budget(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http2, "MAX_RESETS", 20)
    before = http2.abuse["rapid_reset"]
    sock, conn = raw_client(server.port)
    ids = [1 + 2 * i for i in range(LIMIT + 30)]
    for stream_id in ids:
        request(conn, stream_id, "/slow")
    sock.sendall(conn.data_to_send())
    _bodies, resets, goaways = outcomes(sock, conn, set(ids))
    assert goaways == [h2.errors.ErrorCodes.ENHANCE_YOUR_CALM]
    assert set(resets.values()) == {REFUSED} and len(resets) == 21  # the 21st: GOAWAY
    assert http2.abuse["rapid_reset"] == before + 1
    sock.close()


def test_a_stream_over_the_limit_while_the_handlers_run_is_refused(
    server: RunningServer,
) -> None:
    """The client knows the limit (it read the SETTINGS) and still opens one
    more: h2 would have ended the connection (TooManyStreamsError)."""
    sock, conn = raw_client(server.port)
    sock.sendall(conn.data_to_send())
    while conn.remote_settings.max_concurrent_streams != LIMIT:
        conn.receive_data(sock.recv(65536))
    sock.sendall(conn.data_to_send())
    for i in range(LIMIT):
        request(conn, 1 + 2 * i, "/slow")
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        request(conn, 1 + 2 * LIMIT, "/slow")  # the client library will not
    conn.remote_settings = h2.settings.Settings(client=False)  # forget the limit
    request(conn, 1 + 2 * LIMIT, "/slow")
    sock.sendall(conn.data_to_send())
    ids = set(range(1, 2 * LIMIT + 2, 2))
    bodies, resets, goaways = outcomes(sock, conn, ids)
    assert (goaways, resets) == ([], {1 + 2 * LIMIT: REFUSED})
    assert len(bodies) == LIMIT
    sock.close()


def test_answered_streams_still_sending_count_until_the_client_ends_them(
    server: RunningServer,
) -> None:
    """The app answers without reading the body and the client goes on
    sending it: the stream is open (half-closed) and counts against the
    limit until the client ends it, so such streams cannot pile up."""
    sock, conn = raw_client(server.port)
    fields = [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    ids = [1 + 2 * i for i in range(LIMIT)]
    for stream_id in ids:
        conn.send_headers(stream_id, fields)
        conn.send_data(stream_id, b"part of a body")
    sock.sendall(conn.data_to_send())
    bodies, resets, goaways = outcomes(sock, conn, set(ids))
    assert (bodies, resets, goaways) == ({s: b"/" for s in ids}, {}, [])
    conn.remote_settings = h2.settings.Settings(client=False)  # forget the limit
    request(conn, ids[-1] + 2, "/over")
    sock.sendall(conn.data_to_send())
    assert outcomes(sock, conn, {ids[-1] + 2}) == ({}, {ids[-1] + 2: REFUSED}, [])
    conn.send_data(ids[0], b"the rest", end_stream=True)  # one stream fewer open
    request(conn, ids[-1] + 4, "/next")
    sock.sendall(conn.data_to_send())
    assert outcomes(sock, conn, {ids[-1] + 4}) == ({ids[-1] + 4: b"/next"}, {}, [])
    sock.close()
