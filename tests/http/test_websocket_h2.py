"""WebSockets over HTTP/2 (RFC 8441): a client made of the h2 library and
wsproto's frame protocol talks to looming and, as the reference, to
hypercorn serving the same application; both must answer alike."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Message, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.handshake import client_extensions_handshake

import looming.http.http2  # noqa: F401  (compiled here, not in the server's thread)
from looming.http import AsgiAdapter

from . import ws_h2_app
from .serving import serve_in_thread

REPO = Path(__file__).resolve().parents[2]


class H2WebSockets:
    """An HTTP/2 connection on which websockets are opened with CONNECT."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.responses: dict[int, dict[bytes, bytes]] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.ws: dict[int, Connection] = {}
        self.received: dict[int, list[Event]] = {}
        self.data: dict[int, bytes] = {}
        self.settings: dict[int, int] = {}
        self._flush()
        self._until(lambda: bool(self.settings))

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _until(self, done: Any, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out"
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            for event in self.conn.receive_data(chunk):
                self._take(event)
            self._flush()

    def _take(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings.update({int(k): v.new_value for k, v in event.changed_settings.items()})
        elif isinstance(event, h2.events.ResponseReceived):
            self.responses[event.stream_id] = {bytes(n): bytes(v) for n, v in event.headers}
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            ws = self.ws.get(event.stream_id)
            if ws is None:
                self.data[event.stream_id] = self.data.get(event.stream_id, b"") + event.data
            elif ws.state is not ConnectionState.CLOSED:
                ws.receive_data(bytes(event.data))
                self.received[event.stream_id].extend(ws.events())
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.reset.add(event.stream_id)

    def open(
        self, path: str, *, protocols: str = "", deflate: bool = False, version: bytes = b"13"
    ) -> tuple[int, dict[bytes, bytes]]:
        """Open a websocket on a new stream: its id and the response's headers."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"localhost"),
            (b"sec-websocket-version", version),
        ]
        if protocols:
            headers.append((b"sec-websocket-protocol", protocols.encode()))
        if deflate:
            headers.append((b"sec-websocket-extensions", b"permessage-deflate"))
        self.conn.send_headers(stream_id, headers)
        self._flush()
        self._until(lambda: stream_id in self.responses)
        response = self.responses[stream_id]
        agreed = response.get(b"sec-websocket-extensions")
        extensions = (
            client_extensions_handshake([agreed.decode()], [PerMessageDeflate()]) if agreed else []
        )
        self.ws[stream_id] = Connection(ConnectionType.CLIENT, extensions)
        self.received[stream_id] = []
        return stream_id, response

    def get(self, path: str) -> bytes:
        """An ordinary GET on its own stream, beside the websockets."""
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", path.encode()),
                (b":authority", b"localhost"),
            ],
            end_stream=True,
        )
        self._flush()
        self._until(lambda: stream_id in self.ended)
        return self.data.get(stream_id, b"")

    def send(self, stream_id: int, event: Event) -> None:
        """Send a websocket frame within the server's flow-control windows."""
        data = self.ws[stream_id].send(event)
        while data:
            self._until(lambda: self.conn.local_flow_control_window(stream_id) > 0)
            size = min(
                len(data),
                self.conn.local_flow_control_window(stream_id),
                self.conn.max_outbound_frame_size,
            )
            self.conn.send_data(stream_id, data[:size])
            self._flush()
            data = data[size:]

    def next_event(self, stream_id: int) -> Event:
        """The next event on the websocket, a message's pieces joined into one."""
        self._until(lambda: bool(self.received[stream_id]))
        event = self.received[stream_id].pop(0)
        while isinstance(event, Message) and not event.message_finished:
            self._until(lambda: bool(self.received[stream_id]))
            more = self.received[stream_id].pop(0)
            assert isinstance(more, type(event)), more
            event = type(event)(event.data + more.data, more.frame_finished, more.message_finished)
        return event

    def wait_ended(self, stream_id: int) -> None:
        self._until(lambda: stream_id in self.ended or stream_id in self.reset)

    def close(self) -> None:
        self.conn.close_connection()
        self._flush()
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=["looming", "hypercorn"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    if request.param == "looming":
        adapter = AsgiAdapter(ws_h2_app.app)
        with serve_in_thread(lambda: adapter) as running:
            yield "looming", running.port
        return
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "tests.http.ws_h2_app:app",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.1)
        yield "hypercorn", port
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_connect_protocol_is_announced(server: tuple[str, int]) -> None:
    client = H2WebSockets(server[1])
    try:
        assert client.settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    finally:
        client.close()


@pytest.mark.parametrize("deflate", [False, True])
def test_echo_with_and_without_compression(server: tuple[str, int], deflate: bool) -> None:
    client = H2WebSockets(server[1])
    try:
        stream_id, response = client.open("/echo", deflate=deflate)
        assert response[b":status"] == b"200"
        assert (b"sec-websocket-extensions" in response) == deflate
        text = "x" * 70_000  # larger than the initial HTTP/2 window
        client.send(stream_id, TextMessage(text))
        reply = client.next_event(stream_id)
        assert isinstance(reply, Message) and reply.message_finished
        assert reply.data == f"/echo:{text}"
        client.send(stream_id, BytesMessage(b"\x00\x01\x02abc"))
        reply = client.next_event(stream_id)
        assert isinstance(reply, BytesMessage) and reply.data == b"cba\x02\x01\x00"
    finally:
        client.close()


def test_a_subprotocol_is_chosen(server: tuple[str, int]) -> None:
    client = H2WebSockets(server[1])
    try:
        _, response = client.open("/echo", protocols="superchat, chat")
        assert response[b"sec-websocket-protocol"] == b"chat"
    finally:
        client.close()


def test_a_refusal_is_403_and_ends_the_stream(server: tuple[str, int]) -> None:
    client = H2WebSockets(server[1])
    try:
        stream_id, response = client.open("/refuse")
        assert response[b":status"] == b"403"
        client.wait_ended(stream_id)
    finally:
        client.close()


def test_the_application_closes_with_its_code(server: tuple[str, int]) -> None:
    client = H2WebSockets(server[1])
    try:
        stream_id, _ = client.open("/echo")
        client.send(stream_id, TextMessage("close:4002"))
        event = client.next_event(stream_id)
        assert isinstance(event, CloseConnection) and event.code == 4002
        client.send(stream_id, event.response())
        client.wait_ended(stream_id)
    finally:
        client.close()


def test_websockets_and_requests_share_one_connection(server: tuple[str, int]) -> None:
    client = H2WebSockets(server[1])
    try:
        streams = [client.open(f"/ws{i}")[0] for i in range(3)]
        assert client.get("/page") == b"plain over HTTP/2\n"
        for i, stream_id in reversed(list(enumerate(streams))):
            client.send(stream_id, TextMessage(f"m{i}"))
        for i, stream_id in enumerate(streams):
            reply = client.next_event(stream_id)
            assert isinstance(reply, TextMessage) and reply.data == f"/ws{i}:m{i}"
    finally:
        client.close()


def test_only_websocket_version_13_is_accepted() -> None:
    # (hypercorn accepts any version over HTTP/2; RFC 6455 4.2.2 asks for 13.)
    adapter = AsgiAdapter(ws_h2_app.app)
    with serve_in_thread(lambda: adapter) as running:
        client = H2WebSockets(running.port)
        stream_id, response = client.open("/echo", version=b"8")
        assert response[b":status"] == b"400"
        assert response[b"sec-websocket-version"] == b"13"
        client.wait_ended(stream_id)
        client.close()


def test_closing_and_resetting_streams_tell_the_application() -> None:
    ws_h2_app.disconnects.clear()
    adapter = AsgiAdapter(ws_h2_app.app)
    with serve_in_thread(lambda: adapter) as running:
        client = H2WebSockets(running.port)
        closing, _ = client.open("/echo")
        client.send(closing, CloseConnection(4001, "bye"))
        event = client.next_event(closing)
        assert isinstance(event, CloseConnection) and event.code == 4001
        client.wait_ended(closing)
        resetting, _ = client.open("/echo")
        client.conn.reset_stream(resetting)
        client._flush()
        deadline = time.monotonic() + 10
        while len(ws_h2_app.disconnects) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ws_h2_app.disconnects == [4001, 1006]
        # The connection goes on serving.
        assert client.get("/after") == b"plain over HTTP/2\n"
        client.close()
