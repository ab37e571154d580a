"""A TCP echo server: every byte received is sent back."""

import asyncio
import logging

from looming.addresses import format_endpoint
from looming.devices import Console, Stack, TcpFlow

log = logging.getLogger("echo")


class Echo:
    def __init__(self, console: Console, stack: Stack, *, port: int) -> None:
        self.console = console
        self.stack = stack
        self.port = port

    async def serve(self, flow: TcpFlow) -> None:
        peer = format_endpoint(*flow.remote_address)  # [::1]:PORT for IPv6
        log.info("connection from %s", peer)
        total = 0
        while data := await flow.read():
            total += len(data)
            await flow.write(data)
        log.info("%s closed after %d bytes", peer, total)

    async def start(self) -> None:
        listener = await self.stack.tcp.listen(self.port, self.serve)
        await self.console.log(f"echo listening on port {listener.port}")
        await asyncio.Event().wait()
