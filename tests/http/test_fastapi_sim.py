"""The FastAPI example as a node of the simulated network, in virtual time:
async and plain ``def`` endpoints, pydantic models, streaming and background
tasks, fetched by a simulated client over looming's own TCP/IP stack. A
simulation runs no threads: what anyio hands to a worker thread (a plain
``def`` endpoint) runs inline, in virtual time (see looming.sim.intercept)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import looming.sim
from looming.http.client import HttpClient
from looming.sim import World

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _copy(app: Path) -> Path:
    import atexit

    root = Path(tempfile.mkdtemp(prefix="looming-sim-fastapi-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    target = root / app.name
    shutil.copytree(app, target, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__"))
    return target


@looming.sim.scenario(duration=60.0)
async def test_fastapi_example_in_the_simulator(world: World) -> None:
    server = world.add_node("api", _copy(EXAMPLES / "fastapi"), ipv4="10.0.0.1/24")
    client = world.add_host("client", ipv4="10.0.0.2/24")
    # Wait for the line rather than a fixed time (it depends on what the node does first).
    for _ in range(100):
        if server.console:
            break
        await asyncio.sleep(0.1)
    assert server.console == ["serving http://10.0.0.1:8000"], (server.status, server.exit_error)

    async def exchange(stack) -> list[tuple[int, bytes]]:  # type: ignore[no-untyped-def]
        flow = await stack.tcp.connect("10.0.0.1", 8000)
        http = HttpClient(flow)
        answers = []
        for method, target, body in [
            ("GET", "/", b""),
            ("POST", "/items", b'{"name": "loom", "price": 10}'),
            ("GET", "/stream?count=3", b""),
            ("POST", "/later/weft", b""),
            ("GET", "/done", b""),
            ("GET", "/sync", b""),
        ]:
            headers = [(b"content-type", b"application/json")] if body else []
            response = await http.request(method, target, headers=headers, body=body)
            answers.append((response.status, response.body))
        await flow.close()
        return answers

    answers = await client.run(exchange)
    assert answers[0] == (200, b"hello from a FastAPI unikernel\n")
    assert answers[1][0] == 200 and json.loads(answers[1][1])["price_with_tax"] == 12.0
    assert answers[2] == (200, b"0\n1\n2\n")
    assert answers[3][0] == 200
    assert answers[4][0] == 200 and json.loads(answers[4][1]) == {"finished": ["weft"]}
    assert answers[5] == (200, b'{"thread":"main"}')  # inline: no threads here
