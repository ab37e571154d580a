"""Fixtures for the vm target: images built once per session, namespaces with a TAP.

Images are built with the ``looming`` command in private copies of the
examples; the Debian packages behind them are cached between runs (in
``$LOOMING_VM_CACHE`` or ``~/.cache/looming/vm``), so only the first run on a
machine downloads them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
APPS = Path(__file__).resolve().parent / "apps"
ARCHES = ("x86_64", "aarch64")


def looming(
    app: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "looming.cli", *args],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )


def build(source: Path, dest: Path, arch: str, options: tuple[str, ...] = ()) -> Path:
    """A private copy of the app at ``source``, configured (with the target
    ``options``) and built for ``arch``."""
    app = dest / f"{source.name}-{arch}"
    shutil.copytree(source, app, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__"))
    for args in (("configure", "-t", "vm", "--arch", arch, *options), ("build",)):
        done = looming(app, *args)
        assert done.returncode == 0, f"looming {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return app


@dataclass
class Images:
    root: Path
    built: dict[tuple[str, str], Path]

    def app(self, name: str, arch: str, *options: str) -> Path:
        """``name`` built for ``arch``; an app is configured with one set of
        ``options`` per session."""
        key = (name, arch)
        if key not in self.built:
            source = APPS / name if (APPS / name).is_dir() else EXAMPLES / name
            self.built[key] = build(source, self.root, arch, options)
        return self.built[key]


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    """Apps built as VM images, each at most once per session."""
    for arch in ARCHES:
        qemu = "qemu-system-x86_64" if arch == "x86_64" else "qemu-system-aarch64"
        if shutil.which(qemu) is None:
            pytest.fail(f"{qemu} is missing: run scripts/system-deps.sh as root")
    return Images(tmp_path_factory.mktemp("vm-images"), {})


@dataclass(frozen=True)
class TapNamespace:
    namespace: str
    tap: str
    host_address: str

    def run(self, *command: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *command],
            capture_output=True,
            text=True,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def tap_namespace(request: pytest.FixtureRequest) -> Iterator[TapNamespace]:
    """A network namespace holding a TAP device with 10.0.0.1/24, removed after."""
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root; CI runs as root)")
    suffix = f"{os.getpid() % 100000}"
    namespace = f"loomingvm{suffix}"
    tap = f"loomingtap{suffix}"
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
    _ip("netns", "add", namespace)
    try:
        _ip("-n", namespace, "tuntap", "add", "dev", tap, "mode", "tap")
        _ip("-n", namespace, "addr", "add", "10.0.0.1/24", "dev", tap)
        _ip("-n", namespace, "link", "set", tap, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        yield TapNamespace(namespace, tap, "10.0.0.1")
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
