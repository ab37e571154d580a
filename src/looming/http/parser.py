"""Request parsers for :class:`~looming.http.server.HttpServer`: h11's, or
httptools' (llhttp, in C) when it is installed (``looming[fast]``).

The server reads requests through the part of ``h11.Connection`` that
:class:`RequestParser` names. :class:`HttptoolsParser` offers the same on
llhttp and hands out h11's event types for bodies and a :class:`RequestHead`
(h11.Request's fields, without h11's second pass over what llhttp has
checked) for heads, so everything after the parse is shared;
what llhttp lets through and h11 refuses (a target with bytes outside
visible ASCII, a second Host, a Transfer-Encoding other than chunked, no
Host on HTTP/1.1) is refused here with h11's status, and a head llhttp
refuses is read again by h11 (see :class:`HttptoolsParser`). One parser
serves a whole connection (llhttp keeps its state from one request to the
next), where h11's is made afresh for each request.
"""

from __future__ import annotations

import importlib
import re
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import h11

from looming.http.h11_strict import StrictReceiveBuffer

PARSERS = ("auto", "h11", "httptools")
"""The values of ``ServerConfig.parser``: ``auto`` is httptools when installed."""

HTTPTOOLS = "httptools"

_TARGET = re.compile(rb"[\x21-\x7e]+")
_TARGET_MATCH = _TARGET.fullmatch
"""A request target as h11 takes it (RFC 9112 section 3.2: visible ASCII)."""
_PLAIN_TARGET_MATCH = re.compile(rb"[\x21\x22\x24-\x7e]+").fullmatch
"""Such a target without a ``#``: one with a fragment is taken without it
(:func:`without_fragment`), on the usual path."""


def without_fragment(target: bytes) -> bytes:
    """``target`` without its ``#fragment``, which a client should not send
    and which is no part of the resource asked for (RFC 9110 section 7.1:
    not in the path nor in the query), as uvicorn takes it. A target that
    is only a fragment is refused."""
    kept = target.partition(b"#")[0]
    if not kept:
        raise _remote_error("illegal request target")
    return kept


_END = h11.EndOfMessage()


_found: list[Any] = []


def httptools_module() -> Any:
    """httptools, or None when it is not installed. Found by name at run
    time, from the host's installation: the build packs no compiled parser
    into images, where h11 serves."""
    if not _found:
        try:
            _found.append(importlib.import_module(HTTPTOOLS))
        except ImportError:
            _found.append(None)
    return _found[0]


def chosen_parser(choice: str) -> str:
    """``h11`` or ``httptools``, for ``choice`` (one of :data:`PARSERS`)."""
    if choice not in PARSERS:
        raise ValueError(f"parser {choice!r} is not one of {', '.join(PARSERS)}")
    if choice == "auto":
        return "httptools" if httptools_module() is not None else "h11"
    if choice == "httptools" and httptools_module() is None:
        raise ValueError("the httptools parser needs httptools: pip install 'looming[fast]'")
    return choice


def _remote_error(message: str, status: int = 400) -> h11.RemoteProtocolError:
    return h11.RemoteProtocolError(message, error_status_hint=status)


MAX_CHUNK_SIZE = 0xFFFF_FFFF_FFFF_FFFF
"""The largest chunk size taken (16 hex digits), as llhttp takes."""


