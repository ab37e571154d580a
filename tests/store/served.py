"""A store served over HTTP on a background event loop, for the HTTP tests."""

from __future__ import annotations

import asyncio
import base64
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from looming.store.auth import AccessPolicy
from looming.store.http import ServeSettings, StoreHttp, serve
from looming.store.repo import Repo

TOKEN = "s3cret-token-for-tests-0123456789"
POLICY = AccessPolicy(TOKEN.encode(), anonymous_read=True)


@contextmanager
def serving(
    repo: Repo,
    policy: AccessPolicy | None = POLICY,
    settings: ServeSettings | None = None,
    tls: Any = None,
) -> Iterator[tuple[int, StoreHttp]]:
    """Serve ``repo`` on a free loopback port; yields (port, handler)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        state["listener"], state["handler"] = await serve(
            repo, "127.0.0.1", 0, policy=policy, settings=settings, tls=tls
        )
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        state["task"] = loop.create_task(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(timeout=10)
    try:
        yield state["listener"].port, state["handler"]
    finally:
        asyncio.run_coroutine_threadsafe(state["listener"].close(), loop).result(timeout=10)
        state["handler"].close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def basic(token: str = TOKEN, user: str = "tester") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
