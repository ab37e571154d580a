"""Running a looming HTTP server on the real socket stack in a background thread,
so tests can talk to it with ordinary blocking clients (http.client, curl)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from looming.devices.kv import EntryKind
from looming.errors import KeyNotFound, NotAValue
from looming.event_loop import event_loop_factory
from looming.http import Handler, HttpServer, ServerConfig
from looming.unix.clock import UnixClock
from looming.unix.socket_stack import SocketStack

HTDOCS = Path(__file__).resolve().parents[2] / "examples" / "static_website" / "htdocs"
FIXED_MTIME = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class MemoryKv:
    """A KvRo over a dict that trusts its keys completely: a server that let
    ``..`` through would reach the entries planted outside the site."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.keys_asked: list[str] = []

    @classmethod
    def from_folder(cls, root: Path) -> MemoryKv:
        files = {
            str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }
        return cls(files)

    def _is_dir(self, key: str) -> bool:
        prefix = key.strip("/") + "/"
        return key.strip("/") == "" or any(name.startswith(prefix) for name in self.files)

    async def exists(self, key: str) -> EntryKind | None:
        self.keys_asked.append(key)
        if key in self.files:
            return EntryKind.VALUE
        return EntryKind.DICTIONARY if self._is_dir(key) else None

    def _value(self, key: str) -> bytes:
        self.keys_asked.append(key)
        if key in self.files:
            return self.files[key]
        if self._is_dir(key):
            raise NotAValue(key)
        raise KeyNotFound(key)

    async def get(self, key: str) -> bytes:
        return self._value(key)

    async def get_partial(self, key: str, offset: int, length: int) -> bytes:
        return self._value(key)[offset : offset + length]

    async def size(self, key: str) -> int:
        return len(self._value(key))

    async def list(self, prefix: str = "") -> list[tuple[str, EntryKind]]:
        raise NotImplementedError

    async def digest(self, key: str) -> str:
        return hashlib.sha256(self._value(key)).hexdigest()

    async def last_modified(self, key: str) -> float:
        self._value(key)
        return FIXED_MTIME


class RunningServer:
    def __init__(self, port: int, server: HttpServer, loop: asyncio.AbstractEventLoop) -> None:
        self.port = port
        self.server = server
        self.loop = loop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def serve_in_thread(
    handler_factory: Callable[[], Handler],
    config: ServerConfig | None = None,
    *,
    loop: str = "asyncio",
) -> Iterator[RunningServer]:
    """Serve ``handler_factory()`` on 127.0.0.1 (a free port) until the block
    ends, on the event loop ``loop`` names (asyncio or uvloop)."""
    ready = threading.Event()
    state: dict[str, object] = {}

    async def main() -> None:
        stack = await SocketStack.connect("127.0.0.1")
        server = HttpServer(handler_factory(), config, clock=UnixClock())
        listener = await stack.tcp.listen(0, server.serve_flow)
        stop = asyncio.Event()
        state["running"] = RunningServer(listener.port, server, asyncio.get_running_loop())
        state["stop"] = stop
        ready.set()
        await stop.wait()
        await stack.disconnect()

    def run() -> None:
        try:
            with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
                runner.run(main())
        except BaseException as error:
            state["error"] = error
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "server did not start"
    error = state.get("error")
    if isinstance(error, BaseException):
        raise RuntimeError("server failed to start") from error
    running = state["running"]
    assert isinstance(running, RunningServer)
    try:
        yield running
    finally:
        stop = state["stop"]
        assert isinstance(stop, asyncio.Event)
        running.loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        assert not thread.is_alive(), "server thread did not stop"


def wait_until_stalled(count: Callable[[], int], quiet: float = 1.0, timeout: float = 20.0) -> int:
    """``count()`` once it has not changed for ``quiet`` seconds.

    For producers held back by a client that does not read: on a busy
    machine they take a while to fill the buffers, so a fixed pause would
    make a flaky test. Still growing after ``timeout`` is a failure.
    """
    import time

    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"still producing after {timeout} s (at {last}): no backpressure")
