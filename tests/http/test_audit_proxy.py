"""``--root-path``, ``--proxy-headers`` and ``--forwarded-allow-ips``: the
scope an application sees through ``serve_asgi`` is the one uvicorn gives
for the same keys and headers, on the fast path, h11's path and HTTP/2;
without the keys the application is not wrapped at all."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import pytest

from looming.errors import UsageError
from looming.http import proxy
from looming.http.service import HttpSettings, serve_asgi
from looming.unix.clock import UnixClock
from looming.unix.socket_stack import SocketStack

from .test_audit_line_ends import exchange
from .test_background import under_uvicorn


async def recorder(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Answers with what of its scope a proxy's headers and the root path touch."""
    if scope["type"] != "http":
        return
    seen = {
        "scheme": scope["scheme"],
        "client": list(scope["client"]) if scope.get("client") else None,
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "root_path": scope.get("root_path", ""),
    }
    body = json.dumps(seen).encode()
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": length})
    await send({"type": "http.response.body", "body": body})


class Console:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def log(self, line: str) -> None:
        self.lines.append(line)


@contextmanager
def under_looming(**keys: Any) -> Iterator[int]:
    settings = HttpSettings.from_keys(**keys)
    console = Console()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stack = await SocketStack.connect("127.0.0.1")
        task = asyncio.create_task(
            serve_asgi(recorder, console, stack, clock=UnixClock(), port=0, settings=settings)  # type: ignore[arg-type]
        )
        state["loop"], state["task"] = asyncio.get_running_loop(), task
        while not console.lines:
            await asyncio.sleep(0.01)
        ready.set()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await stack.disconnect()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(10), "serve_asgi did not start"
    try:
        yield int(console.lines[0].rsplit(":", 1)[1])
    finally:
        state["loop"].call_soon_threadsafe(state["task"].cancel)
        thread.join(15)


@contextmanager
def recorder_under_uvicorn(**keys: Any) -> Iterator[int]:
    with under_uvicorn(
        recorder,
        root_path=keys.get("root_path", ""),
        proxy_headers=keys.get("proxy_headers", False),
        forwarded_allow_ips=keys.get("forwarded_allow_ips", "127.0.0.1"),
    ) as port:
        yield port


