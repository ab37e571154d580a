"""Running an ASGI application as a service: what operators expect around it.

:func:`serve_asgi` runs the application's lifespan, listens, and on
cancellation (``looming run`` turns SIGTERM and SIGINT into one) stops
gracefully: the listener closes, idle connections close, responses in flight
and work after responses (background tasks) get ``shutdown_timeout`` seconds
in all to finish (what is still running then is cancelled, and has
:data:`~looming.http.server.CUT_GRACE` to unwind), then the lifespan shutdown
runs.
Around it: access logs (common or JSON lines), an opt-in Prometheus
``/metrics`` endpoint, a connection limit, a root path and proxy headers
(:mod:`looming.http.proxy`), all set by the keys that
``looming.config.http_keys()`` declares (and so also by ``LOOMING_*``
environment variables).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from looming.addresses import stack_url
from looming.devices import Clock, Console, Stack
from looming.errors import UsageError
from looming.http import proxy
from looming.http.asgi import AsgiAdapter, AsgiApp
from looming.http.h2c import abuse_metrics
from looming.http.message import Request, Response
from looming.http.parser import chosen_parser
from looming.http.server import HttpServer, ServerConfig

log = logging.getLogger("looming.http")
access_log = logging.getLogger("looming.http.access")

ACCESS_LOG_FORMATS = ("off", "common", "json")


@dataclass(frozen=True)
class HttpSettings:
    """The operational keys of an HTTP service (see ``looming.config.http_keys``)."""

    access_log: str = "off"
    metrics: str = ""
    max_connections: int = 1000
    shutdown_timeout: float = 10.0
    http_parser: str = "auto"
    ws_max_size: int = 16 * 1024 * 1024
    cancel_on_disconnect: float = 0.0
    max_body_size: int = 16 * 1024 * 1024
    root_path: str = ""
    proxy_headers: bool = False
    forwarded_allow_ips: str = "127.0.0.1"

    @classmethod
    def from_keys(cls, **keys: Any) -> HttpSettings:
        """Settings from key values; a bad value is a UsageError (exit 2)."""
        known = {k: v for k, v in keys.items() if k in cls.__dataclass_fields__}
        settings = cls(**known)
        for name, problem_of in KEY_PROBLEMS.items():
            problem = problem_of(getattr(settings, name))
            if problem is not None:
                raise UsageError(f"--{name.replace('_', '-')}: {problem}")
        return settings


# What is wrong with a key's value, or None. ``looming.runtime.KEY_CHECKS``
# names these, so configure and run refuse what the service refuses.


def access_log_problem(value: object) -> str | None:
    if value not in ACCESS_LOG_FORMATS:
        return f"{value!r} is not one of {', '.join(ACCESS_LOG_FORMATS)}"
    return None


_METRICS_PATH = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+")
"""A clean absolute path: segments of RFC 3986 path characters (no
percent-escapes, query or fragment; no empty segment, so no trailing slash)."""


def metrics_problem(value: object) -> str | None:
    """The endpoint's path must be clean and absolute, and not ``/`` (which
    would take the application's root page)."""
    if not value:
        return None  # no endpoint
    if value == "/":
        return "'/' would take the application's root page; give a path such as /metrics"
    if not isinstance(value, str) or not _METRICS_PATH.fullmatch(value):
        return f"{value!r} must be a clean absolute path such as /metrics"
    if any(segment in (".", "..") for segment in value.split("/")):
        return f"{value!r} must be a clean absolute path such as /metrics (no . or ..)"
    return None


def max_connections_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "give 0 (no limit) or a positive number"
    return None


def ws_max_size_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return "give a positive number of bytes"
    return None


def max_body_size_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return "give a positive number of bytes"
    return None


def shutdown_timeout_problem(value: object) -> str | None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return "give a finite number of seconds, 0 or more"
    return None


def cancel_on_disconnect_problem(value: object) -> str | None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return "give 0 (never cancel, the default) or a finite number of seconds"
    return None


def http_parser_problem(value: object) -> str | None:
    try:
        chosen_parser(str(value))
    except ValueError as error:
        return str(error)
    return None


def root_path_problem(value: object) -> str | None:
    return proxy.root_path_problem(value)


def proxy_headers_problem(value: object) -> str | None:
    return None if isinstance(value, bool) else "give true or false"


def forwarded_allow_ips_problem(value: object) -> str | None:
    return proxy.trusted_problem(value)


KEY_PROBLEMS = {
    "access_log": access_log_problem,
    "metrics": metrics_problem,
    "max_connections": max_connections_problem,
    "ws_max_size": ws_max_size_problem,
    "max_body_size": max_body_size_problem,
    "shutdown_timeout": shutdown_timeout_problem,
    "cancel_on_disconnect": cancel_on_disconnect_problem,
    "http_parser": http_parser_problem,
    "root_path": root_path_problem,
    "proxy_headers": proxy_headers_problem,
    "forwarded_allow_ips": forwarded_allow_ips_problem,
}


