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

log = logging.getLogger("store")


class Store:
    def __init__(self, console: Console, channel: Flow) -> None:
        self.console = console
        self.channel = channel
        self.values: dict[bytes, bytes] = {}

    async def start(self) -> None:
        await self.console.log("store: serving over vchan")
        reader = FrameReader(self.channel)
        while True:
            header = await reader.exactly(REQUEST.size)
            if header is None:
                break
            op, key_length, value_length = REQUEST.unpack(header)
            if value_length > MAX_VALUE:
                await self.channel.write(response(BAD_REQUEST))
                break  # the stream can no longer be trusted
            body = await reader.exactly(key_length + value_length)
            if body is None:
                break
            key, value = body[:key_length], body[key_length:]
            await self.channel.write(self.apply(op, key, value))
        await self.console.log("store: the front end went away; stopping")

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
