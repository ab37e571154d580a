"""bench/http.py --breakdown: the fast path's per-request Python cost,
in-process, split into the application's own and the server's share."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "http.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("looming_bench_http", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_request_is_answered_and_the_server_share_is_what_remains(
    bench: ModuleType,
) -> None:
    rows = bench.breakdown(["/json", "/static"], count=300, repeats=2)
    assert [row[0] for row in rows] == ["raw ASGI /plain", "Starlette /json", "Starlette /static"]
    for _name, alone, through, share in rows:
        alone_us, through_us, share_us = float(alone), float(through), float(share)
        assert alone_us > 0 and through_us > 0
        assert share_us == pytest.approx(through_us - alone_us, abs=0.011)
    # The raw application does almost nothing itself: its cost through the
    # server is mostly the server's.
    raw_alone, raw_through = float(rows[0][1]), float(rows[0][2])
    assert raw_through > raw_alone


def test_the_command_prints_the_split() -> None:
    result = subprocess.run(
        [sys.executable, "-P", str(BENCH), "--breakdown", "--quick", "--paths", "/plain"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert "server's share us" in lines[1]
    assert any(line.startswith("Starlette /plain") for line in lines)
    assert "Task was destroyed" not in result.stderr
