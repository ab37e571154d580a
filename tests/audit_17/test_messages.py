"""What the user reads: one-line key errors, and log lines that say what happened."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

from looming import runtime
from looming.http import ServerConfig
from looming.http.asgi import AsgiAdapter
from tests.http.serving import serve_in_thread


def _never(keys: Any, stack: Any) -> Any:
    raise AssertionError("not started with a bad key")


def test_a_bad_key_of_run_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = [runtime.KeySpec("port", "int", 8080, "TCP port")]
    monkeypatch.setattr("sys.argv", ["app.pyz", "--port", "99999"])
    with pytest.raises(SystemExit) as stopped:
        runtime.main("app.pyz", specs, _never)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "app.pyz: --port: 99999 is not a port number (0 to 65535)"
    ]


async def _error_page_then_raise(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # What Starlette's ServerErrorMiddleware does: send the 500, then re-raise.
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b"Internal Server Error"})
    raise RuntimeError("the endpoint failed")


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "flow"])
def test_an_app_raising_after_its_error_page_is_logged_as_such(
    fast_path: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The app raised before any response of its own; its error handler
    answered 500. The log must not say it failed 'after responding'."""
    pytest.importorskip("httptools")
    config = ServerConfig(fast_path=fast_path)
    with (
        serve_in_thread(lambda: AsgiAdapter(_error_page_then_raise), config) as running,
        socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 500 ")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "ASGI application raised after its response was complete"
    ]
    assert errors[0].exc_info is not None and "endpoint failed" in str(errors[0].exc_info[1])
