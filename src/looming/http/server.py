"""An HTTP/1.1 server over any looming Flow, built on h11.

One :class:`HttpServer` serves connections handed to :meth:`HttpServer.serve_flow`
(or used directly as a Tcp listener handler). Each connection is a loop of
request, handler, response. h11 parses each request (a fresh parser per
request, handed whatever the client pipelined behind the previous one); the
response is framed and written by :mod:`looming.http.response_head`, which
caches what repeats from one response to the next.

Every wait on the peer is bounded by one per-connection deadline that is moved
as the connection changes phase (idle between requests, receiving a head,
receiving a body, sending a response), so an idle or slow client cannot hold a
connection open forever. The handler itself is not time-limited.

On the socket stack, connections to an ASGI adapter are first offered to
:mod:`looming.http.fast_asgi` (see :meth:`HttpServer.adopt_socket_flow`),
which serves plain requests from the transport's callbacks and hands a
connection back to :meth:`HttpServer.serve_flow` at its first other request.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import sys
import time as _time
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import h11

from looming.devices.clock import Clock
from looming.devices.flow import Flow
from looming.errors import Closed, ConnectionReset, LoomingError, NetworkError
from looming.http.dates import format_http_date
from looming.http.h2c import goaway_refusal, is_preface, valid_upgrade_settings
from looming.http.message import ClientGone, Handler, Request, Response, ServeWebSocket
from looming.http.parser import (
    CLOSE,
    CONDITIONAL,
    EXPECT,
    FRAMING,
    UPGRADE,
    H11Parser,
    Head,
    HttptoolsParser,
    ParserEvent,
    RequestHead,
    RequestParser,
    chosen_parser,
    head_notes,
)
from looming.http.response_head import (
    CHUNKED,
    CONNECTION_CLOSE,
    LAST_CHUNK,
    HeaderCache,
    InvalidHeaders,
    PreparedHeaders,
    body_not_allowed,
    chunk,
    reason_phrase,
    status_line,
)
from looming.http.streaming import Arming, BodyReader, Watch
from looming.sim.buggify import buggify

if TYPE_CHECKING:
    from looming.http.fast_asgi import FastAsgiConnection

log = logging.getLogger("looming.http")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Limits and timeouts of an :class:`HttpServer` (seconds and bytes)."""

    keep_alive_timeout: float = 5.0
    """How long an idle keep-alive connection waits for the next request."""
    header_timeout: float = 10.0
    """How long a request head may take to arrive once it has started (and how
    long a new connection may wait before sending anything)."""
    body_timeout: float = 10.0
    """How long the server waits for each piece of a request body."""
    send_timeout: float = 30.0
    """How long each write of the response may stay blocked by a slow reader."""
    max_header_bytes: int = 64 * 1024
    """A request line plus headers above this size gets 431."""
    max_body_bytes: int = 16 * 1024 * 1024
    """A request body above this size gets 413 where it is held whole (a
    handler that does not stream it); a streamed body has no whole-body cap
    (backpressure bounds what is held)."""
    linger_timeout: float = 0.5
    """After an error response, how long unread request bytes are drained."""
    linger_bytes: int = 4 * 1024 * 1024
    """After an error response, how many unread request bytes are drained."""
    unread_body_bytes: int = 256 * 1024 * 1024
    """After a response, how many bytes of the request body the handler left
    unread are read and dropped (as uvicorn does), so the connection goes on
    and no reset destroys the response (RFC 9112 section 9.6)."""
    unread_body_timeout: float = 5.0
    """...and for how long at most: a client sending more, or slower, is cut
    off (after a half-close and :attr:`linger_timeout`)."""
    server_name: str = "looming"
    """The value of the Server header."""
    max_connections: int = 0
    """Connections served at once; one more gets 503 and a close (0: no limit)."""
    parser: str = "auto"
    """Request parser: ``h11``, ``httptools`` (llhttp, from ``looming[fast]``), or
    ``auto``: httptools when installed. Both answer alike (see looming.http.parser)."""
    fast_path: bool = True
    """On the socket stack, serve an ASGI adapter's plain requests from the
    transport's callbacks when the parser is httptools (see
    looming.http.fast_asgi; access logs and metrics see them as they see the
    others); False: every connection reads its flow."""


class _DateHeader:
    """The Date header line, formatted at most once a second."""

    __slots__ = ("_clock", "_line", "_now", "_second")

    def __init__(self, clock: Clock) -> None:
        # (The host clock's module is looked up, not imported: other targets do without it.)
        unix = sys.modules.get("looming.unix.clock")
        host = unix is not None and type(clock) is unix.UnixClock
        self._clock = clock
        self._now: Callable[[], float] = _time.time if host else clock.now
        """The clock's time, read for every response (the host clock's is
        time.time itself, without the method around it)."""
        self._second = -1
        self._line = b""

    def now(self) -> float:
        return self._now()

    def line(self) -> bytes:
        second = int(self._now())
        if second != self._second:
            self._second = second
            self._line = b"date: " + format_http_date(second) + b"\r\n"
        return self._line


