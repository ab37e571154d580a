"""A FastAPI application as people write them, served by the ``fastapi`` unikernel.

It uses what breaks first when a FastAPI app is packed: plain ``def``
endpoints (run in anyio's worker threads), streaming responses, background
tasks, file uploads (python-multipart) and pydantic models.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import BackgroundTasks, FastAPI, File, Form, UploadFile
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

app = FastAPI(title="looming FastAPI example")

# What the background tasks did, for /done to report.
finished: list[str] = []


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    price: float = Field(gt=0)
    tags: list[str] = []


class Priced(BaseModel):
    name: str
    price_with_tax: float
    tag_count: int


@app.get("/", response_class=PlainTextResponse)
async def hello() -> str:
    return "hello from a FastAPI unikernel\n"


@app.get("/sync")
def sync_endpoint() -> dict[str, str]:
    # A plain def endpoint runs in a worker thread.
    return {
        "thread": "worker" if threading.current_thread() is not threading.main_thread() else "main"
    }


@app.post("/items", response_model=Priced)
async def create_item(item: Item) -> Priced:
    return Priced(
        name=item.name, price_with_tax=round(item.price * 1.2, 2), tag_count=len(item.tags)
    )


@app.get("/stream")
async def stream(count: int = 3) -> StreamingResponse:
    async def numbers() -> AsyncIterator[bytes]:
        for i in range(count):
            yield f"{i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(numbers(), media_type="text/plain")


@app.get("/stream-sync")
def stream_sync(count: int = 3) -> StreamingResponse:
    def lines() -> Iterator[bytes]:
        for i in range(count):
            yield f"line {i}\n".encode()

    return StreamingResponse(lines(), media_type="text/plain")


async def remember(what: str) -> None:
    # An async task runs on the event loop after the response (a plain def
    # one would run in a worker thread, as /sync does).
    finished.append(what)


@app.post("/later/{name}")
async def later(name: str, tasks: BackgroundTasks) -> dict[str, str]:
    tasks.add_task(remember, name)
    return {"queued": name}


@app.get("/done")
async def done() -> dict[str, list[str]]:
    return {"finished": finished}


@app.post("/upload")
async def upload(
    file: Annotated[UploadFile, File()], note: Annotated[str, Form()] = ""
) -> dict[str, object]:
    data = await file.read()
    return {
        "filename": file.filename,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "note": note,
    }
