"""The static website, three clients, 5% loss on every link, and a 10 s partition.

Each client fetches every file of the site in three rounds over keep-alive
connections, retrying what fails. The second round starts inside the
partition, so its requests stall and recover once the network heals.
Every response must be 200 with exactly the bytes of the file on disk.

    looming sim run examples/scenarios/website.py --seed 1
    looming sim run examples/scenarios/website.py --seeds 1..20
"""

from __future__ import annotations

from pathlib import Path

from looming import sim
from looming.errors import LoomingError
from looming.http.client import HttpClient
from looming.net.stack import DirectStack

SITE = Path(__file__).resolve().parent.parent / "static_website"
PAGES = ["/index.html", "/css/site.css", "/docs/index.html", "/images/loom.svg"]
CLIENTS = ["client1", "client2", "client3"]
PORT = 8080

SCENARIO = sim.Scenario(
    "website",
    duration=120.0,
    link=sim.LinkSpec(latency=sim.Uniform(0.0005, 0.002), jitter=0.0005, loss=0.05),
)
SCENARIO.node("server", SITE, ipv4="10.0.0.1/24", keys={"port": PORT})
for number, client in enumerate(CLIENTS, start=2):
    SCENARIO.host(client, ipv4=f"10.0.0.{number}/24")
SCENARIO.at(4.0, sim.partition("server", CLIENTS, duration=10.0))


async def fetch_rounds(world: sim.World, stack: DirectStack) -> list[tuple[str, int, bytes]]:
    """Every page, three times, over keep-alive connections; retried until it works."""
    responses: list[tuple[str, int, bytes]] = []
    client: HttpClient | None = None
    for round_start in (0.5, 5.0, 30.0):
        if world.now < round_start:
            await world.sleep(round_start - world.now)
        for page in PAGES:
            while True:
                try:
                    if client is None or not client.reusable:
                        flow = await stack.tcp.connect("10.0.0.1", PORT, timeout=10.0)
                        client = HttpClient(flow)
                    response = await client.request("GET", page)
                    break
                except (LoomingError, ValueError, OSError):
                    client = None
                    await world.sleep(1.0)
            responses.append((page, response.status, response.body))
    return responses


@SCENARIO.main
async def drive(world: sim.World) -> None:
    expected = {page: (SITE / "htdocs" / page.lstrip("/")).read_bytes() for page in PAGES}

    async def one_client(name: str) -> None:
        responses = await world.node(name).run(lambda stack: fetch_rounds(world, stack))
        world.check(len(responses) == 3 * len(PAGES), f"{name} got {len(responses)} responses")
        for page, status, body in responses:
            world.check(
                status == 200 and body == expected[page],
                f"{name} {page}: {status}, {len(body)} bytes",
            )

    import asyncio

    await asyncio.gather(*(one_client(name) for name in CLIENTS))
