"""Fixtures for the vchan tests: a private registry and a leak check.

Every test gets its own registry directory (through the environment, so
child processes inherit it) and, afterwards, must have left nothing behind:
no registry entry and no ``looming-vchan-*`` segment in /dev/shm that was
not there before it started (made by this process or one of its children). Leftovers are removed by name before the
assertion fails, so one leaking test does not fail the next.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.vchan.registry import REGISTRY_ENV
from looming.vchan.segment import SEGMENT_PREFIX, pid_alive, shm_dir


def _segments() -> set[str]:
    return {name for name in os.listdir(shm_dir()) if name.startswith(SEGMENT_PREFIX)}


def _ours_or_orphaned(name: str) -> bool:
    """Made by this process, or by one that is gone (our killed children).

    Segments of other live processes belong to whoever else is running
    vchan on this machine at the same time, not to this test.
    """
    match = re.match(rf"^{SEGMENT_PREFIX}(\d+)-", name)
    if match is None:
        return True
    pid = int(match.group(1))
    return pid == os.getpid() or not pid_alive(pid)


@pytest.fixture(autouse=True)
def vchan_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Short, so socket paths stay well under the 107-byte sockaddr_un limit.
    directory = Path(tempfile.mkdtemp(prefix="looming-vchan-reg-", dir="/tmp"))
    monkeypatch.setenv(REGISTRY_ENV, str(directory))
    before = _segments()
    try:
        yield directory
    finally:
        leaked_segments = sorted(n for n in _segments() - before if _ours_or_orphaned(n))
        leaked_entries = sorted(os.listdir(directory)) if directory.exists() else []
        for name in leaked_segments:
            (shm_dir() / name).unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
    assert leaked_segments == [], f"vchan segments left in {shm_dir()}: {leaked_segments}"
    assert leaked_entries == [], f"vchan registry entries left: {leaked_entries}"
