"""HTTP/1.1 over any looming Flow: server, client, static sites and ASGI.

The server only needs a :class:`~looming.devices.Flow`, so the same code runs
over host sockets, looming's own TCP, TLS or a vchan::

    server = HttpServer(StaticSite(htdocs))          # or AsgiAdapter(app)
    listener = await stack.tcp.listen(8080, server.serve_flow)

A handler is any ``async def handler(request: Request) -> Response``; a
response body may be ``bytes`` or an async iterable of chunks (sent chunked).
"""

from looming.http.asgi import AsgiAdapter, LifespanFailed
from looming.http.client import HttpClient, request
from looming.http.message import Body, ClientResponse, Handler, Headers, Request, Response
from looming.http.server import HttpServer, ServerConfig
from looming.http.static import StaticSite

__all__ = [
    "AsgiAdapter",
    "Body",
    "ClientResponse",
    "Handler",
    "Headers",
    "HttpClient",
    "HttpServer",
    "LifespanFailed",
    "Request",
    "Response",
    "ServerConfig",
    "StaticSite",
    "request",
]
