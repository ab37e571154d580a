"""HTTP/1.1 for an ASGI application, driven by the transport's callbacks.

On the socket stack a connection of an :class:`~looming.http.server.HttpServer`
serving an :class:`~looming.http.asgi.AsgiAdapter` (with the httptools
parser) is served here instead of by a task
reading its flow: :class:`FastAsgiConnection` takes the transport's
callbacks, parses each request head with llhttp as it arrives, and runs
the application right there, in the callback, whose ``send()`` writes the
response into the transport itself (waiting, as the flow would, while the
transport's buffer is above its high-water mark). An application that
answers without waiting for anything costs no task at all: it runs as the
server's long-lived *runner* task (``asyncio.current_task()`` is that
task, as anyio and ``asyncio.timeout`` need), stepped from the callback
like an eager task. One that must wait is carried on from where it stopped
by that runner, in the request's own context, and the server makes a new
runner for the requests after it (see :meth:`FastAsgiConnection._begin`).
Requests arriving while a task is running (pipelined behind a response sent
from a task) get a task each. A whole response (or a streamed one's end)
is held back to the loop's next turn and written then with those of every
other connection answered in this one (see
:meth:`FastAsgiConnection.write_soon`): a client reading many connections
is woken once for them, not once for each.

Access logs and metrics see the same responses as on the usual path (the
server's observer is told of each whole response, with the request as the
usual path reads it); paths the server answers itself (``/metrics``) are
handed back (``not_fast``).

Only the plain case is served here: HTTP/1.1 requests without a body,
without ``Connection``, ``Upgrade`` or ``Expect`` fields, other than HEAD.
The first request that is anything else, a head llhttp or the server's
checks refuse, or the HTTP/2 preface, hands the connection back to its flow
with every byte not yet answered, and the server's usual path serves it
from then on (see ``HttpServer.serve_flow``): both paths answer alike.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import types
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import h11

from looming.bounded import Memo
from looming.http.asgi import (
    PATHSEND_CHUNK,
    ClientDisconnected,
    Message,
    Scope,
    release_frames,
)
from looming.http.h11_strict import bad_head_byte
from looming.http.message import Request
from looming.http.parser import _PLAIN_TARGET_MATCH, _checked_fields, httptools_module
from looming.http.response_head import (
    CHUNKED,
    CONNECTION_CLOSE,
    LAST_CHUNK,
    InvalidHeaders,
    PreparedHeaders,
    body_not_allowed,
)
from looming.http.server import _INTERNAL_ERROR, PIPELINE_TURN, _valid_trailers

if TYPE_CHECKING:
    from looming.http.asgi import AsgiAdapter
    from looming.http.server import HttpServer

log = logging.getLogger("looming.http")

RECEIVE_HIGH_WATER = 256 * 1024
"""Unanswered pipelined bytes above which the transport stops reading."""

HELD_WRITES = 64 * 1024
"""Response bytes a connection may hold back for the loop's next turn (more
are written at once, where the transport's high-water mark sees them)."""

APART = 4096
"""Body bytes from which a whole response's body is held beside its head
and written with it in one writev, not copied behind it."""

FLUSH_TIMEOUT = 30.0
"""Seconds a closed connection may take to hand its last bytes to a slow client."""

GONE_DELAY = 0.05
"""Seconds after an end of stream before an application still responding is
told its client is gone (a client that half-closes right after its request
still gets a quick response, as on the flow path)."""

_BAD_START = (b"\r", b"\n", b"PRI ")
"""Heads the usual path serves: a blank line first (its parser skips it), HTTP/2's preface."""

_ANSWERED: Any = object()
"""What an application stepped from a callback "yielded" when it ended without waiting."""

_PREPARED: Memo[tuple[Any, ...], PreparedHeaders] = Memo(1024)
"""Response headers as applications gave them -> validated and rendered (the
same for every server: one lookup a response for headers seen before)."""
_PREPARED_GET = _PREPARED.get


class LentTransport(Protocol):
    """What a flow offers a faster consumer of its connection (SocketTcpFlow does)."""

    def lend_transport(self, protocol: asyncio.BaseProtocol) -> asyncio.Transport: ...

    def take_back(
        self, pending: bytes, *, eof: bool, write_paused: bool, reading_paused: bool
    ) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    @property
    def local_address(self) -> tuple[str, int]: ...

    @property
    def remote_address(self) -> tuple[str, int]: ...


