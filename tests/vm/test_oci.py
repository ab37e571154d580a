"""``looming build --oci``: an OCI image layout of a unix-target unikernel
that skopeo and umoci accept, whose root file system runs the unikernel
with the image's own Python (in a chroot: nothing of the host's)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.vm.conftest import EXAMPLES, looming


def _hello(tmp_path: Path) -> Path:
    app = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", app, ignore=shutil.ignore_patterns("_build", "dist"))
    done = looming(app, "configure", "-t", "unix")
    assert done.returncode == 0, done.stderr
    return app


@pytest.mark.slow
@pytest.mark.root
def test_the_oci_layout_is_accepted_and_its_root_file_system_runs(tmp_path: Path) -> None:
    app = _hello(tmp_path)
    built = looming(app, "build", "--oci")
    assert built.returncode == 0, built.stdout + built.stderr
    layout = app / "dist" / "hello-oci"
    index = (layout / "index.json").read_bytes()
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci:{layout}"], capture_output=True, text=True, check=False
    )
    assert inspected.returncode == 0, inspected.stderr
    facts = json.loads(inspected.stdout)
    assert facts["Os"] == "linux" and facts["Architecture"] in ("amd64", "arm64")
    assert len(facts["Layers"]) == 1
    # skopeo checks every blob against its digest when it copies the image.
    copied = subprocess.run(
        ["skopeo", "copy", f"oci:{layout}:latest", f"oci:{tmp_path / 'copy'}:latest"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    bundle = tmp_path / "bundle"
    unpacked = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert unpacked.returncode == 0, unpacked.stderr
    rootfs = bundle / "rootfs"
    assert not (rootfs / "init").exists() and not (rootfs / "lib" / "modules").exists()
    process = json.loads((bundle / "config.json").read_text())["process"]
    ran = subprocess.run(
        [shutil.which("chroot") or "/usr/sbin/chroot", str(rootfs), *process["args"], "--greetings", "2"],
        capture_output=True, text=True, timeout=60, check=False,
        env=dict(e.split("=", 1) for e in process["env"]),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "hello from looming (2/2)" in ran.stdout
    # The same inputs give the same image, digest for digest.
    assert looming(app, "build", "--oci").returncode == 0
    assert (layout / "index.json").read_bytes() == index


def test_oci_is_for_the_unix_and_vm_targets(tmp_path: Path) -> None:
    # The vm target's (a KubeVirt containerDisk) is tested in test_disk_image.py.
    app = _hello(tmp_path)
    assert looming(app, "configure", "-t", "sim").returncode == 0
    done = looming(app, "build", "--oci")
    assert done.returncode == 2
    assert "--oci makes an image of a unix- or vm-target unikernel" in done.stderr
    assert not (app / "dist").exists()


@pytest.mark.slow
@pytest.mark.root
def test_a_website_serves_from_the_oci_root_file_system(tmp_path: Path) -> None:
    # The unix target's sockets resolve the listening address with
    # getaddrinfo, which needs the idna codec the image must hold.
    app = tmp_path / "static_website"
    shutil.copytree(
        EXAMPLES / "static_website", app, ignore=shutil.ignore_patterns("_build", "dist")
    )
    assert looming(app, "configure", "-t", "unix").returncode == 0
    built = looming(app, "build", "--oci")
    assert built.returncode == 0, built.stdout + built.stderr
    bundle = tmp_path / "bundle"
    layout = next((app / "dist").glob("*-oci"))
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)], check=True)
    process = json.loads((bundle / "config.json").read_text())["process"]
    port = str(20000 + os.getpid() % 20000)
    server = subprocess.Popen(
        [shutil.which("chroot") or "/usr/sbin/chroot", str(bundle / "rootfs"), *process["args"],
         "--port", port],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(e.split("=", 1) for e in process["env"]),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = subprocess.run(
                ["curl", "-s", "-f", "-m", "2", f"http://127.0.0.1:{port}/"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if answer.returncode == 0:
                break
            assert server.poll() is None, server.communicate()[0]
            time.sleep(0.2)
        assert answer.returncode == 0
        assert answer.stdout == (app / "htdocs" / "index.html").read_text()
    finally:
        server.terminate()
        server.communicate(timeout=30)
