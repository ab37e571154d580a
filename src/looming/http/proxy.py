"""A service behind a path prefix or a reverse proxy: ``--root-path``,
``--proxy-headers`` and ``--forwarded-allow-ips``, as uvicorn reads them.

:class:`ProxyScope` wraps the application (only when one of the keys asks
for it: without them no request does any of this work) and rewrites each
``http`` and ``websocket`` scope before the application sees it, on every
path the server takes (the fast path, h11's, HTTP/2 and websockets alike):

* ``root_path``: the scope's ``root_path``, and the prefix of its ``path``
  and ``raw_path`` (ASGI's ``path`` holds the root path; Starlette takes it
  off again to route);
* proxy headers, from a client whose address is trusted (``127.0.0.1`` by
  default, ``*`` for any, addresses and networks otherwise): an
  ``X-Forwarded-Proto`` of ``http``, ``https``, ``ws`` or ``wss`` is the
  scope's scheme (``ws``/``wss`` on a websocket), and ``X-Forwarded-For``
  gives the client: the nearest address in it that is not itself trusted
  (each proxy appends the address it heard from), the first one when all
  are, with the port a ``host:port`` or ``[v6]:port`` gives, else 0.
  The ``Forwarded`` field (RFC 7239) is not read, as uvicorn does not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]

_SCHEMES = {"http": "http", "https": "https", "ws": "ws", "wss": "wss"}
_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_problem(value: object) -> str | None:
    """What is wrong with a ``--forwarded-allow-ips`` value, or None."""
    if not isinstance(value, str):
        return "give addresses or networks separated by commas, or *"
    for item in value.split(","):
        item = item.strip()
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"{item!r} is not an address or network (give e.g. 127.0.0.1,10.0.0.0/8 or *)"
    return None


def root_path_problem(value: object) -> str | None:
    """What is wrong with a ``--root-path`` value, or None."""
    if value == "":
        return None
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or value.endswith("/")
        or not value.isascii()
        or any(c.isspace() or c in "?#" for c in value)
    ):
        return (
            f"{value!r} must be empty or a path such as /api (no trailing slash, query or spaces)"
        )
    return None


class TrustedProxies:
    """The client addresses whose forwarding headers are believed."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.everyone = "*" in items
        self.networks: list[_Network] = [
            ipaddress.ip_network(item, strict=False) for item in items if item != "*"
        ]
        self._known: dict[str, bool] = {}

    def __contains__(self, host: str | None) -> bool:
        if self.everyone:
            return True
        if not host:
            return False
        known = self._known.get(host)
        if known is None:
            known = self._judge(host)
            if len(self._known) < 4096 and len(host) <= 64:
                self._known[host] = known
        return known

    def _judge(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_of(self, forwarded_for: str) -> tuple[str, int]:
        """The client an ``X-Forwarded-For`` list names (see the module's notes)."""
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        if not self.everyone:
            for hop in reversed(hops):
                host, port = host_and_port(hop)
                if host not in self:
                    return host, port
        return host_and_port(hops[0])


def host_and_port(hop: str) -> tuple[str, int]:
    """A forwarded address with its port if it gives one (``1.2.3.4:5``,
    ``[::1]:5``); anything else is the host, port 0."""
    if hop.startswith("["):
        end = hop.find("]")
        if end < 0:
            return hop, 0
        host, rest = hop[1:end], hop[end + 1 :]
        if not rest:
            return host, 0
        if rest[0] != ":":
            return hop, 0
        return host, int(rest[1:]) if rest[1:].isdigit() else 0
    if hop.count(":") == 1:
        host, _, port = hop.partition(":")
        return (host, int(port)) if port.isdigit() else (hop, 0)
    return hop, 0


class ProxyScope:
    """The application, seeing scopes rewritten by ``root_path`` and, when
    ``trusted`` is given, the proxy headers (see the module's notes)."""

    def __init__(self, app: App, root_path: str = "", trusted: TrustedProxies | None = None):
        self.app = app
        self.root_path = root_path
        self.raw_root = root_path.encode("ascii")
        self.trusted = trusted

    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            if self.root_path:
                scope["root_path"] = self.root_path
                scope["path"] = self.root_path + scope["path"]
                scope["raw_path"] = self.raw_root + scope["raw_path"]
            if self.trusted is not None:
                self._forwarded(scope, kind)
        return self.app(scope, receive, send)

    def _forwarded(self, scope: Scope, kind: str) -> None:
        client = scope.get("client")
        trusted = self.trusted
        if trusted is None or (client[0] if client else None) not in trusted:
            return
        proto: bytes | None = None
        hops: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-for":
                hops.append(value)
        if proto is not None:
            scheme = (_WS_SCHEMES if kind == "websocket" else _SCHEMES).get(
                proto.decode("latin-1").strip()
            )
            if scheme is not None:
                scope["scheme"] = scheme
        if hops:
            host, port = trusted.client_of(b", ".join(hops).decode("latin-1"))
            if host:
                scope["client"] = (host, port)


def behind_proxy(app: App, root_path: str, proxy_headers: bool, allow_ips: str) -> App:
    """``app`` as the keys ask: itself when neither asks for anything."""
    if not root_path and not proxy_headers:
        return app
    return ProxyScope(app, root_path, TrustedProxies(allow_ips) if proxy_headers else None)
