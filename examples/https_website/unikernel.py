"""Serves htdocs over HTTPS. The application code is the plain HTTP server:
TLS is the stack's business, chosen in config.py."""

from __future__ import annotations

import asyncio
import logging

from looming.addresses import stack_url
from looming.devices import Clock, Console, KvRo, Stack
from looming.http import HttpServer, StaticSite

log = logging.getLogger("website")


class SecureWebsite:
    def __init__(
        self, console: Console, htdocs: KvRo, stack: Stack, clock: Clock, *, port: int
    ) -> None:
        self.console = console
        self.stack = stack
        self.port = port
        self.server = HttpServer(StaticSite(htdocs), clock=clock)

    async def start(self) -> None:
        listener = await self.stack.tcp.listen(self.port, self.server.serve_flow)
        url = stack_url("https", self.stack.addresses(), listener.port, unspecified_as="localhost")
        log.info("serving %s", url)
        await self.console.log(f"serving {url}")
        try:
            await asyncio.Event().wait()
        finally:
            await listener.close()
