"""A unikernel serving a FastAPI application (see app.py) over HTTP."""

from __future__ import annotations

from typing import Any

from app import app

from looming.devices import Clock, Console, Stack
from looming.http.service import HttpSettings, serve_asgi


class FastApiService:
    """Serves the ASGI ``app`` on ``port`` until stopped, then stops gracefully."""

    def __init__(
        self, console: Console, stack: Stack, clock: Clock, *, port: int = 8080, **http: Any
    ) -> None:
        self.console = console
        self.stack = stack
        self.clock = clock
        self.port = port
        self.settings = HttpSettings.from_keys(**http)

    async def start(self) -> None:
        await serve_asgi(
            app,
            self.console,
            self.stack,
            clock=self.clock,
            port=self.port,
            settings=self.settings,
        )
