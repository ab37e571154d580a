"""HTTP/1.1 over any looming Flow: server, client, static sites and ASGI.

The server only needs a :class:`~looming.devices.Flow`, so the same code runs
over host sockets, looming's own TCP, TLS or a vchan::

    server = HttpServer(StaticSite(htdocs), clock=clock)   # or AsgiAdapter(app)
    listener = await stack.tcp.listen(8080, server.serve_flow)

The Date header reads ``clock``, the unikernel's clock device. A handler is
any ``async def handler(request: Request) -> Response``; a response body may
be ``bytes`` or an async iterable of chunks (sent chunked).

Each name here imports its module when it is first used, so a static site
does not load the ASGI adapter or the client (a unikernel's imports are
most of its time to boot under emulation). The imports are written out
below, so tools that follow imports to pack an application find them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    found: Any
    if name in ("AsgiAdapter", "LifespanFailed"):
        from looming.http import asgi

        found = getattr(asgi, name)
    elif name in ("HttpClient", "request"):
        from looming.http import client

        found = getattr(client, name)
    elif name in ("Body", "ClientResponse", "Handler", "Headers", "Request", "Response"):
        from looming.http import message

        found = getattr(message, name)
    elif name in ("HttpServer", "ServerConfig"):
        from looming.http import server

        found = getattr(server, name)
    elif name == "StaticSite":
        from looming.http import static

        found = static.StaticSite
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = found  # found directly from now on
    return found
