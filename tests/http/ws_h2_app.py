"""An ASGI websocket application served by looming and by hypercorn in
tests/http/test_websocket_h2.py (hypercorn imports it by name)."""

from __future__ import annotations

from typing import Any

disconnects: list[int] = []
"""The close code of each websocket.disconnect the application heard."""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "http":
        body = f"plain over HTTP/{scope['http_version']}\n".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"] == "/refuse":
        await send({"type": "websocket.close", "code": 1000})
        return
    offered = scope.get("subprotocols", [])
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if "chat" in offered:
        accept["subprotocol"] = "chat"
    await send(accept)
    await _echo(scope, receive, send)


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            disconnects.append(int(message.get("code", 1005)))
            return
        text = message.get("text")
        if text is not None and text.startswith("close:"):
            await send({"type": "websocket.close", "code": int(text[6:])})
            return
        if text is not None:
            await send({"type": "websocket.send", "text": f"{scope['path']}:{text}"})
        else:
            await send({"type": "websocket.send", "bytes": bytes(message["bytes"])[::-1]})
