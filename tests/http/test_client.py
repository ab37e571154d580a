"""The looming HTTP client over the socket stack, against Python's http.server
(a server nobody here wrote) and against the looming server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from looming.http import HttpClient, StaticSite, request
from looming.unix.socket_stack import SocketStack

from .serving import HTDOCS, MemoryKv, serve_in_thread


class KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: set[tuple[str, int]] = set()

    def do_GET(self) -> None:
        KeepAliveHandler.connections.add(self.client_address)
        body = f"you asked for {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        self.send_response(201)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[::-1])

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def python_server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), KeepAliveHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def test_client_keeps_the_connection_alive(python_server: int) -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        flow = await stack.tcp.connect("127.0.0.1", python_server, timeout=5)
        KeepAliveHandler.connections.clear()
        first = await request(flow, "GET", "/one")
        second = await request(flow, "GET", "/two")
        posted = await request(flow, "POST", "/p", headers=[("X-Test", "1")], body=b"abc")
        assert first.status == 200 and first.body == b"you asked for /one\n"
        assert first.header(b"Content-Type") == b"text/plain"
        assert second.body == b"you asked for /two\n"
        assert posted.status == 201 and posted.body == b"cba"
        assert len(KeepAliveHandler.connections) == 1
        await flow.close()
        await stack.disconnect()

    asyncio.run(scenario())


def test_client_against_looming_static_site() -> None:
    kv = MemoryKv.from_folder(HTDOCS)
    with serve_in_thread(lambda: StaticSite(kv)) as running:

        async def scenario() -> None:
            stack = SocketStack("127.0.0.1")
            flow = await stack.tcp.connect("127.0.0.1", running.port, timeout=5)
            client = HttpClient(flow)
            page = await client.request("GET", "/")
            assert page.status == 200
            assert page.body == (HTDOCS / "index.html").read_bytes()
            assert client.reusable
            head = await client.request("HEAD", "/css/site.css")
            assert head.status == 200 and head.body == b""
            etag = page.header(b"etag")
            assert etag is not None
            cached = await client.request("GET", "/", headers=[(b"if-none-match", etag)])
            assert cached.status == 304
            await flow.close()
            await stack.disconnect()

        asyncio.run(scenario())
