"""An HTTP/1.1 server over any looming Flow, built on h11.

One :class:`HttpServer` serves connections handed to :meth:`HttpServer.serve_flow`
(or used directly as a Tcp listener handler). Each connection is a loop of
request, handler, response: keep-alive and pipelining come from h11's state
machine, which buffers any bytes received beyond the current request.

Every wait on the peer is bounded by one per-connection deadline that is moved
as the connection changes phase (idle between requests, receiving a head,
receiving a body, sending a response), so an idle or slow client cannot hold a
connection open forever. The handler itself is not time-limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import h11

from looming.devices.clock import Clock
from looming.devices.flow import Flow
from looming.errors import Closed, ConnectionReset, NetworkError
from looming.http.message import Handler, Request, Response

log = logging.getLogger("looming.http")

REASONS: dict[int, bytes] = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
REASONS[413] = b"Content Too Large"  # RFC 9110's name


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
    """A request body above this size gets 413."""
    linger_timeout: float = 0.5
    """After an error response, how long unread request bytes are drained."""
    linger_bytes: int = 4 * 1024 * 1024
    """After an error response, how many unread request bytes are drained."""
    server_name: str = "looming"
    """The value of the Server header."""


class _DateHeader:
    """The Date header's value, formatted at most once a second."""

    __slots__ = ("_clock", "_second", "_value")

    def __init__(self, clock: Clock | None) -> None:
        self._clock = clock
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        clock = self._clock
        if clock is None:
            from looming.unix.clock import UnixClock

            clock = self._clock = UnixClock()
        second = int(clock.now())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode("ascii")
        return self._value


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


_PLAIN_500 = ((b"content-type", b"text/plain; charset=utf-8"),)


class _BodyTooLarge(Exception):
    pass


def _head_only_status(status: int) -> bool:
    return status < 200 or status in (204, 304)


