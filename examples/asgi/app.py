"""A small Starlette application, served by the ``asgi`` unikernel."""

from __future__ import annotations

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


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"length": len(body), "text": body.decode("utf-8", "replace")})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, bool]]:
    # State handed to every request as request.state.
    yield {"started": True}


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/greet/{name}", greet),
        Route("/echo", echo, methods=["POST"]),
    ],
    lifespan=lifespan,
)
