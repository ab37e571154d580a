"""Applications beyond a static site in x86_64 VMs: FastAPI (pydantic's
compiled core as a wheel, anyio's worker threads) and the Git-backed
website (dulwich as a wheel, the store on the VM's disk, kept through a
kill -9 of qemu)."""

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


def _launch(manifest: Path, tap_namespace: TapNamespace, *keys: str) -> subprocess.Popen[str]:
    """``looming run`` of the image on the namespace's TAP as 10.0.0.2."""
    return subprocess.Popen(
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


def looming_run(manifest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The launcher, run to its end outside any namespace."""
    return subprocess.run(
        [sys.executable, "-m", "looming.vm.launch", str(manifest), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@contextmanager
def booted(manifest: Path, tap_namespace: TapNamespace, *keys: str) -> Iterator[list[str]]:
    """The image booted on the namespace's TAP as 10.0.0.2; yields a list
    that holds the console output once the VM has stopped (on SIGTERM)."""
    launcher = _launch(manifest, tap_namespace, *keys)
    output: list[str] = []
    try:
        yield output
    finally:
        if launcher.poll() is None:
            os.kill(launcher.pid, signal.SIGTERM)  # ip netns exec runs the launcher in place
        output.append(launcher.communicate(timeout=60)[0])
        print(output[0])  # the console, shown if the test fails
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


def _git(clone: Path, *args: str) -> list[str]:
    return ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example.org", *args]


def _seeded_disk(tmp_path: Path, token: str) -> Path:
    """A disk image made beforehand, holding the push token: looming run
    uses a disk image it finds as it is (mkfs.ext4 -d fills it from a folder)."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "push.token").write_text(token + "\n")
    image = tmp_path / "site-disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(seed), str(image), "64M"], check=True)
    return image


def _kill_qemu_of(launcher: subprocess.Popen[str]) -> str:
    """kill -9 of the launcher's qemu: the guest gets no chance to write
    anything out. The launcher's output, once it has noticed."""
    from tests.vm.test_launcher import _qemu_of

    os.kill(_qemu_of(launcher.pid), signal.SIGKILL)
    output = launcher.communicate(timeout=60)[0]
    assert launcher.returncode == 125, output
    return output


@pytest.mark.slow
@pytest.mark.root
def test_store_website_keeps_pushes_on_its_disk_through_kill_9(
    images: Images, tap_namespace: TapNamespace, tmp_path: Path
) -> None:
    app = images.app("store_website", "x86_64")
    manifest = app / "dist" / "store-website-vm.json"
    facts = json.loads(manifest.read_text())
    assert "dulwich" in facts["wheels"] and facts["needs_disk"]
    assert "virtio_blk" in facts["kernel_modules"]
    token = "vm-push-token-0123456789"
    disk = _seeded_disk(tmp_path, token)
    keys = ("--vm-disk", str(disk), "--listen", "0.0.0.0", "--push-token-file", "/disk/push.token")
    site = "http://10.0.0.2:8080/"
    repo = f"http://user:{token}@10.0.0.2:8418/"
    first = _launch(manifest, tap_namespace, *keys)
    try:
        assert "<h1>It works</h1>" in first_answer(tap_namespace, site)
        # A second VM on the same disk is refused before it boots.
        again = looming_run(manifest, "--vm-disk", str(disk), "--vm-tap", "loomingnotap")
        assert again.returncode == 2 and f"the disk image {disk} is in use" in again.stderr
        clone = tmp_path / "site"
        cloned = tap_namespace.run(
            "git", "clone", "-q", "-b", "main", repo, str(clone), timeout=120
        )
        assert cloned.returncode == 0, cloned.stderr
        (clone / "index.html").write_text("<h1>kept</h1>\n")
        subprocess.run(_git(clone, "commit", "-q", "-am", "kept"), check=True)
        pushed = tap_namespace.run(*_git(clone, "push", "-q", "origin", "HEAD:main"), timeout=120)
        assert pushed.returncode == 0, pushed.stderr
        assert curl(tap_namespace, site) == "<h1>kept</h1>\n"
    except BaseException:
        first.kill()  # and its qemu with it
        print(first.communicate(timeout=60)[0])  # the console, shown with the failure
        raise
    output = _kill_qemu_of(first)
    # The next boot of the same disk serves the push, and clones give its commit.
    with booted(manifest, tap_namespace, *keys):
        assert first_answer(tap_namespace, site) == "<h1>kept</h1>\n", output
        again_clone = tmp_path / "again"
        cloned = tap_namespace.run("git", "clone", "-q", "-b", "main", repo, str(again_clone))
        assert cloned.returncode == 0, cloned.stderr
        log = subprocess.run(
            _git(again_clone, "log", "--format=%s"), capture_output=True, text=True
        )
        assert log.stdout.splitlines()[0] == "kept"
        # Without the token the push port takes no writes.
        anonymous = tap_namespace.run(
            "git", "-C", str(again_clone), "push", "-q", "http://10.0.0.2:8418/", "HEAD:other",
            timeout=60, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )  # fmt: skip
        assert anonymous.returncode != 0
