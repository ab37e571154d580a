"""HTTP/2 over cleartext with prior knowledge (h2c), on the ``h2`` library.

A connection that opens with the HTTP/2 preface is handed here by
:class:`~looming.http.server.HttpServer`. Each stream becomes a
:class:`~looming.http.message.Request` for the same handler the HTTP/1.1
side uses (an ASGI adapter, a static site), with its body streamed and a
watch that tells of a reset. Flow control is wired both ways: request body
data is acknowledged (the window reopened) only as the handler reads it,
and response data is sent only within the peer's window, so a client that
stops reading holds the handler in ``send()``.

Against abuse (each refusal counted in :data:`abuse`): at most
:data:`MAX_CONCURRENT_STREAMS` streams at once, and as many handlers still
running (a reset stream's handler counts until it ends), a stream over either
refused with RST_STREAM (REFUSED_STREAM) while the connection and its other
streams go on (RFC 9113 section 5.1.2); a client that resets or gets refused more than
:data:`MAX_RESETS` streams, or sends more than :data:`MAX_CONTROL_FRAMES`
frames that do no work (SETTINGS, PING, PRIORITY, unknown types, empty DATA),
in one :data:`ABUSE_WINDOW` gets GOAWAY (ENHANCE_YOUR_CALM) and the
connection closes (the "rapid reset" attack, CVE-2023-44487, and the 2019
flood family). A header block (HEADERS and its CONTINUATIONs) is followed
ahead of h2 and cut at :data:`MAX_HEADER_BLOCK` bytes (the CONTINUATION
flood, CVE-2024-27316 class). A writer blocked by the client's window, or by
a client that does not read, for :data:`STALL_TIMEOUT` seconds ends its
stream (or the connection); a connection with no stream open for
:data:`IDLE_TIMEOUT` seconds gets GOAWAY (NO_ERROR) and is closed. Fairness: the bytes received are parsed
a turn at a time (:data:`TURN_BYTES` of frames, DATA payload counted
:data:`DATA_DISCOUNT` times less), and at most :data:`STREAMS_PER_TURN` new
streams are started, before the other connections get a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.exceptions import InvalidFrameError
from hyperframe.frame import GoAwayFrame

from looming.devices.flow import Flow
from looming.errors import LoomingError
from looming.http import h2c
from looming.http.message import (
    SERVER_STOPPED,
    ClientGone,
    Handler,
    Request,
    Response,
    ServeWebSocket,
)

log = logging.getLogger("looming.http.h2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_CONCURRENT_STREAMS = 100
"""Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS);
one more is refused with RST_STREAM (REFUSED_STREAM), the connection and
its other streams go on (RFC 9113 section 5.1.2)."""
STREAM_WINDOW = 128 * 1024
"""Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE; the default,
65,535, is one byte short of a 64 KiB upload, which then waits a round trip
for its last byte)."""
CONNECTION_WINDOW = 4 * STREAM_WINDOW
"""The connection's receive window, raised from 65,535 by a WINDOW_UPDATE on
stream 0 as the connection starts (RFC 9113 section 6.9.2), so that uploads
on several streams at once are not held to 64 KiB a round trip in all. It
also bounds what a connection holds of request bodies the application has
not read: data is acknowledged (the window reopened) only as it is read, and
a client that sends past the window gets GOAWAY (FLOW_CONTROL_ERROR)."""
MAX_RESETS = 200
MAX_CONTROL_FRAMES = 1000
ABUSE_WINDOW = 10.0
MAX_HEADER_LIST_SIZE = 64 * 1024
MAX_HEADER_BLOCK = 2 * MAX_HEADER_LIST_SIZE
"""Encoded header block bytes (HEADERS + CONTINUATION) at most: HPACK can
encode a header list in more bytes than it holds, never much more."""
STALL_TIMEOUT = 30.0
GONE_GRACE = 1.5
"""Seconds the handlers of a connection that ended may take to finish on
their own before they are cancelled (an ASGI app, told ``http.disconnect``,
runs on by itself unless its adapter has a ``disconnect_grace``)."""
IDLE_TIMEOUT = 60.0
"""A connection with no stream open for this long gets GOAWAY and is closed
(PINGs and SETTINGS do not keep it: they are not streams)."""
TURN_BYTES = 4096
"""Bytes of frames other than DATA payload parsed in one turn at most."""
DATA_DISCOUNT = 16
"""A byte of DATA payload counts this much less against a turn than any
other byte (frame headers, control frames, HEADERS): a turn parses up to
:data:`TURN_BYTES` bytes of those, or 16 times as much of uploads, whose
bytes cost h2 little (sliced, not decoded) and each hold only the window the
server gave. A flood of small frames still gets a small turn (each frame's
9-byte header costs in full)."""
STREAMS_PER_TURN = 8


def _h2_stream_limit() -> int:
    """The stream limit h2 itself enforces (it would end the connection over
    it): above the advertised one by the most streams one turn's bytes can
    open (a HEADERS frame is at least 9 bytes), so that the session, which
    sees them as events after h2 parsed the turn, refuses them one by one."""
    return MAX_CONCURRENT_STREAMS + TURN_BYTES // 9 + 2


abuse: Counter[str] = h2c.abuse
"""Refusals in this process by reason: ``rapid_reset``, ``control_flood``,
``refused_stream``, ``header_block``, ``protocol_error``, ``stalled``, ``idle``
(kept in :mod:`looming.http.h2c`, shown by the metrics)."""
_IDLE_EVENTS = (
    h2.events.RemoteSettingsChanged,
    h2.events.PingReceived,
    h2.events.PingAckReceived,
    h2.events.PriorityUpdated,
    h2.events.UnknownFrameReceived,
)
"""What frames that do no work for a stream give (a flood of them is abuse)."""
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class _StreamWatch:
    """Tells the handler that its stream was reset or the connection ended."""

    def __init__(self) -> None:
        self.gone = False
        self._callbacks: list[Callable[[], object]] = []

    def on_gone(self, callback: Callable[[], object]) -> None:
        if self.gone:
            callback()
        else:
            self._callbacks.append(callback)

    def start(self) -> None:
        """Always watching: resets arrive as frames."""

    def went_away(self) -> None:
        if not self.gone:
            self.gone = True
            callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                callback()


def _without_request_priorities(events: list[h2.events.Event]) -> list[h2.events.Event]:
    """``events`` less the priorities that came inside a request's HEADERS
    (they are part of the request, not frames of their own)."""
    riding = {
        id(event.priority_updated)
        for event in events
        if isinstance(event, h2.events.RequestReceived) and event.priority_updated is not None
    }
    if not riding:
        return events
    return [event for event in events if id(event) not in riding]


class _FrameWatch:
    """Follows frame boundaries in the bytes received, ahead of h2: cuts
    them into turns by cost (see :data:`DATA_DISCOUNT`), and tells a header
    block (HEADERS or PUSH_PROMISE and its CONTINUATIONs) that grows over
    a limit before h2 has buffered it (h2 bounds the frames, not bytes).
    ``read_by(stream_id)`` tells whether DATA on that stream is a handler's
    to read (cheap), not dropped (an ended, reset or refused stream's)."""

    def __init__(
        self, limit: int, skip: int, read_by: Callable[[int], bool] = lambda _: True
    ) -> None:
        self.limit = limit
        self.read_by = read_by
        self.over = False
        """The current header block is over the limit."""
        self._skip = skip  # the rest of the current frame (first: the preface)
        self._data = False  # whether that frame is DATA a handler reads (cheap)
        self._head = b""
        self._block = 0

    def turn(self, data: bytes, start: int, budget: int) -> int:
        """Where the turn that begins at ``start`` in ``data`` ends: once it
        has cost ``budget`` units, or where a header block went over the limit
        (:attr:`over`). A byte costs :data:`DATA_DISCOUNT` units, one of DATA
        payload a handler reads one unit."""
        pos, end = start, len(data)
        while pos < end and budget > 0:
            if self._skip:
                rate = 1 if self._data else DATA_DISCOUNT
                step = min(self._skip, end - pos, -(-budget // rate))
                self._skip -= step
                pos += step
                budget -= step * rate
                continue
            head = data[pos : pos + 9 - len(self._head)]
            self._head += head
            pos += len(head)
            budget -= len(head) * DATA_DISCOUNT
            if len(self._head) == 9 and self._frame_began():
                self.over = True
                break
        return pos

    def _frame_began(self) -> bool:
        """Take the frame header just read; whether its header block is too big."""
        head, self._head = self._head, b""
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        self._skip = length
        self._data = kind == 0x0 and self.read_by(int.from_bytes(head[5:9], "big") & 0x7FFFFFFF)
        if kind in (0x1, 0x5, 0x9):  # HEADERS, PUSH_PROMISE, CONTINUATION
            self._block += length
            if self._block > self.limit:
                return True
            if flags & 0x4:  # END_HEADERS
                self._block = 0
        return False


class Counts(Protocol):
    """The server's counters an HTTP/2 session keeps up to date (an
    :class:`~looming.http.server.HttpServer` has them)."""

    in_flight: int
    requests_served: int
    clients_gone: int


class _OwnCounts:
    """Counts of a session served without a server's."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.requests_served = 0
        self.clients_gone = 0


class _Reset:
    """Queued behind a stream's body when the stream is reset or the
    connection ends: wakes the reader waiting for more."""


_RESET = _Reset()


class _Stream:
    """One request's body, queued as it arrives and acknowledged as it is read."""

    def __init__(self, session: H2Session, stream_id: int) -> None:
        self.session = session
        self.stream_id = stream_id
        self.chunks: asyncio.Queue[bytes | _Reset | None] = asyncio.Queue()
        self.watch = _StreamWatch()
        self.watch.on_gone(lambda: self.chunks.put_nowait(_RESET))
        self.window_open = asyncio.Event()
        self.ended = False
        """The handler has read the end of the body."""
        self.client_done = False
        """The client ended its side of the stream (END_STREAM)."""
        self.response_done = False
        """The server ended its side of the stream (END_STREAM)."""
        self.unread = 0
        """Bytes queued and not yet read (so not yet acknowledged)."""

    def put(self, chunk: bytes) -> None:
        self.unread += len(chunk)
        self.chunks.put_nowait(chunk)

    async def next_chunk(self) -> tuple[bytes, bool]:
        if self.ended and self.chunks.empty():
            return b"", False
        if self.watch.gone:
            # What is still queued was acknowledged when the stream was
            # forgotten (see H2Session._forget): it is not the handler's.
            raise ClientGone("the stream was reset")
        # Queue.get keeps what it has not returned when it is cancelled (as
        # Starlette's is_disconnected cancels receive() at once): no helper
        # task that could take a chunk and drop it.
        chunk = await self.chunks.get()
        if isinstance(chunk, _Reset):
            raise ClientGone("the stream was reset")
        if chunk is None:
            self.ended = True
            return b"", False
        self.unread -= len(chunk)
        await self.session.acknowledge(self.stream_id, len(chunk))
        return chunk, True


class _WebSocketStream:
    """A websocket's HTTP/2 stream, as the flow its session reads and writes."""

    def __init__(self, session: H2Session, stream: _Stream) -> None:
        self.session = session
        self.stream = stream
        self.ended = False

    @property
    def local_address(self) -> tuple[str, int] | None:
        return self.session.server

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self.session.client

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], *, end: bool) -> None:
        fields = [(b":status", str(status).encode()), *headers]
        self.session.conn.send_headers(self.stream.stream_id, fields, end_stream=end)
        self.ended = self.stream.response_done = end
        await self.session.flush()

    async def read(self) -> bytes:
        while True:
            try:
                chunk, more = await self.stream.next_chunk()
            except ClientGone as gone:
                raise ConnectionResetError(str(gone)) from None
            if chunk or not more:
                return chunk

    async def write(self, data: bytes) -> None:
        if self.ended:
            raise ConnectionResetError("the websocket's stream has ended")
        await self.session.send_data(self.stream, bytes(data))

    async def writev(self, buffers: Iterable[bytes]) -> None:
        await self.write(b"".join(buffers))

    async def shutdown(self) -> None:
        if not self.ended and not self.stream.watch.gone:
            self.ended = self.stream.response_done = True
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.session.conn.end_stream(self.stream.stream_id)
                await self.session.flush()

    async def close(self) -> None:
        await self.shutdown()


class H2Session:
    """Serves one HTTP/2 connection with ``handler`` (and its websocket side)."""

    def __init__(
        self,
        flow: Flow,
        handler: Handler,
        *,
        server_name: bytes,
        date_line: Callable[[], bytes],
        clock: Callable[[], float],
        max_body_bytes: int = 16 * 1024 * 1024,
        websockets: ServeWebSocket | None = None,
        observer: Callable[..., None] | None = None,
        counts: Counts | None = None,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.observer = observer
        self.counts: Counts = counts if counts is not None else _OwnCounts()
        """Handlers running, responses sent, clients gone (for the metrics)."""
        """Told of each response, as the server's HTTP/1.1 responses (access log, metrics)."""
        self.websockets = websockets
        self.flow = flow
        self.handler = handler
        self.server_name = server_name
        self.date_line = date_line
        self.clock = clock
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.streams: dict[int, _Stream] = {}
        self.draining: set[int] = set()
        """Streams answered whose client side is still open (see _forget)."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.write_lock = asyncio.Lock()
        self.abuse: list[float] = []
        self.resets: list[float] = []
        self.stopping = False
        self.idle_since = 0.0
        self._writing: tuple[asyncio.Task[Any] | None, float] | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stalled = False
        """Loop time when the last stream ended (or the connection began)."""
        self.started = 0
        """Streams started in this turn (see :data:`STREAMS_PER_TURN`)."""
        self.frame_watch = _FrameWatch(MAX_HEADER_BLOCK, len(PREFACE), self._read_by)
        self.client: tuple[str, int] | None = getattr(flow, "remote_address", None)
        self.server: tuple[str, int] | None = getattr(flow, "local_address", None)

    async def stop(self) -> None:
        """Send GOAWAY once: streams open now are finished, new ones refused.

        The frame is written beside h2's state machine, which after its own
        GOAWAY would send nothing more, not even the open streams' data.
        """
        if self.stopping:
            return
        self.stopping = True
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = self.conn.highest_inbound_stream_id
        goaway.error_code = h2.errors.ErrorCodes.NO_ERROR
        await self.flush()
        async with self.write_lock:
            await self.flow.write(goaway.serialize())

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if not data:
            return
        async with self.write_lock:
            # One timer a connection, not one a write: it checks the write
            # under way when it fires (see _check_stall).
            loop = asyncio.get_running_loop()
            self._writing = (asyncio.current_task(), loop.time())
            if self._stall_timer is None:
                self._stall_timer = loop.call_at(loop.time() + STALL_TIMEOUT, self._check_stall)
            try:
                await self.flow.write(data)
            except asyncio.CancelledError:
                if self._stalled:
                    raise ClientGone(f"the client read nothing for {STALL_TIMEOUT} s") from None
                raise
            finally:
                self._writing = None

    def _check_stall(self) -> None:
        """Cut the write under way if it has waited :data:`STALL_TIMEOUT` seconds."""
        self._stall_timer = None
        writing = self._writing
        if writing is None or self._stalled:
            return
        task, since = writing
        loop = asyncio.get_running_loop()
        if loop.time() - since >= STALL_TIMEOUT and task is not None:
            self._stalled = True
            abuse["stalled"] += 1
            task.cancel()
        else:
            self._stall_timer = loop.call_at(since + STALL_TIMEOUT, self._check_stall)

    @property
    def closed(self) -> bool:
        """Whether h2 has ended the connection (GOAWAY sent or received):
        nothing more is acknowledged then (h2 would still queue WINDOW_UPDATEs)."""
        return self.conn.state_machine.state is h2.connection.ConnectionState.CLOSED

    async def acknowledge(self, stream_id: int, size: int) -> None:
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self.conn.acknowledge_received_data(size, stream_id)
            await self.flush()

    @property
    def held(self) -> int:
        """Bytes of request bodies received and not yet read by the
        handlers (at most :data:`CONNECTION_WINDOW`)."""
        return sum(stream.unread for stream in self.streams.values())

    def _forget(self, stream: _Stream) -> None:
        """The stream's handler is done with it: what it left unread is
        acknowledged, so it does not keep the connection's window closed.
        A stream whose response is complete while the client still sends
        is draining: it counts against the client's concurrent streams until
        the client ends or resets it (its data is acknowledged and dropped;
        a reset with NO_ERROR, RFC 9113 section 8.1, would be cleaner, but
        curl 7.88 fails the request on it). One whose handler left it
        unanswered is reset (INTERNAL_ERROR)."""
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        unread, stream.unread = stream.unread, 0
        while not stream.chunks.empty():  # acknowledged below: not to be read
            stream.chunks.get_nowait()
        if stream.watch.gone:
            stream.chunks.put_nowait(_RESET)
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            if unread > 0 and not self.closed:
                self.conn.acknowledge_received_data(unread, stream.stream_id)
            if stream.watch.gone or (stream.client_done and stream.response_done):
                return
            if stream.response_done:
                self.draining.add(stream.stream_id)
            else:
                stream.watch.went_away()
                self.conn.reset_stream(stream.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)

    async def run(self, first: bytes, upgraded: tuple[bytes, Request] | None = None) -> None:
        """Serve until the client closes, misbehaves, or the connection fails.

        ``upgraded`` is the HTTP2-Settings header and the request of an
        ``Upgrade: h2c`` exchange (after the 101): that request is stream 1.
        """
        codes = h2.settings.SettingCodes
        advertised = {
            codes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            codes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            codes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            codes.ENABLE_CONNECT_PROTOCOL: int(self.websockets is not None),
        }
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=advertised)
        if upgraded is not None:
            settings, request = upgraded
            try:
                self.conn.initiate_upgrade_connection(settings)
            except (h2.exceptions.ProtocolError, ValueError, InvalidFrameError) as error:
                log.debug("bad HTTP2-Settings in an h2c upgrade: %s", error)
                abuse["protocol_error"] += 1
                return
            self._dispatch(1, request, ended=True)
        else:
            self.conn.initiate_connection()
        raise_by = CONNECTION_WINDOW - self.conn.inbound_flow_control_window
        if raise_by > 0:
            self.conn.increment_flow_control_window(raise_by)
        # The SETTINGS are out: h2 now checks streams against a higher limit
        # than the one advertised (see _h2_stream_limit), so that a stream over
        # the advertised one is the session's to refuse, not a connection error.
        enforced = {**advertised, codes.MAX_CONCURRENT_STREAMS: _h2_stream_limit()}
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=enforced)
        try:
            await self.flush()
            # After an upgrade the client's preface may not have come yet.
            self.idle_since = asyncio.get_running_loop().time()
            data = first or await self._next_data()
            while data and await self._take(data):
                data = await self._next_data()
        except (LoomingError, OSError, ClientGone) as error:
            log.debug("h2 connection ended: %s", error)
        finally:
            await self._end()

    async def _next_data(self) -> bytes:
        """The next bytes received; b"" at the end, or (after GOAWAY) once no
        stream has been open for :data:`IDLE_TIMEOUT` seconds."""
        loop = asyncio.get_running_loop()
        while True:
            left = IDLE_TIMEOUT
            if not self.tasks:
                left = self.idle_since + IDLE_TIMEOUT - loop.time()
            if left <= 0:
                log.debug("h2 connection idle for %.0f s: GOAWAY", IDLE_TIMEOUT)
                abuse["idle"] += 1
                self.conn.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR)
                await self.flush()
                return b""
            try:
                async with asyncio.timeout(left):
                    return await self.flow.read()
            except TimeoutError:
                continue

    def _read_by(self, stream_id: int) -> bool:
        """Whether DATA on ``stream_id`` goes to a handler: its stream is
        open, or it is one h2 has not seen opened yet (opened by HEADERS
        in the same turn, or DATA on an idle stream, which ends the
        connection)."""
        return stream_id in self.streams or stream_id > self.conn.highest_inbound_stream_id

    def _stream_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.idle_since = asyncio.get_running_loop().time()

    async def _take(self, data: bytes) -> bool:
        """Act on bytes received, a turn's worth at a time; False ends the connection."""
        start = 0
        while start < len(data):
            if start:
                await asyncio.sleep(0)  # the other connections' turn
            end = self.frame_watch.turn(data, start, TURN_BYTES * DATA_DISCOUNT)
            piece, start = data[start:end], end
            if self.frame_watch.over:
                abuse["header_block"] += 1
                return await self._calm_down()
            try:
                events = self.conn.receive_data(piece)
            except h2.exceptions.ProtocolError as error:
                log.debug("h2 protocol error: %s", error)
                abuse["protocol_error"] += 1
                await self.flush()
                return False
            for event in _without_request_priorities(events):
                if not await self._handle(event):
                    await self.flush()
                    return False
                if self.started >= STREAMS_PER_TURN:
                    self.started = 0
                    await self.flush()
                    await asyncio.sleep(0)
            await self.flush()
        return True

    async def _end(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        for stream in self.streams.values():
            stream.watch.went_away()
            stream.window_open.set()
        current = asyncio.current_task()
        stopped = current is not None and current.cancelling() > 0
        if self.tasks and not stopped:
            # (no grace when the connection itself is cancelled: a stop that ran out of time;
            # an ASGI app cancelled on disconnect gets the grace it was given)
            asked = getattr(self.handler, "disconnect_grace", None) or 0.0
            await asyncio.wait(self.tasks, timeout=max(GONE_GRACE, asked))
        for task in list(self.tasks):
            task.cancel(SERVER_STOPPED if stopped else None)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=1.0)

    def _abusive(self, times: list[float], limit: int) -> bool:
        now = self.clock()
        times.append(now)
        while times and times[0] < now - ABUSE_WINDOW:
            times.pop(0)
        return len(times) > limit

    async def _calm_down(self) -> bool:
        self.conn.close_connection(error_code=h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        await self.flush()
        return False

    async def _handle(self, event: h2.events.Event) -> bool:
        """Act on one event; False ends the connection."""
        if isinstance(event, h2.events.RequestReceived):
            return await self._start_stream(event)
        if isinstance(event, h2.events.DataReceived):
            return await self._data(event)
        if isinstance(event, h2.events.StreamEnded):
            self.draining.discard(event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.client_done = True
                stream.chunks.put_nowait(None)
        elif isinstance(event, h2.events.StreamReset):
            self.draining.discard(event.stream_id)
            if self._reset(event.stream_id):
                abuse["rapid_reset"] += 1
                return await self._calm_down()
        elif isinstance(event, h2.events.WindowUpdated):
            self._window_opened(event.stream_id)
        elif isinstance(event, _IDLE_EVENTS):
            if self._abusive(self.abuse, MAX_CONTROL_FRAMES):
                abuse["control_flood"] += 1
                return await self._calm_down()
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self._window_opened(0)  # the initial window may have grown
        elif isinstance(event, h2.events.ConnectionTerminated):
            return False
        return True

    async def _data(self, event: h2.events.DataReceived) -> bool:
        """Queue a stream's data for its handler; padding and data nobody
        will read is acknowledged at once. An empty DATA frame that does not
        end its stream does no work: it counts as a control frame."""
        stream = self.streams.get(event.stream_id)
        size = len(event.data)
        owed = event.flow_controlled_length - (size if stream is not None else 0)
        if stream is not None and size:
            stream.put(bytes(event.data))
        if owed:
            await self.acknowledge(event.stream_id, owed)
        idle = not size and event.stream_ended is None
        if idle and self._abusive(self.abuse, MAX_CONTROL_FRAMES):
            abuse["control_flood"] += 1
            return await self._calm_down()
        return True

    def _reset(self, stream_id: int) -> bool:
        """The peer reset a stream: its handler is told the client went away.
        Whether the peer resets too often (a rapid-reset attack)."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.watch.went_away()
            self._forget(stream)
            stream.window_open.set()
        return self._abusive(self.resets, MAX_RESETS)

    def _window_opened(self, stream_id: int) -> None:
        """Wake the writers the peer's WINDOW_UPDATE lets go on (0: every stream)."""
        targets = (
            self.streams.values()
            if stream_id == 0
            else [s for s in [self.streams.get(stream_id)] if s is not None]
        )
        for stream in targets:
            stream.window_open.set()

    async def _start_stream(self, event: h2.events.RequestReceived) -> bool:
        """Start the stream's handler, or refuse the stream (REFUSED_STREAM)
        while stopping or while as many streams as allowed are busy (their
        handlers still run, or they are draining); False (after GOAWAY) when
        the client is refused too often."""
        stream_id = event.stream_id
        busy = len(self.tasks) + len(self.draining)
        if self.stopping or busy >= MAX_CONCURRENT_STREAMS:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            if self.stopping:
                return True
            abuse["refused_stream"] += 1
            if self._abusive(self.resets, MAX_RESETS):
                abuse["rapid_reset"] += 1
                return await self._calm_down()
            return True
        request, websocket = self._request(event)
        self.started += 1
        self._dispatch(
            stream_id, request, ended=event.stream_ended is not None, websocket=websocket
        )
        return True

    def _request(self, event: h2.events.RequestReceived) -> tuple[Request, bool]:
        """The request a stream's HEADERS hold; whether it opens a websocket."""
        pseudo: dict[bytes, bytes] = {}
        headers: list[tuple[bytes, bytes]] = []
        for name, value in event.headers or ():
            name_b, value_b = bytes(name), bytes(value)
            if name_b.startswith(b":"):
                pseudo[name_b] = value_b
            else:
                headers.append((name_b, value_b))
        if b":authority" in pseudo and not any(n == b"host" for n, _ in headers):
            headers.insert(0, (b"host", pseudo[b":authority"]))
        request = Request(
            pseudo.get(b":method", b"GET").decode("ascii", "replace"),
            pseudo.get(b":path", b"/").decode("latin-1"),
            headers,
            b"",
            "2",
            self.client,
            self.server,
        )
        websocket = (
            pseudo.get(b":method") == b"CONNECT" and pseudo.get(b":protocol") == b"websocket"
        )
        return request, websocket

    def _dispatch(
        self, stream_id: int, request: Request, *, ended: bool, websocket: bool = False
    ) -> None:
        """Run the handler (or, for an RFC 8441 CONNECT, its websocket side)
        for ``request`` on stream ``stream_id``."""
        stream = _Stream(self, stream_id)
        self.streams[stream_id] = stream
        if ended:
            stream.client_done = True
            stream.chunks.put_nowait(None)
        request.http_version = "2"
        request.body_stream = stream
        request.watch = stream.watch
        work = (
            self._serve_websocket(stream, request)
            if websocket and self.websockets is not None
            else self._respond(stream, request)
        )
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._stream_done)

    async def _serve_websocket(self, stream: _Stream, request: Request) -> None:
        assert self.websockets is not None
        flow = _WebSocketStream(self, stream)
        started = self.clock()
        try:
            status, sent = await self.websockets(request, flow, b"", flow)
            if self.observer is not None and status:
                self.observer(request, status, sent, self.clock() - started)
        except (h2.exceptions.ProtocolError, ClientGone, LoomingError, OSError) as error:
            log.debug("h2 websocket stream %d ended: %s", stream.stream_id, error)
        finally:
            await flow.close()
            self._forget(stream)

    async def _respond(self, stream: _Stream, request: Request) -> None:
        started = self.clock()
        try:
            response = await self._response(stream, request)
            if response is None:
                return
            sent = [0]
            cut = True  # (told to the observer when the response did not end)
            try:
                await self._send(stream, request, response, sent)
                self.counts.requests_served += 1
                cut = False
            except (h2.exceptions.ProtocolError, ClientGone, LoomingError, OSError) as error:
                log.debug("h2 stream %d ended: %s", stream.stream_id, error)
                self._cancel(stream)
            finally:
                if self.observer is not None:
                    seconds = self.clock() - started
                    if cut:
                        self.observer(request, response.status, sent[0], seconds, True)
                    else:
                        self.observer(request, response.status, sent[0], seconds)
                closer: Any = getattr(response.body, "aclose", None)
                if closer is not None:
                    with contextlib.suppress(Exception):
                        await closer()
        finally:
            self._forget(stream)
            with contextlib.suppress(LoomingError, OSError, ClientGone):
                await self.flush()

    async def _response(self, stream: _Stream, request: Request) -> Response | None:
        """The handler's response (None: the stream was reset meanwhile)."""
        self.counts.in_flight += 1
        try:
            if not getattr(self.handler, "streams_request_body", False):
                request = await self._whole_body(request, stream)
                if request.body_stream is stream:
                    return Response(413, ((b"content-type", b"text/plain"),), b"413\n")
            return await self.handler(request)
        except ClientGone:
            self.counts.clients_gone += 1
            self._cancel(stream)
            return None
        except Exception:
            log.exception("handler failed on %s %s", request.method, request.target)
            return Response(500, ((b"content-type", b"text/plain"),), b"500\n")
        finally:
            self.counts.in_flight -= 1

    def _cancel(self, stream: _Stream) -> None:
        """Reset a stream the server gives up on (if it is still open)."""
        if not stream.watch.gone:
            stream.watch.went_away()
            with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
                self.conn.reset_stream(stream.stream_id, h2.errors.ErrorCodes.CANCEL)

    async def _whole_body(self, request: Request, stream: _Stream) -> Request:
        """The request with its whole body, for a handler that does not stream."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            chunk, more = await stream.next_chunk()
            size += len(chunk)
            if size > self.max_body_bytes:
                log.debug("h2 stream %d: body over %d bytes", stream.stream_id, size)
                return request  # still streaming: too big (413)
            chunks.append(chunk)
        request.body = b"".join(chunks)
        request.body_stream = None
        return request

    async def _send(
        self, stream: _Stream, request: Request, response: Response, sent: list[int]
    ) -> None:
        """Send ``response`` on ``stream``; ``sent[0]`` counts its body bytes sent."""
        body = response.body
        headers = [(b":status", str(response.status).encode())]
        headers += [
            (bytes(n).lower(), bytes(v))
            for n, v in response.headers
            if bytes(n).lower() not in _HOP_BY_HOP
        ]
        names = {n for n, _ in headers}
        if b"server" not in names:
            headers.append((b"server", self.server_name))
        if b"date" not in names:
            headers.append((b"date", self.date_line()))
        whole = isinstance(body, bytes | bytearray | memoryview)
        if whole and b"content-length" not in names:
            headers.append((b"content-length", str(len(body)).encode()))  # type: ignore[arg-type]
        head_only = request.method == "HEAD"
        empty = head_only or (whole and not body)
        self.conn.send_headers(stream.stream_id, headers, end_stream=empty)
        stream.response_done = empty
        await self.flush()
        if empty:
            return
        if whole:
            await self.send_data(stream, bytes(body))  # type: ignore[arg-type]
            sent[0] = len(body)  # type: ignore[arg-type]
        else:
            async for piece in body:  # type: ignore[union-attr]
                if piece:
                    await self.send_data(stream, piece)
                    sent[0] += len(piece)
        self.conn.end_stream(stream.stream_id)
        stream.response_done = True
        await self.flush()

    async def send_data(self, stream: _Stream, data: bytes) -> None:
        """Send ``data`` within the peer's flow-control windows, waiting for them."""
        view = memoryview(data)
        while view:
            if stream.watch.gone:
                raise ClientGone("the stream was reset")
            window = self.conn.local_flow_control_window(stream.stream_id)
            size = min(window, self.conn.max_outbound_frame_size, len(view))
            if size <= 0:
                stream.window_open.clear()
                try:
                    async with asyncio.timeout(STALL_TIMEOUT):
                        await stream.window_open.wait()
                except TimeoutError:
                    abuse["stalled"] += 1
                    raise ClientGone(f"the client's window stayed shut {STALL_TIMEOUT} s") from None
                continue
            self.conn.send_data(stream.stream_id, bytes(view[:size]))
            view = view[size:]
            await self.flush()
