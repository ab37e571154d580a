"""Access logs and metrics on the fast path (looming.http.fast_asgi): the
same requests get the same log lines and the same counters from the fast
path as from the usual path, which reads each connection through its flow."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.http import AsgiAdapter, ServerConfig
from looming.http.service import AccessLog, Metrics, MetricsEndpoint
from looming.unix.clock import UnixClock

from .serving import RunningServer, serve_in_thread
from .test_server_fast_path import HANDED_BACK, LAST, PLAIN, _request, app, exchange

STYLES = ("common", "json")
OBSERVED = [
    *PLAIN,
    _request("/agent", 'User-Agent: curl/8.5.0 (like "x")'),
    _request("/metrics", method="DELETE"),
]
"""Requests both paths answer and log alike (GET /metrics, whose counters
differ from one server to the next, is tested on its own)."""


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def observed() -> Iterator[dict[str, tuple[RunningServer, Metrics, Lines]]]:
    """Each path with each log style, metrics on all of them."""
    access = logging.getLogger("looming.http.access")
    lines = Lines()
    access.addHandler(lines)
    level = access.level
    access.setLevel(logging.INFO)
    running: dict[str, tuple[RunningServer, Metrics, Lines]] = {}
    try:
        with contextlib.ExitStack() as stack:
            for style in STYLES:
                for fast in (True, False):
                    metrics = Metrics()
                    config = ServerConfig(parser="httptools", fast_path=fast)
                    server = stack.enter_context(
                        serve_in_thread(
                            lambda m=metrics: MetricsEndpoint(AsgiAdapter(app), m, "/metrics"),
                            config,
                            loop="uvloop",
                        )
                    )
                    metrics.server = server.server
                    log = AccessLog(style, UnixClock())

                    def both(*args: Any, log: AccessLog = log, metrics: Metrics = metrics) -> None:
                        log(*args)
                        metrics(*args)

                    server.server.observer = both
                    running[f"{'fast' if fast else 'flow'}-{style}"] = (server, metrics, lines)
            yield running
    finally:
        access.removeHandler(lines)
        access.setLevel(level)


def normal(line: str, style: str) -> Any:
    """A log line without what differs from one response to the next (time)."""
    if style == "json":
        record = json.loads(line)
        assert record.pop("duration_ms") >= 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record.pop("time"))
        return record
    stamped = re.sub(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]", "[T]", line, count=1)
    assert stamped != line
    return stamped


def counters(metrics: Metrics) -> tuple[Any, ...]:
    return dict(metrics.by_status), metrics.body_bytes, metrics.count


def served(
    observed: dict[str, tuple[RunningServer, Metrics, Lines]], name: str, pieces: list[bytes]
) -> tuple[bytes, list[Any], tuple[Any, ...]]:
    """Answer, normalised log lines and the change of the counters."""
    running, metrics, lines = observed[name]
    before = counters(metrics)
    lines.lines.clear()
    answer = exchange(running.port, pieces)
    after = counters(metrics)
    style = name.split("-")[1]
    logged = [normal(line, style) for line in lines.lines]
    change = (
        {k: v - before[0].get(k, 0) for k, v in after[0].items() if v != before[0].get(k, 0)},
        after[1] - before[1],
        after[2] - before[2],
    )
    return answer, logged, change


@settings(max_examples=40, deadline=None)
@given(
    requests=st.lists(st.sampled_from(OBSERVED), min_size=1, max_size=6),
    handed_back=st.lists(st.sampled_from(HANDED_BACK), max_size=1),
    last=st.sampled_from(LAST),
    style=st.sampled_from(STYLES),
)
def test_both_paths_log_and_count_alike(
    observed: dict[str, tuple[RunningServer, Metrics, Lines]],
    requests: list[bytes],
    handed_back: list[bytes],
    last: bytes,
    style: str,
) -> None:
    pieces = [b"".join([*requests, *handed_back, last])]
    expected = served(observed, f"flow-{style}", pieces)
    got = served(observed, f"fast-{style}", pieces)
    assert got == expected
    assert expected[2][2] == len(expected[1]) > 0  # a line and a count per response


def test_plain_requests_stay_on_the_fast_path_with_logs_and_metrics(
    observed: dict[str, tuple[RunningServer, Metrics, Lines]],
) -> None:
    running = observed["fast-common"][0]
    server = running.server
    before = server.connections_fast, server.connections_handed_back
    answer, logged, change = served(observed, "fast-common", [PLAIN[1] + PLAIN[2] + LAST[0]])
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert logged[:2] == [
        '127.0.0.1 - - [T] "GET /plain?a=1&b=%20 HTTP/1.1" 200 32',
        '127.0.0.1 - - [T] "GET /caf%C3%A9/x HTTP/1.1" 200 29',
    ]
    assert change[0] == {"2xx": 3}
    # Only Connection: close went to the usual path.
    assert server.connections_fast == before[0] + 1
    assert server.connections_handed_back == before[1] + 1
    # /metrics is the usual path's: the connection is handed back, and both
    # its requests are logged and counted.
    answer, logged, change = served(
        observed, "fast-common", [PLAIN[0] + _request("/metrics?x=1") + LAST[0]]
    )
    assert b'looming_http_responses_total{status="2xx"}' in answer
    assert server.connections_handed_back == before[1] + 2
    assert [line.split('"')[1] for line in logged] == [
        "GET / HTTP/1.1",
        "GET /metrics?x=1 HTTP/1.1",
        "GET / HTTP/1.1",
    ]
    assert change[0] == {"2xx": 3}
