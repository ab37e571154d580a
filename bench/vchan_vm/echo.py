"""Echo 64-byte pings; swallow a stream and acknowledge it; stop on 'q'."""

from __future__ import annotations

from looming.devices import Console
from looming.vchan.device import Vchan

MESSAGE = 64


async def echo(console: Console, channel: Vchan) -> None:
    await console.log("echo: ready")
    while True:
        message = await channel.recv(MESSAGE)
        kind = message[:1]
        if kind == b"p":
            await channel.send(message)
        elif kind == b"t":
            remaining = int.from_bytes(message[1:9], "big")
            while remaining > 0:
                remaining -= len(await channel.read())
            await channel.send(b"!")
        else:
            await console.log("echo: done")
            return
