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
"""

from __future__ import annotations

import asyncio
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
from wsproto.connection import Connection
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
``send_stalled``."""
_VERDICTS = {1002: "protocol_error", 1007: "protocol_error", 1009: "message_too_big"}


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


def refusal(status: int) -> bytes:
    """A whole HTTP/1.1 response refusing a handshake: its reason phrase, a
    Date (the host's time: a session has no clock device of its own; time
    is virtual in the simulator) and no body; the connection closes."""
    date = format_http_date(time.time())
    return status_line(status) + (
        b"date: %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % date
    )


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
        if not await self._handshake(leftover):
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
        if self.extended is not None:
            versions = _header_list(request.headers, b"sec-websocket-version")
            if versions != ["13"]:
                await self.extended.respond(400, [(b"sec-websocket-version", b"13")], end=True)
                return False
            self.subprotocols = _header_list(request.headers, b"sec-websocket-protocol")
            return True
        head = [b"GET " + request.target.encode("latin-1") + b" HTTP/1.1\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in request.headers]
        self.ws.receive_data(b"".join(head) + b"\r\n" + leftover)
        handshake = next((e for e in self.ws.events() if isinstance(e, WsRequest)), None)
        if handshake is None:
            await self.flow.write(refusal(400))
            return False
        self.subprotocols = list(handshake.subprotocols)
        return True

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
        await self.extended.respond(200, headers, end=False)

    async def _reject(self, status: int) -> None:
        """Refuse the handshake with ``status`` (no websocket follows)."""
        if self.extended is not None:
            await self.extended.respond(status, [], end=True)
        else:
            self.ws.send(RejectConnection(status_code=status))  # (wsproto's state: closed)
            await self.flow.write(refusal(status))

    async def _read(self) -> None:
        """Client frames into the inbox, pings answered, until the close."""
        assembly: _Assembly | None = _Assembly()
        try:
            while assembly is not None:
                data = await self.flow.read()
                if not data:
                    await self._disconnected(1006)
                    return
                self.ws.receive_data(data)
                assembly = await self._take_events(assembly)
        except RemoteProtocolError as error:
            abuse["protocol_error"] += 1
            await self._refuse(CloseReason.PROTOCOL_ERROR, str(error))
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
        if not self.closed:
            self.closed = True
            with contextlib.suppress(LocalProtocolError, LoomingError, OSError):
                await self._write(event.response())
        await self._disconnected(event.code, event.reason)

    async def _refuse(self, reason: CloseReason, why: str) -> None:
        log.debug("closing websocket: %s", why)
        if not self.closed:
            self.closed = True
            with contextlib.suppress(LocalProtocolError, LoomingError, OSError):
                await self._write(CloseConnection(int(reason), why[:100]))
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