class FastAsgiConnection(asyncio.Protocol):
    """One connection served from the transport's callbacks (see the module)."""

    __slots__ = (
        "_adapter",
        "_buf",
        "_closing",
        "_context",
        "_deadline",
        "_drain_waiter",
        "_eager",
        "_eof",
        "_exchange",
        "_fallback",
        "_first",
        "_flow",
        "_fresh",
        "_head_begun",
        "_headers",
        "_held",
        "_held_body",
        "_last_head",
        "_last_target",
        "_loop",
        "_lost",
        "_message_done",
        "_not_fast",
        "_parser",
        "_pos",
        "_reading_paused",
        "_scan",
        "_server",
        "_template",
        "_template_headers",
        "_timer",
        "_transport",
        "_turn",
        "_url",
        "_write_paused",
        "close_after_response",
    )

    def __init__(
        self,
        server: HttpServer,
        adapter: AsgiAdapter,
        flow: LentTransport,
        fallback: Callable[[], None],
        not_fast: frozenset[bytes] = frozenset(),
    ) -> None:
        self._server = server
        self._not_fast = not_fast
        """Request paths (without the query) the usual path answers."""
        self._adapter = adapter
        self._flow = flow
        self._fallback = fallback
        self._loop = asyncio.get_running_loop()
        self._context = contextvars.copy_context()
        self._parser: Any = httptools_module().HttpRequestParser(self)
        self._held = self._held_body = b""
        """Responses written in this turn of the loop, not yet handed to
        the transport (see :meth:`write_soon`)."""
        self._buf = bytearray()
        """What was received; from ``_pos`` on, not answered yet."""
        self._pos = 0
        self._scan = 0
        """Where the search for the end of the head goes on."""
        self._head_begun = self._closing = False
        self._fresh = True
        """Whether ``_buf`` starts where a read started (see _next_request)."""
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._message_done = False
        self._last_head = b"-"
        self._last_target = b""
        """The last plain request head read (never a whole read: no head is one byte)."""
        self._template: dict[str, Any] = {}
        self._template_headers: tuple[tuple[bytes, bytes], ...] = ()
        """The scope of ``_last_head``, and its fields, as first read."""
        self._exchange: _Exchange | None = None
        self._eof = self._lost = self._write_paused = self._reading_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._first = True
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._eager = False
        """Within a step of an application from a callback."""
        self._turn = 0
        """Requests answered in this callback (see :data:`PIPELINE_TURN`)."""
        self.close_after_response = False
        """Set by a graceful stop: the connection ends after its response."""
        self._transport = flow.lend_transport(self)
        self._expire_in(server.config.header_timeout)

    # --- llhttp's callbacks -----------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_message_complete(self) -> None:
        self._message_done = True

    # --- the transport's callbacks ----------------------------------------

    def data_received(self, data: bytes) -> None:
        self._turn = 0
        buf = self._buf
        if self._pos == len(buf):
            # Everything before was answered: this read starts afresh.
            if buf:
                buf.clear()
                self._pos = self._scan = 0
            if data == self._last_head and self._exchange is None and not self._write_paused:
                # The last request's head again, alone in its read (a
                # keep-alive client's next request): read once already.
                scope = self._scope_again()
                if scope is not None:
                    self._fresh = False
                    self._begin(scope, in_callback=True)
                    return
            self._fresh = True
        buf += data
        if self._exchange is None and not self._write_paused:
            self._next_request(in_callback=True)
        elif len(buf) - self._pos > RECEIVE_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        exchange = self._exchange
        if exchange is None:
            if self._write_paused:
                pass  # resume_writing goes on with what was received
            elif self._pos < len(self._buf):
                self._hand_over()  # an unfinished head, then the end: the usual path answers
            else:
                self.close()
        elif self._pos == len(self._buf):
            # (Requests pipelined before the end are answered first, and the
            # client is not gone while they are, as on the flow path.)
            exchange.client_ending()
        return True  # the response in progress may still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel_timer()
        self._server.forget_fast(self)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._exchange is not None:
            self._exchange.client_gone()
        self._flow.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._exchange is None and not self._closing and not self._lost:
            self._deadline = 0.0  # the send timeout's
            self._go_on()

    # --- requests ---------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Between a request's head and the end of its response."""
        return self._exchange is not None

    def _next_request(self, *, in_callback: bool = False) -> None:
        """Start the exchange of the next request in the buffer, if its head
        is whole; hand the connection over if it is not a plain one.
        ``in_callback``: called from a transport's callback, outside any task."""
        buf, pos = self._buf, self._pos
        if not self._fresh:
            # Blank lines after a request in the same read: skipped, as
            # llhttp does; at the start of a read the usual path, which
            # skips them as well, takes the connection (handed over below).
            while pos < len(buf) and buf[pos] in b"\r\n":
                pos += 1
            self._pos = pos
        scan = max(pos, self._scan)
        end = buf.find(b"\r\n\r\n", scan)
        if end < 0:
            self._head_unfinished(scan)
            return
        end += 4
        head = buf[pos:end]
        if head == self._last_head:
            scope: Scope | None = self._scope_again()
        elif buf.startswith(_BAD_START, pos):
            scope = None
        else:
            scope = self._parse_head(head)
        if scope is None:
            self._hand_over()
            return
        self._pos = self._scan = end
        self._fresh = False
        if end > RECEIVE_HIGH_WATER // 4 and end * 2 > len(buf):
            del buf[:end]  # what was answered (now and then, for a pipelining client)
            self._pos = self._scan = 0
        if self._reading_paused and len(buf) - self._pos <= RECEIVE_HIGH_WATER:
            self._reading_paused = False
            self._transport.resume_reading()
        self._begin(scope, in_callback=in_callback)

    def _begin(self, scope: Scope, *, in_callback: bool = False) -> None:
        """The exchange of a request whose head was taken from the buffer
        (``in_callback``: from a transport's callback, surely outside a task).

        Its application runs in this callback up to its end or its first
        wait, as the server's runner task; one that waits is carried on by
        the runner (see :meth:`_carry_on`), and a new runner serves the
        requests after it."""
        self._first = self._head_begun = False
        self._deadline = 0.0
        self._exchange = exchange = _Exchange(self, scope)
        server = self._server
        server.in_flight += 1
        if server.observer is not None:
            exchange.observed = (self._request(), server._date.now())
        if self._eof and self._pos == len(self._buf):
            exchange.client_ending()  # the last request the client sent before its end
        context = self._context.copy()
        loop = self._loop
        if not in_callback and asyncio.current_task(loop) is not None:
            # From within a task (a response sent from one): a task of its own.
            exchange._task = loop.create_task(exchange.run(), context=context)
            return
        held = server.fast_runner
        if held is None or held[0].done():
            held = self._new_runner()
        runner = exchange._task = held[0]
        coro = exchange.run()
        self._eager = True
        _enter_task(loop, runner)
        try:
            yielded = context.run(coro.send, None)
        except (StopIteration, asyncio.CancelledError):
            yielded = _ANSWERED  # (or cancelled) without waiting: the runner serves on
        finally:
            _leave_task(loop, runner)
            self._eager = False
        if yielded is not _ANSWERED:
            self._carry_on(exchange, held[1], (coro, yielded, context))
        if self._exchange is None and not self._closing and not self._lost:
            if self._pos == len(self._buf) and not (self._eof or self._write_paused):
                # Answered, nothing more received: wait for the next request
                # (what _next_turn's _go_on does, without the calls).
                if self._deadline == 0.0:
                    self._expire_in(server.config.keep_alive_timeout)
            else:
                self._next_turn()

    def _new_runner(self) -> tuple[asyncio.Task[None], asyncio.Future[_Handoff]]:
        """The server's runner task, idle until an application must wait."""
        waiter: asyncio.Future[_Handoff] = self._loop.create_future()
        held = self._server.fast_runner = (self._loop.create_task(_carry(waiter)), waiter)
        return held

    def _carry_on(
        self, exchange: _Exchange, given: asyncio.Future[_Handoff], handoff: _Handoff
    ) -> None:
        """The exchange's application, stepped as the runner task, must
        wait: the runner carries it on (the server makes a new one for the
        requests after it)."""
        self._server.fast_runner = None
        if not given.done():
            given.set_result(handoff)
        else:
            # The runner was cancelled meanwhile: a task goes on, the
            # cancellation first (the rare case of an application cancelling its task).
            coro, _, context = handoff
            runner = exchange._task
            task = exchange._task = self._loop.create_task(
                _resumed(coro, asyncio.CancelledError(), context, thrown=True), context=context
            )
            if exchange._done and runner is not None:
                # Held after its response as the runner was: now as this task.
                self._adapter._after.discard(runner)
                self._adapter._after.add(task)

    def _next_turn(self) -> None:
        """A response was sent within this callback: on to the next request,
        or, after :data:`PIPELINE_TURN` of them, in the loop's next turn."""
        self._turn += 1
        if self._turn < PIPELINE_TURN or self._pos == len(self._buf):
            self._go_on()
            return
        self._turn = 0
        self._loop.call_soon(self._go_on_later)

    def _go_on_later(self) -> None:
        if self._exchange is None and not self._closing and not self._lost:
            self._go_on()

    def _head_unfinished(self, scan: int) -> None:
        """No whole head yet from ``_pos``; searched from ``scan``."""
        buf, pos = self._buf, self._pos
        if pos == len(buf):
            return
        config = self._server.config
        if (
            buf.startswith(_BAD_START, pos)
            or buf.find(b"\n\n", scan) >= 0
            or bad_head_byte(buf, max(pos, scan - 1)) >= 0  # (the usual path refuses it)
            or len(buf) - pos > config.max_header_bytes
        ):
            self._hand_over()
            return
        self._scan = max(pos, len(buf) - 3)  # a terminator may straddle the next read
        if not self._head_begun:
            # The head has header_timeout to arrive whole from its first byte.
            self._head_begun = True
            self._expire_in(config.header_timeout)

    def _parse_head(self, head: bytearray) -> Scope | None:
        """The scope of a plain request whose whole head is ``head``, or
        None for one the usual path must serve."""
        self._url = b""
        self._headers = []
        self._message_done = False
        parser = self._parser
        try:
            parser.feed_data(head)
        except Exception:
            return None  # llhttp's error, or an upgrade (CONNECT): the usual path's
        target = self._url
        if not self._message_done or parser.get_http_version() != "1.1":
            return None
        method = parser.get_method()
        if method == b"HEAD" or _PLAIN_TARGET_MATCH(target) is None:
            return None
        if self._not_fast and target.partition(b"?")[0] in self._not_fast:
            return None
        try:
            headers, notes, size = _checked_fields(self._headers, b"1.1", target)
        except h11.RemoteProtocolError:
            return None
        if notes or size > self._server.config.max_header_bytes:
            return None
        return self._scope_of(bytes(head), method, target, headers)

    def _scope_of(
        self, head: bytes, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]
    ) -> Scope | None:
        """The scope of a plain request, kept to be read again (see _scope_again)."""
        scope = self._adapter.fast_scope(
            method, target, headers, self._flow.remote_address, self._flow.local_address
        )
        self._last_head = head
        self._last_target = target
        template = self._template = dict(scope)
        del template["state"], template["extensions"]  # made afresh each time
        self._template_headers = tuple(scope["headers"])
        return scope

    def _request(self) -> Request:
        """The request being begun as the usual path reads it (for the
        server's observer: access logs, metrics)."""
        return Request(
            self._template["method"],
            self._last_target.decode("latin-1"),
            self._template_headers,
            http_version="1.1",
            client=self._flow.remote_address,
            server=self._flow.local_address,
        )

    def _scope_again(self) -> Scope | None:
        """The scope of a request whose head is the last one's (the same
        fields, read again fresh: an application may change its scope)."""
        scope: dict[str, Any] = self._template.copy()
        scope["headers"] = list(self._template_headers)
        scope["state"] = self._adapter.state.copy()
        scope["extensions"] = {"http.response.trailers": {}, "http.response.pathsend": {}}
        return scope

    def response_done(self, exchange: _Exchange, keep_alive: bool) -> None:
        """The exchange's response is written: on to the next request."""
        if self._exchange is not exchange:
            return
        self._exchange = None
        server = self._server
        server.requests_served += 1
        observed = exchange.observed
        if observed is not None and server.observer is not None:
            request, started = observed
            seconds = server._date.now() - started
            server.observer(request, exchange._status, exchange._body_bytes, seconds)
        if self._lost or self._closing:
            return
        if not keep_alive or self.close_after_response or server.stopping:
            self.close()
            return
        if not self._eager:
            self._go_on()  # (after an eager step, _next_request goes on)

    def _go_on(self) -> None:
        """Between requests: the next one received, the end, or the wait for one."""
        if self._write_paused:
            # The client does not read its responses: none is made until it
            # does (resume_writing), within the send timeout.
            self._expire_in(self._server.config.send_timeout)
            return
        if self._pos < len(self._buf):
            self._next_request()  # what was pipelined, even after the client's end
        if self._exchange is not None or self._closing or self._lost:
            return
        if self._eof:
            if self._pos < len(self._buf):
                self._hand_over()  # an unfinished head, then the end: the usual path answers
            else:
                self.close()
        elif self._deadline == 0.0:
            self._expire_in(self._server.config.keep_alive_timeout)

    def exchange_ended(self) -> None:
        """The exchange ended without a whole response (the client had gone,
        or the application stopped midway): the connection closes."""
        self._exchange = None
        self.close()

    def _hand_over(self) -> None:
        """The usual path serves the connection from here (see the module)."""
        self.flush()
        self._closing = True  # this object is done with it
        self._cancel_timer()
        self._server.forget_fast(self)
        self._server.adopted_from_fast(self._flow, first=self._first)
        pending = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = self._scan = 0
        self._flow.take_back(
            pending,
            eof=self._eof,
            write_paused=self._write_paused,
            reading_paused=self._reading_paused,
        )
        # The connection's task starts in the connection's context, not in
        # that of the request whose response ended (the caller, maybe).
        self._context.copy().run(self._fallback)

    # --- writing ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self._transport
        # is_closing: a failed send closed the transport, and its
        # connection_lost is still to come.
        if self._lost or self._closing or transport.is_closing():
            raise ClientDisconnected("the client has gone away")
        if self._held:
            self.flush()
        transport.write(data)

    def write_soon(self, data: bytes, body: bytes = b"") -> None:
        """Write a whole response (or its end) with the other connections'
        of this turn of the loop: one burst of writes wakes a client
        reading many connections once, not once for each (the writes
        otherwise alternate with the applications' work). Held back until
        the loop's next turn, but never more than :data:`HELD_WRITES`
        bytes; writing anything else writes them first. ``body``: a large
        body that follows ``data``, held beside it (see :data:`APART`)."""
        held = self._held
        if not held:
            if len(data) + len(body) > HELD_WRITES:
                self._held, self._held_body = data, body
                self.flush()
                return
            waiting = self._server.fast_writes
            if not waiting:
                self._loop.call_soon(flush_writes, self._server)
            waiting.append(self)
            self._held, self._held_body = data, body
            return
        data += body
        if self._held_body:
            held += self._held_body  # (a response after a large one in the same read: rare)
            self._held_body = b""
        if len(held) + len(data) > HELD_WRITES:
            self._held = held
            self.write(data)
        else:
            self._held = held + data  # (pipelined responses: a few, small)

    def flush(self) -> None:
        """Hand what is held back to the transport."""
        held, body = self._held, self._held_body
        if held:
            self._held = self._held_body = b""
            transport = self._transport
            if self._lost or transport.is_closing():
                return
            if body:
                transport.writelines((held, body))  # (uvloop: one writev, no copy)
            else:
                transport.write(held)

    async def drain(self) -> None:
        """Wait while the transport's buffer is above its high-water mark,
        for at most the send timeout (then the connection is dropped)."""
        if not self._write_paused or self._lost:
            return
        try:
            async with asyncio.timeout(self._server.config.send_timeout):
                while self._write_paused and not self._lost:
                    waiter = self._drain_waiter = self._loop.create_future()
                    await waiter
        except TimeoutError:
            self._server.timeouts += 1
            self.abort()
        if self._lost:
            raise ClientDisconnected("the client has gone away")

    def close(self) -> None:
        """Close once what was written is sent (a client that does not read
        it within :data:`FLUSH_TIMEOUT` is cut off)."""
        if self._lost or self._closing:
            return
        self.flush()
        self._closing = True
        self._cancel_timer()
        transport = self._transport
        transport.close()
        if transport.get_write_buffer_size() > 0:
            self._loop.call_later(FLUSH_TIMEOUT, self.abort)

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all."""
        self._closing = True
        self._held = self._held_body = b""
        if not self._lost:
            self._transport.abort()

    # --- timeouts ---------------------------------------------------------

    def _expire_in(self, seconds: float) -> None:
        """One timer at a time, moved lazily (see server._Watchdog)."""
        deadline = self._loop.time() + seconds
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        self._deadline = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if not deadline or self._exchange is not None or self._lost or self._closing:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        self._server.timeouts += 1
        if self._write_paused:
            self.abort()  # a client that stopped reading its responses
            return
        if self._pos < len(self._buf):
            self.write(self._server.error_response(408))
        self.close()


class FastCachedConnection(FastAsgiConnection):
    """A connection of a handler that holds whole answers in memory
    (``cached_response``: StaticSite's files), served from the transport's
    callbacks as :class:`FastAsgiConnection` serves an ASGI application's:
    each plain GET the handler holds is written at once, as the usual path
    writes it (``HttpServer.cached_wire``); the first other request hands
    the connection to the usual path. The server's observer (access logs,
    metrics) is told of each answer as the usual path tells it of the
    handler's answer to the same request."""

    __slots__ = ()

    def _scope_of(
        self, head: bytes, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]
    ) -> Scope | None:
        if method != b"GET":
            return None
        self._last_head = head
        self._last_target = target
        self._template = {"method": "GET"}
        self._template_headers = tuple(headers)
        return self._scope_again()

    def _scope_again(self) -> Scope | None:
        wire = self._server.cached_wire(b"GET", self._last_target)
        return None if wire is None else {"wire": wire}

    def _begin(self, scope: Scope, *, in_callback: bool = False) -> None:
        self._first = self._head_begun = False
        self._deadline = 0.0
        data, head_length, rest = scope["wire"]
        server = self._server
        started = server._date.now() if server.observer is not None else 0.0
        if self._lost or self._closing or self._transport.is_closing():
            return  # its connection_lost comes
        self.write_soon(data)
        if rest:
            self.write_soon(rest)
        server.requests_served += 1
        server.cached_answers += 1
        if server.observer is not None:
            sent = len(rest) if rest else len(data) - head_length
            server.observer(self._request(), 200, sent, server._date.now() - started)
        if self.close_after_response or server.stopping:
            self.close()
        else:
            self._next_turn()


