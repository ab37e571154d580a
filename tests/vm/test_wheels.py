"""Packages with compiled code in VM images: wheels for the guest's
architecture and Python, fetched with pip, cached and checked by hash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from looming.vm import wheels
from looming.vm.arch import get_arch
from tests.vm.conftest import EXAMPLES, Images, TapNamespace, looming


def test_platforms_are_manylinux_tags_up_to_the_guests_glibc() -> None:
    tags = wheels.platforms(get_arch("aarch64"), (2, 36))
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-1] == "manylinux_2_17_aarch64"
    assert len(tags) == 20


def test_a_changed_wheel_in_the_cache_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "wheels" / "x86_64"
    folder.mkdir(parents=True)
    wheel = folder / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(b"original")
    key = "3.11:demo==1.0"
    digest = wheels._sha256(wheel)
    (folder / "index.json").write_text(json.dumps({key: {wheel.name: digest}}))
    found = wheels.fetch({"demo": "1.0"}, get_arch("x86_64"), "3.11", (2, 36), tmp_path, print)
    assert [(w.name, w.version, w.sha256) for w in found] == [("demo", "1.0", digest)]
    wheel.write_bytes(b"tampered")
    with pytest.raises(wheels.WheelError, match="does not match the SHA-256"):
        wheels.fetch({"demo": "1.0"}, get_arch("x86_64"), "3.11", (2, 36), tmp_path, print)


@pytest.mark.slow
def test_a_package_without_a_wheel_for_the_guest_is_named_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    # An application importing a compiled package: its distribution is
    # pinned to a version that has no manylinux wheel for the guest.
    app = tmp_path / "needs_wheel"
    shutil.copytree(EXAMPLES / "hello", app, ignore=shutil.ignore_patterns("_build", "dist"))
    unikernel = app / "unikernel.py"
    unikernel.write_text("import _cffi_backend  # noqa: F401\n" + unikernel.read_text())
    assert looming(app, "configure", "-t", "vm", "--arch", "aarch64").returncode == 0
    # A pip that knows no wheel of anything: what a package without one meets.
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "python-no-wheels"
    fake.write_text(
        '#!/bin/sh\necho "ERROR: No matching distribution found for cffi==2.1.1" >&2\nexit 1\n'
    )
    fake.chmod(0o755)
    # (The Debian packages come from the shared cache; no wheel of cffi
    # alone is ever cached, so the stand-in pip is asked.)
    env = {**os.environ, "LOOMING_PIP": str(fake)}
    done = looming(app, "build", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cffi has no wheel for aarch64 and CPython 3.11" in done.stderr
    assert not (app / "dist").exists() or not any((app / "dist").iterdir())


@pytest.mark.slow
@pytest.mark.root
def test_https_website_serves_tls_from_an_x86_64_vm(
    images: Images, tap_namespace: TapNamespace
) -> None:
    app = images.app("https_website", "x86_64")
    manifest = json.loads((app / "dist" / "https_website-vm.json").read_text())
    assert {"cryptography", "cffi"} <= set(manifest["wheels"])
    assert all(len(w["sha256"]) == 64 for w in manifest["wheels"].values())
    # ssl (which anyio and looming's TLS import) with the library it needs,
    # and the system trust store.
    assert "ssl" in manifest["stdlib_modules"] and "_ssl" in manifest["extension_modules"]
    assert any(library.endswith("libssl.so.3") for library in manifest["libraries"])
    assert "ca-certificates" in manifest["packages"]
    launcher = subprocess.Popen(
        [
            "ip", "netns", "exec", tap_namespace.namespace,
            sys.executable, "-m", "looming.vm.launch", str(app / "dist" / "https_website-vm.json"),
            "--vm-tap", tap_namespace.tap, "--vm-timeout", "200",
            "--ipv4", "10.0.0.2/24", "--ipv4-gateway", tap_namespace.host_address,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 150
        answered = None
        while time.monotonic() < deadline and launcher.poll() is None:
            answered = tap_namespace.run(
                "curl", "-s", "-f", "-m", "5", "--cacert", str(app / "ca.pem"),
                "--resolve", "localhost:8443:10.0.0.2", "https://localhost:8443/", timeout=15,
            )  # fmt: skip
            if answered.returncode == 0:
                break
            time.sleep(0.5)
        assert answered is not None and answered.returncode == 0, "no TLS answer"
        expected = (EXAMPLES / "https_website" / "htdocs" / "index.html").read_text()
        assert answered.stdout == expected
    finally:
        if launcher.poll() is None:
            os.kill(launcher.pid, signal.SIGTERM)
        output, _ = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, output
