"""Fairness between connections: a client that pipelines many requests on
one connection does not hold back another connection's single request
until all of its own are answered (the server takes turns)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest

from looming.http import HttpServer, Request, Response, ServerConfig
from looming.http.server import PIPELINE_TURN

from .serving import RunningServer, serve_in_thread

PIPELINED = 400
"""Requests connection A pipelines in one send."""
TURNS = 3 * PIPELINE_TURN
"""At most how many of A's requests may come before B's: A's turn under way
when B's bytes arrive, the one before the loop hands them to B's connection
(asyncio runs that callback after A's next step), and the one before B's
woken task runs."""

LOOPS_AND_PARSERS = [
    pytest.param(("asyncio", "h11"), id="asyncio-h11"),
    pytest.param(("asyncio", "httptools"), id="asyncio-httptools"),
    pytest.param(("uvloop", "h11"), id="uvloop-h11"),
    pytest.param(("uvloop", "httptools"), id="uvloop-httptools"),
]


OK = Response(200, [(b"content-type", b"text/plain")], b"ok\n")


class Recorder:
    """A handler that notes the order requests reach it and answers at once
    (no await: nothing in it gives other connections a turn). At A's first
    request it has B's request sent (from the server's thread, so the bytes
    arrive while A's run is under way, unseen until the loop looks again)."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.at_first: Callable[[], None] | None = None

    def note(self, path: str) -> None:
        self.order.append(path)
        if self.at_first is not None:
            at_first, self.at_first = self.at_first, None
            at_first()

    async def __call__(self, request: Request) -> Response:
        self.note(request.path)
        return OK


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def read_responses(sock: socket.socket, count: int) -> bytes:
    data = b""
    while data.count(b"HTTP/1.1 200 ") < count or not data.endswith(b"ok\n"):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data.count(b'HTTP/1.1 200 ')} responses"
        data += chunk
    return data


def b_position(running: RunningServer, recorder: Recorder, path_a: str, path_b: str) -> int:
    """How many of connection A's pipelined requests were answered before
    connection B's one request, sent once A's first had been seen."""
    head = f"GET {path_a} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with (
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as a,
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as b,
    ):
        wait_for(lambda: running.server.connections_open == 2, "both connections")
        request_b = f"GET {path_b} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        recorder.at_first = lambda: b.sendall(request_b)  # loopback: buffered at once
        a.sendall(head * PIPELINED)
        read_responses(b, 1)
        read_responses(a, PIPELINED)
    assert recorder.order.count(path_a) == PIPELINED and recorder.order.count(path_b) == 1
    return recorder.order.index(path_b)


@pytest.mark.parametrize("loop_and_parser", LOOPS_AND_PARSERS)
def test_a_pipelining_connection_takes_turns(loop_and_parser: tuple[str, str]) -> None:
    loop, parser = loop_and_parser
    recorder = Recorder()
    config = ServerConfig(parser=parser)
    with serve_in_thread(lambda: recorder, config, loop=loop) as running:
        before = b_position(running, recorder, "/a", "/b")
    assert before <= TURNS, f"B's request waited for {before} of A's {PIPELINED}"


class ReadyMade(Recorder):
    """A handler with ready-made answers for ``/a`` (the server's quickest
    path, as a StaticSite's cache of small files): they too are noted."""

    def cached_response(self, method: bytes, target: bytes) -> Response | None:
        if target != b"/a":
            return None
        self.note("/a")
        return OK


@pytest.mark.parametrize("loop_and_parser", LOOPS_AND_PARSERS)
def test_ready_made_answers_take_turns_too(loop_and_parser: tuple[str, str]) -> None:
    loop, parser = loop_and_parser
    recorder = ReadyMade()
    with serve_in_thread(lambda: recorder, ServerConfig(parser=parser), loop=loop) as running:
        before = b_position(running, recorder, "/a", "/b")
        # (counted just after the last answer is written, in the server's thread)
        wait_for(lambda: running.server.cached_answers == PIPELINED, "ready-made answers")
    assert before <= TURNS, f"B's request waited for {before} of A's {PIPELINED}"


class StopsAtEight(Recorder):
    """Starts the server's graceful stop from its eighth request: the stop
    runs while the connection gives the others their turn."""

    server: HttpServer | None = None

    async def __call__(self, request: Request) -> Response:
        self.note(request.path)
        if len(self.order) == PIPELINE_TURN and self.server is not None:
            self.stop = asyncio.get_running_loop().create_task(self.server.shutdown(5.0))
        return OK


@pytest.mark.parametrize("loop_and_parser", LOOPS_AND_PARSERS)
def test_a_stop_during_a_turn_answers_the_request_taken(loop_and_parser: tuple[str, str]) -> None:
    """The turn is given with a received request in hand: a graceful stop
    then waits for its answer (RFC 9112 9.3.2: the requests behind it may
    go unanswered, and the client retries them), and closes."""
    loop, parser = loop_and_parser
    recorder = StopsAtEight()
    with serve_in_thread(lambda: recorder, ServerConfig(parser=parser), loop=loop) as running:
        recorder.server = running.server
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * (2 * PIPELINE_TURN))
            replies = b""
            while chunk := sock.recv(65536):
                replies += chunk
    assert replies.count(b"HTTP/1.1 200 ") == PIPELINE_TURN + 1
    assert replies.endswith(b"ok\n")
