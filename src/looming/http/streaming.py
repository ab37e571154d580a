"""Request bodies read as the handler asks, and noticing a client that left.

Used by :class:`~looming.http.server.HttpServer` for handlers that set
``streams_request_body`` (the ASGI adapter does). :class:`BodyReader` hands the
body out piece by piece, inviting it with ``100 Continue`` only when first
asked. Once the body is complete, :class:`Watch` keeps one read pending on the
connection: an end of stream (or an error) means the client went away, which
is told to the handler even while it is not reading; bytes that arrive
instead are the client's next request, kept for the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import h11

from looming.devices.flow import Flow
from looming.errors import LoomingError
from looming.http.message import ClientGone
from looming.http.parser import ParserEvent, RequestParser

WATCH_DELAY = 0.05
"""Seconds after the request before a quick response's connection is watched:
most responses are done by then, and cost no extra read task."""


class Arming:
    """Starts each armed :class:`Watch` once its delay has passed, with one
    timer for all of a server's watches: arming and disarming, done for
    every request, only store a time in a dict."""

    __slots__ = ("_armed", "_handle", "_loop")

    def __init__(self) -> None:
        self._armed: dict[Watch, float] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, watch: Watch) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
            self._handle = None
        self._armed[watch] = loop.time() + WATCH_DELAY
        if self._handle is None:
            self._handle = loop.call_later(WATCH_DELAY, self._tick)

    def discard(self, watch: Watch) -> None:
        self._armed.pop(watch, None)

    def _tick(self) -> None:
        self._handle = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        due = [watch for watch, when in self._armed.items() if when <= now]
        for watch in due:
            del self._armed[watch]
            watch.start()
        if self._armed:
            self._handle = loop.call_at(min(self._armed.values()), self._tick)


class Watch:
    """One pending read after the request: end of stream means the client left.

    The read starts at once when the application waits for the disconnect
    (``receive()`` after the body), else :data:`WATCH_DELAY` after the body
    is complete unless the response is done sooner.
    """

    __slots__ = (
        "__weakref__",
        "_armed",
        "_arming",
        "_callbacks",
        "_flow",
        "_task",
        "gone",
        "malformed",
    )

    def __init__(self, flow: Flow, arming: Arming | None = None) -> None:
        self._flow = flow
        self._task: asyncio.Task[bytes] | None = None
        self._arming = arming if arming is not None else Arming()
        self._armed = False
        self._callbacks: list[Callable[[], object]] = []
        self.gone = False
        self.malformed = False
        """The request's body was malformed (set by its :class:`BodyReader`)."""

    def start(self) -> None:
        self.disarm()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._read())

    def arm(self) -> None:
        """Start watching soon, unless :meth:`start` or :meth:`disarm` comes first."""
        if self._task is None and not self._armed:
            self._armed = True
            self._arming.add(self)

    def disarm(self) -> None:
        """The response is done: no need to start watching any more."""
        if self._armed:
            self._armed = False
            self._arming.discard(self)

    async def _read(self) -> bytes:
        try:
            data = await self._flow.read()
        except (LoomingError, OSError):
            data = b""
        if not data:
            self._went_away()
        return data

    def _went_away(self) -> None:
        self.gone = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_gone(self, callback: Callable[[], object]) -> None:
        if self.gone:
            callback()
        else:
            self._callbacks.append(callback)

    @property
    def reading(self) -> bool:
        """Whether a read was started (the server takes its result next)."""
        return self._task is not None

    async def take(self) -> bytes:
        """What the pending read returned: the next request's bytes, or b"" at the end."""
        assert self._task is not None
        task, self._task = self._task, None
        return await task

    async def close(self) -> None:
        """Abandon a pending read (the connection is closing)."""
        self._callbacks.clear()
        self.disarm()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _check_trailer(end: h11.EndOfMessage) -> None:
    """A chunked body's trailer may not hold framing fields (RFC 9110
    section 6.5.1): refused as llhttp refuses them, whichever parser read it."""
    for name, _ in end.headers:
        if name in (b"content-length", b"transfer-encoding"):
            raise h11.RemoteProtocolError(
                f"{name.decode()} in a chunked body's trailer", error_status_hint=400
            )


class BodyReader:
    """A request's body, read from the connection when the handler asks
    (``limit``: the most bytes it may have; 0 for no limit)."""

    __slots__ = (
        "_conn",
        "_flow",
        "_limit",
        "_peeked",
        "_timeout",
        "_watch",
        "broken",
        "complete",
        "malformed",
        "received",
    )

    def __init__(
        self, flow: Flow, conn: RequestParser, watch: Watch, *, limit: int, timeout: float
    ) -> None:
        self._flow = flow
        self._conn = conn
        self._watch = watch
        self._limit = limit
        self._timeout = timeout
        self._peeked: ParserEvent | None = None
        self.received = 0
        self.complete = False
        self.broken = False
        """The body could not be read whole: the connection cannot carry another request."""
        self.malformed = False
        """It was broken by the client's bad framing (a 400), not by its going away."""

    @property
    def flow(self) -> Flow:
        """The connection the body is read from."""
        return self._flow

    def start_if_empty(self) -> None:
        """Mark a request without a body complete (and start watching) at once."""
        event = self._conn.next_event()
        if type(event) is h11.EndOfMessage:
            _check_trailer(event)
            self._finish()
        elif event is not h11.NEED_DATA:
            self._peeked = event

    def _finish(self) -> None:
        self.complete = True
        self._watch.arm()

    async def next_chunk(self) -> tuple[bytes, bool]:
        if self.complete:
            return b"", False
        if self.broken:
            raise ClientGone("the request body could not be read")
        conn = self._conn
        try:
            if conn.they_are_waiting_for_100_continue:
                await self._flow.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            while True:
                event, self._peeked = self._peeked or conn.next_event(), None
                if event is h11.NEED_DATA:
                    async with asyncio.timeout(self._timeout):
                        conn.receive_data(await self._flow.read())
                    continue
                if type(event) is h11.Data:
                    self.received += len(event.data)
                    if self._limit and self.received > self._limit:
                        raise ClientGone(f"request body over {self._limit} bytes")
                    return bytes(event.data), self._more_after_data()
                if type(event) is h11.EndOfMessage:
                    _check_trailer(event)
                    self._finish()
                    return b"", False
                raise ClientGone("the client closed the connection in the middle of a body")
        except (h11.RemoteProtocolError, TimeoutError, LoomingError, OSError) as error:
            self.broken = True
            self._watch._went_away()
            if isinstance(error, ClientGone):
                raise
            self.malformed = self._watch.malformed = isinstance(error, h11.RemoteProtocolError)
            raise ClientGone(f"request body failed: {error}") from None

    def _more_after_data(self) -> bool:
        """Whether more of the body is to come after a piece: not when the
        end of the body is already in hand (a whole Content-Length body in
        one read is one message with ``more_body`` false, as uvicorn sends it)."""
        event = self._conn.next_event()
        if type(event) is h11.EndOfMessage:
            _check_trailer(event)
            self._finish()
            return False
        self._peeked = event
        return True

    async def discard(self, limit: int) -> bool:
        """Read and drop what the handler left unread; whether it all arrived within ``limit``."""
        while not self.complete and not self.broken:
            if self.received > limit:
                return False
            try:
                await self.next_chunk()
            except ClientGone:
                return False
        return self.complete
