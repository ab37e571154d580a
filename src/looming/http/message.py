"""Requests and responses as the HTTP server and client hand them around."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from looming.devices.flow import Flow

Headers = Sequence[tuple[bytes, bytes]]
"""Header fields as (name, value) byte pairs; names arrive lower-cased."""

Body = bytes | AsyncIterable[bytes]
"""A whole body, or an async iterable of chunks for a streamed one."""


class RequestBody(Protocol):
    """A request body read piece by piece, as the handler asks for it."""

    async def next_chunk(self) -> tuple[bytes, bool]:
        """The next piece and whether more follow; raises :class:`ClientGone`
        if the client went away or sent a body the server refuses."""
        ...


class ConnectionWatch(Protocol):
    """Tells a handler that its client went away, whether or not it is reading."""

    @property
    def gone(self) -> bool: ...

    def on_gone(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once when the client goes away (now if it has)."""
        ...

    def start(self) -> None:
        """Watch from now on (the handler is waiting to hear of a disconnect)."""
        ...


class ClientGone(OSError):
    """The client closed its connection (or broke its request) mid-exchange."""


SERVER_STOPPED = "looming.http: the server stopped"
"""The message of the cancellation of a handler's task by a stop that ran
out of time (not by the client's leaving): what it runs is cancelled too."""


@dataclass(slots=True)
class Request:
    """One parsed HTTP request.

    Its ``body`` is whole unless the handler asked for streamed bodies
    (``streams_request_body = True``): then ``body_stream`` gives it piece by
    piece and ``watch`` tells when the client goes away.
    """

    method: str
    target: str
    headers: Headers
    body: bytes = b""
    http_version: str = "1.1"
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    body_stream: RequestBody | None = None
    watch: ConnectionWatch | None = None

    @property
    def path(self) -> str:
        """The target without its query string (still percent-encoded)."""
        path, _, _ = self.target.partition("?")
        return path

    @property
    def query(self) -> str:
        """The query string after ``?`` (percent-encoded), or ``""``."""
        _, _, query = self.target.partition("?")
        return query

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Response:
    """An HTTP response a handler returns.

    ``body`` is either the whole body or an async iterable of chunks; a
    streamed body is sent chunked unless ``headers`` carry a Content-Length.
    For a whole body the server adds Content-Length itself. Date and Server
    headers are added by the server. Headers given as a tuple are validated
    once and then trusted when the same tuple comes again, so a handler that
    answers from a cache should keep its header tuples.
    """

    status: int = 200
    headers: Headers = ()
    body: Body = b""


@dataclass(slots=True)
class ClientResponse:
    """A response as the client received it, with its whole body."""

    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    http_version: str

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or ``None``."""
        lowered = name.lower()
        for key, value in self.headers:
            if key == lowered:
                return value
        return None


Handler = Callable[[Request], Awaitable[Response]]
"""Serves one request."""


class ExtendedConnect(Protocol):
    """The HTTP/2 stream of an RFC 8441 websocket: its response is HEADERS."""

    async def respond(self, status: int, headers: list[tuple[bytes, bytes]], *, end: bool) -> None:
        """Send the response's HEADERS; ``end`` ends the stream with them."""


class ServeWebSocket(Protocol):
    """A handler's websocket side: serves a connection upgraded by
    ``Upgrade: websocket`` (``leftover``: bytes read past the request), or an
    HTTP/2 stream opened by an extended CONNECT (``extended`` given); gives
    the status answered and the bytes sent, for the access log."""

    def __call__(
        self,
        request: Request,
        flow: Flow,
        leftover: bytes,
        extended: ExtendedConnect | None = None,
        /,
    ) -> Awaitable[tuple[int, int]]: ...
