"""A real Starlette application served through AsgiAdapter over the socket stack."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from looming.http import AsgiAdapter, LifespanFailed
from looming.http.server import ServerConfig

from .serving import RunningServer, serve_in_thread

events: list[str] = []


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
    events.append("startup")
    yield {"greeting": "hello from lifespan"}
    events.append("shutdown")


async def plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("plain text\n")


async def info(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "body": body.decode(),
            "greeting": request.state.greeting,
            "client_host": request.client.host if request.client else None,
            "user_agent": request.headers.get("user-agent"),
        }
    )


async def streamed(request: Request) -> StreamingResponse:
    async def numbers() -> AsyncIterator[bytes]:
        for index in range(4):
            await asyncio.sleep(0)
            yield f"part {index}\n".encode()

    return StreamingResponse(numbers(), media_type="text/plain")


cancelled_streams: list[str] = []


async def endless(request: Request) -> StreamingResponse:
    async def ticks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick\n"
                await asyncio.sleep(0.01)
        finally:
            cancelled_streams.append(request.url.path)

    return StreamingResponse(ticks(), media_type="text/plain")


async def fails_midway(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        yield b"first part\n"
        await asyncio.sleep(0)
        raise RuntimeError("stream fails on purpose")

    return StreamingResponse(parts(), media_type="text/plain")


async def broken(request: Request) -> PlainTextResponse:
    raise RuntimeError("this route fails on purpose")


app = Starlette(
    routes=[
        Route("/", plain),
        Route("/info/{rest:path}", info, methods=["GET", "POST"]),
        Route("/stream", streamed),
        Route("/broken", broken),
        Route("/endless", endless),
        Route("/fails-midway", fails_midway),
    ],
    lifespan=lifespan,
)


@pytest.fixture(scope="module")
def starlette_server() -> Iterator[RunningServer]:
    adapter = AsgiAdapter(app)
    with serve_in_thread(lambda: adapter) as running:
        asyncio.run_coroutine_threadsafe(adapter.startup(), running.loop).result(10)
        yield running
        asyncio.run_coroutine_threadsafe(adapter.shutdown(), running.loop).result(10)


def test_plain_route(starlette_server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", starlette_server.port, timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b"plain text\n"
    assert response.getheader("content-type") == "text/plain; charset=utf-8"
    assert response.getheader("server") == "looming"
    conn.close()


def test_json_route_sees_path_query_body_and_lifespan_state(
    starlette_server: RunningServer,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", starlette_server.port, timeout=10)
    conn.request("POST", "/info/a%20b/c?x=1&y=two", body=b"payload", headers={"User-Agent": "t"})
    response = conn.getresponse()
    assert response.status == 200
    result = json.loads(response.read())
    assert result == {
        "method": "POST",
        "path": "/info/a b/c",
        "query": {"x": "1", "y": "two"},
        "body": "payload",
        "greeting": "hello from lifespan",
        "client_host": "127.0.0.1",
        "user_agent": "t",
    }
    # keep-alive across ASGI requests
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"plain text\n"
    conn.close()


def test_streaming_response_with_curl(starlette_server: RunningServer) -> None:
    result = subprocess.run(
        ["curl", "-sS", "-i", starlette_server.url + "/stream"],
        capture_output=True,
        check=True,
        timeout=20,
    )
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"part 0\npart 1\npart 2\npart 3\n"


def test_not_found_and_failing_route(starlette_server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", starlette_server.port, timeout=10)
    conn.request("GET", "/nowhere")
    missing = conn.getresponse()
    missing.read()
    assert missing.status == 404
    conn.request("GET", "/broken")
    failed = conn.getresponse()
    failed.read()
    assert failed.status == 500
    conn.close()


def test_head_through_asgi(starlette_server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", starlette_server.port, timeout=10)
    conn.request("HEAD", "/")
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b""
    assert response.getheader("content-length") == "11"
    conn.close()


def test_lifespan_startup_and_shutdown_run() -> None:
    async def scenario() -> None:
        events.clear()
        adapter = AsgiAdapter(app)
        async with adapter.lifespan():
            assert events == ["startup"]
            assert adapter.state == {"greeting": "hello from lifespan"}
        assert events == ["startup", "shutdown"]

    asyncio.run(scenario())


def test_failed_startup_is_reported() -> None:
    @asynccontextmanager
    async def failing(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    async def scenario() -> None:
        adapter = AsgiAdapter(Starlette(lifespan=failing))
        with pytest.raises(LifespanFailed, match="no database"):
            await adapter.startup()

    asyncio.run(scenario())


def test_app_without_lifespan_support_still_starts() -> None:
    async def bare_app(scope: dict[str, object], receive: object, send: object) -> None:
        assert scope["type"] == "http"

    async def scenario() -> None:
        adapter = AsgiAdapter(bare_app)  # type: ignore[arg-type]  # a deliberately loose app
        await adapter.startup()
        await adapter.shutdown()

    asyncio.run(scenario())


def test_head_of_an_endless_stream_ends_the_application_task(
    starlette_server: RunningServer,
) -> None:
    cancelled_streams.clear()
    conn = http.client.HTTPConnection("127.0.0.1", starlette_server.port, timeout=10)
    conn.request("HEAD", "/endless")
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b""
    conn.request("GET", "/")  # the connection is still usable
    assert conn.getresponse().read() == b"plain text\n"
    conn.close()
    deadline = time.monotonic() + 5
    while not cancelled_streams and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cancelled_streams == ["/endless"]


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_client_leaving_an_endless_stream_ends_the_application_task(parser: str) -> None:
    """send() raises when the client has left (ASGI HTTP 2.4) and Starlette
    stops iterating its stream there: the generator's ``finally`` still runs
    at once (the server lets go of the frames it was abandoned in), on the
    fast path (httptools) and the usual one (h11)."""
    cancelled_streams.clear()
    adapter = AsgiAdapter(app)
    config = ServerConfig(parser=parser)
    with serve_in_thread(lambda: adapter, config) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"tick" in sock.recv(65536) + sock.recv(65536)
        # Within the grace (1 s), before any cancellation could end it.
        deadline = time.monotonic() + 0.8
        while not cancelled_streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cancelled_streams == ["/endless"]


def test_stream_failing_midway_is_truncated(starlette_server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", starlette_server.port, timeout=10)
    conn.request("GET", "/fails-midway")
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert caught.value.partial == b"first part\n"
    conn.close()


@pytest.mark.parametrize(
    "form",
    ["tuples", "lists", "bytearrays", "generator", "memoryviews"],
)
def test_response_headers_in_every_form_an_application_gives(form: str) -> None:
    """Pairs as tuples, lists, bytearrays, memoryviews, or a generator of
    them: the same header tuple each time (also the second time, when it is
    found among those seen before), and a str name is still an error."""
    from looming.http.message import Request as LoomingRequest

    pairs = [(b"content-type", b"text/plain"), (b"x-n", b"1")]
    made: Any = {
        "tuples": lambda: [tuple(p) for p in pairs],
        "lists": lambda: [list(p) for p in pairs],
        "bytearrays": lambda: [(bytearray(n), bytearray(v)) for n, v in pairs],
        "generator": lambda: ((n, v) for n, v in pairs),
        "memoryviews": lambda: [(memoryview(n), memoryview(v)) for n, v in pairs],
    }[form]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = made() if scope["path"] != "/str" else [("content-type", "text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> list[Any]:
        adapter = AsgiAdapter(app)
        answers: list[Any] = []
        for target in ("/", "/", "/str"):
            request = LoomingRequest("GET", target, ((b"host", b"x"),), b"", "1.1", None, None)
            try:
                answers.append((await adapter(request)).headers)
            except TypeError as error:
                answers.append(type(error))
        return answers

    expected = tuple(pairs)
    answers = asyncio.run(main())
    assert answers == [expected, expected, TypeError]
    for headers in answers[:2]:
        assert all(type(x) is bytes for pair in headers for x in pair)