def flush_writes(server: HttpServer) -> None:
    """Write what the server's fast connections held back in the loop's
    last turn (see :meth:`FastAsgiConnection.write_soon`)."""
    waiting = server.fast_writes
    server.fast_writes = []
    for connection in waiting:
        connection.flush()


_Handoff = tuple[Coroutine[Any, Any, None], Any, contextvars.Context]
"""An application stopped at its first wait: its coroutine, what it
yielded to its task, and the context it runs in."""


async def _carry(waiter: asyncio.Future[_Handoff]) -> None:
    """The runner task's body: idle until an application stepped as this
    task must wait, then carry it on to its end (see FastAsgiConnection)."""
    thrown: BaseException | None = None
    try:
        await waiter
    except asyncio.CancelledError as error:
        if not waiter.done() or waiter.cancelled():
            raise  # retired while idle
        thrown = error  # the application cancelled its task before it waited
    coro, yielded, context = waiter.result()
    if thrown is not None:
        await _resumed(coro, thrown, context, thrown=True)
    else:
        await _resumed(coro, yielded, context)


@types.coroutine
def _resumed(
    coro: Coroutine[Any, Any, None],
    yielded: Any,
    context: contextvars.Context,
    *,
    thrown: bool = False,
) -> Generator[Any, None, None]:
    """Carry on ``coro``, which yielded ``yielded`` to its task (or, with
    ``thrown``, is to be thrown that exception first), stepping it in
    ``context`` as its own task would."""
    send, throw = coro.send, coro.throw
    try:
        if thrown:
            yielded = context.run(throw, yielded)
        while True:
            try:
                value = yield yielded
            except BaseException as error:  # the task's cancellation, mostly
                yielded = context.run(throw, error)
            else:
                yielded = context.run(send, value)
    except StopIteration:
        return


