"""Serving an ASGI 3 application (Starlette, FastAPI, ...) with :class:`HttpServer`.

:class:`AsgiAdapter` is a looming HTTP handler: it turns each request into an
ASGI ``http`` scope, runs the application, and returns its response, whole
when the application sends a single body message and streamed otherwise.
The response ends with the application's last message, not with the
application: what it does after (Starlette's and FastAPI's background tasks)
runs on by itself, holding back neither the response nor the connection's
next request, and a failure then is logged while the connection goes on
(its exchange was complete and framed; uvicorn closes it). An application that returns
before its last message has its response cut (the connection is dropped).
The application's ``lifespan`` protocol runs through :meth:`AsgiAdapter.startup`
and :meth:`AsgiAdapter.shutdown` (or ``async with adapter.lifespan():``), which
first gives background tasks :attr:`AsgiAdapter.background_grace` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any, BinaryIO
from urllib.parse import unquote

from looming.bounded import Memo
from looming.devices.flow import Flow
from looming.errors import LoomingError
from looming.http.message import SERVER_STOPPED, ClientGone, ExtendedConnect, Request, Response

log = logging.getLogger("looming.http.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ASGI = {"version": "3.0", "spec_version": "2.4"}

_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
"""Method names as str without decoding them each time."""

CUT_GRACE = 0.25
"""Seconds a background task cancelled at shutdown has to unwind."""

PATHSEND_CHUNK = 256 * 1024
"""How much of a file sent with ``http.response.pathsend`` is read at a time."""


class LifespanFailed(LoomingError):
    """The application reported ``lifespan.startup.failed`` or ``shutdown.failed``
    (a unikernel stops with its message, exit code 1)."""


def _last_line(message: Message) -> str:
    """A failure message in one line: Starlette sends a whole traceback, whose
    last line names the error (the rest is logged at debug level)."""
    text = str(message.get("message", "")).strip()
    if "\n" in text:
        log.debug("lifespan failure reported by the application:\n%s", text)
    return text.splitlines()[-1] if text else "(no message)"


class ResponseAbandoned(LoomingError):
    """The application sent what cannot follow in its response (a second
    ``http.response.start``, trailers it did not announce): logged where it
    is found; the connection closes after what was sent."""


_MISORDERED = "ASGI application on %s %s sent %r where it cannot follow; the response ends in error"


class _Lifespan:
    """Runs the application's lifespan scope in a task and talks to it."""

    def __init__(self, app: AsgiApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.startup_done: asyncio.Future[Message] | None = None
        self.shutdown_done: asyncio.Future[Message] | None = None
        self.supported = True
        self.task: asyncio.Task[None] | None = None

    async def _send(self, message: Message) -> None:
        kind = message.get("type", "")
        if kind.startswith("lifespan.startup.") and self.startup_done is not None:
            if not self.startup_done.done():
                self.startup_done.set_result(message)
        elif (
            kind.startswith("lifespan.shutdown.")
            and self.shutdown_done is not None
            and not self.shutdown_done.done()
        ):
            self.shutdown_done.set_result(message)

    async def _run(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": dict(_ASGI), "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except Exception as error:
            # An application without lifespan support raises on the scope type;
            # like other servers, carry on without it.
            if self.startup_done is not None and not self.startup_done.done():
                self.supported = False
                summary = (str(error).strip().splitlines() or [""])[0]
                log.info(
                    "ASGI 'lifespan' protocol appears unsupported (%s%s); going on without it",
                    type(error).__name__,
                    f": {summary}" if summary else "",
                )
                log.debug("the application's lifespan raised", exc_info=error)
                self.startup_done.set_result({"type": "lifespan.unsupported"})
            elif self._reported_failure():
                # The failure was reported with its message (and is raised
                # by startup() or shutdown()); the traceback only at debug.
                log.debug("application lifespan raised after reporting failure", exc_info=True)
            else:
                log.exception("application lifespan failed")
        finally:
            for future in (self.startup_done, self.shutdown_done):
                if future is not None and not future.done():
                    future.set_result({"type": "lifespan.ended"})

    def _reported_failure(self) -> bool:
        return any(
            future is not None
            and future.done()
            and future.result().get("type", "").endswith(".failed")
            for future in (self.startup_done, self.shutdown_done)
        )

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self.startup_done = loop.create_future()
        self.task = loop.create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.startup_done
        if message["type"] == "lifespan.startup.failed":
            raise LifespanFailed(f"application startup failed: {_last_line(message)}")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done() or not self.supported:
            return
        self.shutdown_done = asyncio.get_running_loop().create_future()
        await self.inbox.put({"type": "lifespan.shutdown"})
        message = await self.shutdown_done
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if message["type"] == "lifespan.shutdown.failed":
            raise LifespanFailed(f"application shutdown failed: {_last_line(message)}")


class ClientDisconnected(ClientGone):
    """Raised by ``send()`` once the client has gone (ASGI HTTP 2.4: an OSError)."""


_APP_DONE: Message = {"type": "looming.app.done"}
_GONE: Message = {"type": "looming.client.gone"}


class _Outbox:
    """The application's response messages, one at a time.

    ``put`` returns only once the server has taken the previous message, and
    the server takes the next one only after writing the previous one to the
    flow (whose ``write`` waits while its buffer is above its high-water
    mark): an application that streams to a client that does not read is
    held in ``send()``, and the server's memory stays bounded. The one
    exception is the response's start, which the first body message may
    join at once: an application answering in one body then finishes
    without waiting for the server.
    """

    __slots__ = (
        "_getter",
        "_items",
        "_loop",
        "_putter",
        "app_done",
        "finished",
        "gone",
        "is_last",
        "on_last",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: list[Message] = []
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None
        self.gone = False
        self.finished = False
        self.app_done = False
        self.is_last: Callable[[Message], bool] | None = None
        self.on_last: Callable[[], None] | None = None
        """Told when, the response being over (a HEAD's head sent), the
        application sends what would have been its last message."""

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _full(self) -> bool:
        items = self._items
        if not items:
            return False
        return len(items) > 1 or items[0].get("type") != "http.response.start"

    async def put(self, message: Message) -> None:
        while self._full() and not self.gone and not self.finished:
            self._putter = self._loop.create_future()
            await self._putter
        if self.gone:
            raise ClientDisconnected("the client has gone away")
        if self.finished:
            # The response is over; later messages mean nothing.
            if self.on_last is not None:
                if self.is_last is not None and self.is_last(message):
                    self.on_last()
                    self.on_last = None
                else:
                    await asyncio.sleep(0)  # a stream sent into the void yields
            return
        self._items.append(message)
        self._wake(self._getter)

    def take(self) -> Message | None:
        """The next message if one is waiting (without a coroutine's cost)."""
        items = self._items
        if not items:
            return None
        message = items.pop(0)
        self._wake(self._putter)
        return message

    async def get(self) -> Message:
        while not self._items:
            if self.gone:
                return _GONE
            if self.app_done:
                return _APP_DONE
            self._getter = self._loop.create_future()
            await self._getter
        message = self._items.pop(0)
        self._wake(self._putter)
        return message

    def client_gone(self) -> None:
        self.gone = True
        self._wake(self._getter)
        self._wake(self._putter)

    def application_done(self) -> None:
        self.app_done = True
        self._wake(self._getter)

    def response_finished(self) -> None:
        self.finished = True
        self._wake(self._putter)


_ERROR_HEADERS = ((b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close"))
"""The 500 in place of a response the application got wrong: the connection closes after."""


class _AppRun:
    """One call of the application: its task, and how it ended."""

    __slots__ = ("detached", "done", "error", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] = None  # type: ignore[assignment]  # set at its start
        self.done = False
        self.error: Exception | None = None
        """What the application raised (kept for the response to raise)."""
        self.detached = False
        """The response is complete: the application runs on by itself."""

    async def finished(self) -> None:
        """Wait for the application's end; raise its error, if any."""
        if not self.done:
            await self.task
        error, self.error = self.error, None
        if error is not None:
            raise error


class _AppBody:
    """A streamed response body fed by a running application.

    Closing it (the server does, after the last chunk, on HEAD, or when the
    client went away) ends the application's task even if it never started
    iterating, which an async generator's ``aclose`` would not do.
    """

    def __init__(
        self,
        first: Message,
        outbox: _Outbox,
        run: _AppRun,
        response_done: asyncio.Event,
        detach: Callable[[_AppRun], None],
        *,
        head_grace: float | None = None,
        gone_grace: float | None = None,
        request: Request | None = None,
    ) -> None:
        self._request = request
        """The request answered (named in the log of the application's mistakes)."""
        self._next: Message | None = first
        self._outbox = outbox
        self._run = run
        self._task = run.task
        self._response_done = response_done
        self._detach: Callable[[_AppRun], None] | None = detach
        self._finished = False
        self._complete = False
        """Set once the application sent its response's last message."""
        self._head_grace = head_grace
        self._gone_grace = gone_grace
        """How long an application whose response was cut may take to finish
        (None: it runs on, told of the disconnect, and is never cancelled)."""
        """For a HEAD request (whose body the application sends is dropped):
        how long the application may go on streaming after the head."""
        self.bytes_sent = 0
        self.trailers: list[tuple[bytes, bytes]] | None = None
        """Set when the application announced trailers (``trailers: True``)."""
        self._file: BinaryIO | None = None

    def __aiter__(self) -> _AppBody:
        return self

    async def __anext__(self) -> bytes:
        while not self._finished or self._file is not None:
            if self._file is not None:
                chunk = await self._file_chunk()
                if chunk:
                    return chunk
                continue
            message = self._next if self._next is not None else await self._outbox.get()
            self._next = None
            chunk = await self._take(message)
            if chunk:
                self.bytes_sent += len(chunk)
                return chunk
        if not self._complete:
            # The application returned (or failed) before its last message:
            # its error, or this one, propagates and the server drops the
            # connection, so the client sees a truncated body, not a whole one.
            await self._run.finished()
            raise RuntimeError("ASGI application returned without completing its response")
        # What the application does after its response (Starlette's
        # background tasks) does not hold the response's end back.
        self._hand_over()
        raise StopAsyncIteration

    async def take_first(self) -> None:
        """Act on the first message now (it carries no body bytes)."""
        first, self._next = self._next, None
        if first is not None:
            await self._take(first)

    async def _take(self, message: Message) -> bytes:
        """Act on one response message; the body bytes it carries, if any."""
        kind = message.get("type")
        if kind == "http.response.body":
            if not message.get("more_body", False) and self.trailers is None:
                self._finish(complete=True)
            return bytes(message.get("body", b""))
        if kind == "http.response.pathsend" and self.trailers is None:
            # The file is the rest of the body (ASGI's pathsend extension).
            # It is opened and read off the event loop, in large pieces.
            self._file = await asyncio.to_thread(open, os.fspath(message["path"]), "rb")
            self._finish(complete=True)
        elif kind == "http.response.trailers" and self.trailers is not None:
            self.trailers.extend(
                (bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ())
            )
            if not message.get("more_trailers", False):
                self._finish(complete=True)
        elif message is _GONE:
            raise ClientDisconnected("the client went away during the response")
        elif message is not _APP_DONE:
            # What cannot follow (a second start, trailers it did not
            # announce): its error; the response ends with what was sent.
            self._finish(complete=False)
            request = self._request
            method, target = (request.method, request.target) if request else ("?", "?")
            log.error(_MISORDERED, method, target, kind)
            raise ResponseAbandoned(f"the application sent {kind!r} where it cannot follow")
        else:
            self._finish(complete=False)  # it returned before its last message
        return b""

    async def _file_chunk(self) -> bytes:
        """The next piece of a pathsend file; b"" (and the file closed) at its end."""
        assert self._file is not None
        chunk = await asyncio.to_thread(self._file.read, PATHSEND_CHUNK)
        if not chunk:
            self._close_file()
        self.bytes_sent += len(chunk)
        return chunk

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _is_last(self, message: Message) -> bool:
        kind = message.get("type")
        if self.trailers is not None:
            return kind == "http.response.trailers" and not message.get("more_trailers", False)
        if kind == "http.response.body":
            return not message.get("more_body", False)
        return kind == "http.response.pathsend"

    def _drop_rest(self, grace: float) -> None:
        """After a HEAD's head: the application's body goes nowhere and it
        runs on (to its background tasks) if it sends its last message
        within the HEAD grace (``AsgiAdapter.head_grace``); one still streaming
        then is cancelled."""
        task = self._task
        self._outbox.is_last = self._is_last
        self._outbox.on_last = self._sent_last
        self._hand_over()
        asyncio.get_running_loop().call_later(grace, self._cut_if_streaming, task)

    def _sent_last(self) -> None:
        self._complete = True

    def _cut_if_streaming(self, task: asyncio.Task[None]) -> None:
        if not self._complete and not self._run.done:
            task.cancel()

    def _hand_over(self) -> None:
        if self._detach is not None:
            self._detach(self._run)
            self._detach = None

    def _finish(self, *, complete: bool) -> None:
        self._finished = True
        self._complete = complete
        self._outbox.response_finished()
        self._response_done.set()

    async def aclose(self) -> None:
        self._finished = True
        self._close_file()
        self._outbox.response_finished()
        self._response_done.set()
        if self._complete:
            # The application sent its last message: what it does after
            # (background tasks) runs on, even if the client left meanwhile.
            self._hand_over()
        elif self._head_grace is not None and not self._outbox.gone and not self._run.done:
            self._drop_rest(self._head_grace)
        elif not self._run.done:
            await self._end_cut()

    async def _end_cut(self) -> None:
        """The response was cut (the client went away, mostly): the
        application's pending send() raises ClientDisconnected, and it is
        cancelled if it has not finished within the grace (ASGI HTTP 2.4).
        Cut by the server (a stop, the send timeout): cancelled at once."""
        task = self._task
        server_task = asyncio.current_task()
        if self._gone_grace is None and server_task is not None and not server_task.cancelling():
            # Told of the disconnect, it runs on by itself (as under uvicorn):
            # the work a client asked for is not lost with its connection.
            self._outbox.client_gone()
            try:
                if self._request is not None and self._request.http_version == "2":
                    await asyncio.wait([task])  # counted by its stream (see _end_after_disconnect)
            finally:
                self._hand_over()
            return
        try:
            if server_task is not None and not server_task.cancelling():
                self._outbox.client_gone()
                with contextlib.suppress(TimeoutError, Exception):
                    async with asyncio.timeout(self._gone_grace):
                        await asyncio.shield(task)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def release_frames(error: BaseException) -> None:
    """Let go now of what the frames ``error`` (and the exceptions it
    chains) passed through still hold, not at the next cyclic garbage
    collection: the exception, kept by a frame its own traceback holds, is a
    cycle. What they held is then released at once; an async generator an
    application stopped iterating (Starlette's StreamingResponse, when
    send() raises because the client left) is closed by the event loop
    right away, and its ``finally`` runs.

    Only for an exception the server itself disposes of: nothing may look
    at those frames' locals after (the frame still running is left alone)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


class AsgiAdapter:
    """Serves the ASGI 3 application ``app`` as a looming HTTP handler."""

    streams_request_body = True
    """Request bodies reach the application in pieces, as it reads them."""

    disconnect_grace: float | None = None
    """How long an application whose client went away may run on before it
    is cancelled (the ``cancel_on_disconnect`` key). None, the default: never
    cancelled, as under uvicorn; it is told (``receive()`` gives
    ``http.disconnect``, ``send()`` raises an OSError), the connection is
    closed at once, and it runs on as background tasks do (at shutdown it
    gets :attr:`background_grace`)."""

    head_grace = 1.0
    """How long an application answering HEAD (its body goes nowhere) may
    go on streaming after the head before it is cancelled."""

    background_grace = 10.0
    """At shutdown, how long applications still running after their response
    (background tasks) may take before they are cancelled."""

    websocket_max_message_bytes = 16 * 1024 * 1024
    """A websocket message over this (counted after inflating) closes with 1009."""

    def __init__(self, app: AsgiApp, *, root_path: str = "", scheme: str = "http") -> None:
        self.app = app
        self.root_path = root_path
        # The server cannot tell whether its flow is TLS; whoever wires a TLS
        # flow in says so here.
        self.scheme = scheme
        self.state: dict[str, Any] = {}
        self._lifespan: _Lifespan | None = None
        self._websockets: set[Any] = set()
        self._after: set[asyncio.Task[None]] = set()
        self._known_headers: Memo[tuple[Any, ...], tuple[tuple[bytes, bytes], ...]] = Memo(1024)
        """Response headers as applications gave them -> as the server takes them."""
        """Applications still running after their response was complete."""

    async def startup(self) -> None:
        """Run the application's lifespan startup (no-op if it has none)."""
        self._lifespan = _Lifespan(self.app, self.state)
        await self._lifespan.startup()

    async def shutdown(self) -> None:
        """Let work after responses finish (see :meth:`finish_background`),
        then run the application's lifespan shutdown."""
        await self.finish_background(self.background_grace)
        if self._lifespan is not None:
            await self._lifespan.shutdown()
            self._lifespan = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[AsgiAdapter]:
        await self.startup()
        try:
            yield self
        finally:
            await self.shutdown()

    @property
    def running_after_response(self) -> int:
        """How many applications are still running after their response."""
        return len(self._after)

    def _run_on(self, run: _AppRun) -> None:
        """Let the application, whose response is complete, run on by itself
        (a Starlette ``BackgroundTask`` runs inside the application after its
        response was sent; it holds back neither that response nor the
        connection's next request). Its failure is logged: the client
        already has its whole response (:meth:`_run_app` logs one that
        comes later)."""
        run.detached = True
        if not run.done:
            self._after.add(run.task)
        elif run.error is not None:
            error, run.error = run.error, None
            if ClientDisconnected not in (type(error), type(error.__context__)):
                # (what send() raised for a client that left is no failure)
                log.error("ASGI application raised after its response was complete", exc_info=error)

    async def finish_background(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the applications still running
        after their response (background tasks); then cancel them (they
        have :data:`CUT_GRACE` to unwind)."""
        if not self._after:
            return
        log.info("waiting for %d background task(s) to complete", len(self._after))
        _, pending = await asyncio.wait(set(self._after), timeout=timeout)
        if pending:
            log.error(
                "cancelling %d background task(s) still running after %.1f s", len(pending), timeout
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=CUT_GRACE)

    def _checked_headers(self, given: Iterable[Any]) -> tuple[tuple[bytes, bytes], ...]:
        """The application's response headers as a tuple of byte pairs (the
        server prepares a head once per distinct tuple). Headers seen before
        are found by their value, without a pass over them in Python."""
        items = tuple(given)
        try:
            known = self._known_headers.get(items)
        except TypeError:  # unhashable pairs: lists, bytearrays
            hashable = False
        else:
            if known is not None:
                return known
            hashable = True
        headers = tuple([(bytes(name), bytes(value)) for name, value in items])
        if hashable:
            self._known_headers.put(items, headers)
        return headers

    def _scope(self, request: Request) -> Scope:
        return self.scope_of(
            request.method,
            request.target,
            request.headers,
            request.http_version,
            request.client,
            request.server,
        )

    def fast_scope(
        self,
        method: bytes,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> Scope:
        """The scope of an HTTP/1.1 request as llhttp read it (the same as
        :meth:`scope_of` gives, without decoding what is kept as bytes)."""
        name = _METHODS.get(method)
        if name is None or target[:1] != b"/":
            return self.scope_of(
                name or method.decode("ascii"),
                target.decode("latin-1"),
                headers,
                "1.1",
                client,
                server,
            )
        raw_path, _, query = target.partition(b"?")
        path = raw_path.decode("latin-1")
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "1.1",
            "method": name,
            "scheme": self.scheme,
            "path": unquote(path) if "%" in path else path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": self.root_path,
            "headers": list(headers),
            "client": client,
            "server": server,
            "state": self.state.copy(),
            "extensions": {"http.response.trailers": {}, "http.response.pathsend": {}},
        }

    def scope_of(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]],
        http_version: str,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> Scope:
        """The ``http`` scope of a request (names in ``headers`` lower-case:
        h11, llhttp's heads and h2 give them so)."""
        raw_path, _, query = target.partition("?")
        if raw_path.startswith(("http://", "https://")):
            after = raw_path.split("://", 1)[1]
            slash = after.find("/")
            raw_path = after[slash:] if slash >= 0 else "/"
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": http_version,
            "method": method,
            "scheme": self.scheme,
            "path": unquote(raw_path) if "%" in raw_path else raw_path,
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": self.root_path,
            "headers": list(headers),
            "client": client,
            "server": server,
            "state": self.state.copy(),
            "extensions": {"http.response.trailers": {}, "http.response.pathsend": {}},
        }

    def _receiver(self, request: Request, ended: asyncio.Event) -> Receive:
        """The application's ``receive``: the body in pieces, then the disconnect."""
        stream = request.body_stream
        body_done = False

        async def receive() -> Message:
            nonlocal body_done
            if not body_done:
                if stream is None:
                    body_done = True
                    return {"type": "http.request", "body": request.body, "more_body": False}
                try:
                    chunk, more = await stream.next_chunk()
                except ClientGone:
                    body_done = True
                    return {"type": "http.disconnect"}
                body_done = not more
                return {"type": "http.request", "body": chunk, "more_body": more}
            # Nothing more to read: the next event is the end of the exchange,
            # or the client leaving before it.
            if request.watch is not None:
                request.watch.start()
            await ended.wait()
            return {"type": "http.disconnect"}

        return receive

    async def _run_app(self, run: _AppRun, scope: Scope, receive: Receive, outbox: _Outbox) -> None:
        """The application's call; its failure is kept in ``run`` (the
        adapter raises it for the response) or, once the response was
        complete, logged."""
        try:
            await self.app(scope, receive, outbox.put)
        except Exception as error:
            left = outbox.gone and ClientDisconnected in (type(error), type(error.__context__))
            if left:
                # What send() raised for the client's leaving, or raised while
                # handling it (Starlette's ClientDisconnect): kept, frames let go.
                release_frames(error)
            if run.detached:
                if not left:
                    log.error("ASGI application raised after its response", exc_info=error)
            else:
                run.error = error
        finally:
            run.done = True
            outbox.application_done()
            if run.detached and run.task is not None:
                self._after.discard(run.task)

    async def __call__(self, request: Request) -> Response:
        scope = self._scope(request)
        ended = asyncio.Event()
        loop = asyncio.get_running_loop()
        outbox = _Outbox(loop)
        if request.watch is not None:

            def gone() -> None:
                ended.set()
                outbox.client_gone()

            request.watch.on_gone(gone)
        run = _AppRun()
        run.task = loop.create_task(
            self._run_app(run, scope, self._receiver(request, ended), outbox)
        )
        try:
            return await self._response(request, run, outbox, ended)
        except BaseException as error:
            ended.set()
            outbox.response_finished()
            task = run.task
            stopped = isinstance(error, asyncio.CancelledError) and SERVER_STOPPED in error.args
            left = outbox.gone and not stopped
            if not run.done and not run.detached and self.disconnect_grace is None and left:
                self._run_on(run)  # the client left (an HTTP/2 connection ended): it runs on
            elif not run.done and not run.detached:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            raise

    async def _response(
        self, request: Request, run: _AppRun, outbox: _Outbox, ended: asyncio.Event
    ) -> Response:
        """The response the application's first messages give: whole when
        its first body message is its last, else streamed from the outbox."""
        start = outbox.take() or await outbox.get()
        if start is _GONE:
            await self._end_after_disconnect(run, request)
            raise ClientDisconnected("the client went away before the response")
        if start.get("type") != "http.response.start":
            await run.finished()  # raises the application's error, if any
            raise RuntimeError(f"ASGI application sent {start.get('type')!r} before a response")
        status = int(start["status"])
        headers = self._checked_headers(start.get("headers", ()))
        trailers = bool(start.get("trailers", False))
        first = outbox.take() or await outbox.get()
        if first is _GONE:
            await self._end_after_disconnect(run, request)
            raise ClientDisconnected("the client went away before the response")
        if first.get("type") == "http.response.start":  # a second start: its error
            log.error(_MISORDERED, request.method, request.target, "http.response.start")
            outbox.response_finished()
            ended.set()
            self._run_on(run)
            return Response(500, _ERROR_HEADERS, b"500 Internal Server Error\n")
        if (
            not trailers
            and first.get("type") == "http.response.body"
            and not first.get("more_body", False)
        ):
            outbox.response_finished()
            ended.set()
            # The response is complete and goes out now; the application
            # runs on (background tasks), and an error it raises after
            # (as Starlette re-raises after its 500 page) is logged.
            self._run_on(run)
            return Response(status, headers, bytes(first.get("body", b"")))
        head_grace = self.head_grace if request.method == "HEAD" else None
        body = _AppBody(
            first,
            outbox,
            run,
            ended,
            self._run_on,
            head_grace=head_grace,
            gone_grace=self.disconnect_grace,
            request=request,
        )
        if trailers:
            body.trailers = []
        if first.get("type") == "http.response.pathsend":
            # Open the file now: one that cannot be opened is the
            # server's 500, before any byte of the response is sent.
            await body.take_first()
        return Response(status, headers, body)

    def fast_connection(
        self,
        server: Any,
        flow: Any,
        serve: Callable[[], None],
        not_fast: frozenset[bytes] = frozenset(),
    ) -> Any:
        """Serve ``flow`` for ``server`` from its transport's callbacks (see
        looming.http.fast_asgi); ``serve()`` hands it back to the server, as
        the first request to one of the ``not_fast`` paths does."""
        from looming.http.fast_asgi import FastAsgiConnection

        return FastAsgiConnection(server, self, flow, serve, not_fast)

    async def serve_websocket(
        self,
        request: Request,
        flow: Flow,
        leftover: bytes,
        extended: ExtendedConnect | None = None,
    ) -> tuple[int, int]:
        """Serve an upgraded connection with the application's websocket scope
        (or, with ``extended``, an HTTP/2 stream opened by an RFC 8441 CONNECT);
        the status answered and the bytes sent."""
        from looming.http.websocket import WebSocketSession

        session = WebSocketSession(
            self.app,
            request,
            flow,
            root_path=self.root_path,
            scheme=self.scheme,
            state=self.state,
            max_message_bytes=self.websocket_max_message_bytes,
            extended=extended,
        )
        self._websockets.add(session)
        try:
            await session.run(leftover)
        finally:
            self._websockets.discard(session)
        return session.status, session.bytes_sent

    async def close_websockets(self) -> None:
        """Close every open websocket with 1001 (the server is stopping)."""
        for session in list(self._websockets):
            await session.stop()

    async def _end_after_disconnect(self, run: _AppRun, request: Request) -> None:
        """Let the application, told of the disconnect, run on by itself; or,
        with a :attr:`disconnect_grace`, wait that long for it (the caller
        cancels it after).

        An HTTP/2 stream waits for it: its handler counts against the
        connection's stream limit while it runs, reset or not (the "rapid
        reset" attack, CVE-2023-44487); when the connection ends it runs on."""
        if self.disconnect_grace is None:
            if request.http_version == "2":
                await asyncio.wait([run.task])
            self._run_on(run)
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
            async with asyncio.timeout(self.disconnect_grace):
                await asyncio.shield(run.task)
