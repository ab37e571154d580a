"""A handler's cached answers (StaticSite's files in memory) written from
the transport's callbacks (looming.http.fast_asgi.FastCachedConnection):
the same requests, pipelined and cut at random, get the same bytes as from
the usual path, which reads each connection through its flow (Date lines
aside), including the requests that hand the connection back midway."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.http import StaticSite
from looming.http.server import ServerConfig
from looming.http.service import AccessLog, Metrics
from looming.unix.clock import UnixClock

from .serving import RunningServer, serve_in_thread
from .test_cached_path import EXTRAS, KV, TARGETS, request_bytes
from .test_fast_observed import Lines, counters, normal
from .test_server_fast_path import cut

CACHED = ["/", "/index.html", "/css/site.css"]
"""Targets the sites hold once warmed (large.txt is over their limit)."""


def exchange(port: int, pieces: list[bytes], half_close: bool = False) -> bytes:
    """Send ``pieces`` (a short pause between them; those after the server
    closed are dropped), with ``half_close`` end the sending side, and read
    until the server closes; the answer without its Date lines."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):  # closed after HTTP/1.0 or Connection: close
            for number, piece in enumerate(pieces):
                if number:
                    time.sleep(0.002)
                sock.sendall(piece)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        received = []
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                received.append(data)
    lines = b"".join(received).split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.startswith(b"date: "))


@pytest.fixture(scope="module")
def sites() -> Iterator[dict[str, RunningServer]]:
    running: dict[str, RunningServer] = {}
    with contextlib.ExitStack() as stack:
        for name, loop, fast in (
            ("fast-uvloop", "uvloop", True),
            ("fast-asyncio", "asyncio", True),
            ("flow", "uvloop", False),
        ):
            config = ServerConfig(parser="httptools", fast_path=fast)
            site = stack.enter_context(
                serve_in_thread(
                    lambda: StaticSite(KV, max_cached_file_bytes=64 * 1024), config, loop=loop
                )
            )
            for target in CACHED:  # read once: held from then on
                exchange(site.port, [request_bytes("GET", target, b"connection: close\r\n", "1.1")])
            running[name] = site
        yield running


CLOSING = (b"connection: close\r\n", b"upgrade: something\r\nconnection: upgrade\r\n")
"""Fields after whose answer the server may close: only on the last request
(a server that closes with requests still unread resets the connection, and
the client may then lose answers sent before the reset, whoever serves)."""
requests = st.lists(
    st.tuples(
        st.sampled_from(["GET", "GET", "GET", "HEAD", "POST"]),
        st.sampled_from([*CACHED, *CACHED, *TARGETS]),
        st.sampled_from([b"", b"", b"", *(e for e in EXTRAS if e not in CLOSING)]),
        st.just("1.1"),
    ),
    min_size=1,
    max_size=8,
)
last_request = st.tuples(
    st.sampled_from(["GET", "HEAD"]),
    st.sampled_from([*CACHED, *TARGETS]),
    st.just(b"connection: close\r\n"),
    st.just("1.1"),
) | st.tuples(st.just("GET"), st.sampled_from(TARGETS), st.just(b""), st.just("1.0"))


@settings(max_examples=60, deadline=None)
@given(requests, last_request, st.lists(st.integers(min_value=0), max_size=4), st.booleans())
def test_both_paths_write_the_same_cached_answers(
    sites: dict[str, RunningServer],
    sequence: list[tuple[str, str, bytes, str]],
    last: tuple[str, str, bytes, str],
    points: list[int],
    half_close: bool,
) -> None:
    data = b"".join(request_bytes(*request) for request in [*sequence, last])
    pieces = cut(data, points)
    expected = exchange(sites["flow"].port, pieces, half_close)
    assert expected.startswith(b"HTTP/1.1 ")
    for name in ("fast-uvloop", "fast-asyncio"):
        assert exchange(sites[name].port, pieces, half_close) == expected, name


