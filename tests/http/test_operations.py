"""An ASGI unikernel operated as a service: graceful stop on SIGTERM, access
logs, metrics, a connection limit, keys from the environment, and loopback
as the default address. The asgi example is built and run as an artifact."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.http import HttpServer, ServerConfig
from looming.http.message import Request, Response
from tests.config.tooling import copy_example, looming, running

from .serving import serve_in_thread


@pytest.fixture(scope="module")
def asgi_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    app = copy_example("asgi", tmp_path_factory.mktemp("operations"))
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    yield app


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def get(port: int, target: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", target)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_sigterm_finishes_responses_in_flight_then_stops(asgi_app: Path) -> None:
    with running(asgi_app, "--port", "0", ready=r"serving (http://\S+)") as (proc, ready):
        port = port_of(ready.group(1))
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        results: list[tuple[int, bytes]] = []
        slow = threading.Thread(target=lambda: results.append(get(port, "/slow?seconds=1.5")))
        slow.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        # The idle connection is closed at once, the slow response completes.
        started = time.monotonic()
        assert idle.recv(1) == b""
        assert time.monotonic() - started < 3.0  # not the 5 s keep-alive timeout
        slow.join(10)
        assert results == [(200, b"finished\n")]
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert "lifespan shutdown done" in log, log
        assert "Traceback" not in log, log
        # The listener was closed first.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)


def test_shutdown_timeout_cuts_a_response_that_takes_too_long(asgi_app: Path) -> None:
    keys = ("--port", "0", "--shutdown-timeout", "0.3")
    with running(asgi_app, *keys, ready=r"serving (http://\S+)") as (proc, ready):
        port = port_of(ready.group(1))
        errors: list[BaseException] = []

        def fetch() -> None:
            try:
                get(port, "/slow?seconds=30")
            except (OSError, http.client.HTTPException) as error:
                errors.append(error)

        slow = threading.Thread(target=fetch)
        slow.start()
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 5
        slow.join(10)
        assert len(errors) == 1


def test_access_log_json_and_metrics(asgi_app: Path) -> None:
    keys = ("--port", "0", "--access-log", "json", "--metrics", "/metrics")
    with running(asgi_app, *keys, ready=r"serving (http://\S+)") as (proc, ready):
        port = port_of(ready.group(1))
        assert get(port, "/greet/ada")[0] == 200
        assert get(port, "/missing")[0] == 404
        status, text = get(port, "/metrics")
        assert status == 200
        metrics = dict(
            line.rsplit(" ", 1) for line in text.decode().splitlines() if not line.startswith("#")
        )
        assert metrics['looming_http_responses_total{status="2xx"}'] == "1"
        assert metrics['looming_http_responses_total{status="4xx"}'] == "1"
        assert metrics["looming_http_connections_open"] == "1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        records = [
            json.loads(line[line.index("{") :])
            for line in proc.stderr.read().splitlines()
            if "looming.http.access" in line or '"status"' in line
        ]
    assert [(r["method"], r["target"], r["status"]) for r in records[:2]] == [
        ("GET", "/greet/ada", 200),
        ("GET", "/missing", 404),
    ]
    assert records[0]["client"] == "127.0.0.1" and records[0]["bytes"] > 0


def test_access_log_common_format(asgi_app: Path) -> None:
    keys = ("--port", "0", "--access-log", "common")
    with running(asgi_app, *keys, ready=r"serving (http://\S+)") as (proc, ready):
        get(port_of(ready.group(1)), "/")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
    expected = (
        r'127\.0\.0\.1 - - \[\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET / HTTP/1\.1" 200 \d+'
    )
    assert re.search(expected, log), log


def test_keys_from_the_environment_and_loopback_by_default(asgi_app: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    os.environ["LOOMING_PORT"] = str(free)
    try:
        with running(asgi_app, ready=r"serving (http://\S+)") as (_proc, ready):
            assert ready.group(1) == f"http://127.0.0.1:{free}"
            listening = [
                line.split()[1]
                for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                if line.split()[3] == "0A"
            ]
            assert f"0100007F:{free:04X}" in listening
            assert f"00000000:{free:04X}" not in listening
    finally:
        del os.environ["LOOMING_PORT"]


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--port", "99999"], {}, "--port: 99999 is not a port number"),
        (["--port", "-1"], {}, "--port: -1 is not a port number"),
        ([], {"LOOMING_PORT": "eighty"}, "LOOMING_PORT='eighty' is not a valid int"),
        (["--access-log", "xml"], {}, "--access-log: 'xml' is not one of off, common, json"),
        (["--loop", "trio"], {}, "--loop: 'trio' is not one of auto, asyncio, uvloop"),
        (
            ["--http-parser", "fast"],
            {},
            "--http-parser: parser 'fast' is not one of auto, h11, httptools",
        ),
    ],
)
def test_bad_key_values_are_one_line_and_exit_2(
    asgi_app: Path, argv: list[str], env: dict[str, str], expected: str
) -> None:
    artifact = asgi_app / "dist" / "asgi-unix.pyz"
    done = subprocess.run(
        [sys.executable, str(artifact), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("loop", "parser"), [("asyncio", "h11"), ("uvloop", "httptools")])
def test_the_artifact_runs_on_the_event_loop_chosen(asgi_app: Path, loop: str, parser: str) -> None:
    keys = ("--port", "0", "--loop", loop, "--http-parser", parser, "--logs", "*:info,tcp:debug")
    with running(asgi_app, *keys, ready=r"serving (http://\S+)") as (proc, ready):
        # One keep-alive connection carries all three requests.
        conn = http.client.HTTPConnection("127.0.0.1", port_of(ready.group(1)), timeout=10)
        answers = []
        sockets = []
        for target in ("/", "/greet/ada"):
            conn.request("GET", target)
            answers.append(conn.getresponse().read())
            sockets.append(conn.sock)
        first_socket = sockets[0]
        assert first_socket is not None and sockets[1] is first_socket
        assert answers == [
            b"hello from an ASGI unikernel\n",
            b'{"greeting":"hello, ada","started":true}',
        ]
        body = os.urandom(300_000).hex()
        conn.request("POST", "/echo", body=body.encode())
        assert json.loads(conn.getresponse().read()) == {"length": len(body), "text": body}
        assert conn.sock is first_socket
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
    assert f"({loop} event loop)" in log, log
    assert "Traceback" not in log, log


def test_connection_limit_answers_503() -> None:
    async def hello(request: Request) -> Response:
        return Response(200, (), b"hi")

    config = ServerConfig(max_connections=2)
    with serve_in_thread(lambda: hello, config) as running_server:
        server = running_server.server
        assert isinstance(server, HttpServer)
        held = [socket.create_connection(("127.0.0.1", running_server.port)) for _ in range(2)]
        deadline = time.monotonic() + 5
        while server.connections_open < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        extra = socket.create_connection(("127.0.0.1", running_server.port), timeout=5)
        extra.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")  # (the refusal reads first)
        assert extra.recv(4096).startswith(b"HTTP/1.1 503 ")
        assert server.connections_refused == 1
        held[0].sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200 ")
        for sock in [*held, extra]:
            sock.close()


def test_a_failed_lifespan_startup_is_one_line_and_exit_1(tmp_path: Path) -> None:
    app = copy_example("asgi", tmp_path)
    source = app / "app.py"
    source.write_text(
        source.read_text().replace(
            "    # State handed to every request as request.state.\n",
            '    raise RuntimeError("the database is not reachable")\n',
        )
    )
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    done = subprocess.run(
        [sys.executable, str(app / "dist" / "asgi-unix.pyz"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "application startup failed" in done.stderr
    assert "the database is not reachable" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