class HttpServer:
    """Serves HTTP/1.1 on flows with ``handler``.

    The server adds Date, Server and framing headers; for ``HEAD`` requests
    it sends the headers the handler's ``GET`` answer would carry and no body.
    """

    def __init__(
        self, handler: Handler, config: ServerConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        self.handler = handler
        self.config = config if config is not None else ServerConfig()
        self._date = _DateHeader(clock)
        self._server_header = (b"server", self.config.server_name.encode("ascii"))
        self._checked: dict[tuple[tuple[bytes, bytes], ...], bool] = {}
        self.requests_served = 0
        self.protocol_errors = 0
        self.timeouts = 0

    async def __call__(self, flow: Flow) -> None:
        await self.serve_flow(flow)

    async def serve_flow(self, flow: Flow) -> None:
        """Serve requests on ``flow`` until the peer or a timeout ends it; closes it."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_header_bytes)
        task = asyncio.current_task()
        assert task is not None
        deadline = _Watchdog(asyncio.get_running_loop(), task)
        try:
            try:
                await self._serve_requests(flow, conn, deadline)
            finally:
                deadline.close()
        except asyncio.CancelledError:
            if not deadline.expired:
                raise
            task.uncancel()
            self.timeouts += 1
            # 408 only when a request had begun; an idle connection just closes.
            started = conn.their_state is not h11.IDLE or bool(conn.trailing_data[0])
            if conn.our_state is h11.SEND_RESPONSE or (conn.our_state is h11.IDLE and started):
                await self._send_error_raw(flow, 408)
        except (ConnectionReset, Closed) as error:
            log.debug("connection ended: %s", error)
        except NetworkError as error:
            log.debug("connection failed: %s", error)
        except Exception:
            # A streamed body failed midway: the response cannot be completed,
            # so the connection is dropped and the client sees it truncated.
            log.exception("response on %s failed", getattr(flow, "remote_address", "a flow"))
        finally:
            with contextlib.suppress(NetworkError, OSError):
                await flow.close()

    async def _serve_requests(self, flow: Flow, conn: h11.Connection, deadline: _Watchdog) -> None:
        config = self.config
        client: tuple[str, int] | None = getattr(flow, "remote_address", None)
        server: tuple[str, int] | None = getattr(flow, "local_address", None)
        first = True
        while True:
            wait = config.header_timeout if first else config.keep_alive_timeout
            deadline.expire_in(wait)
            first = False
            try:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    waiting_for_start = True
                    while event is h11.NEED_DATA:
                        data = await flow.read()
                        if waiting_for_start and data:
                            waiting_for_start = False
                            deadline.expire_in(config.header_timeout)
                        conn.receive_data(data)
                        event = conn.next_event()
            except h11.RemoteProtocolError as error:
                self.protocol_errors += 1
                status = error.error_status_hint
                log.debug("bad request: %s", error)
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE, h11.ERROR):
                    deadline.disarm()
                    await self._send_error_raw(flow, status if status >= 400 else 400)
                return
            if type(event) is not h11.Request:
                # ConnectionClosed (or anything else unexpected): we are done.
                return
            if not event.http_version.startswith(b"1."):
                self.protocol_errors += 1
                deadline.disarm()
                await self._send_error_raw(flow, 505)
                return
            # h11 bounds only a head that arrives in pieces; one that arrived
            # whole is measured here so the limit holds either way.
            head_size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
            if head_size > config.max_header_bytes:
                self.protocol_errors += 1
                deadline.disarm()
                await self._send_error_raw(flow, 431)
                return
            method_bytes = event.method
            if method_bytes != b"GET" and method_bytes != b"HEAD":
                # Refuse an announced oversized body before reading it or
                # inviting it with 100 Continue (the limit holds while
                # reading in any case).
                for name, value in event.headers:
                    if name == b"content-length" and int(value) > config.max_body_bytes:
                        deadline.disarm()
                        await self._send_error_raw(flow, 413)
                        return
            try:
                body = await self._read_body(flow, conn, deadline)
            except _BodyTooLarge:
                deadline.disarm()
                await self._send_error_raw(flow, 413)
                return
            except h11.RemoteProtocolError as error:
                self.protocol_errors += 1
                log.debug("bad request body: %s", error)
                deadline.disarm()
                await self._send_error_raw(flow, 400)
                return
            method = method_bytes.decode("ascii")
            request = Request(
                method,
                event.target.decode("latin-1"),
                event.headers,  # h11's read-only sequence of (lower-case name, value)
                body,
                event.http_version.decode("ascii"),
                client,
                server,
            )
            deadline.disarm()
            try:
                response = await self.handler(request)
            except Exception:
                log.exception("handler failed on %s %s", method, request.target)
                response = Response(500, _PLAIN_500, b"internal error\n")
            try:
                has_length = self._checked_headers(response.headers)
            except h11.LocalProtocolError as error:
                log.error("handler for %s %s gave bad headers: %s", method, request.target, error)
                response = Response(500, _PLAIN_500, b"internal error\n")
                has_length = False
            deadline.expire_in(config.send_timeout)
            await self._send_response(flow, conn, response, has_length, method == "HEAD", deadline)
            self.requests_served += 1
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_body(
        self,
        flow: Flow,
        conn: h11.Connection,
        deadline: _Watchdog,
    ) -> bytes:
        event = conn.next_event()
        if type(event) is h11.EndOfMessage:
            return b""
        limit = self.config.max_body_bytes
        chunks: list[bytes] = []
        received = 0
        if conn.they_are_waiting_for_100_continue:
            await flow.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
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

    def _checked_headers(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Validate a handler's headers once per distinct tuple; whether they
        carry a Content-Length. Lists are checked on every response."""
        if type(headers) is tuple:
            known = self._checked.get(headers)
            if known is not None:
                return known
        # h11's own rules: raises LocalProtocolError on a bad name or value.
        h11.Response(status_code=200, headers=list(headers))
        has_length = any(name.lower() == b"content-length" for name, _ in headers)
        if type(headers) is tuple:
            if len(self._checked) >= 4096:
                self._checked.clear()
            self._checked[headers] = has_length
        return has_length

    def _response_head(self, conn: h11.Connection, response: Response, length: int | None) -> bytes:
        headers: list[tuple[bytes, bytes]] = [(b"date", self._date.now()), self._server_header]
        headers.extend(response.headers)
        status = response.status
        if length is not None and not _head_only_status(status):
            headers.append((b"content-length", b"%d" % length))
        # Every header was validated above (ours are known good), so h11 may
        # skip its per-response regular expressions.
        event = h11.Response(
            status_code=status, headers=headers, reason=REASONS.get(status, b""), _parsed=True
        )
        return conn.send(event) or b""

    async def _send_response(
        self,
        flow: Flow,
        conn: h11.Connection,
        response: Response,
        has_length: bool,
        head_only: bool,
        deadline: _Watchdog,
    ) -> None:
        body = response.body
        if isinstance(body, bytes | bytearray | memoryview):
            head = self._response_head(conn, response, None if has_length else len(body))
            if head_only or _head_only_status(response.status) or not body:
                conn.send(h11.EndOfMessage())
                await flow.write(head)
                return
            pieces = conn.send_with_data_passthrough(h11.Data(data=body)) or []
            conn.send(h11.EndOfMessage())
            await flow.writev([head, *pieces])
            return
        await self._send_streamed(flow, conn, response, body, head_only, deadline)

    async def _send_streamed(
        self,
        flow: Flow,
        conn: h11.Connection,
        response: Response,
        body: AsyncIterable[bytes],
        head_only: bool,
        deadline: _Watchdog,
    ) -> None:
        head = self._response_head(conn, response, None)
        try:
            if head_only or _head_only_status(response.status):
                await flow.write(head)
                conn.send(h11.EndOfMessage())
                return
            pending: list[bytes] = [head]
            timeout = self.config.send_timeout
            async for chunk in body:
                if not chunk:
                    continue
                pending.extend(conn.send_with_data_passthrough(h11.Data(data=chunk)) or [])
                deadline.expire_in(timeout)
                await flow.writev(pending)
                pending = []
                deadline.disarm()
            pending.append(conn.send(h11.EndOfMessage()))
            deadline.expire_in(timeout)
            await flow.writev(pending)
        finally:
            closer: Any = getattr(body, "aclose", None)
            if closer is not None:
                await closer()

    async def _send_error_raw(self, flow: Flow, status: int) -> None:
        """A complete error response written past h11 (its state may be ERROR)."""
        reason = REASONS.get(status, b"Error")
        text = b"%d %s\n" % (status, reason)
        head = (
            b"HTTP/1.1 %d %s\r\ndate: %s\r\nserver: %s\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n"
            % (status, reason, self._date.now(), self._server_header[1], len(text))
        )
        with contextlib.suppress(NetworkError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await flow.write(head + text)
            await self._linger(flow)

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
