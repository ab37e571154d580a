"""Serving an ASGI 3 application (Starlette, FastAPI, ...) with :class:`HttpServer`.

:class:`AsgiAdapter` is a looming HTTP handler: it turns each request into an
ASGI ``http`` scope, runs the application, and returns its response, whole
when the application sends a single body message and streamed otherwise. The
application's ``lifespan`` protocol runs through :meth:`AsgiAdapter.startup`
and :meth:`AsgiAdapter.shutdown` (or ``async with adapter.lifespan():``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from looming.http.message import Request, Response

log = logging.getLogger("looming.http.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ASGI = {"version": "3.0", "spec_version": "2.3"}


class LifespanFailed(Exception):
    """The application reported ``lifespan.startup.failed`` or ``shutdown.failed``."""


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
                log.debug("application does not support lifespan: %r", error)
                self.startup_done.set_result({"type": "lifespan.unsupported"})
            else:
                log.exception("application lifespan failed")
        finally:
            for future in (self.startup_done, self.shutdown_done):
                if future is not None and not future.done():
                    future.set_result({"type": "lifespan.ended"})

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        self.startup_done = loop.create_future()
        self.task = loop.create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.startup_done
        if message["type"] == "lifespan.startup.failed":
            raise LifespanFailed(f"application startup failed: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done() or not self.supported:
            return
        self.shutdown_done = asyncio.get_running_loop().create_future()
        await self.inbox.put({"type": "lifespan.shutdown"})
        message = await self.shutdown_done
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if message["type"] == "lifespan.shutdown.failed":
            raise LifespanFailed(f"application shutdown failed: {message.get('message', '')}")


class _AppBody:
    """A streamed response body fed by a running application.

    Closing it (the server does, after the last chunk, on HEAD, or when the
    client went away) ends the application's task even if it never started
    iterating, which an async generator's ``aclose`` would not do.
    """

    def __init__(
        self,
        first: Message,
        messages: asyncio.Queue[Message],
        task: asyncio.Task[None],
        response_done: asyncio.Event,
    ) -> None:
        self._next: Message | None = first
        self._messages = messages
        self._task = task
        self._response_done = response_done
        self._finished = False

    def __aiter__(self) -> _AppBody:
        return self

    async def __anext__(self) -> bytes:
        while not self._finished:
            message = self._next if self._next is not None else await self._messages.get()
            self._next = None
            if message.get("type") != "http.response.body":
                self._finished = True
                break
            if not message.get("more_body", False):
                self._finished = True
            chunk = message.get("body", b"")
            if chunk:
                return bytes(chunk)
        self._response_done.set()
        # An application error here propagates: the server then drops the
        # connection, so the client sees a truncated body, not a complete one.
        await self._task
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._finished = True
        self._response_done.set()
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class AsgiAdapter:
    """Serves the ASGI 3 application ``app`` as a looming HTTP handler."""

    def __init__(self, app: AsgiApp, *, root_path: str = "", scheme: str = "http") -> None:
        self.app = app
        self.root_path = root_path
        # The server cannot tell whether its flow is TLS; whoever wires a TLS
        # flow in says so here.
        self.scheme = scheme
        self.state: dict[str, Any] = {}
        self._lifespan: _Lifespan | None = None

    async def startup(self) -> None:
        """Run the application's lifespan startup (no-op if it has none)."""
        self._lifespan = _Lifespan(self.app, self.state)
        await self._lifespan.startup()

    async def shutdown(self) -> None:
        """Run the application's lifespan shutdown."""
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

    def _scope(self, request: Request) -> Scope:
        raw_path, _, query = request.target.partition("?")
        if raw_path.startswith(("http://", "https://")):
            after = raw_path.split("://", 1)[1]
            slash = after.find("/")
            raw_path = after[slash:] if slash >= 0 else "/"
        return {
            "type": "http",
            "asgi": _ASGI,
            "http_version": request.http_version,
            "method": request.method,
            "scheme": self.scheme,
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": self.root_path,
            "headers": [(name.lower(), value) for name, value in request.headers],
            "client": request.client,
            "server": request.server,
            "state": dict(self.state),
        }

    async def __call__(self, request: Request) -> Response:
        scope = self._scope(request)
        body_sent = False
        response_done = asyncio.Event()
        messages: asyncio.Queue[Message] = asyncio.Queue()

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": request.body, "more_body": False}
            # Nothing more to read: the next event is the end of the exchange.
            await response_done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            await messages.put(message)

        async def run_app() -> None:
            try:
                await self.app(scope, receive, send)
            finally:
                await messages.put({"type": "looming.app.done"})

        task = asyncio.get_running_loop().create_task(run_app())
        try:
            start = await messages.get()
            if start.get("type") != "http.response.start":
                await task  # re-raises the application's error, if any
                raise RuntimeError(f"ASGI application sent {start.get('type')!r} before a response")
            status = int(start["status"])
            headers = [(bytes(name), bytes(value)) for name, value in start.get("headers", [])]
            first = await messages.get()
            if first.get("type") == "http.response.body" and not first.get("more_body", False):
                response_done.set()
                try:
                    await task
                except Exception:
                    # The response is complete; an error raised after it (as
                    # Starlette re-raises after sending its 500 page) is logged.
                    log.exception("ASGI application failed after responding")
                return Response(status, headers, bytes(first.get("body", b"")))
        except BaseException:
            response_done.set()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            raise

        return Response(status, headers, _AppBody(first, messages, task, response_done))
