"""The website and ASGI unikernels' classes, started as generated code starts
them (devices positionally, keys as keywords) and checked with curl."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import ModuleType

import pytest

from looming.unix.clock import UnixClock
from looming.unix.kv import DirectoryKv
from looming.unix.socket_stack import SocketStack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class RecordingConsole:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.logged = asyncio.Event()

    async def log(self, message: str) -> None:
        self.lines.append(message)
        self.logged.set()

    async def write(self, data: bytes) -> None:
        self.lines.append(data.decode())

    async def read(self) -> bytes:
        return b""


def load_unikernel(folder: str) -> ModuleType:
    """Import examples/<folder>/unikernel.py under a unique name."""
    path = EXAMPLES / folder / "unikernel.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"looming_example_{folder}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))
        # The asgi example's "app" module must not shadow another test's.
        sys.modules.pop("app", None)


async def curl(*args: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out


def test_website_serves_htdocs(caplog: pytest.LogCaptureFixture) -> None:
    module = load_unikernel("static_website")

    async def scenario() -> None:
        console = RecordingConsole()
        stack = await SocketStack.connect("0.0.0.0")
        htdocs = DirectoryKv(EXAMPLES / "static_website" / "htdocs")
        website = module.Website(console, htdocs, stack, UnixClock(), port=0)
        task = asyncio.create_task(website.start())
        await asyncio.wait_for(console.logged.wait(), 10)
        (line,) = console.lines
        assert line.startswith("serving http://127.0.0.1:")
        url = line.removeprefix("serving ")
        page = await curl("-w", "\n%{http_code} %{content_type}", url + "/")
        body, _, trailer = page.rpartition(b"\n")
        assert body == (EXAMPLES / "static_website" / "htdocs" / "index.html").read_bytes()
        assert trailer == b"200 text/html; charset=utf-8"
        docs = await curl("-L", "-w", "\n%{http_code}", url + "/docs")
        assert docs.endswith(b"</html>\n\n200")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stack.disconnect()

    with caplog.at_level(logging.INFO, logger="website"):
        asyncio.run(scenario())
    assert any(r.getMessage().startswith("serving http://127.0.0.1:") for r in caplog.records)


def test_asgi_service_serves_the_starlette_app() -> None:
    module = load_unikernel("asgi")

    async def scenario() -> None:
        console = RecordingConsole()
        stack = await SocketStack.connect("127.0.0.1")
        service = module.AsgiService(console, stack, UnixClock(), port=0)
        task = asyncio.create_task(service.start())
        await asyncio.wait_for(console.logged.wait(), 10)
        url = console.lines[0].removeprefix("serving ")
        assert url.startswith("http://127.0.0.1:")
        assert await curl(url + "/") == b"hello from an ASGI unikernel\n"
        greeting = json.loads(await curl(url + "/greet/ada"))
        assert greeting == {"greeting": "hello, ada", "started": True}
        echoed = json.loads(await curl("--data-binary", "some text", url + "/echo"))
        assert echoed == {"length": 9, "text": "some text"}
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stack.disconnect()

    asyncio.run(scenario())
