"""Response heads and body framing (RFC 9112 sections 4, 6 and 7).

h11 parses every request; responses are written here instead, because a
response head is mostly the same bytes again and again: the handler's headers
are validated with h11's own rules and rendered once per distinct header
tuple, the status line once per status, the Date line once per second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

import h11

from looming.bounded import Memo
from looming.http.message import Headers

_STATUS_LINES: dict[int, bytes] = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("ascii"))
    for status in HTTPStatus
}
_STATUS_LINES[413] = b"HTTP/1.1 413 Content Too Large\r\n"  # RFC 9110's name

CONNECTION_CLOSE = b"connection: close\r\n"

_PERSISTENCE = frozenset((b"close", b"keep-alive", b""))
"""Connection tokens that only say whether the connection persists: the
server decides that and writes the header itself."""
CHUNKED = b"transfer-encoding: chunked\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    return line


def reason_phrase(status: int) -> bytes:
    """The reason phrase of ``status`` (empty when it has none)."""
    return status_line(status)[13:-2]


def body_not_allowed(status: int) -> bool:
    """Whether a response with ``status`` never has a body (RFC 9110 sections 6.4.1)."""
    return status < 200 or status == 204 or status == 304


class InvalidHeaders(ValueError):
    """A handler's headers break HTTP's rules (they would allow injection)."""


@dataclass(frozen=True, slots=True)
class PreparedHeaders:
    """A handler's headers, validated and rendered as header lines."""

    lines: bytes
    """The header lines to send, without framing headers (ours are added)."""
    declared_length: int | None
    """The Content-Length the handler gave, if any."""
    close: bool
    """Whether the handler asked for ``Connection: close``."""
    has_date: bool
    has_server: bool


def prepare_headers(headers: Headers) -> PreparedHeaders:
    """Validate ``headers`` by h11's rules and render them.

    Content-Length and Transfer-Encoding are taken out: the server frames the
    body itself (the handler's Content-Length is kept in ``declared_length``).
    Raises :class:`InvalidHeaders`.
    """
    try:
        h11.Response(status_code=200, headers=list(headers))
    except h11.LocalProtocolError as error:
        raise InvalidHeaders(str(error)) from error
    lines: list[bytes] = []
    declared: int | None = None
    close = has_date = has_server = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            declared = int(value)
            continue
        if lowered == b"transfer-encoding":
            continue
        if lowered == b"connection":
            tokens = {token.strip().lower() for token in value.split(b",")}
            close = close or b"close" in tokens
            if tokens <= _PERSISTENCE:
                continue  # the server writes its own, once (close or not)
        elif lowered == b"date":
            has_date = True
        elif lowered == b"server":
            has_server = True
        lines.append(name + b": " + value + b"\r\n")
    return PreparedHeaders(b"".join(lines), declared, close, has_date, has_server)


class HeaderCache:
    """Prepared headers per distinct header tuple (lists are prepared each time)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._prepared: Memo[tuple[tuple[bytes, bytes], ...], PreparedHeaders] = Memo(max_entries)
        self._lookup = self._prepared.get  # bound once: a hit is one dict lookup

    def prepare(self, headers: Headers) -> PreparedHeaders:
        if type(headers) is tuple:
            prepared = self._lookup(headers)
            if prepared is None:
                prepared = self._prepared.put(headers, prepare_headers(headers))
            return prepared
        return prepare_headers(headers)


def chunk(data: bytes) -> Sequence[bytes]:
    """``data`` as one chunk of a chunked body (RFC 9112 section 7.1)."""
    return (b"%x\r\n" % len(data), data, b"\r\n")
