"""HTTP/2 with prior knowledge (h2c): curl as the client for requests, bodies
and multiplexing; the h2 library as a raw client for flow control and the
abuse cases (rapid reset, SETTINGS flood)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

import looming.http.http2  # noqa: F401  (imported once here, see below)
from looming.http import AsgiAdapter

from .serving import RunningServer, serve_in_thread, wait_until_stalled

# The server imports its http2 module when the first connection needs it, in
# the server's thread; imported here first, it is not compiled there while
# pytest compiles in the main thread (CPython 3.11's AST state is shared, and
# compiling in two threads at once fails with "recursion depth mismatch").

produced: list[int] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        digest, size, more = hashlib.sha256(), 0, True
        while more:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = f"{scope['http_version']} {size} {digest.hexdigest()}".encode()
    elif path == "/big":
        body = bytes(range(256)) * 4096  # 1 MiB
    elif path == "/slow":
        await asyncio.sleep(1.0)
        body = b"finished"
    elif path == "/endless":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:
            await send({"type": "http.response.body", "body": b"y" * 16384, "more_body": True})
            produced.append(1)
    else:
        body = f"hello over {scope['http_version']}".encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"x-path", path.encode())]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread(lambda: AsgiAdapter(app)) as running:
        yield running


def curl(*args: str) -> bytes:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", "--http2-prior-knowledge", *args],
        capture_output=True,
        check=True,
    ).stdout


def test_curl_over_h2c(server: RunningServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    # (curl 7.88 fails to reuse a prior-knowledge connection for a second URL,
    # against hypercorn too: one URL per curl; multiplexing is tested below.)
    out = curl("--write-out", "\n%{http_version} %{http_code}", f"{base}/a")
    assert out == b"hello over 2\n2 200"
    assert curl(f"{base}/big") == bytes(range(256)) * 4096


def test_streams_are_multiplexed(server: RunningServer) -> None:
    sock, conn = raw_client(server.port)
    for stream_id, path in ((1, "/one"), (3, "/two"), (5, "/big")):
        conn.send_headers(stream_id, headers(path), end_stream=True)
    sock.sendall(conn.data_to_send())
    bodies: dict[int, bytes] = {1: b"", 3: b"", 5: b""}
    ended: set[int] = set()
    while ended != {1, 3, 5}:
        for event in conn.receive_data(sock.recv(65536)):
            if isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
        sock.sendall(conn.data_to_send())
    assert bodies == {1: b"hello over 2", 3: b"hello over 2", 5: bytes(range(256)) * 4096}
    sock.close()


def test_request_body_larger_than_the_window(server: RunningServer, tmp_path: Path) -> None:
    data = hashlib.sha256(b"x").digest() * 20000  # 640 KiB, ten initial windows
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    out = curl("--data-binary", f"@{upload}", f"http://127.0.0.1:{server.port}/echo")
    assert out == f"2 {len(data)} {hashlib.sha256(data).hexdigest()}".encode()


def raw_client(port: int) -> tuple[socket.socket, h2.connection.H2Connection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def headers(path: str) -> list[tuple[str, str]]:
    return [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]


def read_until_closed(sock: socket.socket, conn: h2.connection.H2Connection) -> list[Any]:
    events: list[Any] = []
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return events
        if not data:
            return events
        try:
            events += conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            return events


def test_rapid_reset_gets_goaway(server: RunningServer) -> None:
    sock, conn = raw_client(server.port)
    for i in range(400):
        stream_id = 1 + 2 * i
        conn.send_headers(stream_id, headers("/"), end_stream=True)
        conn.reset_stream(stream_id)
    sock.sendall(conn.data_to_send())
    events = read_until_closed(sock, conn)
    goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaways and goaways[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    sock.close()


def test_settings_flood_gets_goaway(server: RunningServer) -> None:
    sock, _conn = raw_client(server.port)
    frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame
    with pytest.raises(OSError):
        for _ in range(5):
            sock.sendall(frame * 1000)
            time.sleep(0.05)
    sock.close()


def test_a_client_that_opens_no_window_holds_the_sender(server: RunningServer) -> None:
    sock, conn = raw_client(server.port)
    conn.send_headers(1, headers("/endless"), end_stream=True)
    sock.sendall(conn.data_to_send())
    stalled = wait_until_stalled(lambda: len(produced))
    # The default window is 64 KiB: the app is held in send() after a few chunks.
    assert stalled * 16384 < 256 * 1024
    sock.close()


def test_h2load_many_streams_on_few_connections(server: RunningServer) -> None:
    done = subprocess.run(
        ["h2load", "-n", "400", "-c", "4", "-m", "20", f"http://127.0.0.1:{server.port}/h2load"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "400 succeeded, 0 failed, 0 errored" in done.stdout, done.stdout
    assert "status codes: 400 2xx" in done.stdout, done.stdout


def test_h2_over_looming_tls_with_alpn(tmp_path: Path) -> None:
    # The HTTPS example with h2 offered first in ALPN: curl negotiates it and
    # the server, seeing the HTTP/2 preface inside TLS, serves HTTP/2.
    from tests.config.tooling import copy_example, looming, running

    app = copy_example("https_website", tmp_path)
    config = app / "config.py"
    config.write_text(config.read_text().replace('alpn=("http/1.1",)', 'alpn=("h2", "http/1.1")'))
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    ready = r"serving https://(?:localhost|127\.0\.0\.1):(\d+)"
    with running(app, "--port", "0", ready=ready) as (_proc, match):
        url = f"https://localhost:{match.group(1)}/"
        common = ["curl", "--silent", "--show-error", "--max-time", "20"]
        common += ["--cacert", str(app / "ca.pem"), "--write-out", "\n%{http_version} %{http_code}"]
        for flag, version in (("--http2", b"2"), ("--http1.1", b"1.1")):
            out = subprocess.run([*common, flag, url], capture_output=True, check=True).stdout
            body, _, trailer = out.rpartition(b"\n")
            assert trailer == version + b" 200"
            assert body == (app / "htdocs" / "index.html").read_bytes()


def test_curl_upgrades_to_h2c(server: RunningServer) -> None:
    # curl --http2 on an http:// URL asks for "Upgrade: h2c" with HTTP2-Settings.
    out = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", "--http2",
         "--write-out", "\n%{http_version} %{http_code}", f"http://127.0.0.1:{server.port}/up"],
        capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    assert out == b"hello over 2\n2 200"


def test_graceful_stop_sends_goaway_and_finishes_open_streams() -> None:
    with serve_in_thread(lambda: AsgiAdapter(app)) as running:
        url = f"http://127.0.0.1:{running.port}/slow"
        fetch = subprocess.Popen(
            ["curl", "--silent", "--show-error", "--max-time", "20", "--http2-prior-knowledge",
             "--write-out", "\n%{http_version} %{http_code}", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(0.5)
        stopping = asyncio.run_coroutine_threadsafe(running.server.shutdown(5.0), running.loop)
        out, err = fetch.communicate(timeout=20)
        stopping.result(10)
        assert running.server.connections_open == 0
    assert fetch.returncode == 0, err
    assert out == b"finished\n2 200"


def test_over_h2c_a_response_does_not_wait_for_its_background_task() -> None:
    from .test_background import PROMPT, Log, starlette_app, under_looming

    done = Log()
    with under_looming(starlette_app(done)) as port:
        began = time.monotonic()
        out = subprocess.run(
            ["curl", "--silent", "--show-error", "--max-time", "20", "--http2-prior-knowledge",
             "--write-out", "\n%{http_version}", f"http://127.0.0.1:{port}/slow"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        took = time.monotonic() - began
        print(f"looming h2c /slow: {took * 1000:.1f} ms (curl, with its start)")
        assert out == b"sent\n\n2"
        assert took < PROMPT, f"the h2 response took {took:.2f} s"
        assert not done.ended
        done.wait_ended(1)
