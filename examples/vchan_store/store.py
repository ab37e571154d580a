"""The store: an in-memory key-value service behind a vchan."""

from __future__ import annotations

import logging

from kvwire import (
    BAD_REQUEST,
    DELETE,
    GET,
    MAX_VALUE,
    NOT_FOUND,
    OK,
    PUT,
    REQUEST,
    FrameReader,
    response,
)

from looming.devices import Console, Flow
from looming.errors import LoomingError

log = logging.getLogger("store")


class Store:
    def __init__(self, console: Console, channel: Flow) -> None:
        self.console = console
        self.channel = channel
        self.values: dict[bytes, bytes] = {}

    async def start(self) -> None:
        await self.console.log("store: serving over vchan")
        while True:
            try:
                await self.serve(FrameReader(self.channel))
            except (ConnectionError, LoomingError) as exc:
                await self.console.log(f"store: the front end went away ({exc})")
            else:
                await self.console.log("store: the front end went away")
            # The channel accepts the next front end (or the same one, restarted).

    async def serve(self, reader: FrameReader) -> None:
        """Answer one front end's requests until it goes."""
        while True:
            header = await reader.exactly(REQUEST.size)
            if header is None:
                return
            op, key_length, value_length = REQUEST.unpack(header)
            if value_length > MAX_VALUE:
                await self.channel.write(response(BAD_REQUEST))
                # The stream can no longer be trusted: end it, and let the
                # front end go before serving the next one.
                await self.channel.shutdown()
                while await self.channel.read():
                    pass
                return
            body = await reader.exactly(key_length + value_length)
            if body is None:
                return
            key, value = body[:key_length], body[key_length:]
            await self.channel.write(self.apply(op, key, value))

    def apply(self, op: bytes, key: bytes, value: bytes) -> bytes:
        if op == GET:
            found = self.values.get(key)
            return response(OK, found) if found is not None else response(NOT_FOUND)
        if op == PUT:
            self.values[key] = value
            return response(OK)
        if op == DELETE:
            return response(OK if self.values.pop(key, None) is not None else NOT_FOUND)
        return response(BAD_REQUEST)
