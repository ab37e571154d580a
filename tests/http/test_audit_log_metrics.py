"""The /metrics page reads as Prometheus text with no lint warning
(prometheus_client's parser, and promtool's rules: every family has HELP
and TYPE, counters end in ``_total``, the request duration is one summary
with ``_sum`` and ``_count``), its figures are those of the requests made,
and every family is named in the README."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import looming.http.websocket  # noqa: F401  (its abuse family is shown once loaded)
from looming.http import AsgiAdapter
from looming.http.service import Metrics, MetricsEndpoint

from .serving import RunningServer, serve_in_thread

README = Path(__file__).resolve().parents[2] / "README.md"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        status = 404 if scope["path"] == "/missing" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"twelve bytes"})


@pytest.fixture
def server() -> Iterator[tuple[RunningServer, Metrics]]:
    metrics = Metrics()
    with serve_in_thread(lambda: MetricsEndpoint(AsgiAdapter(app), metrics, "/metrics")) as running:
        metrics.server = running.server
        running.server.observer = metrics
        yield running, metrics


def fetch(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        return str(error.read().decode())


def test_metrics_pass_the_prometheus_lint(server: tuple[RunningServer, Metrics]) -> None:
    running, _ = server
    for path in ("/", "/a", "/missing"):
        fetch(running.port, path)
    text = fetch(running.port, "/metrics")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    problems = []
    for family in families.values():
        if not family.documentation:
            problems.append(f"{family.name}: no HELP")
        if family.type == "unknown":
            problems.append(f"{family.name}: no TYPE")
        if family.type == "counter" and not all(s.name.endswith("_total") for s in family.samples):
            problems.append(f"{family.name}: a counter not named _total")
        if re.search(r"_(sum|count)$", family.name):
            problems.append(f"{family.name}: _sum/_count as a family of its own")
    assert problems == []
    duration = families["looming_http_request_duration_seconds"]
    assert duration.type == "summary"
    samples = {sample.name: sample.value for sample in duration.samples}
    assert samples["looming_http_request_duration_seconds_count"] == 3
    assert samples["looming_http_request_duration_seconds_sum"] >= 0
    responses = {s.labels["status"]: s.value for s in families["looming_http_responses"].samples}
    assert responses == {"2xx": 2, "4xx": 1}
    [body] = families["looming_http_response_body_bytes"].samples
    assert body.value == 3 * len(b"twelve bytes")


def test_every_family_is_named_in_the_readme(server: tuple[RunningServer, Metrics]) -> None:
    running, _ = server
    text = fetch(running.port, "/metrics")
    readme = README.read_text()
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert len(names) >= 10
    assert sorted(name for name in names if name not in readme) == []