_ESCAPES = {c: f"\\x{c:02X}" for c in [*range(0x20), 0x22, 0x5C, *range(0x7F, 0x100)]}
"""Bytes a common log line shows as ``\\xHH``, as nginx does: control bytes,
``"`` and ``\\`` (which would end or escape the quoted request) and bytes
beyond ASCII; a log parser then reads the request whole."""

_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def escaped(text: str) -> str:
    """``text`` (latin-1 code points) as a common log line may hold it."""
    if _PLAIN.fullmatch(text):
        return text
    return text.translate(_ESCAPES)


class AccessLog:
    """One log record per response, in the common log format or as JSON,
    stamped with the time of ``clock`` (the unikernel's clock device). With
    ``trusted`` (``--proxy-headers``), the client is the one a trusted
    proxy's X-Forwarded-For names, as the application's scope has it.

    Every response begun gets its record: one the client cut off is
    ``aborted`` (its status as sent, the body bytes sent before the cut; a
    common line ends in `` aborted``); websocket sessions are 101 (``200``
    over HTTP/2) or their refusal's status; the server's own refusals (400,
    408, 413, 431, 503, ...) are logged too, as ``"-"`` when no request line
    could be read."""

    def __init__(self, style: str, clock: Clock, trusted: proxy.TrustedProxies | None = None):
        self.style = style
        self.clock = clock
        self.trusted = trusted

    def _host(self, request: Request) -> str:
        client = request.client
        if client is None:
            return "-"
        trusted = self.trusted
        if trusted is None or client[0] not in trusted:
            return client[0]
        hops = [value for name, value in request.headers if name == b"x-forwarded-for"]
        if hops:
            forwarded = trusted.client_of(b", ".join(hops).decode("latin-1"))[0]
            if forwarded:
                return forwarded
        return client[0]

    def __call__(
        self, request: Request, status: int, sent: int, seconds: float, aborted: bool = False
    ) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        host = self._host(request)
        if self.style == "json":
            record = {
                "aborted": aborted,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock.now())),
                "client": host,
                "method": request.method,
                "target": request.target,
                "http_version": request.http_version,
                "status": status,
                "bytes": sent,
                "duration_ms": round(seconds * 1000, 3),
                "user_agent": (request.header(b"user-agent") or b"").decode("latin-1"),
            }
            access_log.info("%s", json.dumps(record, sort_keys=True))
        else:
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(self.clock.now()))
            version = "2.0" if request.http_version == "2" else request.http_version
            line = f"{escaped(request.method)} {escaped(request.target)} HTTP/{version}"
            if not request.method:
                line = "-"  # no request line could be read
            access_log.info(
                '%s - - [%s] "%s" %d %s%s',
                host,
                stamp,
                line,
                status,
                sent or "-",
                " aborted" if aborted else "",
            )


class Metrics:
    """Counters of an :class:`HttpServer`, in the Prometheus text format."""

    def __init__(self) -> None:
        self.server: HttpServer | None = None
        self.by_status: Counter[str] = Counter()
        self.body_bytes = 0
        self.seconds = 0.0
        self.count = 0

    def __call__(
        self, request: Request, status: int, sent: int, seconds: float, aborted: bool = False
    ) -> None:
        self.by_status[f"{status // 100}xx"] += 1
        self.body_bytes += sent
        self.seconds += seconds
        self.count += 1

    def render(self) -> bytes:
        """Every family with its HELP and TYPE lines (what ``promtool check
        metrics`` asks): counters named ``_total``, and the request duration
        one summary (``_sum`` and ``_count``)."""
        lines = _family(
            "looming_http_responses_total", "counter", "Responses sent, by status class."
        )
        for status in sorted(self.by_status):
            lines.append(
                f'looming_http_responses_total{{status="{status}"}} {self.by_status[status]}'
            )
        lines += _family(
            "looming_http_response_body_bytes_total",
            "counter",
            "Bytes of response bodies sent.",
            self.body_bytes,
        )
        duration = "looming_http_request_duration_seconds"
        lines += _family(duration, "summary", "Time from a request's head to its response's end.")
        lines += [f"{duration}_sum {round(self.seconds, 6)}", f"{duration}_count {self.count}"]
        server = self.server
        if server is not None:
            for name, kind, text, value in (
                ("connections_open", "gauge", "Connections open.", server.connections_open),
                ("requests_in_flight", "gauge", "Requests being answered.", server.in_flight),
                (
                    "connections_refused_total",
                    "counter",
                    "Connections refused (the connection limit, or stopping).",
                    server.connections_refused,
                ),
                (
                    "protocol_errors_total",
                    "counter",
                    "Malformed requests refused.",
                    server.protocol_errors,
                ),
                ("timeouts_total", "counter", "Connections timed out.", server.timeouts),
                (
                    "clients_gone_total",
                    "counter",
                    "Clients that went away mid-request or mid-response.",
                    server.clients_gone,
                ),
            ):
                lines += _family("looming_http_" + name, kind, text, value)
        lines += abuse_metrics()
        return ("\n".join(lines) + "\n").encode()


