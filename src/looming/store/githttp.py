"""Git's smart HTTP protocol run by dulwich's WSGI application, behind
looming's HTTP server: the request as a WSGI environ, the application on a
thread of its own with its output streamed back, and the handlers the store
uses (pushes decided by :mod:`looming.store.receive`)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import queue
import tempfile
import threading
import urllib.parse
import zlib
from collections.abc import AsyncIterator
from typing import Any

from looming.errors import LoomingError
from looming.http.message import ClientGone, Request, Response
from looming.store.receive import Receiver, receive_handler


def git_app(git: Any, receiver: Receiver | None) -> Any:
    """dulwich's WSGI application over the dulwich repository ``git``;
    pushes go to ``receiver`` (None: the request is not a push)."""
    from dulwich.server import DEFAULT_HANDLERS, DictBackend
    from dulwich.web import make_wsgi_chain

    handlers: dict[bytes, Any] = dict(DEFAULT_HANDLERS)
    handlers[b"git-upload-pack"] = _upload_handler()
    if receiver is not None:
        handlers[b"git-receive-pack"] = receive_handler(receiver)
    repos: dict[str, Any] = {"/": git}
    return make_wsgi_chain(DictBackend(repos), handlers=handlers)


SIDEBAND_PIECE = 65515  # a pkt-line's 65520 bytes less its length and channel


def linear_sideband(proto: Any) -> None:
    """Give a dulwich protocol a ``write_sideband`` linear in the blob's size.

    dulwich's slices the rest of the blob after each 64 KiB piece, copying
    it again each time: quadratic, 14 s of copying to send a 50 MB object
    (0.6 s for 10 MB). Slices of a memoryview copy nothing."""
    write_pkt_line = proto.write_pkt_line

    def write_sideband(channel: int, blob: bytes) -> None:
        view = memoryview(blob)
        prefix = bytes((channel,))
        for start in range(0, len(view), SIDEBAND_PIECE):
            write_pkt_line(prefix + view[start : start + SIDEBAND_PIECE])

    proto.write_sideband = write_sideband


_UPLOAD_HANDLER: list[type] = []


def _upload_handler() -> type:
    if not _UPLOAD_HANDLER:
        from dulwich.server import UploadPackHandler

        class StoreUploadPack(UploadPackHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                linear_sideband(self.proto)

        _UPLOAD_HANDLER.append(StoreUploadPack)
    return _UPLOAD_HANDLER[0]


class BodyTooLarge(LoomingError):
    """A compressed request body that inflates past the size limit."""


def plain_body(request: Request, limit: int) -> bytes:
    """The request body, inflated if git sent it gzip-compressed (as it does
    large fetch negotiations), refused past ``limit`` bytes: inflated here,
    with a bound, rather than by dulwich without one (a small gzip bomb
    would otherwise inflate without end)."""
    encoding = (request.header(b"content-encoding") or b"").strip().lower()
    if encoding in (b"", b"identity"):
        return request.body
    if encoding not in (b"gzip", b"x-gzip"):
        raise LoomingError(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(request.body, limit + 1)
    except zlib.error as error:
        raise LoomingError(f"the gzip body does not inflate: {error}") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"the body inflates past the limit of {limit} bytes")
    return body


class _Spool:
    """A request body written to an unnamed file in ``folder`` as it
    arrives, inflated when gzip-encoded, refused past ``limit`` bytes."""

    def __init__(self, folder: str, limit: int, gzipped: bool) -> None:
        self.file: Any = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (the caller's)
        self.limit = limit
        self.size = 0
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None

    def write(self, chunk: bytes) -> None:
        if self._inflater is not None:
            try:
                chunk = self._inflater.decompress(chunk, self.limit + 1 - self.size)
            except zlib.error as error:
                raise LoomingError(f"the gzip body does not inflate: {error}") from None
            if self._inflater.unconsumed_tail:
                raise BodyTooLarge(f"the body inflates past the limit of {self.limit} bytes")
        self.size += len(chunk)
        if self.size > self.limit:
            raise BodyTooLarge(
                f"the body is over the limit of {self.limit} bytes (the served store's "
                "max_body_bytes, `looming store serve --max-body-bytes`)"
            )
        self.file.write(chunk)


DRAIN_BYTES = 64 << 20
"""How much of a body past the limit is read and dropped before the 413 is
sent: a client still sending when the server closes sees the connection
reset, not the 413 (git says "curl 55 Send failure"). The server's own
limit is set this much higher (:func:`looming.store.http.serve`)."""


async def _drain(request: Request) -> None:
    """Read and drop the rest of a refused body, up to :data:`DRAIN_BYTES`."""
    stream = request.body_stream
    drained = 0
    with contextlib.suppress(ClientGone):
        while stream is not None and drained <= DRAIN_BYTES:
            chunk, more = await stream.next_chunk()
            drained += len(chunk)
            if not more:
                return


async def spooled_body(request: Request, folder: str, limit: int) -> tuple[Any, int]:
    """The request body in an unnamed temporary file in ``folder`` (its
    bytes never all in memory), rewound, and its size: a push's pack
    can be far larger than what a server should hold. Inflated if git sent
    it gzip-compressed; past ``limit`` bytes :class:`BodyTooLarge`."""
    encoding = (request.header(b"content-encoding") or b"").strip().lower()
    if encoding not in (b"", b"identity", b"gzip", b"x-gzip"):
        raise LoomingError(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}")
    spool = _Spool(folder, limit, encoding in (b"gzip", b"x-gzip"))
    try:
        stream = request.body_stream
        if stream is None:
            spool.write(request.body)
        else:
            while True:
                chunk, more = await stream.next_chunk()
                if chunk:
                    spool.write(chunk)
                if not more:
                    break
        spool.file.seek(0)
    except BodyTooLarge:
        spool.file.close()
        await _drain(request)
        raise
    except BaseException:
        spool.file.close()
        raise
    return spool.file, spool.size


async def whole_body(request: Request, limit: int) -> bytes:
    """The request body in memory (read from its stream when streamed),
    still encoded; past ``limit`` bytes :class:`BodyTooLarge`."""
    stream = request.body_stream
    if stream is None:
        if len(request.body) > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit} bytes")
        return request.body
    parts: list[bytes] = []
    size = 0
    while True:
        chunk, more = await stream.next_chunk()
        size += len(chunk)
        if size > limit:
            await _drain(request)
            raise BodyTooLarge(f"the body is over the limit of {limit} bytes")
        parts.append(chunk)
        if not more:
            return b"".join(parts)


def wsgi_environ(request: Request, body: bytes | tuple[Any, int]) -> dict[str, Any]:
    """The WSGI environ of ``request`` with ``body`` (already plain): bytes,
    or an open file and its size."""
    source, size = (io.BytesIO(body), len(body)) if isinstance(body, bytes) else body
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "PATH_INFO": urllib.parse.unquote(request.path),
        "QUERY_STRING": request.query,
        "SERVER_NAME": "looming",
        "SERVER_PORT": "0",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": source,
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(size),
    }
    for name, value in request.headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value.decode("latin-1")
        elif key not in (
            "CONTENT_LENGTH",
            "AUTHORIZATION",
            "TRANSFER_ENCODING",
            "CONTENT_ENCODING",
        ):
            # The body arrives whole and de-chunked: a chunked push (git
            # sends pushes over http.postBuffer, 1 MiB, that way) must not
            # be de-chunked again by dulwich.
            environ["HTTP_" + key] = value.decode("latin-1")
    return environ


_END = object()


class WsgiRun:
    """A WSGI app run on a thread of its own; its output comes out through a
    queue of :data:`STREAM_DEPTH` chunks, so a large clone is sent as dulwich
    makes it and never held whole (the thread waits while the client reads)."""

    STREAM_DEPTH = 8

    def __init__(self, app: Any, environ: dict[str, Any]) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(self.STREAM_DEPTH)
        self._abandoned = threading.Event()
        self._started: list[Any] = []
        thread = threading.Thread(
            target=self._produce, args=(app, environ), name="git http", daemon=True
        )
        thread.start()

    def _put(self, item: Any) -> bool:
        while not self._abandoned.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _start_response(self, status: str, headers: list[tuple[str, str]], _exc: Any = None) -> Any:
        self._started[:] = [status, headers]
        return self._put

    def _produce(self, app: Any, environ: dict[str, Any]) -> None:
        try:
            result = app(environ, self._start_response)
            try:
                for chunk in result:
                    if chunk and not self._put(bytes(chunk)):
                        return
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            self._put(_END)
        except Exception as error:  # handed to the request's task
            self._put(error)

    async def _next(self) -> Any:
        item = await asyncio.to_thread(self._queue.get)
        if isinstance(item, Exception):
            raise item
        return item

    def _head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        if not self._started:
            raise LoomingError("the Git handler gave no response")
        status_text, headers = self._started
        return int(status_text.split()[0]), [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers
            if name.lower() not in ("content-length", "transfer-encoding")
        ]

    async def whole(self) -> Response:
        chunks: list[bytes] = []
        while (item := await self._next()) is not _END:
            chunks.append(item)
        status, headers = self._head()
        return Response(status, headers, b"".join(chunks))

    async def streamed(self) -> Response:
        first = await self._next()
        status, headers = self._head()
        if first is _END:
            return Response(status, headers, b"")
        return Response(status, headers, self._rest(first))

    async def _rest(self, first: bytes) -> AsyncIterator[bytes]:
        try:
            yield first
            while (item := await self._next()) is not _END:
                yield item
        finally:
            self._abandoned.set()
