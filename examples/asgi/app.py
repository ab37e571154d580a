"""A small Starlette application, served by the ``asgi`` unikernel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello from an ASGI unikernel\n")


async def greet(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    return JSONResponse({"greeting": f"hello, {name}", "started": request.state.started})


async def slow(request: Request) -> PlainTextResponse:
    # A response that takes a while: a graceful stop lets it finish.
    await asyncio.sleep(float(request.query_params.get("seconds", "1")))
    return PlainTextResponse("finished\n")


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"length": len(body), "text": body.decode("utf-8", "replace")})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, bool]]:
    # State handed to every request as request.state.
    yield {"started": True}
    logging.getLogger("asgi").info("lifespan shutdown done")


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/greet/{name}", greet),
        Route("/echo", echo, methods=["POST"]),
        Route("/slow", slow),
    ],
    lifespan=lifespan,
)