def _family(name: str, kind: str, text: str, value: float | None = None) -> list[str]:
    """A metric family's HELP and TYPE lines, and its one sample if ``value`` is given."""
    lines = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
    if value is not None:
        lines.append(f"{name} {value}")
    return lines


class MetricsEndpoint:
    """Answers ``GET path`` with the metrics; everything else goes to ``inner``."""

    def __init__(self, inner: Any, metrics: Metrics, path: str) -> None:
        self.inner = inner
        self.metrics = metrics
        self.path = path
        self.streams_request_body = bool(getattr(inner, "streams_request_body", False))
        fast = getattr(inner, "fast_connection", None)
        if fast is not None:  # the inner handler's fast path, this path excepted
            self.fast_connection = functools.partial(fast, not_fast=frozenset({path.encode()}))
        websockets = getattr(inner, "serve_websocket", None)
        if websockets is not None:
            self.serve_websocket = websockets
            self.close_websockets = inner.close_websockets

    async def __call__(self, request: Request) -> Response:
        if request.path == self.path and request.method in ("GET", "HEAD"):
            headers = ((b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),)
            return Response(200, headers, self.metrics.render())
        response: Response = await self.inner(request)
        return response


def _observers(settings: HttpSettings, metrics: Metrics | None, clock: Clock) -> Any:
    observers: list[Any] = []
    if settings.access_log != "off":
        trusted = (
            proxy.TrustedProxies(settings.forwarded_allow_ips) if settings.proxy_headers else None
        )
        observers.append(AccessLog(settings.access_log, clock, trusted))
    if metrics is not None:
        observers.append(metrics)
    if not observers:
        return None
    if len(observers) == 1:
        return observers[0]

    def both(
        request: Request, status: int, sent: int, seconds: float, aborted: bool = False
    ) -> None:
        for observer in observers:
            observer(request, status, sent, seconds, aborted)

    return both


def http_server(handler: Any, settings: HttpSettings, *, clock: Clock) -> HttpServer:
    """An :class:`HttpServer` for ``handler`` with the settings' logs, metrics and limit."""
    metrics = Metrics() if settings.metrics else None
    if metrics is not None:
        handler = MetricsEndpoint(handler, metrics, settings.metrics)
    config = ServerConfig(
        max_connections=settings.max_connections,
        parser=settings.http_parser,
        max_body_bytes=settings.max_body_size,
    )
    server = HttpServer(handler, config, clock=clock)
    if metrics is not None:
        metrics.server = server
    server.observer = _observers(settings, metrics, clock)
    return server


async def serve_asgi(
    app: AsgiApp,
    console: Console,
    stack: Stack,
    *,
    clock: Clock,
    port: int,
    settings: HttpSettings | None = None,
) -> None:
    """Serve ``app`` on ``port`` until cancelled, then stop gracefully; the
    Date headers read ``clock``, the unikernel's clock device."""
    settings = settings or HttpSettings()
    # A TLS stack (looming.tls.device.TlsStack) says so: https in the scope and the URL.
    scheme = str(getattr(stack, "scheme", "http"))
    app = proxy.behind_proxy(
        app, settings.root_path, settings.proxy_headers, settings.forwarded_allow_ips
    )
    adapter = AsgiAdapter(app, root_path=settings.root_path, scheme=scheme)
    adapter.background_grace = settings.shutdown_timeout
    adapter.websocket_max_message_bytes = settings.ws_max_size
    adapter.disconnect_grace = settings.cancel_on_disconnect or None
    server = http_server(adapter, settings, clock=clock)
    async with adapter.lifespan():
        listener = await stack.tcp.listen(port, server.serve_flow)
        url = stack_url(scheme, stack.addresses(), listener.port)
        log.info("serving %s", url)
        await console.log(f"serving {url}")
        try:
            await asyncio.Event().wait()
        finally:
            await listener.close()
            log.info(
                "stopping: %d connections open, up to %.1f s for responses in flight",
                server.connections_open,
                settings.shutdown_timeout,
            )
            # One deadline for responses in flight and background tasks alike:
            # what the server's stop leaves of it is the background's grace.
            loop = asyncio.get_running_loop()
            give_up = loop.time() + settings.shutdown_timeout
            await server.shutdown(settings.shutdown_timeout)
            adapter.background_grace = max(0.0, give_up - loop.time())