class _Watchdog:
    """A connection's deadline, cheap to move: moving it only stores a number.

    One timer is armed at a time; when it fires before the current deadline
    it re-arms for the deadline instead of cancelling, so a busy keep-alive
    connection costs no timer operations per request. At the deadline the
    serving task is cancelled and :attr:`expired` tells why.
    """

    __slots__ = ("_deadline", "_handle", "_loop", "_task", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        self._loop = loop
        self._task = task
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.expired = False

    def expire_in(self, seconds: float) -> None:
        deadline = self._loop.time() + seconds
        self._deadline = deadline
        handle = self._handle
        if handle is None or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(deadline, self._fire)

    def disarm(self) -> None:
        self._deadline = None

    def close(self) -> None:
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None or self.expired:
            return
        if self._loop.time() >= deadline:
            self.expired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(deadline, self._fire)


_BYTES = (bytes, bytearray)
_WHOLE = (bytes, bytearray, memoryview)
"""A whole body (tuples: ``isinstance`` with ``bytes | ...`` builds the union each time)."""

CUT_GRACE = 0.25
"""Seconds a connection or task cancelled at the end of a stop has to unwind."""

PIPELINE_TURN = 8
"""Requests a connection answers from bytes already received (pipelined)
before it lets the other connections have a turn: a handler that answers
without awaiting anything, or a ready-made response, never yields to the
event loop, and one client pipelining thousands of requests would hold
back every other connection until all of its were answered."""

_NOT_CACHED = FRAMING | CONDITIONAL | EXPECT | UPGRADE | CLOSE
"""Requests these head notes are on are not answered from a handler's cache."""
WIRE_BODY_BYTES = 64 * 1024
"""Bodies up to this size are kept joined to their head, ready to write."""
WIRE_ENTRIES = 128
"""Cached responses kept ready to write within one second (all are let go
at the next second, or when one more would not fit)."""

_INTERNAL_ERROR = Response(
    500, ((b"content-type", b"text/plain; charset=utf-8"),), b"500 Internal Server Error\n"
)


class _ParserHolder:
    """The connection's current h11 parser, for the timeout path to inspect,
    and the watch on its last request (whose pending read comes first)."""

    __slots__ = ("busy", "conn", "h2", "responding", "sent", "unlogged", "watch")

    def __init__(self) -> None:
        self.conn: RequestParser | None = None
        self.responding = False
        self.watch: Watch | None = None
        self.busy = False
        """Between a request's head and the end of its response."""
        self.sent = 0
        """Body bytes of the last response (for access logs)."""
        self.h2: Any = None
        """The HTTP/2 session, once the connection has become one."""
        self.unlogged: tuple[Request, int, float, Any] | None = None
        """With an observer, the response being sent (request, status,
        start, body) until it is logged: one the client cuts off is logged
        when the connection ends."""


_UNSERVED_WEBSOCKETS: list[bool] = []
"""Holds True once :func:`note_unserved_websocket` has logged."""


def note_unserved_websocket(
    server: HttpServer, notes: int, method: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> None:
    """Log once, at the first WebSocket upgrade (``notes`` has UPGRADE) the
    server's handler, which serves WebSockets, gets without wsproto installed:
    the request then reaches the application as a plain one (a 404 from
    most), which says nothing of why."""
    if not notes & UPGRADE or server._websockets is not None or _UNSERVED_WEBSOCKETS:
        return
    if getattr(server.handler, "serve_websocket", None) is None:
        return
    if is_websocket_upgrade(method, headers):
        _UNSERVED_WEBSOCKETS.append(True)
        log.warning(
            "a WebSocket upgrade was served as a plain HTTP request: wsproto is not "
            "installed; install looming[websocket] (pip install wsproto) and rebuild "
            "to serve WebSockets"
        )


def is_websocket_upgrade(method: bytes, headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a request asks to become a WebSocket (RFC 6455 section 4.1)."""
    if method != b"GET":
        return False
    upgrade = connection = b""
    for name, value in headers:
        if name == b"upgrade":
            upgrade = value
        elif name == b"connection":
            connection = value
    return upgrade.strip().lower() == b"websocket" and b"upgrade" in connection.lower()


def _h2c_upgrade_settings(method: bytes, headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The HTTP2-Settings of a request asking to upgrade to h2c (RFC 7540 section 3.2)."""
    if method not in (b"GET", b"HEAD", b"OPTIONS"):
        return None  # a body would have to be read before switching: stay on HTTP/1.1
    upgrade = settings = None
    for name, value in headers:
        if name == b"upgrade":
            upgrade = value
        elif name == b"http2-settings":
            settings = value
        elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return None
    if upgrade is None or settings is None:
        return None
    if b"h2c" not in [token.strip().lower() for token in upgrade.split(b",")]:
        return None
    # RFC 7540 section 3.2.1: no upgrade on invalid settings (answered as HTTP/1.1).
    return settings if valid_upgrade_settings(settings) else None


def _valid_trailers(trailers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The trailer fields that are safe to send (no framing fields, no line breaks)."""
    forbidden = (b"content-length", b"transfer-encoding", b"host", b"trailer")
    return [
        (name, value)
        for name, value in trailers
        if name.isascii()
        and name not in forbidden
        and not any(c in name for c in b" :\r\n")
        and b"\r" not in value
        and b"\n" not in value
    ]


def _framing_refusal(
    headers: Sequence[tuple[bytes, bytes]], max_body: int, raw: list[bytes]
) -> int:
    """The error status for a request's framing headers, or 0 if they are fine.

    Content-Length together with Transfer-Encoding is how requests are
    smuggled past a proxy (RFC 9112 section 6.3): refused with 400 and the
    connection closed, as is a Content-Length given twice or as a list and a
    header line folded onto the next (h11 accepts these three quietly, so the
    head's bytes are read). ``max_body`` 0: no cap on the body's size.
    """
    head = raw[0] if len(raw) == 1 else b"".join(raw)
    head = head[: head.find(b"\r\n\r\n")]
    if b"\n " in head or b"\n\t" in head:
        return 400  # obs-fold (RFC 9112 section 5.2), which h11 would unfold
    lengths = [value for name, value in headers if name == b"content-length"]
    if not lengths:
        return 0
    if len(lengths) > 1 or any(name == b"transfer-encoding" for name, _ in headers):
        return 400
    head = head.lower()
    given = [line for line in head.split(b"\r\n") if line.startswith(b"content-length")]
    if len(given) > 1 or not all(line.partition(b":")[2].strip().isdigit() for line in given):
        return 400
    value = lengths[0]
    if not value.isdigit():
        return 400
    return 413 if max_body and int(value) > max_body else 0


class _BodyTooLarge(Exception):
    pass


class _WrongLength(LoomingError):
    """A streamed body disagreeing with the Content-Length its handler
    declared: logged in one line where it is found (see :func:`_wrong_length`);
    the connection closes after what was sent."""


def _wrong_length(message: str) -> _WrongLength:
    log.error("handler's %s; the connection is closed after what was sent", message)
    return _WrongLength(message)


class _RequestStream:
    """Where a connection's request loop stands from one request to the next."""

    __slots__ = (
        "client",
        "fast",
        "first",
        "first_read",
        "leftover",
        "peer_closed",
        "raw",
        "server",
        "streamed",
        "unanswered_turn",
        "upgrades",
    )

    def __init__(self, flow: Flow, upgrades: bool) -> None:
        self.upgrades = upgrades
        """Whether a request may upgrade the connection (WebSocket, h2c)."""
        self.client = flow.remote_address
        self.server = flow.local_address
        self.leftover = b""
        """What the client pipelined behind the last request."""
        self.peer_closed = False
        self.first = True
        """Before the first request: its head has the header timeout, not keep-alive's."""
        self.first_read = True
        """Before the first read: HTTP/2 with prior knowledge may start."""
        self.raw: list[bytes] = []
        """What arrived for this head, for the checks h11's parse hides."""
        self.streamed: tuple[BodyReader, Watch] | None = None
        """The body reader and watch of a request whose handler streams it."""
        self.fast: HttptoolsParser | None = None
        """The connection's httptools parser, when it reads on from one request to the next."""
        self.unanswered_turn = 0
        """Requests taken from pipelined bytes since this connection last
        waited for the client or gave the others a turn (:data:`PIPELINE_TURN`)."""


class Observer(Protocol):
    """Told of each response: the request, status, body bytes sent, seconds
    taken, and (passed only when true) whether the client cut it off."""

    def __call__(
        self, request: Request, status: int, sent: int, seconds: float, aborted: bool = ..., /
    ) -> None: ...


class HttpServer:
    """Serves HTTP/1.1 on flows with ``handler``.

    The server adds Date, Server and framing headers; for ``HEAD`` requests
    it sends the headers the handler's ``GET`` answer would carry and no body.
    The Date header reads ``clock``, the unikernel's clock device.
    """

    def __init__(
        self, handler: Handler, config: ServerConfig | None = None, *, clock: Clock
    ) -> None:
        self.handler = handler
        self.config = config if config is not None else ServerConfig()
        self._date = _DateHeader(clock)
        self._server_line = b"server: " + self.config.server_name.encode("ascii") + b"\r\n"
        self._headers = HeaderCache()
        self.requests_served = 0
        self.protocol_errors = 0
        self.timeouts = 0
        self.clients_gone = 0
        """Connections whose client went away mid-request or mid-response."""
        self.in_flight = 0
        self.stopping = False
        """Set by a graceful stop: each connection ends after its current response."""
        self._streams_body = bool(getattr(handler, "streams_request_body", False))
        self._httptools = chosen_parser(self.config.parser) == "httptools"
        self._h2 = importlib.util.find_spec("h2") is not None
        """HTTP/2 is served when the h2 library is installed."""
        self._websockets: ServeWebSocket | None = (
            getattr(handler, "serve_websocket", None)
            if importlib.util.find_spec("wsproto") is not None
            else None
        )
        """WebSockets are served when wsproto is installed (looming[websocket]);
        without it an upgrade request reaches the handler as a plain request."""
        self._connections: dict[asyncio.Task[Any], _ParserHolder] = {}
        self._arming = Arming()
        """Starts the watches of requests whose response is slow (see streaming)."""
        self.observer: Observer | None = None
        """Told of each response (access logs, metrics)."""
        self.connections_refused = 0
        self._cached: Callable[[bytes, bytes], Response | None] | None = getattr(
            handler, "cached_response", None
        )
        """The handler's answers it holds whole (StaticSite's files in memory),
        written without a Request, a handler call or a head built each time."""
        self.cached_answers = 0
        """Requests answered from the handler's cache (see :meth:`_send_cached`)."""
        self._wires: dict[int, tuple[Response, tuple[bytes, int, bytes]]] = {}
        """id(response) -> (response, what :meth:`_wire` gives), for this second."""
        self._wires_date = b""
        """The Date line the responses in ``_wires`` carry."""
        self._fast_connection: Callable[..., FastAsgiConnection] | None = (
            getattr(handler, "fast_connection", None)
            if self.config.fast_path and self._httptools
            else None
        )
        """What serves a connection from its transport's callbacks, when
        the handler offers it (AsgiAdapter does), or holds whole answers."""
        if (
            self._fast_connection is None
            and self._cached is not None
            and self.config.fast_path
            and self._httptools
        ):
            self._fast_connection = self._fast_cached_connection
        self._fast: set[FastAsgiConnection] = set()
        """Connections served from their transport's callbacks (see fast_asgi)."""
        self._handed: dict[int, tuple[Any, bool]] = {}
        """id(flow) -> (flow, whether before its first request), for flows the
        fast path handed back (by id: not every flow can be weakly referred to)."""
        self._heads: dict[tuple[int, bytes, int], bytes] = {}
        """Response heads made by :meth:`whole_head` within this second."""
        self._heads_date = b""
        self.connections_fast = 0
        """Connections the fast path took (see :meth:`adopt_socket_flow`)."""
        self.connections_handed_back = 0
        """Of those, how many it handed back to :meth:`serve_flow`."""
        self.fast_runner: tuple[asyncio.Task[None], asyncio.Future[Any]] | None = None
        """The task the fast path's applications run as while they do not
        wait, and what hands it one that must (see fast_asgi)."""
        self.fast_writes: list[FastAsgiConnection] = []
        """Fast connections holding responses back until the loop's next
        turn, when they are written together (see fast_asgi.flush_writes)."""

    @property
    def connections_open(self) -> int:
        return len(self._connections) + len(self._fast)

    def adopt_socket_flow(self, flow: Any, serve: Callable[[], None]) -> bool:
        """Serve ``flow`` from its transport's callbacks (see fast_asgi), if
        this server can; whether it does. The socket stack asks this of each
        new connection; ``serve()`` hands it back to :meth:`serve_flow`."""
        make = self._fast_connection
        if make is None or self.stopping:
            return False
        limit = self.config.max_connections
        if (limit and self.connections_open >= limit) or not hasattr(flow, "lend_transport"):
            return False  # the usual path refuses it with 503
        try:
            connection = make(self, flow, serve)
        except RuntimeError:
            return False
        self._fast.add(connection)
        self.connections_fast += 1
        return True

    def _fast_cached_connection(
        self, server: HttpServer, flow: Any, serve: Callable[[], None]
    ) -> FastAsgiConnection:
        from looming.http.fast_asgi import FastCachedConnection

        handler: Any = self.handler  # what it asks of the handler: cached_response
        return FastCachedConnection(server, handler, flow, serve)

    def cached_wire(self, method: bytes, target: bytes) -> tuple[bytes, int, bytes] | None:
        """The handler's cached answer to a plain keep-alive HTTP/1.1
        ``method`` of ``target``, ready to write (see :meth:`_wire`), or None."""
        if self.stopping or self._cached is None:
            return None
        response = self._cached(method, target)
        return self._wire(response) if response is not None else None

    def forget_fast(self, connection: FastAsgiConnection) -> None:
        self._fast.discard(connection)

    def adopted_from_fast(self, flow: Any, *, first: bool) -> None:
        """``flow`` comes back from the fast path, to be served by :meth:`serve_flow`."""
        self._handed[id(flow)] = (flow, first)
        self.connections_handed_back += 1

    async def shutdown(self, timeout: float) -> None:
        """Stop gracefully: idle connections close now, each busy one after its
        current response; those still busy after ``timeout`` seconds are cut
        (and given :data:`CUT_GRACE` to unwind): the whole stop takes at
        most ``timeout`` plus that grace.

        Close the listener first, so no connection arrives meanwhile.
        """
        self.stopping = True
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        close_websockets = getattr(self.handler, "close_websockets", None)
        if close_websockets is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(timeout, 1.0)):
                    await close_websockets()
        while True:
            for task, holder in list(self._connections.items()):
                busy = holder.busy
                if holder.h2 is not None:
                    busy = await self._stop_h2(holder.h2, give_up - loop.time())
                if not busy and not task.done():
                    task.cancel()
            for connection in list(self._fast):
                connection.close_after_response = True
                if not connection.busy:
                    connection.close()
            if not self.connections_open or loop.time() >= give_up:
                break
            await asyncio.sleep(min(0.05, max(0.0, give_up - loop.time())))
        for connection in list(self._fast):
            connection.abort()
        if self.fast_runner is not None:
            self.fast_runner[0].cancel()  # idle: one it carried is no longer its
            self.fast_runner = None
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CUT_GRACE)

    @staticmethod
    async def _stop_h2(session: Any, seconds: float) -> bool:
        """GOAWAY to an HTTP/2 connection (no new streams; those open are
        finished first), within ``seconds``; whether streams are still open."""
        if seconds > 0:
            with contextlib.suppress(NetworkError, OSError, TimeoutError):
                async with asyncio.timeout(min(1.0, seconds)):
                    await session.stop()
        return bool(session.streams)

    async def __call__(self, flow: Flow) -> None:
        await self.serve_flow(flow)

    async def serve_flow(self, flow: Flow) -> None:
        """Serve requests on ``flow`` until the peer or a timeout ends it; closes it."""
        task = asyncio.current_task()
        assert task is not None
        deadline = _Watchdog(asyncio.get_running_loop(), task)
        parser = _ParserHolder()
        limit = self.config.max_connections
        handed = self._handed.pop(id(flow), None) if self._handed else None
        first = handed[1] if handed is not None and handed[0] is flow else None
        if first is None and (self.stopping or (limit and self.connections_open >= limit)):
            self.connections_refused += 1
            await self._refuse(flow)
            with contextlib.suppress(NetworkError, OSError):
                await flow.close()
            return
        self._connections[task] = parser
        try:
            try:
                await self._serve_requests(flow, parser, deadline, first is not False)
            finally:
                deadline.close()
                del self._connections[task]
        except asyncio.CancelledError:
            if not deadline.expired:
                raise
            task.uncancel()
            self.timeouts += 1
            # 408 only when a request had begun; an idle connection just closes.
            conn = parser.conn
            # (a response that stalled midway cannot be followed by another).
            if (
                conn is not None
                and not parser.responding
                and (conn.their_state is not h11.IDLE or conn.trailing_data[0])
            ):
                await self._send_error_raw(flow, 408)
        except (ConnectionReset, ClientGone) as error:
            # The client went away mid-request or mid-response: normal traffic
            # (or it broke the body the application read while responding).
            if parser.watch is not None and parser.watch.malformed:
                self.protocol_errors += 1
            else:
                self.clients_gone += 1
            log.debug("client gone: %s", error)
        except Closed as error:
            log.debug("connection ended: %s", error)
        except LoomingError as error:
            # NetworkError, or Malformed from a flow that decodes (TLS, vchan).
            log.debug("connection failed: %s", error)
        except Exception:
            # A streamed body failed midway: the response cannot be completed,
            # so the connection is dropped and the client sees it truncated.
            log.exception("response on %s failed", flow.remote_address or "a flow")
        finally:
            if parser.unlogged is not None:
                self._log_cut(parser.unlogged, parser.sent)
            if parser.watch is not None:
                await parser.watch.close()
            with contextlib.suppress(NetworkError, OSError):
                await flow.close()

    def _log_cut(self, unlogged: tuple[Request, int, float, Any], sent: int) -> None:
        """Log a response the client (or a failure, or a stop) cut off."""
        request, status, started, body = unlogged
        if not isinstance(body, _WHOLE):
            sent = getattr(body, "bytes_sent", 0)
        if self.observer is not None:
            self.observer(request, status, sent, self._date.now() - started, True)

    async def _serve_requests(
        self, flow: Flow, parser: _ParserHolder, deadline: _Watchdog, first: bool = True
    ) -> None:
        """The request loop, in stages: head (:meth:`_read_head`), limits
        (:meth:`_head_refusal`), body (:meth:`_read_request`) and respond,
        which stays in the loop: the handler's call and the response's write
        are then the only awaits a request adds to reading it. ``first``:
        no request was answered on the connection yet (by the fast path)."""
        stream = _RequestStream(flow, self._websockets is not None or self._h2)
        stream.first = stream.first_read = first
        while True:
            head = await self._read_head(flow, parser, stream, deadline)
            if head is None:
                return
            conn, event = head
            items, notes, size = self._fields_of(event)
            refusal = self._head_refusal(event, items, stream.raw, notes, size)
            if refusal:
                deadline.disarm()
                await self._send_error_raw(flow, refusal, self._refused_head(event, refusal))
                return
            note_unserved_websocket(self, notes, event.method, items)
            if (
                stream.upgrades
                and notes & UPGRADE
                and await self._upgraded(flow, parser, conn, event, items, stream, deadline)
            ):
                return
            wire = self._cached_wire(event, notes) if self._cached is not None else None
            if wire is not None:
                if not await self._send_cached(flow, parser, conn, event, stream, wire, deadline):
                    return
                continue
            request = await self._read_request(flow, parser, conn, event, stream, deadline)
            if request is None:
                return
            parser.busy = True  # stage 4, respond: the handler's answer, checked, written
            deadline.disarm()
            self.in_flight += 1
            started = self._date.now() if self.observer is not None else 0.0
            try:
                response = await self.handler(request)
            except ClientGone:
                if not await self._refused_body(flow, request, started):
                    self.clients_gone += 1
                return
            except Exception:
                log.exception("handler failed on %s %s", request.method, request.target)
                response = _INTERNAL_ERROR
            finally:
                self.in_flight -= 1
            response, prepared = self._checked_response(request, response, parser, started)
            deadline.expire_in(self.config.send_timeout)
            parser.responding = True
            sent_body = response.body
            head_only = request.method == "HEAD"
            parser.sent = len(sent_body) if not head_only and isinstance(sent_body, _BYTES) else 0
            keep_alive = await self._send_response(
                flow,
                response,
                prepared,
                head_only,
                request.http_version == "1.1",
                event.http_version == b"1.1" and not notes & CLOSE,
                deadline,
            )
            if not isinstance(sent_body, _WHOLE):
                parser.sent = getattr(sent_body, "bytes_sent", 0)
            self.requests_served += 1
            parser.busy = False
            if self.observer is not None:
                parser.unlogged = None
                self.observer(request, response.status, parser.sent, self._date.now() - started)
            if stream.streamed is not None and not await self._finish_streamed(
                stream.streamed, conn, stream, keep_alive
            ):
                return
            # buggify: a keep-alive connection closed after a response, as
            # servers may (RFC 9112 9.5); clients retry on a new one.
            if not keep_alive or stream.peer_closed or self.stopping or buggify("http.close_early"):
                return

    @staticmethod
    def _fields_of(event: Head) -> tuple[tuple[tuple[bytes, bytes], ...], int, int]:
        """A head's fields as a tuple, its notes and its size (see head_notes)."""
        if type(event) is RequestHead:
            return event.headers, event.notes, event.size
        # One pass over h11's header list (slow to iterate); the checks read the tuple.
        items = tuple(event.headers)
        notes, size = head_notes(event.target, items)
        return items, notes, size

    def _cached_wire(self, event: Head, notes: int) -> tuple[bytes, int, bytes] | None:
        """The handler's cached answer to a plain HTTP/1.1 request, ready to
        write (see :meth:`_wire`), if it has one and nothing asks for more
        (a body, conditions, ranges, an access log, a stop under way)."""
        if (
            notes & _NOT_CACHED
            or event.http_version != b"1.1"
            or self.stopping
            or self.observer is not None
            or self._cached is None
        ):
            return None
        response = self._cached(event.method, event.target)
        return self._wire(response) if response is not None else None

    def _wire(self, response: Response) -> tuple[bytes, int, bytes] | None:
        """A cached response as written to the keep-alive connection of an
        HTTP/1.1 ``GET``: its head joined to its body (up to
        :data:`WIRE_BODY_BYTES`), made again when the Date line changes; the
        head's length; and the body when not joined (else b""). None for a
        response this path does not send (not a whole 200)."""
        date = self._date.line()
        if date is not self._wires_date:
            # A new second: every response is made again, and those no
            # longer asked for (a store that changed) are let go.
            self._wires.clear()
            self._wires_date = date
        made = self._wires.get(id(response))
        if made is not None and made[0] is response:
            return made[1]
        body = response.body
        if response.status != 200 or type(body) is not bytes:
            return None
        try:
            prepared = self._headers.prepare(response.headers)
        except InvalidHeaders:
            return None  # the usual path answers it (with its log)
        if prepared.close or prepared.declared_length is not None:
            return None
        lines = self._head_lines(response, prepared)
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        head = b"".join(lines)
        if len(body) <= WIRE_BODY_BYTES:
            wire = (head + body, len(head), b"")
        else:
            wire = (head, len(head), body)
        if len(self._wires) >= WIRE_ENTRIES:
            self._wires.clear()
        self._wires[id(response)] = (response, wire)
        return wire

    async def _send_cached(
        self,
        flow: Flow,
        parser: _ParserHolder,
        conn: RequestParser,
        event: Head,
        stream: _RequestStream,
        wire: tuple[bytes, int, bytes],
        deadline: _Watchdog,
    ) -> bool:
        """Answer a bodiless keep-alive GET or HEAD with a cached response
        (see :meth:`_wire`); whether the connection goes on."""
        if type(conn.next_event()) is not h11.EndOfMessage:
            return False  # not a request without a body after all
        stream.leftover, stream.peer_closed = conn.trailing_data
        data, head_length, rest = wire
        parser.busy = parser.responding = True
        deadline.expire_in(self.config.send_timeout)
        if event.method == b"HEAD":
            parser.sent = 0
            await flow.write(data[:head_length])
        elif rest:
            parser.sent = len(rest)
            await flow.writev((data, rest))
        else:
            parser.sent = len(data) - head_length
            await flow.write(data)
        self.requests_served += 1
        self.cached_answers += 1
        parser.busy = False
        return not stream.peer_closed and not self.stopping and not buggify("http.close_early")

    def _next_parser(self, stream: _RequestStream) -> RequestParser:
        """The parser of the next request, handed what arrived behind the last
        one: h11's is made afresh; httptools' reads on unless an upgrade
        stopped it."""
        leftover, closed = stream.leftover, stream.peer_closed
        fast = stream.fast
        if fast is not None and fast.reusable:
            return fast
        conn: RequestParser
        if self._httptools:
            conn = stream.fast = HttptoolsParser(self.config.max_header_bytes)
        else:
            conn = H11Parser(self.config.max_header_bytes)
        if leftover or closed:
            conn.receive_data(leftover)
            if closed:
                conn.receive_data(b"")
        return conn

    async def _read_head(
        self, flow: Flow, parser: _ParserHolder, stream: _RequestStream, deadline: _Watchdog
    ) -> tuple[RequestParser, Head] | None:
        """Stage 1, head: a fresh parser and the next request's head, or None
        when the connection is done (closed, refused, or handed to HTTP/2).

        A fresh parser per request: h11 reads the request, the server
        writes the response (see response_head), and bytes the client
        pipelined behind this request are handed on to the next parser.
        """
        config = self.config
        conn = self._next_parser(stream)
        parser.conn = conn
        parser.responding = False
        leftover = stream.leftover
        deadline.expire_in(config.header_timeout if stream.first else config.keep_alive_timeout)
        stream.first = False
        # What arrived for this head, for the checks h11's parse hides.
        stream.raw = raw = [leftover] if leftover else []
        try:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                # Pipelined: answered without waiting for the client.
                stream.unanswered_turn += 1
                if stream.unanswered_turn >= PIPELINE_TURN:
                    stream.unanswered_turn = 0
                    # The other connections' turn; a stop meanwhile lets
                    # this request, already received, be answered first.
                    parser.busy = True
                    await asyncio.sleep(0)
                    parser.busy = False
            else:
                stream.unanswered_turn = 0
                waiting_for_start = True
                watched = parser.watch
                parser.watch = None
                while event is h11.NEED_DATA:
                    if watched is not None and watched.reading:
                        data = await watched.take()
                    else:
                        data = await flow.read()
                    if stream.first_read and self._h2 and data.startswith(b"PRI * HTTP/2.0"):
                        # HTTP/2 with prior knowledge (h2c): the connection is its.
                        deadline.close()
                        await self._serve_h2(flow, parser, data)
                        return None
                    stream.first_read = False
                    if waiting_for_start and data:
                        waiting_for_start = False
                        deadline.expire_in(config.header_timeout)
                    raw.append(data)
                    conn.receive_data(data)
                    event = conn.next_event()
        except h11.RemoteProtocolError as error:
            self.protocol_errors += 1
            status = error.error_status_hint
            log.debug("bad request: %s", error)
            deadline.disarm()
            # A head too large is logged by its request line, as when it
            # arrives whole (see _refused_head), however TCP cut it.
            line = conn.partial_head() if status == 431 else None
            await self._send_error_raw(flow, status if status >= 400 else 400, line)
            return None
        if type(event) is not RequestHead and type(event) is not h11.Request:
            # ConnectionClosed (or anything else unexpected): we are done.
            return None
        fast = stream.fast
        if conn is fast:
            # h11 read this head after llhttp refused it: its bytes from the
            # first. llhttp itself refuses what the checks of the bytes look
            # for (obs-fold, Content-Length twice or as a list).
            stream.raw = fast.h11_raw if fast.read_by_h11 and fast.h11_raw is not None else []
        return conn, event

    @staticmethod
    def _refused_head(event: Head, refusal: int) -> Head:
        """What a head refused with ``refusal`` is logged with: a head too
        large by its request line alone, as when it is refused before it is
        whole (RequestParser.partial_head), so how the bytes arrived makes
        no difference to the record."""
        if refusal != 431:
            return event
        return RequestHead(event.method, event.target, (), event.http_version)

    def _head_refusal(
        self,
        event: Head,
        headers: tuple[tuple[bytes, bytes], ...],
        raw: list[bytes],
        notes: int,
        size: int,
    ) -> int:
        """Stage 2, limits: the error status refusing this head, or 0.
        ``notes`` and ``size`` are the head's (see ``head_notes``)."""
        if not event.http_version.startswith(b"1."):
            self.protocol_errors += 1
            return 505
        # h11 bounds only a head that arrives in pieces; one that arrived
        # whole is measured here so the limit holds either way.
        if size > self.config.max_header_bytes:
            self.protocol_errors += 1
            return 431
        if not notes & FRAMING and not raw:
            return 0  # no body, and llhttp read the head (which has no obs-fold)
        # Smuggling attempts and bodies over the limit are refused before
        # the body is read or invited with 100 Continue.
        max_body = 0 if self._streams_body else self.config.max_body_bytes
        refusal = _framing_refusal(headers, max_body, raw)
        if refusal == 400:
            self.protocol_errors += 1
        return refusal

    async def _upgraded(
        self,
        flow: Flow,
        parser: _ParserHolder,
        conn: RequestParser,
        event: Head,
        items: tuple[tuple[bytes, bytes], ...],
        stream: _RequestStream,
        deadline: _Watchdog,
    ) -> bool:
        """Serve a WebSocket or h2c upgrade; whether the request was one (the
        connection is then done). ``items`` are the head's header fields."""
        method = event.method
        if self._websockets is not None and is_websocket_upgrade(method, items):
            await self._upgrade(flow, parser, conn, event, stream.client, stream.server, deadline)
            return True
        settings = _h2c_upgrade_settings(method, items) if self._h2 else None
        if settings is None or type(conn.next_event()) is not h11.EndOfMessage:
            return False
        request = Request(
            method.decode("ascii"),
            event.target.decode("latin-1"),
            event.headers,
            b"",
            "2",
            stream.client,
            stream.server,
        )
        deadline.close()
        await flow.write(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
        )
        await self._serve_h2(flow, parser, conn.trailing_data[0], (settings, request))
        return True

    async def _read_request(
        self,
        flow: Flow,
        parser: _ParserHolder,
        conn: RequestParser,
        event: Head,
        stream: _RequestStream,
        deadline: _Watchdog,
    ) -> Request | None:
        """Stage 3, body: the request with its body read, or with a reader
        for the handler to stream it; None when the body was refused."""
        config = self.config
        watch: Watch | None = None
        reader: BodyReader | None = None
        try:
            if self._streams_body:
                watch = Watch(flow, self._arming)
                reader = BodyReader(flow, conn, watch, limit=0, timeout=config.body_timeout)
                reader.start_if_empty()  # (what arrived with the head may be refused)
                stream.streamed = (reader, watch)
                body = b""
            else:
                first = conn.next_event()
                if type(first) is h11.EndOfMessage:
                    body = b""
                else:
                    body = await self._read_body(flow, conn, first, deadline)
                stream.leftover, stream.peer_closed = conn.trailing_data
        except _BodyTooLarge:
            deadline.disarm()
            await self._send_error_raw(flow, 413, event)
            return None
        except h11.RemoteProtocolError as error:
            self.protocol_errors += 1
            log.debug("bad request body: %s", error)
            deadline.disarm()
            await self._send_error_raw(flow, 400, event)
            return None
        parser.watch = watch
        return Request(
            event.method.decode("ascii"),
            event.target.decode("latin-1"),
            event.headers,  # h11's read-only sequence of (lower-case name, value)
            body,
            event.http_version.decode("ascii"),
            stream.client,
            stream.server,
            reader,
            watch,
        )

    async def _refused_body(self, flow: Flow, request: Request, started: float) -> bool:
        """After a handler that stopped at a malformed request body (bad
        chunk framing, a forbidden trailer field), before any response:
        whether it was one; then it is answered 400, counted and logged."""
        reader = request.body_stream
        if not isinstance(reader, BodyReader) or not reader.malformed:
            return False
        self.protocol_errors += 1
        log.debug("bad request body on %s %s", request.method, request.target)
        await self._send_error_raw(flow, 400, request, started)
        return True

    def _checked_response(
        self, request: Request, response: Response, parser: _ParserHolder, started: float
    ) -> tuple[Response, PreparedHeaders]:
        """The response with its headers prepared; a 500 in its place when
        the handler's cannot be sent. With an observer, it is noted on
        ``parser`` as not logged yet (see ``_log_cut``)."""
        try:
            prepared = self._headers.prepare(response.headers)
            if not 200 <= response.status <= 999:
                raise InvalidHeaders(f"status {response.status} is not a final status")
        except InvalidHeaders as error:
            log.error(
                "handler for %s %s gave a bad response: %s", request.method, request.target, error
            )
            response = _INTERNAL_ERROR
            prepared = self._headers.prepare(response.headers)
        if self.observer is not None:
            parser.unlogged = (request, response.status, started, response.body)
        return response, prepared

    async def _finish_streamed(
        self,
        streamed: tuple[BodyReader, Watch],
        conn: RequestParser,
        stream: _RequestStream,
        keep_alive: bool,
    ) -> bool:
        """After a streamed request: whether the connection goes on. What the
        handler left unread is read and dropped (a little of it) before the
        next request; then the watch's pending read, if any, is the start
        of that request."""
        reader, watch = streamed
        watch.disarm()
        if not keep_alive:
            return False
        if not reader.complete and not await self._drop_unread(reader):
            if reader.malformed:  # what the handler left unread was malformed
                self.protocol_errors += 1
            elif not reader.broken:  # too much or too slow: a half-close first
                with contextlib.suppress(NetworkError, OSError, TimeoutError):
                    await self._linger(reader.flow)
            return False
        stream.leftover, stream.peer_closed = conn.trailing_data
        return not watch.gone

    async def _drop_unread(self, reader: BodyReader) -> bool:
        """Read and drop what the handler left unread of the request body,
        within :attr:`ServerConfig.unread_body_bytes` and ``unread_body_timeout``;
        whether it all arrived."""
        config = self.config
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(config.unread_body_timeout):
                return await reader.discard(config.unread_body_bytes)
        return False

    async def _serve_h2(
        self,
        flow: Flow,
        parser: _ParserHolder,
        first: bytes,
        upgraded: tuple[bytes, Request] | None = None,
    ) -> None:
        from looming.http.http2 import H2Session

        session = H2Session(
            flow,
            self.handler,
            server_name=self.config.server_name.encode("ascii"),
            date_line=lambda: self._date.line()[6:-2],
            clock=self._date.now,
            max_body_bytes=self.config.max_body_bytes,
            websockets=self._websockets,
            observer=self.observer,
            counts=self,
        )
        parser.h2 = session
        if self.stopping:
            await session.stop()
        await session.run(first, upgraded)

    async def _upgrade(
        self,
        flow: Flow,
        parser: _ParserHolder,
        conn: RequestParser,
        event: Head,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        deadline: _Watchdog,
    ) -> None:
        """Hand the connection to the handler's websocket side; it ends with it."""
        assert self._websockets is not None
        if type(conn.next_event()) is not h11.EndOfMessage:
            self.protocol_errors += 1
            deadline.disarm()
            await self._send_error_raw(flow, 400, event)  # an upgrade request has no body
            return
        request = Request(
            "GET",
            event.target.decode("latin-1"),
            event.headers,
            b"",
            event.http_version.decode("ascii"),
            client,
            server,
        )
        deadline.close()
        self.requests_served += 1
        # Busy until it closes: a graceful stop closes it (1001) and waits for it.
        parser.busy = True
        started = self._date.now()
        status, sent = await self._websockets(request, flow, conn.trailing_data[0])
        if self.observer is not None and status:
            self.observer(request, status, sent, self._date.now() - started)

    async def _read_body(
        self,
        flow: Flow,
        conn: RequestParser,
        event: ParserEvent,
        deadline: _Watchdog,
    ) -> bytes:
        """The body whose first event (not its end) is ``event``."""
        limit = self.config.max_body_bytes
        chunks: list[bytes] = []
        received = 0
        if conn.they_are_waiting_for_100_continue:
            await flow.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            if event is h11.NEED_DATA:
                deadline.expire_in(self.config.body_timeout)
                conn.receive_data(await flow.read())
            elif type(event) is h11.Data:
                received += len(event.data)
                if received > limit:
                    raise _BodyTooLarge
                chunks.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                return b"".join(chunks)
            else:
                # ConnectionClosed mid-body.
                raise h11.RemoteProtocolError("connection closed in the middle of a body")
            event = conn.next_event()

    def _head_lines(self, response: Response, prepared: PreparedHeaders) -> list[bytes]:
        return self.head_lines(response.status, prepared)

    def whole_head(self, status: int, prepared: PreparedHeaders, length: int) -> bytes:
        """The head of a response with a whole body of ``length`` bytes (-1:
        a status without a body) on a keep-alive HTTP/1.1 connection, made
        once per Date second for each status, header lines and length."""
        date = self._date.line()
        if date is not self._heads_date:
            self._heads.clear()
            self._heads_date = date
        key = (status, prepared.lines, length)
        head = self._heads.get(key)
        if head is None:
            lines = self.head_lines(status, prepared)
            if length >= 0:
                lines.append(b"content-length: %d\r\n" % length)
            if prepared.close:
                lines.append(CONNECTION_CLOSE)
            lines.append(b"\r\n")
            head = b"".join(lines)
            if len(self._heads) >= WIRE_ENTRIES:
                self._heads.clear()
            self._heads[key] = head
        return head

    def head_lines(self, status: int, prepared: PreparedHeaders) -> list[bytes]:
        """A response head's lines up to its framing: status, Date, Server
        (unless the handler gave them) and the handler's fields."""
        lines = [status_line(status)]
        if not prepared.has_date:
            lines.append(self._date.line())
        if not prepared.has_server:
            lines.append(self._server_line)
        lines.append(prepared.lines)
        return lines

    async def _send_response(
        self,
        flow: Flow,
        response: Response,
        prepared: PreparedHeaders,
        head_only: bool,
        http_11: bool,
        keep_alive: bool,
        deadline: _Watchdog,
    ) -> bool:
        """Write ``response``; whether the connection may carry another request."""
        keep_alive = keep_alive and not prepared.close
        lines = self._head_lines(response, prepared)
        body = response.body
        no_body = body_not_allowed(response.status)
        if isinstance(body, _WHOLE):
            declared = prepared.declared_length
            if no_body:
                pass
            elif head_only and declared is not None:
                lines.append(b"content-length: %d\r\n" % declared)
            elif declared is not None and declared != len(body):
                # Its mistake, not the client's to decode: a 500 and a close
                # rather than bytes disagreeing with the length it declared.
                log.error(
                    "handler declared Content-Length %d for a %d byte body; a 500 sent instead",
                    declared,
                    len(body),
                )
                await flow.write(self.error_response(500))
                return False
            else:
                lines.append(b"content-length: %d\r\n" % len(body))
            if not keep_alive:
                lines.append(CONNECTION_CLOSE)
            lines.append(b"\r\n")
            if head_only or no_body or not body:
                await flow.write(b"".join(lines))
            else:
                if buggify("http.split_response"):  # the head and the body in two writes
                    await flow.write(b"".join(lines))
                    lines.clear()
                lines.append(body)
                await flow.writev(lines)
            return keep_alive
        return await self._send_streamed(
            flow,
            response,
            prepared,
            lines,
            body,
            head_only or no_body,
            http_11,
            keep_alive,
            deadline,
        )

    async def _send_streamed(
        self,
        flow: Flow,
        response: Response,
        prepared: PreparedHeaders,
        lines: list[bytes],
        body: AsyncIterable[bytes],
        head_only: bool,
        http_11: bool,
        keep_alive: bool,
        deadline: _Watchdog,
    ) -> bool:
        declared = prepared.declared_length
        chunked = declared is None and http_11
        try:
            if body_not_allowed(response.status):
                pass
            elif declared is not None:
                lines.append(b"content-length: %d\r\n" % declared)
            elif chunked:
                lines.append(CHUNKED)
            else:
                keep_alive = False  # an HTTP/1.0 client: the end of the body is the close
            if not keep_alive:
                lines.append(CONNECTION_CLOSE)
            lines.append(b"\r\n")
            if head_only:
                await flow.write(b"".join(lines))
                return keep_alive
            pending: list[bytes] = lines
            timeout = self.config.send_timeout
            sent = 0
            async for piece in body:
                if not piece:
                    continue
                sent += len(piece)
                if declared is not None and sent > declared:
                    raise _wrong_length(
                        f"streamed body is longer than its Content-Length {declared}"
                    )
                if chunked:
                    pending.extend(chunk(piece))
                else:
                    pending.append(piece)
                deadline.expire_in(timeout)
                await flow.writev(pending)
                pending = []
                deadline.disarm()
            if declared is not None and sent != declared:
                raise _wrong_length(
                    f"streamed body of {sent} bytes, Content-Length said {declared}"
                )
            if chunked:
                trailers: list[tuple[bytes, bytes]] | None = getattr(body, "trailers", None)
                if trailers:
                    pending.append(b"0\r\n")
                    pending.extend(b"%s: %s\r\n" % pair for pair in _valid_trailers(trailers))
                    pending.append(b"\r\n")
                else:
                    pending.append(LAST_CHUNK)
            if pending:
                deadline.expire_in(timeout)
                await flow.writev(pending)
            return keep_alive
        finally:
            closer: Any = getattr(body, "aclose", None)
            if closer is not None:
                await closer()

    def error_response(self, status: int, *, close: bool = True) -> bytes:
        """One of the server's own error responses, whole: a plain-text one
        after which the connection closes, or (``close`` False, status 500)
        the answer to a handler that failed, on a connection that goes on."""
        if not close:
            response = _INTERNAL_ERROR
            assert isinstance(response.body, bytes)
            lines = self._head_lines(response, self._headers.prepare(response.headers))
            lines.append(b"content-length: %d\r\n\r\n" % len(response.body))
            lines.append(response.body)
            return b"".join(lines)
        reason = reason_phrase(status)
        text = b"%d %s\n" % (status, reason)
        head = b"%s%s%scontent-type: text/plain\r\ncontent-length: %d\r\n%s\r\n" % (
            status_line(status),
            self._date.line(),
            self._server_line,
            len(text),
            CONNECTION_CLOSE,
        )
        return head + text

    async def _refuse(self, flow: Flow) -> None:
        """Refuse a connection (over the limit, or while stopping): an HTTP/2
        client, known by its preface, gets GOAWAY (REFUSED_STREAM), others 503."""
        first = b""
        with contextlib.suppress(NetworkError, OSError, TimeoutError):
            async with asyncio.timeout(0.5):  # clients speak first
                first = await flow.read()
        if not is_preface(first):
            await self._send_error_raw(flow, 503)
            return
        with contextlib.suppress(NetworkError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await flow.write(goaway_refusal())
            await self._linger(flow)

    async def _send_error_raw(
        self,
        flow: Flow,
        status: int,
        request: Head | Request | None = None,
        started: float | None = None,
    ) -> None:
        """A complete error response, then the connection is to be closed;
        logged (with the request, or its head, when it was read)."""
        if self.observer is not None:
            self._log_refusal(flow, status, request, started)
        with contextlib.suppress(NetworkError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await flow.write(self.error_response(status))
            await self._linger(flow)

    def _log_refusal(
        self, flow: Flow, status: int, request: Head | Request | None, started: float | None
    ) -> None:
        """Tell the observer of one of the server's own error responses."""
        if not isinstance(request, Request):
            head = request
            request = Request(
                head.method.decode("latin-1") if head is not None else "",
                head.target.decode("latin-1") if head is not None else "",
                head.headers if head is not None else (),
                b"",
                head.http_version.decode("latin-1") if head is not None else "1.1",
                flow.remote_address,
                flow.local_address,
            )
        body = len(b"%d %s\n" % (status, reason_phrase(status)))
        seconds = 0.0 if started is None else self._date.now() - started
        assert self.observer is not None
        self.observer(request, status, body, seconds)

    async def _linger(self, flow: Flow) -> None:
        """Half-close, then drain what the client is still sending for a moment.

        Closing with unread input makes the kernel send a reset, which can
        destroy the error response before the client reads it.
        """
        await flow.shutdown()
        drained = 0
        async with asyncio.timeout(self.config.linger_timeout):
            while drained < self.config.linger_bytes:
                data = await flow.read()
                if not data:
                    return
                drained += len(data)
