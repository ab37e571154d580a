"""WebSockets for ASGI applications (the ``websocket`` scope), on wsproto.

The HTTP server hands over the connection of a request asking to upgrade
(``Upgrade: websocket``); :class:`WebSocketSession` replays its handshake
into wsproto, runs the application with the ASGI websocket protocol and
moves frames between the two. Over HTTP/2 a websocket is one stream opened
with an extended CONNECT (RFC 8441): the stream is the flow, and the
handshake is that request and a ``200`` (or a refusal) in HEADERS, given
by an :class:`ExtendedConnect`. permessage-deflate is offered when the client
asks for it. Limits hold against a hostile client: a message over
``max_message_bytes`` (counted after inflating, so a small compressed frame
cannot grow without bound) closes with 1009; the client's messages wait in a
short queue, and while the application does not read them, nothing more is
read from the connection (TCP pushes back on the client), and what waits
there is bounded by bytes too (``max_message_bytes`` in all, or one message);
``send()`` returns once the frame is written to the flow, which waits above
its high-water mark, and a client that reads nothing for
:data:`SEND_TIMEOUT` seconds is given up on. A message's fragments are joined
as they come, so a flood of tiny or empty fragments holds no more than the
message's bytes. Pings are answered, the latest of those read together only
(RFC 6455 section 5.5.3 allows it: a ping flood gets no more bytes back than
it sends), and more than :data:`MAX_IDLE_FRAMES` frames that carry nothing
in :data:`IDLE_WINDOW` seconds close with 1008. A close is answered and told to the application as
``websocket.disconnect`` with its code. Fairness: at most
:data:`EVENTS_PER_TURN` frames are taken from one connection before the
others get a turn. Refusals are counted in :data:`abuse`.

An opening handshake that RFC 6455 section 4.2.1 does not allow (no
``Sec-WebSocket-Key``, or one that is not base64 of 16 bytes; a
``Sec-WebSocket-Version`` other than 13) is refused before the application
sees it, counted as ``bad_handshake`` and logged at debug level: 400, or 426
with ``Sec-WebSocket-Version: 13`` for a version the server does not speak
(section 4.2.2). Over HTTP/2 a bad version is a 400 with the same header
(426 needs ``Upgrade``, which HTTP/2 forbids). A frame whose header
announces a payload over ``max_message_bytes`` is refused on its header,
with 1009, before any of its payload is read. The reasons of the server's
close frames are short fixed phrases (``protocol error``, ``invalid
UTF-8``), never a parser's error text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import logging
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import unquote

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    TextMessage,
)
from wsproto.events import Request as WsRequest
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from looming.devices.flow import Flow
from looming.errors import LoomingError
from looming.http.dates import format_http_date
from looming.http.message import ExtendedConnect, Request
from looming.http.response_head import status_line

log = logging.getLogger("looming.http.websocket")

Scope = MutableMapping[str, Any]
AsgiMessage = MutableMapping[str, Any]
AsgiApp = Callable[
    [Scope, Callable[[], Awaitable[AsgiMessage]], Callable[[AsgiMessage], Awaitable[None]]],
    Awaitable[None],
]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
INBOX_MESSAGES = 16
EVENTS_PER_TURN = 64
MAX_IDLE_FRAMES = 1000
IDLE_WINDOW = 10.0
"""More than MAX_IDLE_FRAMES frames that carry nothing (pings, pongs, empty
fragments) in IDLE_WINDOW seconds close the websocket with 1008."""
SEND_TIMEOUT = 30.0
abuse: Counter[str] = Counter()
"""Websockets closed in this process by reason: ``message_too_big``,
``protocol_error`` (bad frames, bad UTF-8, bad close codes), ``frame_flood``,
``send_stalled``; and opening handshakes refused as malformed: ``bad_handshake``."""
_VERDICTS = {1002: "protocol_error", 1007: "protocol_error", 1009: "message_too_big"}
_REASONS = {1002: "protocol error", 1007: "invalid UTF-8", 1009: "message too big"}
"""The reason a close frame gives when the server closes for a bad frame:
fixed phrases (a parser's error text says nothing useful to a client)."""
_EXTENSION_FAILED = "error in extension"
"""wsproto's reason when permessage-deflate refused a payload."""
DEFLATE_SLACK = 1024
"""A compressed frame may announce this much (and 1/1024) more than the
limit: deflate can make incompressible data a little longer."""


class _BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that refuses to inflate a message beyond a limit."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._inflated = 0

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        room = self._limit - self._inflated
        try:
            out = self._decompressor.decompress(bytes(data), max(room, 1))
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._decompressor.unconsumed_tail or self._inflated > self._limit:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if fin:
            self._inflated = 0
        return super().frame_inbound_complete(proto, fin)


class _Assembly:
    """One message's fragments, joined as they come."""

    def __init__(self) -> None:
        self.text: io.StringIO | None = None
        self.data = bytearray()
        self.size = 0
        """Bytes so far (text counted as UTF-8)."""

    def add(self, piece: str | bytes) -> None:
        if isinstance(piece, str):
            if self.text is None:
                self.text = io.StringIO()
            self.text.write(piece)
            self.size += len(piece) if piece.isascii() else len(piece.encode("utf-8"))
        else:
            self.data += piece
            self.size += len(piece)

    def message(self, text: bool) -> AsgiMessage:
        if text:
            joined = self.text.getvalue() if self.text is not None else ""
            return {"type": "websocket.receive", "text": joined}
        return {"type": "websocket.receive", "bytes": bytes(self.data)}


def _header_list(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """The comma-separated values of every ``name`` header."""
    values = [v.decode("latin-1") for n, v in headers if n.lower() == name]
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def refusal(status: int, headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 response refusing a handshake: its reason phrase, a
    Date (the host's time: a session has no clock device of its own; time
    is virtual in the simulator), ``headers`` and no body; the connection
    closes. A 426 names the protocol to upgrade to, as RFC 9110 15.5.22 asks."""
    date = format_http_date(time.time())
    fields = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    connection = b"upgrade, close" if status == 426 else b"close"
    if status == 426:
        fields += b"upgrade: websocket\r\n"
    return status_line(status) + (
        b"date: %s\r\n%scontent-length: 0\r\nconnection: %s\r\n\r\n" % (date, fields, connection)
    )


_VERSION = [(b"sec-websocket-version", b"13")]


def handshake_problem(
    headers: Sequence[tuple[bytes, bytes]], *, http2: bool = False
) -> tuple[int, list[tuple[bytes, bytes]], str] | None:
    """Why an opening handshake is refused (status, headers to send, what
    was wrong), or None. RFC 6455 4.2.1: version 13 and (on HTTP/1.1) one
    ``Sec-WebSocket-Key``, base64 of 16 bytes; RFC 8441 drops the key."""
    versions = _header_list(headers, b"sec-websocket-version")
    if versions != ["13"]:
        status = 400 if http2 or not versions else 426
        return status, _VERSION, f"Sec-WebSocket-Version {versions or 'missing'}, not 13"
    if http2:
        return None
    keys = [value for name, value in headers if name.lower() == b"sec-websocket-key"]
    if len(keys) != 1:
        return 400, [], f"{len(keys)} Sec-WebSocket-Key fields, not one"
    try:
        nonce = base64.b64decode(keys[0].strip(), validate=True)
    except (binascii.Error, ValueError):
        nonce = b""
    if len(nonce) != 16:
        return 400, [], "Sec-WebSocket-Key is not base64 of 16 bytes"
    return None


class FrameSizes:
    """Follows the frame headers in a websocket's incoming bytes, to refuse
    a frame announcing a payload over the limit before its payload is read
    (wsproto reads the payload first)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.deflated_limit = limit + (limit >> 10) + DEFLATE_SLACK
        """The limit of a compressed frame (RSV1 set)."""
        self._payload_left = 0
        """Bytes of the current frame's payload still to come."""
        self._head = b""
        """The start of a frame header cut by a read."""

    def oversized_at(self, data: bytes) -> int:
        """Where in ``data`` the header of an oversized frame begins (0 if
        it began in an earlier read), or -1."""
        end = len(data)
        at = self._payload_left
        if at >= end:  # all payload (the common case of a large message)
            self._payload_left = at - end
            return -1
        shift = len(self._head)  # (only between frames: then ``at`` is 0)
        if shift:
            data, end = self._head + data, end + shift
        while at < end:
            size = _header_size(data, at, end)
            if size < 0:
                break  # the header goes on in the next read
            announced = _announced(data, at)
            first = data[at]
            # (control frames are wsproto's to refuse; compressed ones get some slack)
            if (
                announced > self.limit
                and not first & 0x08
                and (not first & 0x40 or announced > self.deflated_limit)
            ):
                return max(at - shift, 0)
            at += size + announced
        if at >= end:
            self._payload_left, self._head = at - end, b""
        else:
            self._payload_left, self._head = 0, data[at:]
        return -1


def _header_size(data: bytes, at: int, end: int) -> int:
    """The size of the frame header at ``at``, or -1 if ``data`` ends within it."""
    if at + 2 > end:
        return -1
    second = data[at + 1]
    length = second & 0x7F
    size = (10 if length == 127 else 4 if length == 126 else 2) + (4 if second & 0x80 else 0)
    return size if at + size <= end else -1


def _announced(data: bytes, at: int) -> int:
    """The payload length the whole frame header at ``at`` announces."""
    length = data[at + 1] & 0x7F
    if length == 126:
        return int.from_bytes(data[at + 2 : at + 4], "big")
    if length == 127:
        return int.from_bytes(data[at + 2 : at + 10], "big")
    return length


class WebSocketSession:
    """One upgraded connection (or HTTP/2 stream) serving an ASGI
    application's websocket scope."""

    def __init__(
        self,
        app: AsgiApp,
        request: Request,
        flow: Flow,
        *,
        root_path: str,
        scheme: str,
        state: dict[str, Any],
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        extended: ExtendedConnect | None = None,
    ) -> None:
        self.app = app
        self.request = request
        self.flow = flow
        self.root_path = root_path
        self.scheme = "wss" if scheme == "https" else "ws"
        self.state = state
        self.max_message_bytes = max_message_bytes
        self.extended = extended
        self.ws: WSConnection | Connection = (
            WSConnection(ConnectionType.SERVER)
            if extended is None
            else Connection(ConnectionType.SERVER)
        )
        self.subprotocols: list[str] = []
        self.inbox: asyncio.Queue[tuple[AsgiMessage, int]] = asyncio.Queue(INBOX_MESSAGES)
        self.queued_bytes = 0
        """Bytes of the messages in the inbox (bounded by ``max_message_bytes``)."""
        self._room = asyncio.Event()
        self._idle_frames = 0
        self._idle_since = 0.0
        self.accepted = False
        self.closed = False
        self._final: AsgiMessage | None = None
        self._sizes = FrameSizes(max_message_bytes)
        self.status = 0
        """The handshake's answer: 101 (200 over HTTP/2) or a refusal's status."""
        self.bytes_sent = 0
        """Bytes written to the client after the handshake's answer."""
        self._leftover = b""
        """Bytes the client sent behind its handshake, read as frames."""

    async def receive(self) -> AsgiMessage:
        """The application's ``receive``: after the disconnect, the disconnect again."""
        if self._final is not None and self.inbox.empty():
            return self._final
        message, size = await self.inbox.get()
        self.queued_bytes -= size
        self._room.set()
        return message

    async def _deliver(self, message: AsgiMessage, size: int) -> None:
        """Queue a client message for the application, waiting for room."""
        while self.queued_bytes and self.queued_bytes + size > self.max_message_bytes:
            self._room.clear()
            await self._room.wait()
        self.queued_bytes += size
        await self.inbox.put((message, size))

    def _scope(self) -> Scope:
        request = self.request
        raw_path, _, query = request.target.partition("?")
        return {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": request.http_version,
            "scheme": self.scheme,
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": self.root_path,
            "headers": [(name.lower(), value) for name, value in request.headers],
            "client": request.client,
            "server": request.server,
            "subprotocols": list(self.subprotocols),
            "state": dict(self.state),
            "extensions": {},
        }

    async def _write(self, event: Event) -> None:
        data = self.ws.send(event)
        if data:
            self.bytes_sent += len(data)
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await self.flow.write(data)
            except TimeoutError:
                abuse["send_stalled"] += 1
                raise ConnectionResetError(
                    f"the client read nothing for {SEND_TIMEOUT} s"
                ) from None

    async def run(self, leftover: bytes) -> None:
        """Take the handshake, run the application, and close the connection."""
        try:
            if not await self._handshake(leftover):
                return
        except (LoomingError, OSError) as error:
            log.debug("websocket handshake on %s cut: %s", self.request.target, error)
            return
        await self.inbox.put(({"type": "websocket.connect"}, 0))
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await self.app(self._scope(), self.receive, self._send)
        except ConnectionResetError:
            pass  # the client went away while the application was sending
        except Exception:
            log.exception("websocket application failed on %s", self.request.target)
            await self._close_after_error()
        else:
            if not self.closed:
                # Returning without accepting is a refusal (ASGI: 403).
                await self._send({"type": "websocket.close", "code": 1000})
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _handshake(self, leftover: bytes) -> bool:
        """Check the opening request; False (after answering it) if it is refused."""
        request = self.request
        problem = handshake_problem(request.headers, http2=self.extended is not None)
        if problem is not None:
            status, headers, why = problem
            abuse["bad_handshake"] += 1
            log.debug("refused websocket handshake on %s: %s", request.target, why)
            await self._refuse_handshake(status, headers)
            return False
        if self.extended is not None:
            self.subprotocols = _header_list(request.headers, b"sec-websocket-protocol")
            return True
        head = [b"GET " + request.target.encode("latin-1") + b" HTTP/1.1\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in request.headers]
        try:
            self.ws.receive_data(b"".join(head) + b"\r\n")
            handshake = next((e for e in self.ws.events() if isinstance(e, WsRequest)), None)
        except RemoteProtocolError as error:
            log.debug("refused websocket handshake on %s: %s", request.target, error)
            handshake = None
        if handshake is None:
            abuse["bad_handshake"] += 1
            await self._refuse_handshake(400, [])
            return False
        self.subprotocols = list(handshake.subprotocols)
        self._leftover = leftover
        return True

    async def _refuse_handshake(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.closed = True
        self.status = status
        if self.extended is not None:
            await self.extended.respond(status, headers, end=True)
        else:
            await self.flow.write(refusal(status, headers))

    async def stop(self) -> None:
        """The server is stopping: close with 1001 (going away), tell the application."""
        if self.closed:
            return
        self.closed = True
        if self.accepted:
            with contextlib.suppress(LocalProtocolError, LoomingError, OSError):
                await self._write(CloseConnection(1001, "server stopping"))
        await self._disconnected(1001)

    async def _close_after_error(self) -> None:
        """An application error: 500 before the handshake was accepted, 1011 after."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(LocalProtocolError, LoomingError, OSError):
            if self.accepted:
                await self._write(CloseConnection(1011))
            else:
                await self._reject(500)

    async def _send(self, message: AsgiMessage) -> None:
        kind = message.get("type")
        if self.closed:
            if kind == "websocket.close":
                return
            # ASGI 2.4: sending on a closed connection raises an OSError.
            raise ConnectionResetError("the websocket is closed")
        try:
            if kind == "websocket.accept" and not self.accepted:
                self.accepted = True
                await self._accept(message)
            elif kind == "websocket.send" and self.accepted:
                text, data = message.get("text"), message.get("bytes")
                if text is not None:
                    await self._write(TextMessage(data=str(text)))
                else:
                    await self._write(BytesMessage(data=bytes(data or b"")))
            elif kind == "websocket.close":
                self.closed = True
                if self.accepted:
                    code = int(message.get("code", 1000))
                    await self._write(CloseConnection(code, message.get("reason") or None))
                else:
                    await self._reject(403)
            else:
                raise RuntimeError(f"unexpected ASGI websocket message {kind!r} here")
        except (LocalProtocolError, LoomingError, OSError) as error:
            self.closed = True
            raise ConnectionResetError(f"the websocket is closed: {error}") from None

    async def _accept(self, message: AsgiMessage) -> None:
        """Answer the handshake: a 101 upgrade, or over HTTP/2 a 200 in HEADERS."""
        extra = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
        subprotocol = message.get("subprotocol")
        deflate = _BoundedDeflate(self.max_message_bytes)
        if self.extended is None:
            self.status = 101
            accept = AcceptConnection(
                subprotocol=subprotocol, extensions=[deflate], extra_headers=extra
            )
            await self._write(accept)
            return
        headers = list(extra)
        if subprotocol:
            headers.append((b"sec-websocket-protocol", str(subprotocol).encode("latin-1")))
        offers = _header_list(self.request.headers, b"sec-websocket-extensions")
        agreed = server_extensions_handshake(offers, [deflate])
        if agreed is not None:
            headers.append((b"sec-websocket-extensions", agreed))
        self.ws = Connection(ConnectionType.SERVER, [deflate] if agreed is not None else [])
        self.status = 200
        await self.extended.respond(200, headers, end=False)

    async def _reject(self, status: int) -> None:
        """Refuse the handshake with ``status`` (no websocket follows)."""
        self.status = status
        if self.extended is not None:
            await self.extended.respond(status, [], end=True)
        else:
            self.ws.send(RejectConnection(status_code=status))  # (wsproto's state: closed)
            await self.flow.write(refusal(status))

    async def _read(self) -> None:
        """Client frames into the inbox, pings answered, until the close."""
        assembly: _Assembly | None = _Assembly()
        data, self._leftover = self._leftover, b""
        try:
            while assembly is not None:
                if not data:
                    data = await self.flow.read()
                    if not data:
                        await self._disconnected(1006)
                        return
                oversized = self._sizes.oversized_at(data)
                if oversized >= 0:
                    data = data[:oversized]  # the frames before it are taken first
                self.ws.receive_data(data)
                data = b""
                assembly = await self._take_events(assembly)
                if oversized >= 0 and assembly is not None:
                    abuse["message_too_big"] += 1
                    await self._refuse(CloseReason.MESSAGE_TOO_BIG, "message too big")
                    return
        except RemoteProtocolError as error:
            abuse["protocol_error"] += 1
            await self._refuse(CloseReason.PROTOCOL_ERROR, f"protocol error: {error}")
        except (LoomingError, OSError, LocalProtocolError):
            await self._disconnected(1006)

    async def _take_events(self, assembly: _Assembly) -> _Assembly | None:
        """Act on the frames received; the message under way after them
        (None once the websocket is closed)."""
        ping: Ping | None = None
        for count, event in enumerate(self.ws.events(), 1):
            if count % EVENTS_PER_TURN == 0:
                await asyncio.sleep(0)  # the other connections' turn
            idle = isinstance(event, Ping | Pong) or (
                isinstance(event, Message) and not event.data and not event.message_finished
            )
            if idle and self._flooding():
                abuse["frame_flood"] += 1
                await self._refuse(CloseReason.POLICY_VIOLATION, "too many frames without data")
                return None
            if isinstance(event, Message):
                assembly.add(event.data)
                if assembly.size > self.max_message_bytes:
                    abuse["message_too_big"] += 1
                    await self._refuse(CloseReason.MESSAGE_TOO_BIG, "message too big")
                    return None
                if event.message_finished:
                    text = isinstance(event, TextMessage)
                    await self._deliver(assembly.message(text), assembly.size)
                    assembly = _Assembly()
            elif isinstance(event, Ping):
                ping = event  # only the latest is answered
            elif isinstance(event, CloseConnection):
                await self._closed_by_client(event)
                return None
        if ping is not None:
            await self._write(ping.response())
        return assembly

    def _flooding(self) -> bool:
        """Count a frame that carries nothing; whether there are too many."""
        now = asyncio.get_running_loop().time()
        if now - self._idle_since > IDLE_WINDOW:
            self._idle_since, self._idle_frames = now, 0
        self._idle_frames += 1
        return self._idle_frames > MAX_IDLE_FRAMES

    async def _closed_by_client(self, event: CloseConnection) -> None:
        verdict = _VERDICTS.get(event.code)  # wsproto's on a bad frame (or the client's)
        if verdict is not None:
            abuse[verdict] += 1
        reason = event.reason
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            # Not the client's close: wsproto's verdict on a bad frame, whose
            # reason is an error's text; the client is told a fixed phrase.
            log.debug("closing websocket (%d): %s", event.code, reason)
            reason = _REASONS.get(event.code, "protocol error")
            if reason == "invalid UTF-8" and event.reason == _EXTENSION_FAILED:
                reason = "invalid compressed data"
            event = CloseConnection(event.code, reason)
        if not self.closed:
            self.closed = True
            with contextlib.suppress(LocalProtocolError, LoomingError, OSError):
                await self._write(event.response())
        await self._disconnected(event.code, reason)

    async def _refuse(self, reason: CloseReason, why: str) -> None:
        """Close with ``reason``; the close frame says only the part of
        ``why`` before a colon (what follows is for the debug log)."""
        log.debug("closing websocket: %s", why)
        if not self.closed:
            self.closed = True
            with contextlib.suppress(LocalProtocolError, LoomingError, OSError):
                await self._write(CloseConnection(int(reason), why.partition(":")[0]))
        await self._disconnected(int(reason))

    async def _disconnected(self, code: int, reason: str | None = None) -> None:
        self.closed = True
        message: AsgiMessage = {"type": "websocket.disconnect", "code": code}
        if reason:
            message["reason"] = reason
        self._final = message
        # The application may not be reading: make room rather than wait.
        while self.inbox.full():
            _, size = self.inbox.get_nowait()
            self.queued_bytes -= size
        self.inbox.put_nowait((message, 0))
