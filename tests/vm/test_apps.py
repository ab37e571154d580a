"""Applications beyond a static site in x86_64 VMs: FastAPI (pydantic's
compiled core as a wheel, anyio's worker threads) and the Git-backed
website (dulwich as a wheel, the store in the guest's memory)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.vm.conftest import Images, TapNamespace

BOOT_DEADLINE = 180.0


@contextmanager
def booted(manifest: Path, tap_namespace: TapNamespace, *keys: str) -> Iterator[list[str]]:
    """The image booted on the namespace's TAP as 10.0.0.2; yields a list
    that holds the console output once the VM has stopped (on SIGTERM)."""
    launcher = subprocess.Popen(
        [
            "ip", "netns", "exec", tap_namespace.namespace,
            sys.executable, "-m", "looming.vm.launch", str(manifest),
            "--vm-tap", tap_namespace.tap, "--vm-timeout", "300",
            "--ipv4", "10.0.0.2/24", "--ipv4-gateway", tap_namespace.host_address, *keys,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    output: list[str] = []
    try:
        yield output
    finally:
        if launcher.poll() is None:
            os.kill(launcher.pid, signal.SIGTERM)  # ip netns exec runs the launcher in place
        output.append(launcher.communicate(timeout=60)[0])
    assert launcher.returncode == 0, output[0]
    assert "received SIGTERM, stopping" in output[0]


def first_answer(tap_namespace: TapNamespace, url: str) -> str:
    """The body of the first successful GET of ``url``, polled while the VM boots."""
    deadline = time.monotonic() + BOOT_DEADLINE
    while time.monotonic() < deadline:
        answered = tap_namespace.run("curl", "-s", "-f", "-m", "3", url, timeout=15)
        if answered.returncode == 0:
            return answered.stdout
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered")


def curl(tap_namespace: TapNamespace, *args: str) -> str:
    done = tap_namespace.run("curl", "-s", "-f", "-m", "20", *args, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.root
def test_fastapi_serves_from_an_x86_64_vm(images: Images, tap_namespace: TapNamespace) -> None:
    app = images.app("fastapi", "x86_64")
    manifest = app / "dist" / "fastapi-vm.json"
    facts = json.loads(manifest.read_text())
    assert "pydantic_core" in facts["wheels"]
    # zoneinfo (pydantic) asks sysconfig, which imports its build variables by name.
    assert {"sysconfig", "_sysconfigdata__x86_64-linux-gnu"} <= set(facts["stdlib_modules"])
    base = "http://10.0.0.2:8000"
    with booted(manifest, tap_namespace, "--port", "8000") as output:
        assert first_answer(tap_namespace, base + "/") == "hello from a FastAPI unikernel\n"
        # A plain def endpoint: anyio's backend, loaded by name, runs it in a thread.
        assert json.loads(curl(tap_namespace, base + "/sync")) == {"thread": "worker"}
        item = {"name": "lamp", "price": 10.0, "tags": ["a", "b"]}
        priced = curl(
            tap_namespace, "-H", "content-type: application/json", "-d", json.dumps(item),
            base + "/items",
        )  # fmt: skip
        assert json.loads(priced) == {"name": "lamp", "price_with_tax": 12.0, "tag_count": 2}
        # pydantic's validation (its compiled core) refuses a negative price.
        refused = tap_namespace.run(
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "20",
            "-H", "content-type: application/json", "-d", '{"name": "x", "price": -1}',
            base + "/items", timeout=30,
        )  # fmt: skip
        assert refused.stdout == "422"
        assert curl(tap_namespace, base + "/stream-sync?count=2") == "line 0\nline 1\n"
    assert "serving http://10.0.0.2:8000" in output[0]


@pytest.mark.slow
@pytest.mark.root
def test_store_website_serves_and_clones_from_an_x86_64_vm(
    images: Images, tap_namespace: TapNamespace, tmp_path: Path
) -> None:
    app = images.app("store_website", "x86_64", "--storage", "memory")
    manifest = app / "dist" / "store-website-vm.json"
    assert "dulwich" in json.loads(manifest.read_text())["wheels"]
    keys = ("--listen", "0.0.0.0", "--push-anonymous-read", "true")
    with booted(manifest, tap_namespace, *keys):
        page = first_answer(tap_namespace, "http://10.0.0.2:8080/")
        assert "<h1>It works</h1>" in page
        # The git CLI clones the store the page came from, over the VM's stack.
        clone = tmp_path / "site"
        cloned = tap_namespace.run(
            "git", "clone", "-q", "-b", "main", "http://10.0.0.2:8418/", str(clone), timeout=120
        )
        assert cloned.returncode == 0, cloned.stderr
        assert (clone / "index.html").read_text() == page
        # Without credentials the push port takes no writes.
        (clone / "index.html").write_text("changed\n")
        git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example.org"]
        subprocess.run([*git, "commit", "-q", "-am", "change"], check=True)
        no_prompt = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        pushed = tap_namespace.run(
            *git, "push", "-q", "origin", "HEAD:main", timeout=60, env=no_prompt
        )
        assert pushed.returncode != 0
        assert curl(tap_namespace, "http://10.0.0.2:8080/") == page