HEADERS = {
    "none": [],
    "https_and_client": [("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "203.0.113.5")],
    "chain": [("X-Forwarded-For", "203.0.113.5, 10.0.0.2, 127.0.0.1")],
    "with_port": [("X-Forwarded-For", "203.0.113.5:4711"), ("X-Forwarded-Proto", "wss")],
    "v6_with_port": [("X-Forwarded-For", "[2001:db8::1]:80")],
    "two_fields": [("X-Forwarded-For", "198.51.100.9"), ("X-Forwarded-For", "10.0.0.3")],
    "bad_proto": [("X-Forwarded-Proto", "ftp"), ("X-Forwarded-For", "")],
}

KEYS: dict[str, dict[str, Any]] = {
    "root_only": {"root_path": "/api"},
    "loopback_trusted": {"root_path": "/api", "proxy_headers": True},
    "network_trusted": {
        "proxy_headers": True,
        "forwarded_allow_ips": "127.0.0.0/8, 10.0.0.0/8",
    },
    "not_trusted": {"proxy_headers": True, "forwarded_allow_ips": "192.0.2.1"},
    "everyone": {"root_path": "/a/b", "proxy_headers": True, "forwarded_allow_ips": "*"},
}

TARGET = "/items/x%20y?q=1"


def ask(port: int, headers: list[tuple[str, str]], close: bool) -> dict[str, Any]:
    lines = [f"GET {TARGET} HTTP/1.1", "Host: x", *(f"{n}: {v}" for n, v in headers)]
    if close:
        lines.append("Connection: close")  # (the usual path on httptools)
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode()
    answer = exchange(port, raw) if close else _one_keep_alive(port, raw)
    seen: dict[str, Any] = json.loads(answer.partition(b"\r\n\r\n")[2])
    return _comparable(seen)


def _one_keep_alive(port: int, raw: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        out = b""
        for _ in range(2):  # the second, the same head again, as the fast path reads it
            sock.sendall(raw)
            out = b""
            while b"}" not in out:
                piece = sock.recv(65536)
                assert piece, out
                out += piece
    return out


def _comparable(seen: dict[str, Any]) -> dict[str, Any]:
    if seen["client"] and seen["client"][0] == "127.0.0.1":
        seen["client"] = ["127.0.0.1", "a port of its own"]
    return seen


def ask_h2(port: int, headers: list[tuple[str, str]]) -> dict[str, Any]:
    command = ["curl", "-s", "--http2-prior-knowledge", f"http://127.0.0.1:{port}{TARGET}"]
    for name, value in headers:
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run(command, capture_output=True, timeout=10, check=True)
    return _comparable(json.loads(done.stdout))


@pytest.mark.slow
@pytest.mark.parametrize("keys", list(KEYS))
def test_the_scope_is_uvicorn_s(keys: str) -> None:
    with recorder_under_uvicorn(**KEYS[keys]) as port:
        expected = {case: ask(port, headers, True) for case, headers in HEADERS.items()}
    for parser in ("httptools", "h11"):
        with under_looming(http_parser=parser, **KEYS[keys]) as port:
            for case, headers in HEADERS.items():
                assert ask(port, headers, False) == expected[case], (parser, case)
                assert ask(port, headers, True) == expected[case], (parser, case)
                if parser == "h11" and case != "none":
                    assert ask_h2(port, headers) == expected[case], ("h2", case)


def test_without_the_keys_the_application_is_not_wrapped() -> None:
    assert proxy.behind_proxy(recorder, "", False, "127.0.0.1") is recorder
    assert isinstance(proxy.behind_proxy(recorder, "/api", False, "*"), proxy.ProxyScope)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"root_path": "api"}, "--root-path: 'api' must be empty or a path"),
        ({"root_path": "/api/"}, "no trailing slash"),
        ({"forwarded_allow_ips": "10.0.0.0/8, proxy"}, "--forwarded-allow-ips: 'proxy' is not"),
    ],
)
def test_bad_values_are_refused(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        HttpSettings.from_keys(**keys)


def test_a_websocket_scope_gets_ws_schemes_and_the_root_path() -> None:
    seen: list[MutableMapping[str, Any]] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    wrapped = proxy.behind_proxy(app, "/api", True, "10.0.0.0/8")
    for proto, scheme in [(b"https", "wss"), (b"http", "ws"), (b"wss", "wss"), (b"gopher", "ws")]:
        scope = {
            "type": "websocket",
            "scheme": "ws",
            "path": "/chat",
            "raw_path": b"/chat",
            "root_path": "",
            "client": ("10.1.2.3", 5000),
            "headers": [
                (b"x-forwarded-proto", proto),
                (b"x-forwarded-for", b"192.0.2.7, 10.9.9.9"),
            ],
        }
        asyncio.run(wrapped(scope, None, None))  # type: ignore[arg-type]
        assert seen[-1]["scheme"] == scheme
        assert seen[-1]["client"] == ("192.0.2.7", 0)
        assert (seen[-1]["path"], seen[-1]["raw_path"], seen[-1]["root_path"]) == (
            "/api/chat",
            b"/api/chat",
            "/api",
        )


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_the_access_log_names_the_forwarded_client(
    parser: str, caplog: pytest.LogCaptureFixture
) -> None:
    forwarded = [("X-Forwarded-For", "203.0.113.5, 10.0.0.2")]
    keys = {"access_log": "common", "http_parser": parser, "proxy_headers": True}
    with caplog.at_level(logging.INFO, logger="looming.http.access"):
        for allow, shown in [("127.0.0.1,10.0.0.0/8", "203.0.113.5"), ("192.0.2.1", "127.0.0.1")]:
            with under_looming(forwarded_allow_ips=allow, **keys) as port:
                ask(port, forwarded, False)
            lines = [r.getMessage() for r in caplog.records if r.name == "looming.http.access"]
            assert lines and lines[-1].startswith(f"{shown} - - ["), lines


def test_the_keys_come_from_the_command_line_or_the_environment() -> None:
    from looming.config import http_keys
    from looming.runtime import KeySpec, _port_checked, parse_keys
    from looming.runtime import UsageError as RunUsageError

    specs = [KeySpec(k.name, k.type_name, k.default, k.doc) for k in http_keys()]
    environ = {"LOOMING_ROOT_PATH": "/api", "LOOMING_FORWARDED_ALLOW_IPS": "10.0.0.0/8"}
    keys = parse_keys(specs, ["--proxy-headers"], environ).as_dict()
    settings = HttpSettings.from_keys(**keys)
    assert (settings.root_path, settings.proxy_headers, settings.forwarded_allow_ips) == (
        "/api",
        True,
        "10.0.0.0/8",
    )
    assert HttpSettings.from_keys(**parse_keys(specs, [], {}).as_dict()).proxy_headers is False
    spec = next(s for s in specs if s.name == "forwarded_allow_ips")
    with pytest.raises(RunUsageError, match="LOOMING_FORWARDED_ALLOW_IPS: 'proxy' is not"):
        _port_checked(spec, "proxy", "LOOMING_FORWARDED_ALLOW_IPS")
