"""Arbitrary bytes from a client never crash the server: every exchange ends
with well-formed responses or a closed connection (no sockets, no clock)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterable

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.http import HttpServer, Request, Response, ServerConfig, StaticSite

from .serving import HTDOCS, MemoryKv


class ScriptedFlow:
    """A Flow that hands out fixed chunks, then end of stream, and keeps what is written."""

    local_address: tuple[str, int] | None = None
    remote_address: tuple[str, int] | None = None

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.written = bytearray()
        self.closed = False

    async def read(self) -> bytes:
        await asyncio.sleep(0)
        return self.chunks.pop(0) if self.chunks else b""

    async def write(self, data: bytes) -> None:
        self.written.extend(data)

    async def writev(self, buffers: Iterable[bytes]) -> None:
        for buffer in buffers:
            self.written.extend(buffer)

    async def shutdown(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class FixedClock:
    def now_ns(self) -> int:
        return 1_700_000_000 * 10**9

    def now(self) -> float:
        return 1_700_000_000.0

    def utc_offset_s(self) -> int:
        return 0


async def echo_handler(request: Request) -> Response:
    return Response(200, ((b"content-type", b"text/plain"),), request.body)


SITE = MemoryKv.from_folder(HTDOCS)
REQUEST_PIECES = st.sampled_from(
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /css/site.css HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET /data/large.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9,20-29\r\n\r\n",
        b"GET /%2e%2e/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"\r\n",
        b"Connection: close\r\n",
    ]
)


def check_responses(output: bytes) -> int:
    """Parse what the server wrote with h11 as the client; the number of responses.

    Raises h11.RemoteProtocolError if the server wrote anything malformed.
    """
    client = h11.Connection(h11.CLIENT)
    client.receive_data(output)
    client.receive_data(b"")
    responses = 0
    while True:
        if client.our_state is h11.IDLE:
            client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            client.send(h11.EndOfMessage())
        event = client.next_event()
        assert event is not h11.NEED_DATA
        if type(event) is h11.ConnectionClosed:
            return responses
        if type(event) is h11.Response:
            responses += 1
        if type(event) is h11.EndOfMessage and client.their_state is h11.DONE:
            if not client.trailing_data[0]:
                return responses  # everything parsed; the server then closed
            client.start_next_cycle()


def run_exchange(handler: object, chunks: list[bytes], parser: str) -> bytes:
    server = HttpServer(
        handler,  # type: ignore[arg-type]  # both handlers are Handler-shaped
        ServerConfig(header_timeout=5, keep_alive_timeout=5, max_header_bytes=4096, parser=parser),
        clock=FixedClock(),
    )
    flow = ScriptedFlow(chunks)
    asyncio.run(asyncio.wait_for(server.serve_flow(flow), 10))
    assert flow.closed
    return bytes(flow.written)


PARSERS = pytest.mark.parametrize("parser", ["h11", "httptools"])


@PARSERS
@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_random_bytes_never_crash(parser: str, chunks: list[bytes]) -> None:
    output = run_exchange(echo_handler, chunks, parser)
    if chunks and chunks[0].startswith(b"PRI * HTTP/2.0"):
        return  # HTTP/2's preface: the connection speaks HTTP/2 (test_http2.py)
    if output:
        assert output.startswith(b"HTTP/1.1 ")


@PARSERS
@settings(max_examples=150, deadline=None)
@given(st.lists(REQUEST_PIECES, max_size=8), st.integers(min_value=1, max_value=64))
def test_request_soup_gets_well_formed_answers(parser: str, pieces: list[bytes], cut: int) -> None:
    stream = b"".join(pieces)
    # Deliver the same bytes in arbitrary small pieces.
    chunks = [stream[i : i + cut] for i in range(0, len(stream), cut)]
    output = run_exchange(StaticSite(SITE), chunks, parser)
    if output:
        assert output.startswith(b"HTTP/1.1 ")
        assert b"SECRET" not in output
        if not any(piece.startswith(b"HEAD") for piece in pieces):
            # (a client parsing answers to HEAD needs to know they were HEAD)
            assert check_responses(output) >= 1


async def reflect_handler(request: Request) -> Response:
    """Answers with everything the parser found: the differential tests compare it."""
    fields = b"".join(b"%s=%s;" % (name, value) for name, value in request.headers)
    head = f"{request.method} {request.target} {request.http_version}\n".encode("latin-1")
    return Response(200, ((b"content-type", b"text/plain"),), head + fields + b"\n" + request.body)


HOSTILE_PIECES = st.sampled_from(
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad:   spaced  value \t\r\n\r\n",
        b"GET /q?a=%20&b HTTP/1.1\r\nHOST: x\r\nX-Empty:\r\nX-Obs: caf\xe9\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nab\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET relative HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://x/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GARBAGE\r\n\r\n",
        b"Host: x\r\n",
    ]
)


@settings(max_examples=int(os.environ.get("LOOMING_FUZZ_EXAMPLES", "400")), deadline=None)
@given(
    st.lists(HOSTILE_PIECES, max_size=6),
    st.integers(min_value=1, max_value=64),
    st.none() | st.integers(min_value=0, max_value=6),
)
def test_both_parsers_answer_alike(
    pieces: list[bytes], cut: int, blank_line_at: int | None
) -> None:
    # A differential test: httptools (llhttp) must answer as h11 does,
    # byte for byte, whatever the requests and however they are cut.
    def cut_up(data: bytes) -> list[bytes]:
        return [data[i : i + cut] for i in range(0, len(data), cut)]

    if blank_line_at is None:
        chunks = cut_up(b"".join(pieces))
    else:
        # A blank line before or between requests, read on its own or with
        # what is around it: skipped by both (RFC 9112 section 2.2).
        at = min(blank_line_at, len(pieces))
        stream = b"".join(pieces[:at]) + b"\r\n" + b"".join(pieces[at:])
        chunks = [*cut_up(b"".join(pieces[:at])), b"\r\n", *cut_up(b"".join(pieces[at:]))]
        if blank_line_at % 2:
            chunks = cut_up(stream)
    expected = run_exchange(reflect_handler, chunks, "h11")
    assert run_exchange(reflect_handler, chunks, "httptools") == expected


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


@PARSERS
@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([b"\r\n", b"\n", b"\r"]), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0, max_value=80), max_size=4),
)
def test_blank_lines_before_a_request_are_skipped_however_they_arrive(
    parser: str, blanks: list[bytes], points: list[int]
) -> None:
    # RFC 9112 section 2.2: a server SHOULD ignore empty lines before a
    # request line. Both requests are answered, wherever reads begin.
    stream = GET + b"".join(blanks) + GET
    edges = sorted({p % len(stream) for p in points} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(edges) if b > a]
    output = run_exchange(reflect_handler, chunks, parser)
    assert output.count(b"HTTP/1.1 200 ") == 2, output


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_both_parsers_answer_random_bytes_alike(chunks: list[bytes]) -> None:
    expected = run_exchange(reflect_handler, chunks, "h11")
    assert run_exchange(reflect_handler, chunks, "httptools") == expected
