"""Helpers for driving the `looming` command and the unikernels it builds."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def looming(app: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `looming ARGS` in ``app`` and return the finished process."""
    proc = subprocess.run(
        [sys.executable, "-m", "looming.cli", *args],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"looming {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def copy_example(name: str, dest: Path) -> Path:
    """A private copy of an example (without build outputs)."""
    target = dest / name
    shutil.copytree(
        EXAMPLES / name, target, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__")
    )
    return target


@contextmanager
def running(
    app: Path, *keys: str, ready: str, timeout: float = 30.0
) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    """Start `looming run KEYS`, wait until stdout matches ``ready``, stop it after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "looming.cli", "run", *keys],
        cwd=app,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read() if proc.stderr else ""
                raise AssertionError(f"unikernel exited before ready: {''.join(seen)}\n{err}")
            seen.append(line)
            match = re.search(ready, line)
            if match:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"unikernel not ready in {timeout}s: {''.join(seen)}")
        yield proc, match
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Keep what the unikernel logged for the test to inspect.
        proc.stderr_text = proc.stderr.read() if proc.stderr else ""  # type: ignore[attr-defined]
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
