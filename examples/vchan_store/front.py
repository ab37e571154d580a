"""The front end: HTTP on the host's network, the store over vchan.

GET /kv/KEY, PUT /kv/KEY (the body is the value) and DELETE /kv/KEY.
"""

from __future__ import annotations

import asyncio
import logging

from kvwire import DELETE, GET, NOT_FOUND, OK, PUT, RESPONSE, FrameReader, request

from looming.devices import Clock, Console, Flow, Stack
from looming.errors import LoomingError
from looming.http import HttpServer, Request, Response

log = logging.getLogger("front")
TEXT = ((b"content-type", b"text/plain; charset=utf-8"),)
BINARY = ((b"content-type", b"application/octet-stream"),)
METHODS = {"GET": GET, "PUT": PUT, "DELETE": DELETE}


class Front:
    def __init__(
        self, console: Console, stack: Stack, store: Flow, clock: Clock, *, port: int
    ) -> None:
        self.console = console
        self.clock = clock
        self.stack = stack
        self.store = store
        self.reader = FrameReader(store)
        self.port = port
        # One request at a time on the channel: answers come back in order.
        self.lock = asyncio.Lock()

    async def ask(self, op: bytes, key: bytes, value: bytes = b"") -> tuple[int, bytes]:
        async with self.lock:
            try:
                return await self.exchange(op, key, value)
            except (ConnectionError, LoomingError):
                # The store died or restarts: what was half read is lost; the
                # next request connects to the new store.
                self.reader = FrameReader(self.store)
                raise

    async def exchange(self, op: bytes, key: bytes, value: bytes) -> tuple[int, bytes]:
        await self.store.write(request(op, key, value))
        header = await self.reader.exactly(RESPONSE.size)
        if header is None:
            raise ConnectionError("the store closed the channel")
        status, length = RESPONSE.unpack(header)
        value = await self.reader.exactly(length) if length else b""
        if value is None:
            raise ConnectionError("the store closed the channel")
        return status, value

    async def handle(self, req: Request) -> Response:
        if not req.path.startswith("/kv/") or len(req.path) == 4:
            return Response(404, TEXT, b"use /kv/KEY\n")
        op = METHODS.get(req.method)
        if op is None:
            return Response(405, (*TEXT, (b"allow", b"GET, PUT, DELETE")), b"")
        key = req.path[4:].encode()
        try:
            status, value = await self.ask(op, key, req.body if op == PUT else b"")
        except (ConnectionError, LoomingError) as exc:
            log.info("front: the store is unavailable (%s)", exc)
            return Response(503, (*TEXT, (b"retry-after", b"1")), b"the store is restarting\n")
        if status == NOT_FOUND:
            return Response(404, TEXT, b"no such key\n")
        if status != OK:
            return Response(502, TEXT, b"the store refused the request\n")
        if op == GET:
            return Response(200, BINARY, value)
        return Response(204)

    async def start(self) -> None:
        listener = await self.stack.tcp.listen(self.port, HttpServer(self.handle, clock=self.clock))
        await self.console.log(f"front: HTTP on port {listener.port}, store over vchan")
        await asyncio.Event().wait()
