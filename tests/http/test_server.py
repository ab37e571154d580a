"""HTTP/1.1 server behaviour over the socket stack: keep-alive, pipelining, HEAD,
bodies, chunked responses, errors and timeouts, checked with real clients."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from looming.http import Request, Response, ServerConfig

from .serving import RunningServer, serve_in_thread

BIG = bytes(range(256)) * (16 * 1024)  # 4 MiB


async def describe(request: Request) -> Response:
    if request.path == "/fail":
        raise RuntimeError("this handler fails on purpose")
    if request.path == "/injection":
        return Response(200, [(b"x-evil", b"a\r\nSet-Cookie: stolen=1")], b"never sent")
    if request.path == "/stream-with-length":

        async def counted() -> AsyncIterator[bytes]:
            yield b"12345"
            yield b"67890"

        return Response(200, [(b"content-length", b"10")], counted())
    if request.path == "/big":
        return Response(200, [(b"content-type", b"application/octet-stream")], BIG)
    if request.path == "/close-after":
        return Response(200, [(b"connection", b"close")], b"last one")
    if request.path == "/stream":

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(5):
                yield b"chunk %d\n" % index

        return Response(200, [(b"content-type", b"text/plain")], chunks())
    summary = {
        "method": request.method,
        "target": request.target,
        "path": request.path,
        "query": request.query,
        "body": request.body.decode("latin-1"),
        "length": len(request.body),
        "version": request.http_version,
        "client": list(request.client) if request.client else None,
        "host": (request.header(b"host") or b"").decode(),
    }
    return Response(200, [(b"content-type", b"application/json")], json.dumps(summary).encode())


# Each event loop with each request parser (h11, and httptools' llhttp).
LOOPS_AND_PARSERS = [
    pytest.param(("asyncio", "h11"), id="asyncio-h11"),
    pytest.param(("asyncio", "httptools"), id="asyncio-httptools"),
    pytest.param(("uvloop", "h11"), id="uvloop-h11"),
    pytest.param(("uvloop", "httptools"), id="uvloop-httptools"),
]


@pytest.fixture(scope="module", params=LOOPS_AND_PARSERS)
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    loop, parser = request.param
    config = ServerConfig(max_body_bytes=1024 * 1024, parser=parser)
    with serve_in_thread(lambda: describe, config, loop=loop) as running:
        yield running


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_keep_alive_reuses_the_connection(server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/one")
    first = conn.getresponse()
    assert json.loads(first.read())["path"] == "/one"
    sock = conn.sock
    conn.request("GET", "/two?x=1")
    second = conn.getresponse()
    body = json.loads(second.read())
    assert conn.sock is sock  # no reconnect happened
    assert body["path"] == "/two" and body["query"] == "x=1"
    assert second.getheader("server") == "looming"
    assert second.getheader("date")
    conn.close()


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
            b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        reply = read_until_closed(sock)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 3
    positions = [reply.index(b'"path": "/%s"' % name) for name in (b"a", b"b", b"c")]
    assert positions == sorted(positions)
    assert b'"body": "xyz"' in reply


def test_head_has_length_but_no_body(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        reply = read_until_closed(sock)
    head, rest = reply.split(b"\r\n\r\n", 1)
    assert b"content-length: " in head
    # The next bytes are the second response, not a body for HEAD.
    assert rest.startswith(b"HTTP/1.1 200 OK")
    assert b'"path": "/after"' in rest


def test_request_bodies_plain_and_chunked(server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/p", body=b"hello body")
    assert json.loads(conn.getresponse().read())["body"] == "hello body"
    conn.request("POST", "/p", body=iter([b"abc", b"defg"]), encode_chunked=True)
    result = json.loads(conn.getresponse().read())
    assert result["body"] == "abcdefg" and result["length"] == 7
    conn.close()


def test_expect_100_continue_with_curl(server: RunningServer) -> None:
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "x" * 2000,
            server.url + "/c",
        ],
        capture_output=True,
        check=True,
        timeout=20,
    )
    assert json.loads(result.stdout)["length"] == 2000


def test_announced_too_large_body_is_refused_before_sending(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n"
        )
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in reply


def test_chunked_too_large_body_is_413(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"z" * 65536)
        try:
            for _ in range(20):  # 1.25 MiB > the 1 MiB limit
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413 ")


def test_streamed_response_is_chunked(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_until_closed(sock)
    assert b"transfer-encoding: chunked" in reply.lower()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/stream")
    body = conn.getresponse().read()
    assert body == b"".join(b"chunk %d\n" % i for i in range(5))
    conn.close()


def test_http_1_0_client_gets_a_closed_connection(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert b'"version": "1.0"' in reply


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: nope\r\nHost: x\r\n\r\n",
    ],
)
def test_malformed_requests_get_400(server: RunningServer, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(garbage)
        reply = read_until_closed(sock)
    assert reply.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 505 ")), reply[:80]
    assert b"connection: close" in reply


def test_headers_over_64_kib_get_431(server: RunningServer) -> None:
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 431 ")


def test_headers_just_under_the_limit_are_fine(server: RunningServer) -> None:
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(50))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + big + b"\r\n")
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 OK")


def test_handler_failure_is_500_and_server_lives_on(server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/fail")
    response = conn.getresponse()
    assert response.status == 500
    response.read()
    conn.request("GET", "/fine")
    assert conn.getresponse().status == 200
    conn.close()


@pytest.fixture(scope="module", params=LOOPS_AND_PARSERS[1:])
def impatient(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    loop, parser = request.param
    config = ServerConfig(
        keep_alive_timeout=0.2,
        header_timeout=0.3,
        body_timeout=0.3,
        send_timeout=0.3,
        parser=parser,
    )
    with serve_in_thread(lambda: describe, config, loop=loop) as running:
        yield running


def closed_within(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    sock.settimeout(seconds)
    start = time.monotonic()
    reply = read_until_closed(sock)
    return reply, time.monotonic() - start


def test_silent_connection_is_closed(impatient: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as sock:
        reply, elapsed = closed_within(sock, 5)
    assert reply == b""
    assert elapsed < 3


def test_slow_request_head_gets_408(impatient: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        reply, elapsed = closed_within(sock, 5)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 3


def test_slow_request_body_gets_408(impatient: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
        reply, elapsed = closed_within(sock, 5)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert elapsed < 3


def test_idle_keep_alive_connection_is_closed(impatient: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as sock:
        sock.sendall(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        reply, elapsed = closed_within(sock, 5)
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert reply.count(b"HTTP/1.1") == 1
    assert elapsed < 3


def test_header_injection_by_a_handler_becomes_500(server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/injection")
    response = conn.getresponse()
    body = response.read()
    assert response.status == 500
    assert response.getheader("set-cookie") is None
    assert b"never sent" not in body
    conn.close()


def test_streamed_response_to_http_1_0_ends_with_the_close(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
        reply = read_until_closed(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"".join(b"chunk %d\n" % i for i in range(5))


def test_streamed_response_with_declared_length(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /stream-with-length HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        reply = read_until_closed(sock)
    first, _, rest = reply.partition(b"\r\n\r\n")
    assert b"content-length: 10" in first
    assert b"transfer-encoding" not in first.lower()
    assert rest.startswith(b"1234567890HTTP/1.1 200 OK\r\n")


def test_head_of_a_streamed_response_keeps_the_connection(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        reply = read_until_closed(sock)
    first, _, rest = reply.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert rest.startswith(b"HTTP/1.1 200 OK")
    assert b'"path": "/after"' in rest


def test_connection_close_from_client_or_handler_ends_the_connection(
    server: RunningServer,
) -> None:
    for request in (
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /close-after HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            reply = read_until_closed(sock)
        assert reply.count(b"HTTP/1.1 ") == 1
        assert b"connection: close" in reply.lower()


def test_stalled_reader_times_out_without_a_stray_408(impatient: RunningServer) -> None:
    timeouts_before = impatient.server.timeouts
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", impatient.port))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.8)  # not reading: the server's send deadline passes
        reply = read_until_closed(sock)
    assert impatient.server.timeouts == timeouts_before + 1
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    # What was already handed to the transport is delivered; nothing follows it.
    assert body == BIG
    assert b"408" not in reply[-200:]