class H11Parser(h11.Connection):
    """h11's server side, refusing a chunk size over :data:`MAX_CHUNK_SIZE`
    at once: h11 takes up to 20 hex digits and would wait for the chunk.
    Its buffer refuses bare CR or LF, control bytes and chunk size lines
    outside the grammar (see :mod:`looming.http.h11_strict`)."""

    def __init__(self, max_header_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self._receive_buffer = StrictReceiveBuffer()

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        if self.their_state is h11.IDLE:
            self._skip_blank_lines()
        event = super().next_event()
        if type(event) is h11.Request and b"#" in event.target:
            # h11's events are frozen; this one is not yet handed out.
            object.__setattr__(event, "target", without_fragment(event.target))
        size = getattr(self._reader, "_bytes_in_chunk", 0)  # what the chunk still holds
        if type(event) is h11.Data and event.chunk_start:
            size += len(event.data)
        if size > MAX_CHUNK_SIZE:
            raise _remote_error("chunk size over 16 hex digits")
        return event

    def partial_head(self) -> RequestHead | None:
        """:meth:`RequestParser.partial_head`: h11 keeps a head's bytes
        until it is whole."""
        return request_line_head(bytes(self._receive_buffer._data))

    def _skip_blank_lines(self) -> None:
        """Drop the CR and LF bytes before a request line, as llhttp does
        (RFC 9112 section 2.2: a server SHOULD ignore at least one empty
        line before a request), whether they came in the read that ended
        the last request or in reads of their own. h11 alone refuses them,
        and how TCP cut the bytes would then decide a client's answer."""
        buffer = self._receive_buffer
        data = buffer._data
        blank = len(data) - len(data.lstrip(b"\r\n"))
        if blank:
            buffer._extract(blank)


FRAMING = 1
"""A head note: the request has Content-Length or Transfer-Encoding."""
UPGRADE = 2
"""A head note: the request has an Upgrade field."""
CLOSE = 4
"""A head note: a Connection field says ``close``."""
EXPECT = 8
"""A head note: the request has an Expect field."""
CONDITIONAL = 16
"""A head note: the request has an ``If-*`` or a Range field."""


def _note(name: bytes, value: bytes) -> int:
    """The head note a field gives (0 for most fields)."""
    if name == b"content-length" or name == b"transfer-encoding":
        return FRAMING
    if name == b"upgrade":
        return UPGRADE
    if name == b"connection":
        return CLOSE if b"close" in value.lower() else 0
    if name == b"expect":
        return EXPECT
    if name.startswith(b"if-") or name == b"range":
        return CONDITIONAL
    return 0


_NOTED = frozenset(
    [
        b"content-length",
        b"transfer-encoding",
        b"upgrade",
        b"connection",
        b"expect",
        b"range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"if-range",
    ]
)
"""The names :func:`_note` looks at (others starting with ``if-`` too)."""


def head_notes(target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, int]:
    """What the server asks of every head, in one pass over its fields: the
    head notes (:data:`FRAMING`, ...) and its size (the target and fields)."""
    notes = 0
    size = len(target)
    for name, value in headers:
        size += len(name) + len(value) + 4
        if name in _NOTED or name[:3] == b"if-":
            notes |= _note(name, value)
    return notes, size


class RequestHead:
    """A request's head as llhttp read it: h11.Request's fields, with the
    names lower-cased, and without h11's second pass over them."""

    __slots__ = ("expects_continue", "headers", "http_version", "method", "notes", "size", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: tuple[tuple[bytes, bytes], ...],
        http_version: bytes,
        expects_continue: bool = False,
        notes: int = -1,
        size: int = -1,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.http_version = http_version
        self.expects_continue = expects_continue
        """Whether it carries ``Expect: 100-continue`` (HTTP/1.1 only)."""
        if notes < 0 or size < 0:
            notes, size = head_notes(target, headers)
        self.notes = notes
        """Head notes (see :func:`head_notes`)."""
        self.size = size
        """The target's and the fields' bytes (see :func:`head_notes`)."""


Head = h11.Request | RequestHead
"""A request head from either parser."""

ParserEvent = h11.Event | RequestHead | type[h11.NEED_DATA] | type[h11.PAUSED]


class RequestParser(Protocol):
    """What the server uses of a request parser (h11.Connection's names)."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> ParserEvent: ...

    @property
    def trailing_data(self) -> tuple[bytes, bool]: ...

    @property
    def they_are_waiting_for_100_continue(self) -> bool: ...

    @property
    def their_state(self) -> type[h11._util.Sentinel]: ...

    def partial_head(self) -> RequestHead | None:
        """The request line of a head not yet whole (refused as too
        large, say), as a head without fields, once that line is whole."""


_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}

_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])\r\n")
"""A whole request line (RFC 9112 section 3): method, target, version."""


def request_line_head(data: bytes, start: int = 0) -> RequestHead | None:
    """The request line at ``start`` in ``data`` (blank lines before it
    skipped) as a head without fields, when it is whole; else None: what
    a refusal of the rest of the head is logged with, however the bytes
    were cut into reads."""
    while start < len(data) and data[start] in b"\r\n":
        start += 1
    match = _REQUEST_LINE.match(data, start)
    if match is None:
        return None
    method, target, version = match.groups()
    return RequestHead(method, _logged_target(target), (), version)


def _logged_target(target: bytes) -> bytes:
    """``target`` as a refused request's record shows it (see without_fragment)."""
    return target.partition(b"#")[0] or target


def _checked_fields(
    fields: list[tuple[bytes, bytes]], version: bytes, target: bytes
) -> tuple[tuple[tuple[bytes, bytes], ...], int, int]:
    """The head's fields with lower-case names, checked by h11's rules that
    llhttp does not apply: one Host (none is an error on HTTP/1.1), and a
    Transfer-Encoding that is exactly ``chunked`` (else 501); values without
    the trailing whitespace llhttp keeps. With them, in the same pass, the
    head's notes and size (as :func:`head_notes` gives them)."""
    hosts = 0
    chunked = False
    checked = []
    notes = 0
    size = len(target)
    for name, value in fields:
        name = name.lower()
        if value and value[-1] in b" \t":
            value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace, h11 not
        size += len(name) + len(value) + 4
        if name == b"host":
            hosts += 1
        elif name in _NOTED or name[:3] == b"if-":
            notes |= _note(name, value)
            if name == b"transfer-encoding":
                if chunked:
                    raise _remote_error("multiple Transfer-Encoding headers", 501)
                value = value.lower()
                if value != b"chunked":
                    raise _remote_error("Only Transfer-Encoding: chunked is supported", 501)
                chunked = True
        checked.append((name, value))
    if hosts == 0 and version == b"1.1":
        raise _remote_error("Missing mandatory Host: header")
    if hosts > 1:
        raise _remote_error("Found multiple Host: headers")
    return tuple(checked), notes, size


def _asks_for_100_continue(head: Head) -> bool:
    if head.http_version != b"1.1":
        return False
    return any(
        name == b"expect" and b"100-continue" in [t.strip().lower() for t in value.split(b",")]
        for name, value in head.headers
    )


def _after_messages(raw: bytes, count: int, limit: int) -> bytes | None:
    """What follows the first ``count`` whole requests of ``raw``, by h11's
    reading; None when h11 does not find them whole."""
    for _ in range(count):
        conn = H11Parser(limit)  # (blank lines before a request skipped, as llhttp does)
        conn.receive_data(raw)
        try:
            event = conn.next_event()
            while type(event) is not h11.EndOfMessage:
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return None
                event = conn.next_event()
        except h11.RemoteProtocolError:
            return None
        raw = conn.trailing_data[0]
    return raw


class HttptoolsParser:
    """h11.Connection's reading side, on httptools, for a whole connection.

    Events are queued as llhttp finds them (a read may hold several
    pipelined requests); an error is raised once the events before it are
    taken, as h11 does. After a request asking to upgrade, the bytes behind
    it are :attr:`trailing_data` and nothing more is parsed; a body it
    announces is read first, by h11 (see :meth:`_read_body_by_h11`).

    llhttp refuses some heads that h11 takes (a method it does not know, a
    target without its leading slash): when a head fails, h11 reads that
    request from its first byte instead, so each request is answered as h11
    alone would answer it. h11 is held to llhttp's line grammar (bare CR or
    LF, control bytes: see :mod:`looming.http.h11_strict`), so what llhttp
    refuses for how lines end or frame the body h11 refuses too. The bytes since the last point
    where no request was under way (at most twice the head limit) are kept
    for that.
    """

    __slots__ = (
        "_closed",
        "_completed",
        "_error",
        "_events",
        "_h11",
        "_head_bytes",
        "_head_queued",
        "_headers",
        "_in_head",
        "_in_message",
        "_limit",
        "_module",
        "_parser",
        "_raw",
        "_raw_size",
        "_trailing",
        "_upgraded",
        "_url",
        "_waiting_100",
        "h11_raw",
        "read_by_h11",
    )

    def __init__(self, max_header_bytes: int) -> None:
        self._module = module = httptools_module()
        self._parser = module.HttpRequestParser(self)
        self._limit = max_header_bytes
        self._events: deque[ParserEvent] = deque()
        self._error: h11.RemoteProtocolError | None = None
        self._h11: h11.Connection | None = None
        """h11's parser, once it has taken over (see the class's notes)."""
        self.h11_raw: list[bytes] | None = None
        """What h11 was handed since it took over, from its request's first byte."""
        self.read_by_h11 = False
        """Whether h11 read the last request head handed out."""
        self._closed = False
        self._upgraded = False
        self._trailing = b""
        self._in_message = False
        self._in_head = False
        self._head_queued = False
        self._head_bytes = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._waiting_100 = False
        self._raw: list[bytes] = []
        self._raw_size = 0
        self._completed = 0

    # --- llhttp's callbacks ----------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = self._in_head = True
        self._head_queued = False
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            self._headers.append((name, value))
        # Trailer fields of a chunked body are dropped, as the server does.

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        parser = self._parser
        target = self._url
        if _TARGET_MATCH(target) is None:
            raise _remote_error("illegal request target")
        if b"#" in target:
            target = without_fragment(target)
        given = parser.get_http_version()
        version = _VERSIONS.get(given)
        if version is None:
            if given == "0.9":  # a request line without a version: h11 refuses it so
                raise _remote_error("illegal request line")
            version = given.encode("ascii")
        headers, notes, size = _checked_fields(self._headers, version, target)
        head = RequestHead(parser.get_method(), target, headers, version, False, notes, size)
        if notes & EXPECT and version == b"1.1":
            head.expects_continue = _asks_for_100_continue(head)
        self._events.append(head)
        self._head_queued = True

    def on_body(self, body: bytes) -> None:
        self._events.append(h11.Data(data=body))

    def on_message_complete(self) -> None:
        self._in_message = False
        self._completed += 1
        self._events.append(_END)

    # --- h11.Connection's reading side -----------------------------------

    def receive_data(self, data: bytes) -> None:
        if self._h11 is not None:
            self._h11.receive_data(data)
            if self.h11_raw is not None:
                self.h11_raw.append(data)
            return
        if self._upgraded:
            self._trailing += data
            self._closed = self._closed or not data
            return
        if not data:
            self._closed = True
            if not self._in_message and self._error is None:
                self._end_between_requests()
            return
        if self._error is not None or self._closed:
            return
        if not self._in_message:
            # No request under way: a request's first byte is in ``data``.
            self._raw.clear()
            self._raw_size = self._completed = 0
            self._head_queued = False
            if data[0] in b"\r\n":
                # Blank lines at the start of a read: h11 reads on from here
                # and skips them (H11Parser), as llhttp skips those after a
                # request in the same read (RFC 9112 section 2.2).
                self._raw.append(data)
                self._raw_size = len(data)
                self._hand_to_h11()
                return
        self._raw_size += len(data)
        if self._raw_size <= 2 * self._limit:
            self._raw.append(data)
        completed = self._completed
        self._feed(data)
        if self._in_head and self._error is None and self._h11 is None:
            if self._completed != completed:
                # A head that began after another request's end in the same
                # read: what llhttp handed over of it so far (a field in
                # progress is counted with the next read), not the whole read.
                self._head_bytes = len(self._url) + sum(
                    len(name) + len(value) + 4 for name, value in self._headers
                )
            else:
                self._head_bytes += len(data)
            if self._head_bytes > self._limit:
                self._error = _remote_error("request head too large", 431)

    def _feed(self, data: bytes) -> None:
        module = self._module
        try:
            self._parser.feed_data(data)
        except module.HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0] :]
            if not self._read_body_by_h11(rest):
                self._upgraded = True
                self._trailing = rest
        except h11.RemoteProtocolError as error:
            self._error = error
        except module.HttpParserError as error:
            self._error = _remote_error(str(error))
            self._hand_to_h11()

    def _read_body_by_h11(self, rest: bytes) -> bool:
        """llhttp stops after the head of a request asking to upgrade, as if
        it had no body, and leaves the rest unread. A body its head announces
        is still this request's (the server answers it before any switch):
        h11 reads it, set up by a head that frames it alike, and what
        follows is the next request's. Whether there was such a body."""
        events = self._events
        if len(events) < 2 or events[-1] is not _END or type(events[-2]) is not RequestHead:
            return False
        head = events[-2]
        if not head.notes & FRAMING:
            return False
        framing = b""
        for name, value in head.headers:
            if name == b"transfer-encoding":
                framing = b"transfer-encoding: chunked\r\n"  # (checked: nothing else)
                break
            if name == b"content-length" and value.strip(b"0"):
                framing = b"content-length: " + value + b"\r\n"
        if not framing:
            return False  # Content-Length: 0: the upgrade may go on
        expect = b"expect: 100-continue\r\n" if head.expects_continue else b""
        conn = H11Parser(self._limit)
        conn.receive_data(b"POST / HTTP/1.1\r\nhost: x\r\n" + framing + expect + b"\r\n")
        conn.next_event()  # the head's stand-in
        if rest:  # (empty would tell h11 the client closed)
            conn.receive_data(rest)
        events.pop()  # llhttp's end of a message without a body
        self._completed -= 1
        self._h11 = conn
        return True

    def _hand_to_h11(self) -> None:
        """llhttp refused a head: h11 reads that request from its first byte."""
        if self._head_queued or self._raw_size > 2 * self._limit:
            return  # the head was read: the body is what is wrong
        rest = _after_messages(b"".join(self._raw), self._completed, self._limit)
        if rest is None:
            return
        conn = H11Parser(self._limit)
        conn.receive_data(rest)
        self._h11 = conn
        self.h11_raw = [rest]
        self._error = None
        self._raw.clear()

    def _end_between_requests(self) -> None:
        """The client closed between requests: bytes it sent after the last
        one are h11's to judge (blank lines it skips, as llhttp does)."""
        if not self._raw or self._raw_size > 2 * self._limit:
            return
        rest = _after_messages(b"".join(self._raw), self._completed, self._limit)
        if rest:
            conn = H11Parser(self._limit)
            conn.receive_data(rest)
            conn.receive_data(b"")
            self._h11 = conn

    def next_event(self) -> ParserEvent:
        events = self._events
        if events:
            event = events.popleft()
            if type(event) is RequestHead:
                self._waiting_100 = event.expects_continue
            else:
                self._waiting_100 = False
            return event
        if self._h11 is not None:
            event = self._h11.next_event()
            if type(event) is h11.Request:
                self.read_by_h11 = True
            return event
        if self._error is not None:
            raise self._error
        if self._upgraded:
            return h11.PAUSED
        if self._closed:
            if self._in_message:
                self._error = _remote_error("the client closed the connection mid-request")
                raise self._error
            return h11.ConnectionClosed()
        return h11.NEED_DATA

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        if self._h11 is not None:
            return self._h11.trailing_data
        return self._trailing, self._closed

    def partial_head(self) -> RequestHead | None:
        """:meth:`RequestParser.partial_head`. llhttp has read the request
        line once a field is whole; before, the line is looked for in the
        bytes kept since the request began (see the class's notes)."""
        if self._h11 is not None:
            inner = self._h11
            return inner.partial_head() if isinstance(inner, H11Parser) else None
        if not self._in_head or not self._url:
            return None
        parser = self._parser
        method = parser.get_method()
        if self._headers:
            version = parser.get_http_version().encode("ascii")
            return RequestHead(method, _logged_target(self._url), (), version)
        kept = b"".join(self._raw)
        start = kept.rfind(method + b" " + self._url + b" ")
        return request_line_head(kept, start) if start >= 0 else None

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        if self._h11 is not None and not self._events:
            return self._h11.they_are_waiting_for_100_continue
        return self._waiting_100

    @property
    def their_state(self) -> type[h11._util.Sentinel]:
        if self._h11 is not None and not self._events:
            return self._h11.their_state
        if self._in_message or self._events:
            return h11.SEND_BODY
        return h11.IDLE

    @property
    def reusable(self) -> bool:
        """Whether the next request is read on here: not after an upgrade,
        nor once h11 has read a request (the bytes behind it go to a new
        parser); an error is raised here, after the requests before it."""
        if self._upgraded and not self._events:
            return False
        return self._h11 is None or self._h11.their_state is h11.IDLE
