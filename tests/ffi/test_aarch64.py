"""The isolated backend's confinement on aarch64, under qemu user emulation.

Debian's arm64 Python (the sysroot the aarch64 image is built from) runs
the caller and the helper; the hostile library is built by the aarch64
cross compiler. qemu's user emulation refuses two layers, and the helper
says so rather than run without them silently: seccomp (qemu answers
``PR_SET_SECCOMP`` with EINVAL, to keep its own system calls) and fresh
namespaces (qemu runs threads, and a threaded process may not enter a new
user namespace). The process isolation, the user, the deadlines and the
caller's watch still hold, and are checked here.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from looming.vm.arch import get_arch
from looming.vm.sysroot import python_sysroot
from tests.ffi.hostile import build

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def aarch64(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the hostile library's folder, a script running arm64 Python under qemu)."""
    emulator = shutil.which(get_arch("aarch64").qemu_user)
    compiler = shutil.which("aarch64-linux-gnu-gcc")
    if emulator is None or compiler is None:
        pytest.fail(
            "qemu-aarch64-static or aarch64-linux-gnu-gcc is missing: run scripts/system-deps.sh"
        )
    root = python_sysroot("aarch64", lambda message: None)
    directory = tmp_path_factory.mktemp("hostile-aarch64")
    build(directory, [compiler])
    python = directory / "python-aarch64"
    python.write_text(f'#!/bin/sh\nexec {emulator} -L {root} {root / "usr/bin/python3.11"} "$@"\n')
    python.chmod(0o755)
    return directory, python


def test_hostile_calls_on_aarch64_are_contained(aarch64: tuple[Path, Path]) -> None:
    directory, python = aarch64
    script = (
        "sleep 120 & bystander=$!; "
        f"{python} -m tests.ffi.hostile_aarch64 {directory} {python}; status=$?; "
        'kill -0 "$bystander" && echo bystander-alive; exit $status'
    )
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(directory),
            "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}",
            "LOOMING_FFI_CACHE": str(directory / "cache"),
        },
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "bystander-alive"
    results = json.loads(lines[-2])
    assert results["machine"] == "aarch64"
    refused = " ".join(results["warnings"])
    assert "no seccomp filter" in refused and "no fresh user and PID namespaces" in refused
    assert results["null_deref"] == f"HelperCrashed:{signal.SIGSEGV}"
    assert results["sleep_long"] == "CallTimedOut"
    assert results["open_shadow"] == -errno.EACCES  # the user layer: root's helper is nobody
    # Without namespaces or seccomp, nobody's signals reach only its own
    # helper (the watcher above it), which goes down and is replaced; the
    # bystander (checked above) and the caller are untouched.
    for name in ("kill_parent", "kill_everyone"):
        assert results[name] in (0, -errno.EPERM) or str(results[name]).startswith("Helper")
    for name in ("null_deref", "sleep_long", "open_shadow", "kill_parent", "kill_everyone"):
        assert results[f"{name} then"] == 5, name
    # qemu maps the guest's memory itself: RLIMIT_AS does not bound a guest
    # malloc there (recorded, not hidden).
    assert results["big_malloc"] in (0, -errno.ENOMEM) or str(results["big_malloc"]).startswith(
        "HelperCrashed"
    )
    assert results["big_malloc then"] == 5
    assert sys.platform == "linux"
