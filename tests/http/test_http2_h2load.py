"""h2load against a server whose stream limit is below the 100 streams h2load
assumes until the server's SETTINGS arrive: the requests over the limit are
refused one by one and the connections carry on."""

from __future__ import annotations

import re
import subprocess

import looming.http.http2 as http2

from .serving import RunningServer
from .test_http2_limits import LIMIT, server

__all__ = ["server"]  # the fixture, with the limit patched


def test_h2load_with_more_streams_than_the_limit(server: RunningServer) -> None:
    """h2load assumes 100 streams until the server's SETTINGS arrive, so
    its first ``-m`` requests go out at once: those over the limit are
    refused, the connection carries on with the rest."""
    before = http2.abuse["refused_stream"]
    done = subprocess.run(
        ["h2load", "-n", "300", "-c", "2", "-m", "30", f"{server.url}/h2load"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", done.stdout)
    assert found, done.stdout
    succeeded, failed, errored, timeout = map(int, found.groups())
    refused = http2.abuse["refused_stream"] - before
    assert timeout == 0 and errored == failed
    assert 0 < failed == refused <= 2 * (30 - LIMIT), done.stdout
    assert succeeded + failed == 300, done.stdout
