"""The fast path runs applications from the transport's callbacks
(looming.http.fast_asgi): as the server's runner task while they do not
wait, carried on by that task when they do, each request in a context of
its own, and a head read once per connection when it comes again."""

from __future__ import annotations

import asyncio
import contextvars
import socket
import time
from typing import Any

import anyio
import pytest

from looming.http import AsgiAdapter, ServerConfig
from looming.http.asgi import Scope
from looming.http.fast_asgi import FastAsgiConnection
from looming.http.server import PIPELINE_TURN, HttpServer
from looming.unix.clock import UnixClock

from .serving import serve_in_thread

CONFIG = ServerConfig(parser="httptools")
LOOPS = ("uvloop", "asyncio")
seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")
known: list[asyncio.Task[Any]] = []
"""The tasks applications ran as, numbered (held: an id could be reused)."""


def request(target: str, *fields: str) -> bytes:
    return ("\r\n".join([f"GET {target} HTTP/1.1", "Host: x", *fields]) + "\r\n\r\n").encode()


def responses(sock: socket.socket, count: int) -> list[bytes]:
    """The bodies of the next ``count`` responses (each with a Content-Length)."""
    data, bodies = b"", list[bytes]()
    while len(bodies) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end].lower()
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(data) >= end + 4 + length:
                bodies.append(data[end + 4 : end + 4 + length])
                data = data[end + 4 + length :]
                continue
        piece = sock.recv(65536)
        assert piece, f"closed after {len(bodies)} responses"
        data += piece
    return bodies


async def respond(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def tasks_app(scope: Scope, receive: Any, send: Any) -> None:
    """Tells which task runs it, before and after an optional wait, and
    what a context variable holds (set by this request before the wait)."""
    if scope["type"] != "http":
        return
    before = asyncio.current_task()
    earlier = seen.get()
    seen.set(scope["path"])
    path = scope["path"]
    if path == "/wait":
        await asyncio.sleep(0.01)
    elif path == "/timeout":
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(5)
        except TimeoutError:
            path = "/timed-out"
    elif path == "/thread":
        await anyio.to_thread.run_sync(time.sleep, 0.01)  # a cancel scope across the wait
    after = asyncio.current_task()
    assert before is not None and after is before
    if before not in known:
        known.append(before)
    body = f"{known.index(before)} {earlier} {seen.get()} {path}"
    await respond(send, body.encode())


@pytest.mark.parametrize("loop", LOOPS)
def test_applications_run_as_the_server_s_runner_until_one_waits(loop: str) -> None:
    with (
        serve_in_thread(lambda: AsgiAdapter(tasks_app), CONFIG, loop=loop) as running,
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock,
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as other,
    ):
        answers = []
        for target in ("/a", "/b", "/wait", "/c", "/d", "/timeout", "/thread", "/e"):
            sock.sendall(request(target))
            answers.append(responses(sock, 1)[0].decode().split())
        other.sendall(request("/z"))
        (elsewhere,) = responses(other, 1)
        tasks = [task for task, *_ in answers]
        # /a and /b ran as the first runner, which carried /wait on; /c and
        # /d ran as a new one, which carried /timeout; and so on.
        assert tasks[0] == tasks[1] == tasks[2]
        assert tasks[3] == tasks[4] == tasks[5] != tasks[2]
        assert len(set(tasks)) == 4
        # Another connection's request runs as the runner of the moment.
        assert elsewhere.split()[0].decode() == tasks[7]
        # Each request in a context of its own, kept across its wait.
        assert all(earlier == "unset" for _, earlier, _, _ in answers)
        assert [(now, path) for _, _, now, path in answers] == [
            ("/a", "/a"),
            ("/b", "/b"),
            ("/wait", "/wait"),
            ("/c", "/c"),
            ("/d", "/d"),
            ("/timeout", "/timed-out"),
            ("/thread", "/thread"),
            ("/e", "/e"),
        ]
        assert running.server.connections_fast == 2


async def meddling_app(scope: Scope, receive: Any, send: Any) -> None:
    """Answers with what its scope holds, then changes the scope."""
    if scope["type"] != "http":
        return
    state = scope["state"]
    body = repr(
        (
            scope["path"],
            scope["query_string"],
            scope["headers"],
            sorted(scope["extensions"]),
            state.get("changed"),
            scope["client"][0],
        )
    ).encode()
    scope["headers"].append((b"x-added", b"1"))
    scope["path"] = "/changed"
    scope["extensions"]["changed"] = {}
    state["changed"] = True
    await respond(send, body)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_head_read_again_gets_a_scope_of_its_own(loop: str) -> None:
    head = request("/caf%C3%A9?q=1", "Accept: */*", "X-Many: a", "X-Many: b")
    with (
        serve_in_thread(lambda: AsgiAdapter(meddling_app), CONFIG, loop=loop) as running,
        socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock,
    ):
        sock.sendall(head)
        (first,) = responses(sock, 1)
        sock.sendall(head)
        answers = responses(sock, 1)
        sock.sendall(head * 3)  # pipelined in one read
        answers += responses(sock, 3)
        sock.sendall(request("/other") + head)
        answers += responses(sock, 2)[1:]
    assert b"'/caf\xc3\xa9'" in first and b"b'q=1'" in first and b"x-added" not in first
    assert b"(b'x-many', b'b')" in first and b", None, '127.0.0.1')" in first
    assert answers == [first] * 5


def test_pipelined_requests_answered_in_one_callback_leave_the_others_a_turn() -> None:
    """Requests read in one piece are answered PIPELINE_TURN at a time, each
    batch in its own turn of the event loop."""

    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

        def is_closing(self) -> bool:
            return False

        def get_write_buffer_size(self) -> int:
            return 0

        def close(self) -> None:
            pass

    class Flow:
        local_address = ("127.0.0.1", 80)
        remote_address = ("127.0.0.1", 5000)

        def __init__(self) -> None:
            self.transport = Transport()

        def lend_transport(self, protocol: Any) -> Transport:
            return self.transport

        def connection_lost(self, exc: Exception | None) -> None:
            pass

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await respond(send, scope["path"].encode())

    async def main() -> list[int]:
        server = HttpServer(AsgiAdapter(app), CONFIG, clock=UnixClock())
        flow = Flow()
        connection = FastAsgiConnection(server, server.handler, flow, lambda: None)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        count = 3 * PIPELINE_TURN + 2
        pipelined = b"".join(request(f"/{n}") for n in range(count))
        loop.call_soon(connection.data_received, pipelined)
        answered = []
        for _ in range(7):
            await asyncio.sleep(0)
            answered.append(b"".join(flow.transport.written).count(b"HTTP/1.1 200"))
        assert answered[-1] == count
        assert flow.transport.written[-1].endswith(b"/%d" % (count - 1))
        connection.connection_lost(None)
        return answered

    answered = asyncio.run(main())
    turn = PIPELINE_TURN
    # (A turn's responses are written together at the start of the next.)
    assert answered[:5] == [0, turn, 2 * turn, 3 * turn, 3 * turn + 2]
