"""The host console: standard output for text, standard input for reading."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import BinaryIO


class UnixConsole:
    """:class:`looming.devices.Console` on the process's stdout and stdin."""

    def __init__(self, out: BinaryIO | None = None, inp: BinaryIO | None = None) -> None:
        self._out = out if out is not None else sys.stdout.buffer
        self._in = inp if inp is not None else sys.stdin.buffer

    async def log(self, message: str) -> None:
        self._out.write(message.encode("utf-8", "replace") + b"\n")
        self._out.flush()

    async def write(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()

    async def read(self) -> bytes:
        # Reading stdin blocks; keep the event loop free.
        return await asyncio.to_thread(os.read, self._in.fileno(), 65536)
