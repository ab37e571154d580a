"""What ``looming run`` writes of the access log is bare lines: with
``--access-log json`` each line is one JSON object (JSON lines), with
``common`` each is a whole common log line; other records keep their time,
level and logger. Checked through the logging setup ``looming run`` makes,
with requests served by both paths of the server."""

from __future__ import annotations

import io
import json
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from looming.http import AsgiAdapter, ServerConfig
from looming.http.service import AccessLog
from looming.runtime import configure_logging
from looming.unix.clock import UnixClock

from .serving import serve_in_thread
from .test_audit_log_ws import COMMON, app

TARGETS = ["/plain", '/a"b', "/caf%C3%A9?q=1"]


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The logging ``looming run`` sets up, into a string; restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("*:info", stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def served_lines(style: str, fast: bool, stream: io.StringIO) -> list[str]:
    config = ServerConfig(fast_path=fast)
    with serve_in_thread(lambda: AsgiAdapter(app), config) as running:
        running.server.observer = AccessLog(style, UnixClock())
        for target in TARGETS:
            try:
                urllib.request.urlopen(running.url + target, timeout=10).read()
            except urllib.error.HTTPError as error:
                assert error.code == 404
        deadline = time.monotonic() + 5
        while stream.getvalue().count("\n") < len(TARGETS) and time.monotonic() < deadline:
            time.sleep(0.01)
        logging.getLogger("looming.http").info("a record of another logger")
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "usual"])
def test_json_access_log_is_json_lines(logs: io.StringIO, fast: bool) -> None:
    lines = served_lines("json", fast, logs)
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["target"] for r in records] == TARGETS
    assert all(r["status"] == 404 and r["method"] == "GET" for r in records)
    others = [line for line in lines if not line.startswith("{")]
    assert any(
        re.fullmatch(r"\d\d:\d\d:\d\d INFO +looming\.http: a record of another logger", line)
        for line in others
    ), others
    assert not [line for line in others if "looming.http.access" in line]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "usual"])
def test_common_access_log_lines_are_bare(logs: io.StringIO, fast: bool) -> None:
    lines = served_lines("common", fast, logs)
    matches = [COMMON.fullmatch(line) for line in lines]
    requests = [m.group(3) for m in matches if m is not None]
    assert requests == [
        "GET /plain HTTP/1.1",
        r"GET /a\x22b HTTP/1.1",
        "GET /caf%C3%A9?q=1 HTTP/1.1",
    ]
