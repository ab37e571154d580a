"""Serves a branch of a Git store as a website, and the store itself over Git's
smart HTTP protocol on a second port, so publishing is a ``git push``."""

from __future__ import annotations

import asyncio
import logging

from looming.addresses import parse_host, stack_url
from looming.devices import Clock, Console, KvRo, KvRw, Listener, Stack
from looming.http import HttpServer, StaticSite

log = logging.getLogger("store-website")

WELCOME = b"""<!doctype html>
<title>looming store website</title>
<h1>It works</h1>
<p>This page is index.html on the branch the site is served from.
Clone the site, change it, and <code>git push</code> it back.</p>
"""


def served_url(stack: Stack, port: int, listen: str | None = None) -> str:
    """The URL a browser on this host uses to reach ``port``."""
    return stack_url("http", stack.addresses(), port, listen=listen)


class StoreWebsite:
    """Serves the site on ``port`` and accepts ``git push`` (and ``git clone``)
    on ``push_port`` until cancelled (port 0 picks a free one).

    The site's store is any KvRo; the push endpoint needs the Git store
    behind a ``kv_store`` device. StaticSite asks the store for its
    generation (the branch head) on each request, so a push is served from
    the next request on.
    """

    def __init__(
        self,
        console: Console,
        site: KvRo,
        stack: Stack,
        clock: Clock,
        *,
        port: int = 8080,
        push_port: int = 8418,
        listen: str = "127.0.0.1",
        push_token_file: str = "",
        push_access: str = "",
        push_anonymous_read: bool = False,
    ) -> None:
        self.console = console
        self.site = site
        self.stack = stack
        self.port = port
        self.push_port = push_port
        self.listen = parse_host(listen)
        self.push_token_file = push_token_file
        self.push_access = push_access
        self.push_anonymous_read = push_anonymous_read
        self.clock = clock
        self.server = HttpServer(StaticSite(site), clock=clock)

    def _host(self) -> str | None:
        """The address to listen on. A stack of its own (``--net direct``, a
        VM) has no loopback: there the loopback default means its address."""
        own = [str(address.ip) for address in self.stack.addresses()]
        if self.listen == "127.0.0.1" and own and "0.0.0.0" not in own:
            return None
        return self.listen

    async def _git_server(self) -> HttpServer | None:
        # Imported here: a site served from a plain KvRo needs none of it.
        from looming.http.server import ServerConfig
        from looming.store.auth import describe, load_policy
        from looming.store.githttp import DRAIN_BYTES
        from looming.store.http import ServeSettings, StoreHttp
        from looming.store.kv import StoreKv

        if not isinstance(self.site, StoreKv):
            return None
        policy = load_policy(
            token_file=self.push_token_file or None,
            access_file=self.push_access or None,
            anonymous_read=self.push_anonymous_read,
        )
        await self.console.log(f"push port access: {describe(policy)}")
        settings = ServeSettings()
        handler = StoreHttp(self.site.store.repo, policy, settings)
        config = ServerConfig(max_body_bytes=settings.max_body_bytes + DRAIN_BYTES)
        return HttpServer(handler, config, clock=self.clock)

    async def start(self) -> None:
        if isinstance(self.site, KvRw) and not await self.site.list():
            # A new, empty branch: one page, so there is something to clone.
            await self.site.set("index.html", WELCOME)
        host = self._host()
        git_server = await self._git_server()
        listeners: list[Listener] = [
            await self.stack.tcp.listen(self.port, self.server.serve_flow, host=host)
        ]
        url = served_url(self.stack, listeners[0].port, host)
        log.info("serving %s", url)
        await self.console.log(f"serving {url}")
        if git_server is not None:
            listeners.append(
                await self.stack.tcp.listen(self.push_port, git_server.serve_flow, host=host)
            )
            push_url = served_url(self.stack, listeners[1].port, host)
            await self.console.log(f"git push {push_url}/ main")
        try:
            await asyncio.Event().wait()
        finally:
            for listener in listeners:
                await listener.close()
