"""Run a unikernel built with ``--net direct`` the way a user would, with the
Linux kernel as its peer in a network namespace.

    root namespace                          namespace NS ("lmd..." prefix)
    looming run --interface TAP             TAP (moved here once looming
      --ipv4 10.79.0.2/24 ...                 opened it) 10.79.0.1/24
      (looming's own TCP/IP stack)          curl, python clients, dnsmasq

``looming run`` creates the TAP in the root namespace; as soon as the device
exists it is moved into a fresh namespace and the kernel side is addressed
there.  The unikernel's file descriptor keeps working across the move, so
every kernel-side program runs under ``ip netns exec NS`` and no address is
configured in the root namespace.  Namespace and TAP have unique names and
are removed by name afterwards, whatever happened.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from tests.config.tooling import copy_example, looming
from tests.net.kernel import cleanup, sh, unique_suffix

PEER_ADDRESS = IPv4Address("10.79.0.1")
UNIKERNEL_ADDRESS = IPv4Interface("10.79.0.2/24")


@dataclass
class Namespace:
    """A network namespace that will hold the kernel side of a TAP."""

    name: str
    tap: str
    peer_address: IPv4Address = PEER_ADDRESS

    def netns(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 60, input: bytes | None = None) -> bytes:
        """Run a command in the namespace; its stdout (it must succeed)."""
        result = subprocess.run(
            self.netns(*argv), capture_output=True, timeout=timeout, input=input
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}: {result.stderr.decode(errors='replace')}"
            )
        return result.stdout

    def adopt(self, tap: str, *, timeout: float = 20.0, alive: subprocess.Popen[str]) -> None:
        """Wait for ``tap`` to appear in the root namespace, move it here and
        give the kernel side ``peer_address``."""
        deadline = time.monotonic() + timeout
        while sh("ip", "link", "show", "dev", tap, check=False).returncode != 0:
            if alive.poll() is not None:
                raise AssertionError(
                    f"the unikernel exited ({alive.returncode}) before opening {tap}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{tap} did not appear within {timeout} s")
            time.sleep(0.02)
        sh("ip", "link", "set", tap, "netns", self.name)
        self.run("ip", "addr", "add", f"{self.peer_address}/24", "dev", tap)
        self.run("ip", "link", "set", tap, "up")


@contextmanager
def namespace() -> Iterator[Namespace]:
    suffix = unique_suffix()
    ns = Namespace(name=f"lmdns{suffix}", tap=f"lmdt{suffix}")
    sh("ip", "netns", "add", ns.name)
    try:
        sh(*ns.netns("ip", "link", "set", "lo", "up"))
        yield ns
    finally:
        cleanup(ns.name, ns.tap)


def build_direct(example: str, dest: Path) -> Path:
    """A private copy of ``example`` configured with ``--net direct`` and built."""
    app = copy_example(example, dest)
    looming(app, "configure", "-t", "unix", "--net", "direct")
    looming(app, "build")
    return app


class OutputLines:
    """Lines of a child's output stream, collected by a thread (so waiting
    for one can time out and the pipe never fills)."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """The first new line matching ``pattern``; None if the stream ends."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                return None
            match = re.search(pattern, line)
            if match:
                return match

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


@dataclass
class RunningUnikernel:
    process: subprocess.Popen[str]
    ready: re.Match[str]
    stdout: OutputLines
    stderr: OutputLines
    exit_code: int | None = None
    log: str = field(default="")


@contextmanager
def running_direct(
    app: Path,
    ns: Namespace,
    *keys: str,
    ready: str,
    before_ready: object = None,
    timeout: float = 30.0,
) -> Iterator[RunningUnikernel]:
    """``looming run --interface TAP KEYS`` in ``app``, its TAP moved into
    ``ns``; yields once stdout matches ``ready``.  ``before_ready`` (a
    callable) runs after the move, before waiting (e.g. to start a DHCP
    server).  Afterwards the unikernel is stopped with SIGTERM and its exit
    code and stderr are kept on the yielded object."""
    process = subprocess.Popen(
        [sys.executable, "-m", "looming.cli", "run", "--interface", ns.tap, *keys],
        cwd=app,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = OutputLines(process.stdout), OutputLines(process.stderr)
    unikernel: RunningUnikernel | None = None
    try:
        ns.adopt(ns.tap, alive=process)
        if before_ready is not None:
            assert callable(before_ready)
            before_ready()
        match = stdout.wait_for(ready, timeout)
        if match is None:
            process.wait(timeout=10)
            raise AssertionError(
                f"the unikernel exited ({process.returncode}) before it was ready:\n"
                f"{stdout.text()}\n{stderr.text()}"
            )
        unikernel = RunningUnikernel(process, match, stdout, stderr)
        yield unikernel
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if unikernel is not None:
            unikernel.exit_code = process.returncode
            unikernel.log = stderr.text()
