"""What an outside audit found around looming.http.service, kept fixed:
a service on a TLS stack says https (in its "serving" line and in the
scope), and the lifespan of an application that raises at startup is
reported at INFO."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from looming.http import AsgiAdapter
from looming.http.service import HttpSettings, serve_asgi
from looming.tls.device import TlsStack
from looming.unix.clock import UnixClock
from looming.unix.kv import DirectoryKv
from looming.unix.random import UnixRandom
from looming.unix.socket_stack import SocketStack

HTTPS_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "https_website"


class Console:
    """A console that hands over the first line it is given."""

    def __init__(self) -> None:
        self.first: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def log(self, message: str) -> None:
        if not self.first.done():
            self.first.set_result(message)

    async def write(self, data: bytes) -> None:
        pass

    async def read(self) -> bytes:
        return b""


async def scope_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan unsupported: the service goes on without it
    body = json.dumps({"scheme": scope["scheme"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_a_service_on_a_tls_stack_says_https() -> None:
    async def main() -> tuple[str, bytes]:
        console = Console()
        plain = await SocketStack.connect("127.0.0.1")
        stack = await TlsStack.connect(
            plain, DirectoryKv(HTTPS_EXAMPLE / "tls"), UnixRandom(), UnixClock()
        )
        service = asyncio.create_task(
            serve_asgi(
                scope_app, console, stack, clock=UnixClock(), port=0, settings=HttpSettings()
            )
        )
        try:
            line = await asyncio.wait_for(console.first, 10)
            port = int(line.rsplit(":", 1)[1])
            context = ssl.create_default_context(cafile=str(HTTPS_EXAMPLE / "ca.pem"))
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"
            )
            writer.write(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return line, answer
        finally:
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service
            await plain.disconnect()

    line, answer = asyncio.run(main())
    assert line.startswith("serving https://127.0.0.1:"), line
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"scheme": "https"}


async def raising_at_startup(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("boom at startup\n(details on the next line)")


def test_a_lifespan_raising_at_startup_is_reported_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        adapter = AsgiAdapter(raising_at_startup)
        await adapter.startup()  # treated as unsupported: the server goes on
        await adapter.shutdown()

    with caplog.at_level(logging.INFO, logger="looming.http"):
        asyncio.run(scenario())
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [
        "ASGI 'lifespan' protocol appears unsupported (RuntimeError: boom at startup);"
        " going on without it"
    ]


BAD_METRICS_PATHS = ["/", "metrics", "/metrics/", "//metrics", "/a/../metrics", "/./m", "/m?x=1"]


@pytest.mark.parametrize("path", BAD_METRICS_PATHS)
def test_a_metrics_path_that_is_root_or_not_clean_is_refused(path: str) -> None:
    from looming.errors import UsageError
    from looming.runtime import KeySpec, parse_keys
    from looming.runtime import UsageError as KeyUsageError

    with pytest.raises(UsageError, match=r"^--metrics: .*such as /metrics"):
        HttpSettings.from_keys(metrics=path)
    spec = KeySpec("metrics", "str", "", "the metrics endpoint")
    with pytest.raises(KeyUsageError, match=r"^--metrics: .*such as /metrics"):
        parse_keys([spec], ["--metrics", path], {})


@pytest.mark.parametrize("path", ["", "/metrics", "/-/metrics", "/status/prom"])
def test_clean_metrics_paths_are_taken(path: str) -> None:
    assert HttpSettings.from_keys(metrics=path).metrics == path


def test_configure_refuses_metrics_on_the_root_with_exit_2(tmp_path: Path) -> None:
    from tests.config.tooling import copy_example, looming

    app = copy_example("asgi", tmp_path)
    done = looming(app, "configure", "-t", "unix", "--metrics", "/", check=False)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "--metrics: '/' would take the application's root page" in done.stderr
    assert not (app / "_build").exists()
