"""A unikernel serving a FastAPI application (see app.py) over HTTP."""

from __future__ import annotations

import asyncio
import logging

from app import app

from looming.devices import Console, Stack
from looming.http import AsgiAdapter, HttpServer

log = logging.getLogger("fastapi")


class FastApiService:
    """Serves the ASGI ``app`` on ``port`` until cancelled."""

    def __init__(self, console: Console, stack: Stack, *, port: int = 8080) -> None:
        self.console = console
        self.stack = stack
        self.port = port
        self.adapter = AsgiAdapter(app)
        self.server = HttpServer(self.adapter)

    async def start(self) -> None:
        async with self.adapter.lifespan():
            listener = await self.stack.tcp.listen(self.port, self.server.serve_flow)
            addresses = self.stack.addresses()
            host = str(addresses[0].ip) if addresses else "0.0.0.0"
            url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{listener.port}"
            log.info("serving %s", url)
            await self.console.log(f"serving {url}")
            try:
                await asyncio.Event().wait()
            finally:
                await listener.close()
