"""An echo service whose server crashes and restarts in the middle of a transfer.

The client streams 400 KB through a 2 Mbit/s link and reads the echo back.
At t=1 s the server crashes; at t=3 s it restarts from its built artifact.
The client's connection dies with the server (its retransmissions are
answered with a reset by the new incarnation), so it reconnects and sends
the rest. Everything echoed, across both connections, must be exactly what
was sent.

When the client's first SYN is lost (1% loss), its retransmission may reach
the server only after the crash, or after the restart: then no connection
was open at the crash and one connection carries everything. The check says
so rather than counting connections blindly.

    looming sim run examples/scenarios/echo_crash.py --seed 1
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from looming import sim
from looming.errors import LoomingError
from looming.net.stack import DirectStack

ECHO = Path(__file__).resolve().parent.parent / "echo"
PORT = 7777
SIZE = 400_000
CHUNK = 4_000

SCENARIO = sim.Scenario(
    "echo-crash",
    duration=120.0,
    link=sim.LinkSpec(latency=sim.Fixed(0.002), jitter=0.001, bandwidth_bps=2_000_000, loss=0.01),
)
SCENARIO.node("server", ECHO, ipv4="10.0.0.1/24", keys={"port": PORT})
SCENARIO.host("client", ipv4="10.0.0.2/24")
CRASH_AT = 1.0
SCENARIO.at(CRASH_AT, sim.Crash("server"))
SCENARIO.at(3.0, sim.Restart("server", keep_state=True))


def payload(seed: int) -> bytes:
    """The bytes to send: different for every seed, the same for every run of it."""
    out = bytearray()
    counter = 0
    while len(out) < SIZE:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:SIZE])


async def transfer(world: sim.World, stack: DirectStack, data: bytes) -> tuple[bytes, list[float]]:
    """Send ``data`` and collect its echo, reconnecting after failures and
    resending whatever was not echoed yet. Returns the echo and the virtual
    time at which each connection was established."""
    echoed = bytearray()
    opened: list[float] = []
    while len(echoed) < len(data):
        try:
            flow = await stack.tcp.connect("10.0.0.1", PORT, timeout=5.0)
        except LoomingError:
            await world.sleep(0.5)
            continue
        opened.append(world.now)
        connections = len(opened)
        world.note(f"connection {connections} resumes at byte {len(echoed)}")
        start = len(echoed)
        try:
            sent = start
            while len(echoed) < len(data):
                if sent < len(data) and sent - len(echoed) < 64_000:
                    await flow.write(data[sent : sent + CHUNK])
                    sent += CHUNK
                    continue
                chunk = await flow.read()
                if not chunk:
                    break
                echoed += chunk
            await flow.close()
        except LoomingError as error:
            world.note(f"connection {connections} broke after {len(echoed)} bytes: {error}")
            await flow.close()
    return bytes(echoed), opened


@SCENARIO.main
async def drive(world: sim.World) -> None:
    data = payload(world.seed)
    await world.sleep(0.2)
    echoed, opened = await world.node("client").run(lambda stack: transfer(world, stack, data))
    world.check(echoed == data, f"{len(echoed)} of {len(data)} bytes echoed intact")
    if any(at < CRASH_AT for at in opened):
        # A connection was up when the server crashed: it cannot have survived.
        world.check(len(opened) >= 2, f"the crash broke the transfer ({len(opened)} connections)")
    else:
        world.note("no connection was up at the crash (the first SYN was lost)")
        world.check(len(opened) >= 1, f"a connection after the crash ({len(opened)})")
    server = world.node("server")
    world.check(server.incarnations == 2, f"the server booted {server.incarnations} times")
