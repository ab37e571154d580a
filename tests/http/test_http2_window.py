"""The HTTP/2 connection's receive window: raised at the start so that
uploads on several streams are not held to 64 KiB a round trip, and still
the bound of what a connection holds of bodies the application has not read
(acknowledged only as read). The h2 library is the client, driving a
session directly (to see what it holds) and a server over sockets."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from hyperframe.frame import DataFrame

import looming.http.http2 as http2
from looming.http import AsgiAdapter, Request, Response
from looming.http.http2 import CONNECTION_WINDOW, STREAM_WINDOW, H2Session

from .serving import serve_in_thread


class PipeFlow:
    """The session's side of a connection whose other side is the test."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.sent = bytearray()
        self.waiting = False
        """The session has acted on all it was given and waits for more."""

    async def read(self) -> bytes:
        self.waiting = True
        try:
            return await self.inbox.get()
        finally:
            self.waiting = False

    async def write(self, data: bytes) -> None:
        self.sent += data

    async def writev(self, buffers: list[bytes]) -> None:
        self.sent += b"".join(buffers)


class NeverReads:
    """A handler that streams the body and never reads it."""

    streams_request_body = True

    def __init__(self) -> None:
        self.started = 0

    async def __call__(self, request: Request) -> Response:
        self.started += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def post(conn: h2.connection.H2Connection, stream_id: int, path: str = "/") -> None:
    fields = [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "x")]
    conn.send_headers(stream_id, fields)


async def exchange(flow: PipeFlow, conn: h2.connection.H2Connection) -> list[Any]:
    """Hand the client's bytes to the session; the client's events from what
    the session sent back."""
    data = conn.data_to_send()
    if data:
        flow.inbox.put_nowait(data)
    await asyncio.sleep(0)
    while not (flow.waiting and flow.inbox.empty()):
        await asyncio.sleep(0)
    for _ in range(5):  # the handlers started meanwhile get going
        await asyncio.sleep(0)
    sent, flow.sent[:] = bytes(flow.sent), b""
    return conn.receive_data(sent) if sent else []


def start(handler: Any) -> tuple[PipeFlow, H2Session, h2.connection.H2Connection]:
    flow = PipeFlow()
    session = H2Session(
        flow,  # type: ignore[arg-type]
        handler,
        server_name=b"t",
        date_line=lambda: b"",
        clock=time.monotonic,
    )
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    return flow, session, conn


def test_a_client_the_app_does_not_read_is_held_to_the_connection_window() -> None:
    handler = NeverReads()
    streams = list(range(1, 2 * 12, 2))  # 12 streams: more than the window holds

    async def main() -> tuple[int, int, int]:
        flow, session, conn = start(handler)
        serving = asyncio.get_running_loop().create_task(session.run(b""))
        await exchange(flow, conn)  # the server's SETTINGS and WINDOW_UPDATE
        opened = conn.outbound_flow_control_window
        for stream_id in streams:
            post(conn, stream_id)
        sent = 0
        while True:  # send all that flow control lets the client send
            progress = 0
            for stream_id in streams:
                room = min(conn.local_flow_control_window(stream_id), 16384)
                if room:
                    conn.send_data(stream_id, b"u" * room)
                    progress += room
            sent += progress
            events = await exchange(flow, conn)
            if not progress and not events:
                break
        held = session.held
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        return opened, sent, held

    opened, sent, held = asyncio.run(main())
    assert opened == CONNECTION_WINDOW > STREAM_WINDOW
    assert handler.started == len(streams)
    # The streams took their windows until the connection's was spent:
    # what the client sent is exactly what the session holds, and no more.
    assert sent == held == CONNECTION_WINDOW


def test_data_past_the_connection_window_ends_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http2, "GONE_GRACE", 0.1)
    handler = NeverReads()

    async def main() -> tuple[list[Any], int]:
        flow, session, conn = start(handler)
        serving = asyncio.get_running_loop().create_task(session.run(b""))
        await exchange(flow, conn)
        streams = range(1, 2 * 10, 2)
        for stream_id in streams:
            post(conn, stream_id)
        await exchange(flow, conn)
        over = b""  # each stream's whole window, ignoring the connection's
        for stream_id in streams:
            for _ in range(STREAM_WINDOW // 16383):
                over += DataFrame(stream_id, b"v" * 16383).serialize()
        flow.inbox.put_nowait(over)
        peak = 0
        while not serving.done():
            peak = max(peak, session.held)
            await asyncio.sleep(0)
        return conn.receive_data(bytes(flow.sent)), peak

    before = http2.abuse["protocol_error"]
    events, peak = asyncio.run(main())
    ended = [e.error_code for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert ended == [h2.errors.ErrorCodes.FLOW_CONTROL_ERROR]
    assert http2.abuse["protocol_error"] == before + 1
    assert 0 < peak <= CONNECTION_WINDOW


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    digest, more = hashlib.sha256(), True
    while more:
        message = await receive()
        digest.update(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": digest.hexdigest().encode()})


def send_what_fits(
    conn: h2.connection.H2Connection, bodies: dict[int, bytes], offsets: dict[int, int]
) -> None:
    """Send each body as far as the windows let; end the streams sent whole."""
    for stream_id, body in bodies.items():
        start = offsets[stream_id]
        if start > len(body):
            continue  # sent and ended
        size = min(conn.local_flow_control_window(stream_id), len(body) - start)
        for at in range(start, start + size, 16384):
            conn.send_data(stream_id, body[at : min(at + 16384, start + size)])
        offsets[stream_id] = start + size
        if offsets[stream_id] == len(body):
            conn.end_stream(stream_id)
            offsets[stream_id] += 1


def test_uploads_on_several_streams_of_one_connection_are_not_held_back() -> None:
    bodies = {1 + 2 * i: bytes([i]) * (1024 * 1024 + 7 * i) for i in range(4)}
    with serve_in_thread(lambda: AsgiAdapter(echo)) as running:
        sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        for stream_id in bodies:
            post(conn, stream_id, "/echo")
        offsets = dict.fromkeys(bodies, 0)
        answers: dict[int, bytes] = {}
        in_flight = 0
        while len(answers) < len(bodies) or any(not a.endswith(b"$") for a in answers.values()):
            sock.sendall(conn.data_to_send())
            for event in conn.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.DataReceived):
                    answers[event.stream_id] = answers.get(event.stream_id, b"") + event.data
                elif isinstance(event, h2.events.StreamEnded):
                    answers[event.stream_id] = answers.get(event.stream_id, b"") + b"$"
            send_what_fits(conn, bodies, offsets)
            # Sent and not yet acknowledged, across the streams:
            in_flight = max(in_flight, CONNECTION_WINDOW - conn.outbound_flow_control_window)
        sock.close()
    assert answers == {s: hashlib.sha256(b).hexdigest().encode() + b"$" for s, b in bodies.items()}
    # More than one stream's window in flight at once: with the connection's
    # window left at 65,535 there could not be.
    assert in_flight > 2 * STREAM_WINDOW
