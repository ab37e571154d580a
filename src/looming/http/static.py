"""A handler that serves the files of a read-only key-value store as a web site.

Per-target results (the key, its headers, and for small files the bytes
themselves) are cached: a repeated request costs a dictionary lookup and a
scan of its headers. A store that can change underneath its reader (a Git
store a ``git push`` publishes to) offers ``generation()``, a cheap value
that changes whenever its contents may have; the caches are dropped when it
does, so the next request sees the new contents.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import quote

from looming.bounded import Memo
from looming.devices.kv import EntryKind, KvRo
from looming.errors import DeviceError
from looming.http.content_types import content_type_for
from looming.http.dates import format_http_date, parse_http_date
from looming.http.message import Request, Response
from looming.http.paths import target_to_key
from looming.http.ranges import Unsatisfiable, parse_byte_ranges

log = logging.getLogger("looming.http.static")

STREAM_CHUNK = 256 * 1024

_NOT_FOUND_BODY = b"404 Not Found\n"
_PLAIN = (b"content-type", b"text/plain; charset=utf-8")
# Tuples, so the server validates them once (see Response).
_NOT_FOUND_HEADERS = (_PLAIN,)
_NOT_ALLOWED_HEADERS = (_PLAIN, (b"allow", b"GET, HEAD"))


@dataclass(slots=True)
class _File:
    """What is known of one file: enough to answer without asking the store."""

    key: str
    size: int
    etag: bytes
    modified: int
    content_type: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    not_modified_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes | None
    response: Response | None = None
    """The whole 200 response, for a file held in memory."""


@dataclass(slots=True)
class _Redirect:
    headers: tuple[tuple[bytes, bytes], ...]


@dataclass(slots=True)
class _Missing:
    pass


_MISSING = _Missing()
_Resolved = _File | _Redirect | _Missing


def _etag_matches(header: bytes, etag: bytes) -> bool:
    """Weak comparison of an If-None-Match list against our (strong) ETag."""
    stripped = header.strip()
    if stripped == b"*":
        return True
    for candidate in stripped.split(b","):
        candidate = candidate.strip()
        if candidate.startswith(b"W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


class StaticSite:
    """Serves ``kv`` over HTTP: ``GET`` and ``HEAD``, conditional requests, ranges.

    A directory is served through its ``index`` file (a request for the
    directory without a trailing slash is redirected to one). A target that
    does not name a file inside the store, including every attempt to escape
    it and every hidden file (a path segment starting with ``.``), is answered
    with 404. Files up to ``max_cached_file_bytes`` are kept
    in memory after the first request; larger ones are streamed from ``kv``.
    """

    def __init__(
        self,
        kv: KvRo,
        *,
        index: str = "index.html",
        max_cached_file_bytes: int = 1024 * 1024,
        max_cached_targets: int = 4096,
        cache_control: str | None = None,
    ) -> None:
        self.kv = kv
        self.index = index
        self.max_cached_file_bytes = max_cached_file_bytes
        self.max_cached_targets = max_cached_targets
        self._extra: list[tuple[bytes, bytes]] = []
        if cache_control is not None:
            self._extra.append((b"cache-control", cache_control.encode("ascii")))
        self._by_target: Memo[str, _Resolved] = Memo(max_cached_targets)
        self._by_key: dict[str, _File] = {}
        generation = getattr(kv, "generation", None)
        # None for stores that never change (crunched, a folder served as is):
        # their hot path does not pay for the check.
        self._generation_of: Callable[[], object] | None = (
            generation if callable(generation) else None
        )
        self._generation: object = None

    async def __call__(self, request: Request) -> Response:
        method = request.method
        if method != "GET" and method != "HEAD":
            return Response(405, _NOT_ALLOWED_HEADERS, b"405 Method Not Allowed\n")
        if self._generation_of is not None:
            self._revalidate(self._generation_of)
        resolved = self._by_target.get(request.target)
        if resolved is None:
            resolved = self._by_target.put(request.target, await self._resolve(request.target))
        if type(resolved) is _File:
            return await self._serve_file(request, resolved)
        if type(resolved) is _Redirect:
            return Response(301, resolved.headers, b"")
        return Response(404, _NOT_FOUND_HEADERS, _NOT_FOUND_BODY)

    def cached_response(self, method: bytes, target: bytes) -> Response | None:
        """The whole answer to a plain ``GET`` or ``HEAD`` of ``target`` when
        it is a file already held in memory, else None (then ask the usual
        way). For the server to call without a :class:`Request`, on requests
        without a body, conditional or Range fields."""
        if method != b"GET" and method != b"HEAD":
            return None
        if self._generation_of is not None:
            self._revalidate(self._generation_of)
        resolved = self._by_target.get(target.decode("latin-1"))
        if type(resolved) is _File:
            return resolved.response
        return None

    def _revalidate(self, generation_of: Callable[[], object]) -> None:
        try:
            generation = generation_of()
        except DeviceError as error:
            # A store that cannot say (its ref is being rewritten) is read
            # afresh rather than trusted.
            log.debug("store generation unknown: %s", error)
            generation = object()
        if generation != self._generation:
            # Read before anything is resolved, so what gets cached is at
            # least as new as the generation it is filed under.
            self._generation = generation
            self._by_target.clear()
            self._by_key.clear()

    async def _resolve(self, target: str) -> _Resolved:
        found = target_to_key(target)
        if found is None:
            return _MISSING
        key, trailing_slash = found
        if key.startswith(".") or "/." in key:
            # Hidden files (.env, .git/, .htpasswd) are never served, from a
            # folder read directly as from a crunched one (which leaves them out).
            return _MISSING
        try:
            kind = EntryKind.DICTIONARY if key == "" else await self.kv.exists(key)
            if kind is EntryKind.DICTIONARY:
                if not trailing_slash:
                    # Rebuilt from the checked key, never from the raw target:
                    # "//host/dir" must not become a protocol-relative redirect.
                    _, _, query = target.partition("?")
                    location = "/" + quote(key) + "/" + ("?" + query if query else "")
                    return _Redirect((_PLAIN, (b"location", location.encode("latin-1"))))
                key = f"{key}/{self.index}" if key else self.index
                kind = await self.kv.exists(key)
            elif trailing_slash:
                return _MISSING
            if kind is not EntryKind.VALUE:
                return _MISSING
            return await self._file(key)
        except DeviceError as error:
            log.debug("cannot serve %r: %s", target, error)
            return _MISSING

    async def _file(self, key: str) -> _File:
        cached = self._by_key.get(key)
        if cached is not None:
            return cached
        size = await self.kv.size(key)
        etag = b'"' + (await self.kv.digest(key)).encode("ascii") + b'"'
        modified = int(await self.kv.last_modified(key))
        content_type = content_type_for(key).encode("ascii")
        headers = [(b"content-type", content_type), (b"etag", etag)]
        if modified > 0:
            headers.append((b"last-modified", format_http_date(modified)))
        headers.append((b"accept-ranges", b"bytes"))
        headers.extend(self._extra)
        body = await self.kv.get(key) if size <= self.max_cached_file_bytes else None
        entry = _File(
            key, size, etag, modified, content_type, tuple(headers), tuple(headers[1:]), body
        )
        if body is not None:
            entry.response = Response(200, entry.headers, body)
        self._by_key[key] = entry
        return entry

    async def _serve_file(self, request: Request, entry: _File) -> Response:
        if_none_match = if_modified_since = range_header = if_range = None
        for name, value in request.headers:
            if name == b"if-none-match":
                if_none_match = value
            elif name == b"if-modified-since":
                if_modified_since = value
            elif name == b"range":
                range_header = value
            elif name == b"if-range":
                if_range = value
        if if_none_match is not None:
            if _etag_matches(if_none_match, entry.etag):
                return Response(304, entry.not_modified_headers, b"")
        elif if_modified_since is not None and entry.modified > 0:
            since = parse_http_date(if_modified_since)
            if since is not None and entry.modified <= since:
                return Response(304, entry.not_modified_headers, b"")
        if range_header is not None and self._if_range_holds(if_range, entry):
            try:
                ranges = parse_byte_ranges(range_header, entry.size)
            except Unsatisfiable:
                return Response(
                    416,
                    [_PLAIN, (b"content-range", b"bytes */%d" % entry.size)],
                    b"416 Range Not Satisfiable\n",
                )
            # Several ranges adding up to more than the file (overlaps, repeats)
            # are answered with the whole file rather than amplified.
            if ranges is not None and (
                len(ranges) == 1 or sum(last - first + 1 for first, last in ranges) <= entry.size
            ):
                return await self._serve_ranges(entry, ranges)
        if entry.response is not None:
            return entry.response
        headers = [*entry.headers, (b"content-length", b"%d" % entry.size)]
        return Response(200, headers, self._stream(entry.key, 0, entry.size))

    @staticmethod
    def _if_range_holds(if_range: bytes | None, entry: _File) -> bool:
        if if_range is None:
            return True
        value = if_range.strip()
        if value.startswith(b'"'):
            return value == entry.etag
        since = parse_http_date(value)
        return since is not None and entry.modified > 0 and entry.modified <= since

    async def _slice(self, entry: _File, first: int, last: int) -> bytes:
        if entry.body is not None:
            return entry.body[first : last + 1]
        return await self.kv.get_partial(entry.key, first, last - first + 1)

    async def _serve_ranges(self, entry: _File, ranges: list[tuple[int, int]]) -> Response:
        if len(ranges) == 1:
            first, last = ranges[0]
            headers = [
                *entry.headers,
                (b"content-range", b"bytes %d-%d/%d" % (first, last, entry.size)),
            ]
            if entry.body is None and last - first + 1 > self.max_cached_file_bytes:
                headers.append((b"content-length", b"%d" % (last - first + 1)))
                return Response(206, headers, self._stream(entry.key, first, last + 1))
            return Response(206, headers, await self._slice(entry, first, last))
        # Several ranges: one multipart/byteranges body (RFC 9110 section 14.6).
        boundary = b"looming-" + entry.etag.strip(b'"')[:32]
        parts: list[bytes] = []
        for first, last in ranges:
            parts.append(
                b"--%s\r\ncontent-type: %s\r\ncontent-range: bytes %d-%d/%d\r\n\r\n"
                % (boundary, entry.content_type, first, last, entry.size)
            )
            parts.append(await self._slice(entry, first, last))
            parts.append(b"\r\n")
        parts.append(b"--%s--\r\n" % boundary)
        headers = [(b"content-type", b"multipart/byteranges; boundary=" + boundary)]
        headers.extend(h for h in entry.headers if h[0] != b"content-type")
        return Response(206, headers, b"".join(parts))

    async def _stream(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        offset = start
        while offset < end:
            chunk = await self.kv.get_partial(key, offset, min(STREAM_CHUNK, end - offset))
            if not chunk:
                return
            offset += len(chunk)
            yield chunk
