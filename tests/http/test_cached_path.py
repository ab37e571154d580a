"""The server's short path for a handler's cached answers (StaticSite's files
held in memory) writes exactly what the usual path writes.

A differential check: the same pipelined requests, cut into the same pieces,
go to one server over a StaticSite and to one over the same site with its
cache hidden from the server (so every request takes the usual path), both
on a fixed clock; the bytes written must be equal. The requests mix what
the short path answers (plain GET and HEAD of files read before) with what
it must leave to the usual path (conditions, ranges, Connection: close,
HTTP/1.0, bodies, misses, redirects).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.http import HttpServer, StaticSite
from looming.http.message import Request, Response
from looming.http.parser import chosen_parser
from looming.http.server import ServerConfig

from .serving import HTDOCS, MemoryKv

KV = MemoryKv.from_folder(HTDOCS)
TARGETS = ["/", "/index.html", "/css/site.css", "/data/large.txt", "/missing", "/docs", "/docs/"]
"""Files small and large, a miss, a redirect."""
EXTRAS = [
    b"",
    b"connection: close\r\n",
    b"if-none-match: *\r\n",
    b"if-modified-since: Tue, 14 Nov 2023 22:13:20 GMT\r\n",
    b"range: bytes=0-9\r\n",
    b"content-length: 3\r\n",
    b"accept: */*\r\nuser-agent: t\r\n",
    b"upgrade: something\r\nconnection: upgrade\r\n",
]


PARSERS = ["h11", "httptools"] if chosen_parser("auto") == "httptools" else ["h11"]


class FixedClock:
    def now(self) -> float:
        return 1_765_000_000.0

    def now_ns(self) -> int:
        return 1_765_000_000 * 10**9

    def utc_offset_s(self) -> int:
        return 0


class ScriptedFlow:
    """A connection whose client sends ``pieces`` and then closes."""

    local_address = ("127.0.0.1", 80)
    remote_address = ("127.0.0.1", 5000)

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = list(pieces)
        self.written = bytearray()

    async def read(self) -> bytes:
        await asyncio.sleep(0)
        return self._pieces.pop(0) if self._pieces else b""

    async def write(self, data: bytes) -> None:
        self.written += data

    async def writev(self, buffers: Iterable[bytes]) -> None:
        for data in buffers:
            self.written += data

    async def shutdown(self) -> None:
        pass

    async def close(self) -> None:
        pass


class Uncached:
    """The site, its cached answers hidden: every request takes the usual path."""

    def __init__(self, site: StaticSite) -> None:
        self.site = site

    async def __call__(self, request: Request) -> Response:
        return await self.site(request)


def request_bytes(method: str, target: str, extra: bytes, version: str) -> bytes:
    head = f"{method} {target} HTTP/{version}\r\nhost: x\r\n".encode() + extra + b"\r\n"
    return head + (b"abc" if b"content-length: 3" in extra else b"")


def served(handler: Any, pieces: list[bytes], parser: str = "auto") -> tuple[bytes, HttpServer]:
    async def run() -> tuple[bytes, HttpServer]:
        server = HttpServer(handler, ServerConfig(parser=parser), clock=FixedClock())
        flow = ScriptedFlow(pieces)
        await server.serve_flow(flow)  # type: ignore[arg-type]
        return bytes(flow.written), server

    return asyncio.run(run())


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


requests = st.lists(
    st.tuples(
        st.sampled_from(["GET", "GET", "HEAD", "POST"]),
        st.sampled_from(TARGETS),
        st.sampled_from(EXTRAS),
        st.sampled_from(["1.1", "1.1", "1.1", "1.0"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(deadline=None)
@given(
    requests,
    st.lists(st.integers(min_value=0), max_size=6),
    st.sampled_from(PARSERS),
    st.sampled_from([64 * 1024, 1024 * 1024]),
)
def test_the_short_path_writes_what_the_usual_path_writes(
    sequence: list[tuple[str, str, bytes, str]], points: list[int], parser: str, held: int
) -> None:
    """``held``: the largest file kept in memory (large.txt is held only
    with the second, and then written as a head and a body apart)."""
    data = b"".join(request_bytes(*request) for request in sequence)
    # Each server's site has read every target once already: its files are
    # in memory, as on a site serving for a while.
    warm = b"".join(request_bytes("GET", target, b"", "1.1") for target in TARGETS)
    fast_site = StaticSite(KV, max_cached_file_bytes=held)
    usual_site = StaticSite(KV, max_cached_file_bytes=held)
    served(fast_site, [warm])
    served(Uncached(usual_site), [warm])
    fast, fast_server = served(fast_site, cut(data, points), parser)
    usual, usual_server = served(Uncached(usual_site), cut(data, points), parser)
    assert fast == usual
    assert fast_server.requests_served == usual_server.requests_served
    assert usual_server.cached_answers == 0


def test_the_short_path_answers_a_file_read_before() -> None:
    site = StaticSite(KV)
    assert site.cached_response(b"GET", b"/css/site.css") is None  # never read
    # Two requests on one connection: the first reads the file (the usual
    # path), the second is answered from memory, with the same bytes.
    once = request_bytes("GET", "/css/site.css", b"", "1.1")
    written, server = served(site, [once + once])
    assert server.requests_served == 2 and server.cached_answers == 1
    first, second = written[: len(written) // 2], written[len(written) // 2 :]
    assert first == second and first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first.endswith(KV.files["css/site.css"])
    cached = site.cached_response(b"GET", b"/css/site.css")
    assert cached is not None and cached.body == KV.files["css/site.css"]
    assert site.cached_response(b"POST", b"/css/site.css") is None


class SteppedClock(FixedClock):
    def __init__(self) -> None:
        self.time = 1_765_000_000.0

    def now(self) -> float:
        return self.time


def test_the_short_path_dates_each_answer_by_its_own_second() -> None:
    from looming.http.dates import format_http_date

    site = StaticSite(KV)
    clock = SteppedClock()
    once = request_bytes("GET", "/css/site.css", b"", "1.1")

    async def run() -> list[bytes]:
        server = HttpServer(site, clock=clock)
        answers = []
        for step in (0.0, 0.5, 1.0, 3600.0):
            clock.time = 1_765_000_000.0 + step
            flow = ScriptedFlow([once])
            await server.serve_flow(flow)  # type: ignore[arg-type]
            answers.append(bytes(flow.written))
        assert server.cached_answers == 3  # all but the first, which read the file
        return answers

    answers = asyncio.run(run())
    dates = [answer.split(b"\r\ndate: ", 1)[1].split(b"\r\n", 1)[0] for answer in answers]
    assert dates == [
        format_http_date(int(1_765_000_000 + step)) for step in (0.0, 0.5, 1.0, 3600.0)
    ]
    assert all(answer.endswith(KV.files["css/site.css"]) for answer in answers)
