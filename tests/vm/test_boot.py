"""Booting images under qemu (software emulation) for both architectures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.vm.conftest import ARCHES, EXAMPLES, Images, TapNamespace, looming

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("arch", ARCHES)
def test_hello_boots_and_prints_its_greetings(images: Images, arch: str) -> None:
    app = images.app("hello", arch)
    done = looming(app, "run", "--greetings", "2", "--vm-timeout", "120")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "hello from looming (1/2)" in lines
    assert "hello from looming (2/2)" in lines
    # The console shows the unikernel, not the kernel's boot messages.
    assert not [line for line in lines if line.startswith("[")], done.stdout
    # The interpreter found its prefix (its landmark, os, is in the image).
    assert "Could not find platform" not in done.stdout, done.stdout


@pytest.mark.parametrize("arch", ARCHES)
def test_describe_image_reports_size_and_contents(images: Images, arch: str) -> None:
    app = images.app("hello", arch)
    done = looming(app, "describe", "--image")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith(f"hello-vm.json: {arch} image, ")
    assert "linux-image-" in text and "python3.11-minimal" in text
    lines = text.splitlines()
    modules = next(line for line in lines if line.startswith("kernel modules: "))
    assert "virtio_net" in modules
    assert ("virtio_mmio" if arch == "aarch64" else "virtio_pci") in modules
    # Only aarch64's machine has a virtio-rng device (x86_64's kernel uses RDRAND).
    assert ("virtio-rng" in modules) == (arch == "aarch64")
    libraries = next(line for line in lines if line.startswith("shared libraries: "))
    assert "libc.so.6" in libraries and "libffi.so.8" in libraries
    # Only what the unikernel reaches: asyncio is in, the stdlib's HTTP server is not.
    assert "  asyncio" in lines and "  looming.runtime" in lines
    assert "  http.server" not in lines and "  tkinter" not in lines


def test_run_help_lists_the_keys_from_the_build_without_booting(images: Images) -> None:
    app = images.app("hello", "aarch64")
    began = time.monotonic()
    done = looming(app, "run", "--help")
    elapsed = time.monotonic() - began
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--greetings INT" in done.stdout and "--vm-tap NAME" in done.stdout
    # Read from the image's build inputs: no kernel started, so no console lines.
    assert "looming-vm:" not in done.stdout
    assert elapsed < 10, f"run --help took {elapsed:.1f} s"


def test_a_crashing_unikernel_prints_its_traceback_and_the_vm_stops_with_its_status(
    images: Images,
) -> None:
    app = images.app("crash", "x86_64")
    done = looming(app, "run", "--vm-timeout", "120", "--vm-trace")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "about to fail" in done.stdout
    assert "Traceback (most recent call last)" in done.stdout
    assert "RuntimeError: the crash unikernel fails on purpose" in done.stdout
    # --vm-trace shows the kernel's messages and /init's stages, in order.
    lines = done.stdout.splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert first("Run /init as init process") < first("/init started") < first("modules loaded")
    # The x86_64 machine has no virtio-rng: the kernel's random pool must be
    # ready (from RDRAND) before Python, which asks it for its hash seed.
    assert "virtio_rng" not in done.stdout
    assert first("random: crng init done") < first("Run /init as init process")


@pytest.mark.root
@pytest.mark.parametrize("arch", ARCHES)
def test_static_website_serves_curl_from_the_host_side(
    images: Images, tap_namespace: TapNamespace, arch: str
) -> None:
    app = images.app("static_website", arch)
    manifest = app / "dist" / "website-vm.json"
    launcher = subprocess.Popen(
        [
            "ip", "netns", "exec", tap_namespace.namespace,
            sys.executable, "-m", "looming.vm.launch", str(manifest),
            "--vm-tap", tap_namespace.tap, "--vm-timeout", "150",
            "--ipv4", "10.0.0.2/24", "--ipv4-gateway", tap_namespace.host_address, "--port", "8080",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        url = "http://10.0.0.2:8080/"
        deadline = time.monotonic() + 120
        answered = None
        while time.monotonic() < deadline and launcher.poll() is None:
            answered = tap_namespace.run("curl", "-s", "-f", "-m", "2", url, timeout=10)
            if answered.returncode == 0:
                break
            time.sleep(0.5)
        assert answered is not None and answered.returncode == 0, "the website never answered"
        expected = (EXAMPLES / "static_website" / "htdocs" / "index.html").read_text()
        assert answered.stdout == expected
        large = tap_namespace.run(
            "curl", "-s", "-f", "-m", "30", url + "data/large.txt", timeout=40
        )
        assert large.returncode == 0
        expected_large = (EXAMPLES / "static_website" / "htdocs" / "data" / "large.txt").read_text()
        assert large.stdout == expected_large
    finally:
        if launcher.poll() is None:
            os.kill(launcher.pid, signal.SIGTERM)  # ip netns exec runs the launcher in place
        output, _ = launcher.communicate(timeout=30)
    # The unikernel stops as on the unix target: status 0.
    assert launcher.returncode == 0, output
    assert "received SIGTERM, stopping" in output
    assert "serving http://10.0.0.2:8080" in output
