"""looming's HTTP server and client over IPv6 sockets, with Python's
http.server and urllib as the peers: Host headers carry bracketed literals,
ASGI sees the addresses the socket stack reports."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from looming.http import HttpServer, Response
from looming.http.client import request
from looming.http.message import Request
from looming.unix.clock import UnixClock
from looming.unix.socket_stack import SocketStack


class _V6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextmanager
def python_server(seen: list[str]) -> Iterator[int]:
    """Python's http.server on [::1], recording each request's Host header."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers["Host"])
            body = b"from python"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = _V6Server(("::1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_client_sends_a_bracketed_host_to_python_http_server() -> None:
    seen: list[str] = []

    async def fetch(port: int) -> bytes:
        stack = SocketStack("::1")
        flow = await stack.tcp.connect("::1", port, timeout=5)
        try:
            response = await request(flow, "GET", "/")
            return response.body
        finally:
            await stack.disconnect()

    with python_server(seen) as port:
        assert asyncio.run(asyncio.wait_for(fetch(port), 20)) == b"from python"
    assert seen == [f"[::1]:{port}"]


def test_urllib_reaches_the_server_on_both_families_and_sees_its_address() -> None:
    async def handler(req: Request) -> Response:
        host = dict(req.headers).get(b"host", b"?")
        client = req.client[0] if req.client else "?"
        return Response(200, body=host + b" " + client.encode())

    def fetch(url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=10) as reply:
            body: bytes = reply.read()
            return body

    async def scenario() -> list[bytes]:
        stack = SocketStack("::")
        server = HttpServer(handler, clock=UnixClock())
        listener = await stack.tcp.listen(0, server.serve_flow)
        try:
            urls = [f"http://[::1]:{listener.port}/", f"http://127.0.0.1:{listener.port}/"]
            return [await asyncio.to_thread(fetch, url) for url in urls]
        finally:
            await stack.disconnect()

    v6, v4 = (line.decode().split() for line in asyncio.run(asyncio.wait_for(scenario(), 20)))
    assert v6[0].startswith("[::1]:") and v6[1] == "::1"
    assert v4[0].startswith("127.0.0.1:") and v4[1] == "127.0.0.1"
