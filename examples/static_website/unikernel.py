"""The flagship unikernel: serves its htdocs folder over HTTP."""

from __future__ import annotations

import asyncio
import logging

from looming.addresses import stack_url
from looming.devices import Clock, Console, KvRo, Stack
from looming.http import HttpServer, StaticSite

log = logging.getLogger("website")


def served_url(stack: Stack, port: int) -> str:
    """The URL a browser on this host uses to reach the site."""
    return stack_url("http", stack.addresses(), port)


class Website:
    """Serves the files of ``htdocs`` on ``port`` until cancelled."""

    def __init__(
        self, console: Console, htdocs: KvRo, stack: Stack, clock: Clock, *, port: int = 8080
    ) -> None:
        self.console = console
        self.htdocs = htdocs
        self.stack = stack
        self.port = port
        self.server = HttpServer(StaticSite(htdocs), clock=clock)

    async def start(self) -> None:
        listener = await self.stack.tcp.listen(self.port, self.server.serve_flow)
        url = served_url(self.stack, listener.port)
        log.info("serving %s", url)
        await self.console.log(f"serving {url}")
        try:
            await asyncio.Event().wait()
        finally:
            await listener.close()