def test_plain_gets_of_held_files_stay_on_the_fast_path(sites: dict[str, RunningServer]) -> None:
    server = sites["fast-uvloop"].server
    before = (server.connections_fast, server.connections_handed_back, server.cached_answers)
    plain = b"".join(request_bytes("GET", target, b"", "1.1") for target in CACHED * 5)
    answer = exchange(sites["fast-uvloop"].port, [plain + plain[:40], plain[40:]], half_close=True)
    assert answer.count(b"HTTP/1.1 200 OK") == 30  # the client's end closes it
    after = (server.connections_fast, server.connections_handed_back, server.cached_answers)
    assert after == (before[0] + 1, before[1], before[2] + 30)
    # A miss is the usual path's: the connection is handed back, answered alike.
    missing = request_bytes("GET", "/missing", b"", "1.1")
    one = request_bytes("GET", "/", b"", "1.1")
    answer = exchange(sites["fast-uvloop"].port, [one + missing + one], half_close=True)
    assert re.findall(rb"HTTP/1\.1 \d+ [\w ]+\r\n", answer) == [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 404 Not Found\r\n",
        b"HTTP/1.1 200 OK\r\n",
    ]
    assert server.connections_handed_back == before[1] + 1


@pytest.fixture(scope="module")
def logged_sites() -> Iterator[dict[str, tuple[RunningServer, Metrics, Lines]]]:
    """Both paths with an access log (common format) and metrics."""
    access = logging.getLogger("looming.http.access")
    lines = Lines()
    access.addHandler(lines)
    level = access.level
    access.setLevel(logging.INFO)
    running: dict[str, tuple[RunningServer, Metrics, Lines]] = {}
    try:
        with contextlib.ExitStack() as stack:
            for name, fast in (("fast", True), ("flow", False)):
                config = ServerConfig(parser="httptools", fast_path=fast)
                site = stack.enter_context(
                    serve_in_thread(
                        lambda: StaticSite(KV, max_cached_file_bytes=64 * 1024),
                        config,
                        loop="uvloop",
                    )
                )
                for target in CACHED:
                    close = b"connection: close\r\n"
                    exchange(site.port, [request_bytes("GET", target, close, "1.1")])
                metrics = Metrics()
                log = AccessLog("common", UnixClock())

                def both(*args: Any, log: AccessLog = log, metrics: Metrics = metrics) -> None:
                    log(*args)
                    metrics(*args)

                site.server.observer = both
                running[name] = (site, metrics, lines)
            yield running
    finally:
        access.removeHandler(lines)
        access.setLevel(level)


@settings(max_examples=40, deadline=None)
@given(requests, st.lists(st.integers(min_value=0), max_size=4))
def test_both_paths_log_and_count_the_cached_answers_alike(
    logged_sites: dict[str, tuple[RunningServer, Metrics, Lines]],
    sequence: list[tuple[str, str, bytes, str]],
    points: list[int],
) -> None:
    data = b"".join(request_bytes(*request) for request in sequence)
    data += request_bytes("GET", "/", b"connection: close\r\n", "1.1")
    pieces = cut(data, points)
    seen = {}
    for name in ("flow", "fast"):
        site, metrics, lines = logged_sites[name]
        before = counters(metrics)
        lines.lines.clear()
        answer = exchange(site.port, pieces)
        logged = [normal(line, "common") for line in lines.lines]
        after = counters(metrics)
        seen[name] = (answer, logged, after[1] - before[1], after[2] - before[2])
    assert seen["fast"] == seen["flow"]
    assert seen["flow"][3] == len(seen["flow"][1]) > 0


def test_plain_gets_stay_on_the_fast_path_with_an_access_log(
    logged_sites: dict[str, tuple[RunningServer, Metrics, Lines]],
) -> None:
    site, _metrics, lines = logged_sites["fast"]
    before = site.server.cached_answers, site.server.connections_handed_back
    lines.lines.clear()
    plain = request_bytes("GET", "/css/site.css", b"user-agent: t\r\n", "1.1")
    exchange(site.port, [plain * 3], half_close=True)
    size = len(KV.files["css/site.css"])
    assert [normal(line, "common") for line in lines.lines] == [
        f'127.0.0.1 - - [T] "GET /css/site.css HTTP/1.1" 200 {size}'
    ] * 3
    assert site.server.cached_answers == before[0] + 3
    assert site.server.connections_handed_back == before[1]
