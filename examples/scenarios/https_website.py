"""The HTTPS website and two clients, TLS 1.3 on every connection, 2% loss.

Each client opens a new TLS connection for every page (a full handshake
each time: key shares, an ECDSA CertificateVerify, session tickets), so a
run exercises everything in the handshake that draws randomness. All of it
comes from the nodes' seeded Random devices, so a seed replays byte for
byte, across processes:

    looming sim run examples/scenarios/https_website.py --seed 1
    looming sim check examples/scenarios/https_website.py --seed 1
    looming sim run examples/scenarios/https_website.py --seeds 1..100 --check-sample 100
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from looming import sim
from looming.errors import LoomingError
from looming.http.client import HttpClient
from looming.net.stack import DirectStack
from looming.sim.node import SimDevices
from looming.tls.certs import TrustStore
from looming.tls.config import TlsConfig
from looming.tls.device import TlsTcpFlow
from looming.tls.engine import TlsConnection

SITE = Path(__file__).resolve().parent.parent / "https_website"
PAGES = ["/index.html", "/missing.html"]
CLIENTS = ["client1", "client2"]
PORT = 8443

SCENARIO = sim.Scenario(
    "https_website",
    duration=60.0,
    link=sim.LinkSpec(latency=sim.Uniform(0.0005, 0.002), jitter=0.0005, loss=0.02),
)
# Virtual time starts at 2024-01-01 and the example's certificate is valid from
# 2026-01-01: every node's wall clock runs 1,000 days ahead.
SKEW_S = 1000 * 86400.0
SCENARIO.node("server", SITE, ipv4="10.0.0.1/24", keys={"port": PORT}, skew_s=SKEW_S)
for number, client in enumerate(CLIENTS, start=2):
    SCENARIO.host(client, ipv4=f"10.0.0.{number}/24", skew_s=SKEW_S)


async def fetch_pages(world: sim.World, stack: DirectStack) -> list[tuple[str, int, bytes]]:
    """Every page twice, each on a new TLS connection; retried until it works."""
    config = TlsConfig(
        trust=TrustStore.from_pem_file(SITE / "ca.pem"),
        alpn_protocols=["http/1.1"],
        random=SimDevices.random(),
        clock=SimDevices.clock(),
    )
    responses: list[tuple[str, int, bytes]] = []
    await world.sleep(0.5)
    for page in PAGES * 2:
        while True:
            try:
                tcp = await stack.tcp.connect("10.0.0.1", PORT, timeout=10.0)
                # The example's certificate names localhost, not the node's address.
                connection = TlsConnection(config, server_side=False, server_name="localhost")
                flow = await TlsTcpFlow.establish(tcp, connection, 10.0)
                try:
                    response = await HttpClient(flow).request("GET", page)
                finally:
                    await flow.close()
                break
            except (LoomingError, ValueError, OSError):
                await world.sleep(1.0)
        responses.append((page, response.status, response.body))
    return responses


@SCENARIO.main
async def drive(world: sim.World) -> None:
    htdocs = SITE / "htdocs"
    expected = {"/index.html": (htdocs / "index.html").read_bytes()}

    async def one_client(name: str) -> None:
        responses = await world.node(name).run(lambda stack: fetch_pages(world, stack))
        world.check(len(responses) == 2 * len(PAGES), f"{name} got {len(responses)} responses")
        for page, status, body in responses:
            world.check(
                (status, body) == (200, expected[page]) if page in expected else status == 404,
                f"{name} {page}: {status}, {len(body)} bytes",
            )

    await asyncio.gather(*(one_client(name) for name in CLIENTS))
