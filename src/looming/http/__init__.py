"""HTTP/1.1 over any looming Flow: server, client, static sites and ASGI."""

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