def _prepared(conn: FastAsgiConnection, items: tuple[Any, ...], hashable: bool) -> PreparedHeaders:
    """The headers an application gave, checked and prepared (raises
    InvalidHeaders), kept in :data:`_PREPARED` when they are hashable."""
    prepared = conn._server._headers.prepare(conn._adapter._checked_headers(items))
    if hashable:
        _PREPARED.put(items, prepared)
    return prepared


class _Exchange:
    """One request and its response on a :class:`FastAsgiConnection`."""

    __slots__ = (
        "_body_bytes",
        "_body_taken",
        "_conn",
        "_declared",
        "_disconnect",
        "_done",
        "_ended",
        "_gone",
        "_keep_alive",
        "_prepared",
        "_sent",
        "_started",
        "_status",
        "_task",
        "_trailers",
        "_written",
        "observed",
        "scope",
    )

    def __init__(self, conn: FastAsgiConnection, scope: Scope) -> None:
        self._conn = conn
        self.scope = scope
        self._body_taken = False
        self._started = False
        self._written = False
        """Whether the head went out: no 500 can replace the response after."""
        self._done = False
        self._ended = False
        self._gone = False
        self._disconnect: asyncio.Future[None] | None = None
        self._status = 200
        self._prepared: PreparedHeaders | None = None
        self._declared: int | None = None
        self._keep_alive = True
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._sent = 0
        self._body_bytes = 0
        """Body bytes of the response, for the access log (as the usual path counts them)."""
        self._task: asyncio.Task[None] | None = None
        self.observed: tuple[Request, float] | None = None
        """The request and when it began, when the server has an observer."""

    async def run(self) -> None:
        conn = self._conn
        try:
            await conn._adapter.app(self.scope, self.receive, self.send)
        except Exception as error:
            self._failed(error)
        finally:
            if not self._ended:
                self._ended = True
                conn._server.in_flight -= 1
            if not self._done:
                self._unfinished()
                if self.observed is not None and self._started and not self._done:
                    self._log_cut()
            task = self._task
            if task is not None:
                conn._adapter._after.discard(task)  # (held, if it ran on after its response)

    def _log_cut(self) -> None:
        """Tell the observer of a response begun and cut off (the client left)."""
        server = self._conn._server
        assert self.observed is not None
        request, started = self.observed
        if server.observer is not None:
            sent = self._sent or self._body_bytes
            server.observer(request, self._status, sent, server._date.now() - started, True)

    def _failed(self, error: Exception) -> None:
        scope = self.scope
        if self._done:
            log.error("ASGI application raised after its response was complete", exc_info=error)
        elif self._gone and ClientDisconnected in (type(error), type(error.__context__)):
            # What send() raised, or raised while handling it (Starlette's
            # ClientDisconnect): the application's ordinary end.
            release_frames(error)
        elif not self._written and not self._gone:
            log.error(
                "handler failed on %s %s",
                scope["method"],
                scope["raw_path"].decode("latin-1"),
                exc_info=error,
            )
            self._send_500()
        else:
            log.error("response on %s failed", scope["client"], exc_info=error)

    def _unfinished(self) -> None:
        """The application returned before its last message."""
        conn = self._conn
        if self._gone:
            conn.exchange_ended()
        elif not self._written:
            log.error(
                "handler failed on %s %s: ASGI application returned without a response",
                self.scope["method"],
                self.scope["raw_path"].decode("latin-1"),
            )
            self._send_500()
        else:
            # The client would take a part for the whole body: the
            # connection is closed after what was sent, as on the flow path.
            conn.exchange_ended()

    def _send_500(self) -> None:
        self._written = True
        self._status = 500
        assert isinstance(_INTERNAL_ERROR.body, bytes)
        self._body_bytes = len(_INTERNAL_ERROR.body)
        conn = self._conn
        self._finish(conn._server.error_response(500, close=False))

    def _finish(self, last: bytes, body: bytes = b"") -> None:
        """The response ends with ``last``: the application is told, runs
        on by itself (background tasks), and the connection goes on."""
        self._done = True
        waiter = self._disconnect
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        conn = self._conn
        if not self._ended:
            # The application runs on after its response (background tasks):
            # held (and counted) before the client can see the response.
            conn._server.in_flight -= 1
            self._ended = True
            if self._task is not None:
                conn._adapter._after.add(self._task)
        try:
            # (a client gone is no error here)
            if last and not (conn._lost or conn._closing or conn._transport.is_closing()):
                conn.write_soon(last, body)
        finally:
            conn.response_done(self, self._keep_alive)

    # --- the client going away --------------------------------------------

    def client_gone(self) -> None:
        if self._done or self._gone:
            return
        self._gone = True
        waiter = self._disconnect
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        task = self._task
        if task is None or task.done():
            return
        # Told of the disconnect (its pending send() raises ClientDisconnected),
        # it may finish within the grace, also with a response cut midway.
        conn = self._conn
        grace = conn._adapter.disconnect_grace
        if grace is not None:
            conn._loop.call_later(grace, self._cut, task)
            return
        # No grace (the default): it runs on by itself, held as background
        # tasks are, and the connection closes now (no CLOSE-WAIT).
        if not self._ended:
            self._ended = True
            conn._server.in_flight -= 1
            conn._adapter._after.add(task)
        conn.exchange_ended()

    def _cut(self, task: asyncio.Task[None]) -> None:
        if not self._done and not task.done():
            task.cancel()

    def client_ending(self) -> None:
        """An end of stream: the client is gone, told at once to an
        application waiting for it, else after :data:`GONE_DELAY`."""
        waiter = self._disconnect
        if waiter is not None and not waiter.done():
            self.client_gone()
        else:
            self._conn._loop.call_later(GONE_DELAY, self.client_gone)

    # --- receive and send -------------------------------------------------

    async def receive(self) -> Message:
        if not self._body_taken:
            self._body_taken = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self._done and not self._gone:
            waiter = self._disconnect
            if waiter is None or waiter.done():
                waiter = self._disconnect = self._conn._loop.create_future()
            await waiter
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self._gone:
            raise ClientDisconnected("the client has gone away")
        if self._done:
            return  # the response is over; later messages mean nothing
        kind = message["type"]
        if kind == "http.response.body":
            more = message.get("more_body", False)
            if not more and not self._written and self._started and self._trailers is None:
                # The whole response in one message (the common case): no
                # further coroutine, one write.
                self._written = True
                self._finish(*self._whole(message.get("body", b"")))
                return
            await self._body(message.get("body", b""), more)
        elif not self._started:
            if kind != "http.response.start":
                raise RuntimeError(f"ASGI application sent {kind!r} before a response")
            self._start(message)
        elif kind == "http.response.trailers" and self._trailers is not None:
            self._add_trailers(message)
        elif kind == "http.response.pathsend" and self._trailers is None and not self._done:
            await self._pathsend(message)
        else:
            self._misordered(kind)

    def _misordered(self, kind: object) -> None:
        """What cannot follow (a second start, trailers not announced): the
        application's error, logged; a 500 if nothing was written, else the
        connection closes after what was (as on the flow path)."""
        log.error(
            "handler on %s %s sent %r where it cannot follow; the response ends in error",
            self.scope["method"],
            self.scope["raw_path"].decode("latin-1"),
            kind,
        )
        self._keep_alive = False
        if not self._written:
            self._send_500()
        else:
            self._finish(b"")

    def _start(self, message: Message) -> None:
        status = int(message["status"])
        items = tuple(message.get("headers", ()))
        try:
            prepared = _PREPARED_GET(items)
            hashable = True
        except TypeError:  # unhashable pairs (lists, bytearrays): prepared each time
            prepared, hashable = None, False
        try:
            if prepared is None:
                prepared = _prepared(self._conn, items, hashable)
            if not 200 <= status <= 999:
                raise InvalidHeaders(f"status {status} is not a final status")
        except InvalidHeaders as error:
            scope = self.scope
            log.error(
                "handler for %s %s gave a bad response: %s",
                scope["method"],
                scope["raw_path"].decode("latin-1"),
                error,
            )
            self._started = True
            self._send_500()
            return
        self._started = True
        self._status = status
        self._prepared = prepared
        self._declared = prepared.declared_length
        self._keep_alive = not prepared.close
        if message.get("trailers", False):
            self._trailers = []

    async def _body(self, body: bytes, more: bool) -> None:
        if not self._started:
            raise RuntimeError("ASGI application sent 'http.response.body' before a response")
        conn = self._conn
        if not self._written:
            self._written = True
            if not more and self._trailers is None:
                self._finish(*self._whole(bytes(body)))
                return
            conn.write(self._streamed_head())
        if body_not_allowed(self._status):
            body = b""
        if body:
            conn.write(self._framed(bytes(body)))
        if not more and self._trailers is None:
            self._end_body()
        await conn.drain()

    def _whole(self, body: bytes) -> tuple[bytes, bytes]:
        """Head and body of a response sent in one message: joined, or
        apart from :data:`APART` body bytes."""
        if type(body) is not bytes:
            body = bytes(body)
        status, prepared = self._status, self._prepared
        assert prepared is not None  # set by the start
        if status == 204 or status == 304:  # (body_not_allowed: the start took 200-999)
            return self._conn._server.whole_head(status, prepared, -1), b""
        length = len(body)
        declared = self._declared
        if declared is not None and declared != length:
            # The application's mistake: a 500 and a close, as on the flow path.
            log.error(
                "handler declared Content-Length %d for a %d byte body; a 500 sent instead",
                declared,
                length,
            )
            self._status, self._keep_alive = 500, False
            error = self._conn._server.error_response(500)
            self._body_bytes = len(error) - error.index(b"\r\n\r\n") - 4
            return error, b""
        self._body_bytes = length
        head = self._conn._server.whole_head(status, prepared, length)
        return (head, body) if length >= APART else (head + body, b"")

    def _streamed_head(self) -> bytes:
        assert self._prepared is not None  # set by the start
        head = self._conn._server.head_lines(self._status, self._prepared)
        if body_not_allowed(self._status):
            pass
        elif self._declared is not None:
            head.append(b"content-length: %d\r\n" % self._declared)
        else:
            head.append(CHUNKED)
        if not self._keep_alive:
            head.append(CONNECTION_CLOSE)
        head.append(b"\r\n")
        return b"".join(head)

    def _framed(self, piece: bytes) -> bytes:
        self._sent += len(piece)
        declared = self._declared
        if declared is None:
            return b"%x\r\n%s\r\n" % (len(piece), piece)
        if self._sent > declared:
            self._conn.close()
            raise RuntimeError(f"streamed body is longer than its Content-Length {declared}")
        return piece

    def _end_body(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        declared = self._declared
        self._body_bytes = self._sent
        last = b""
        if body_not_allowed(self._status):
            pass
        elif declared is None:
            if trailers:
                lines = [b"%s: %s\r\n" % pair for pair in _valid_trailers(trailers)]
                last = b"0\r\n" + b"".join(lines) + b"\r\n"
            else:
                last = LAST_CHUNK
        elif self._sent != declared:
            self._conn.close()
            raise RuntimeError(
                f"streamed body of {self._sent} bytes, Content-Length said {declared}"
            )
        self._finish(last)

    def _add_trailers(self, message: Message) -> None:
        trailers = self._trailers
        assert trailers is not None
        trailers.extend((bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ()))
        if not message.get("more_trailers", False):
            if not self._written:
                self._written = True
                self._conn.write(self._streamed_head())
            self._end_body(trailers)

    async def _pathsend(self, message: Message) -> None:
        """The file is the rest of the body, read off the event loop."""
        file: BinaryIO = await asyncio.to_thread(open, os.fspath(message["path"]), "rb")
        conn = self._conn
        try:
            if not self._written:
                self._written = True
                conn.write(self._streamed_head())
            while True:
                piece = await asyncio.to_thread(file.read, PATHSEND_CHUNK)
                if not piece:
                    break
                if not body_not_allowed(self._status):
                    conn.write(self._framed(piece))
                await conn.drain()
        finally:
            file.close()
        self._end_body()
