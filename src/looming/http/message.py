"""Requests and responses as the HTTP server and client hand them around."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass

Headers = Sequence[tuple[bytes, bytes]]
"""Header fields as (name, value) byte pairs; names arrive lower-cased."""

Body = bytes | AsyncIterable[bytes]
"""A whole body, or an async iterable of chunks for a streamed one."""


@dataclass(slots=True)
class Request:
    """One parsed HTTP request with its whole body."""

    method: str
    target: str
    headers: Headers
    body: bytes = b""
    http_version: str = "1.1"
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None

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
