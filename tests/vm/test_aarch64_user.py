"""looming on aarch64, under qemu user emulation with Debian's arm64 Python.

The sysroot is unpacked from the same Debian packages the aarch64 image is
built from. The protocol cores, TCP, the HTTP server and the devices run
there (with the aarch64 site-packages of tests/vm/aarch64_site.py; the TLS,
store, vchan and FFI suites run in test_aarch64_suites.py), and so does a
unikernel built for the unix target.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from looming.vm.arch import get_arch
from looming.vm.sysroot import python_sysroot
from tests.vm.aarch64_site import session_guest
from tests.vm.conftest import EXAMPLES, ROOT, looming

pytestmark = pytest.mark.slow

# Protocol cores, the TCP endpoint between two stacks in memory, the HTTP
# server and the device interfaces: word sizes and byte orders matter here.
ON_AARCH64 = (
    "tests/net/test_cores.py",
    "tests/tcp/test_core.py",
    "tests/tcp/test_endpoint.py",
    "tests/tcp/test_pair.py",
    "tests/http/test_server.py",
    "tests/test_devices.py",
)


@pytest.fixture(scope="session")
def aarch64_python() -> list[str]:
    """The command running Debian's arm64 Python under qemu user emulation."""
    emulator = shutil.which(get_arch("aarch64").qemu_user)
    if emulator is None:
        pytest.fail("qemu-aarch64-static is missing: run scripts/system-deps.sh as root")
    root = python_sysroot("aarch64", lambda message: None)
    return [emulator, "-L", str(root), str(root / "usr" / "bin" / "python3.11")]


def _run(command: list[str], cwd: Path, pythonpath: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
        check=False,
    )


def test_the_interpreter_is_really_aarch64(aarch64_python: list[str], tmp_path: Path) -> None:
    done = _run(
        [*aarch64_python, "-c", "import platform, sys; print(platform.machine(), sys.byteorder)"],
        tmp_path,
        "",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["aarch64", "little"]


def test_part_of_the_suite_passes_on_aarch64(tmp_path_factory: pytest.TempPathFactory) -> None:
    # The aarch64 site-packages of test_aarch64_suites.py: the host's
    # hypothesis has compiled code of its own.
    guest = session_guest(tmp_path_factory)
    done = _run(
        [
            str(guest.python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "-p", "tests.vm.aarch64_plugin", *ON_AARCH64,
        ],
        ROOT,
        f"{ROOT / 'src'}:{guest.site}",
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary


def test_a_unix_unikernel_runs_on_aarch64(aarch64_python: list[str], tmp_path: Path) -> None:
    app = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", app, ignore=shutil.ignore_patterns("_build", "dist"))
    for args in (("configure", "-t", "unix"), ("build",)):
        assert looming(app, *args).returncode == 0
    done = _run(
        [*aarch64_python, str(app / "dist" / "hello-unix.pyz"), "--greetings", "1"], app, ""
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello from looming (1/1)"
