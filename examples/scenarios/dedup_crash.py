"""A planted bug: the duplicate-request table is lost when the server crashes.

examples/dedup_service appends each client request to a durable ledger
once, answering retries from a duplicate-request table. Here the server
runs with ``recover_table=false``: the table lives only in memory. Two
clients send requests over one connection each and retry every request
(same id) until it is acknowledged, through a fault schedule each seed
draws (crashes, pauses, partitions, isolation, held frames). When the
server crashes after appending a request but before its reply reaches the
client, and restarts keeping its ledger, the retry finds an empty table
and the request is appended twice: the check that no request id appears
twice in the ledger fails.

    looming sim run examples/scenarios/dedup_crash.py --seeds 1..200
    looming sim shrink examples/scenarios/dedup_crash.py --seed N

``dedup_crash_fixed.py`` runs the same scenario with the table rebuilt from
the ledger at boot, and passes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from looming import sim
from looming.errors import LoomingError
from looming.net.stack import DirectStack

SERVICE = Path(__file__).resolve().parent.parent / "dedup_service"
SERVER = "10.0.0.1"
PORT = 7000
CLIENTS = ("client1", "client2")
# Faults and new requests stop this long before the end; the rest of the
# time is for the last retries and for reading the ledger.
SETTLE = 5.0
TIMEOUT = 1.0


def build(name: str, *, recover_table: bool) -> sim.Scenario:
    scenario = sim.Scenario(
        name,
        duration=10.0,
        link=sim.LinkSpec(latency=sim.Uniform(0.004, 0.008), loss=0.005),
    )
    keys = {"port": PORT, "recover_table": recover_table, "sync_ms": 25}
    scenario.node("server", SERVICE, ipv4=f"{SERVER}/24", keys=keys)
    for number, client in enumerate(CLIENTS, start=2):
        scenario.host(client, ipv4=f"10.0.0.{number}/24")
    scenario.optional("client2")
    scenario.swarm(
        ["server"], start=0.5, end=scenario.duration - SETTLE, max_rate=1.0, max_down=2.0
    )
    scenario.main(drive)
    return scenario


class Connection:
    """One client's connection to the server, opened again when it breaks."""

    def __init__(self, stack: DirectStack) -> None:
        self.stack = stack
        self.flow: object | None = None
        self.buffer = b""

    async def ask(self, line: str) -> str:
        """Send ``line``, return the reply line; LoomingError or TimeoutError
        (after closing the connection) when there is none."""
        try:
            if self.flow is None:
                self.flow = await self.stack.tcp.connect(SERVER, PORT, timeout=TIMEOUT)
                self.buffer = b""
            flow = self.flow
            await flow.write(f"{line}\n".encode())  # type: ignore[attr-defined]
            async with asyncio.timeout(TIMEOUT):
                while b"\n" not in self.buffer:
                    data = await flow.read()  # type: ignore[attr-defined]
                    if not data:
                        raise LoomingError("the server closed the connection")
                    self.buffer += data
        except (LoomingError, TimeoutError):
            await self.close()
            raise
        reply, _, self.buffer = self.buffer.partition(b"\n")
        return reply.decode()

    async def close(self) -> None:
        if self.flow is not None:
            await self.flow.close()  # type: ignore[attr-defined]
            self.flow = None


async def client(world: sim.World, name: str, stack: DirectStack) -> dict[str, int]:
    """Requests until the faults stop, each retried until acknowledged;
    returns the acknowledged ids with their ledger positions."""
    connection = Connection(stack)
    acknowledged: dict[str, int] = {}
    number = 0
    while world.now < world.scenario.duration - SETTLE:
        number += 1
        request = f"{name}-{number}"
        while world.now < world.scenario.duration - 2.0:
            try:
                reply = await connection.ask(f"APPLY {request} {number}")
            except (LoomingError, TimeoutError):
                await world.sleep(0.2)
                continue
            acknowledged[request] = int(reply.split()[2])  # OK <request> <position>
            break
        await world.sleep(0.005)
    await connection.close()
    return acknowledged


async def read_ledger(world: sim.World, stack: DirectStack) -> list[str] | None:
    """The request ids in the ledger, in order (None: the server never answered)."""
    while world.now < world.scenario.duration - 0.5:
        connection = Connection(stack)
        try:
            first = await connection.ask("LEDGER")
            lines = [first]
            while not lines[-1].startswith("END"):
                lines.append(await connection.ask(""))
        except (LoomingError, TimeoutError):
            await world.sleep(0.2)
            continue
        await connection.close()
        return [line.split()[2] for line in lines if line.startswith("ENTRY")]
    return None


async def drive(world: sim.World) -> None:
    names = [name for name in CLIENTS if name in world.nodes]
    results = await asyncio.gather(
        *(
            world.node(name).run(lambda stack, name=name: client(world, name, stack))
            for name in names
        )
    )
    acknowledged = sum(len(result) for result in results)
    await world.sleep(max(0.0, world.scenario.duration - SETTLE + 1.0 - world.now))
    ledger = await world.node(names[0]).run(lambda stack: read_ledger(world, stack))
    world.check(ledger is not None, "the ledger can be read after the faults")
    if ledger is None:
        return
    twice = sorted(request for request, count in Counter(ledger).items() if count > 1)
    world.note(f"{acknowledged} requests acknowledged, {len(ledger)} ledger entries")
    world.check(not twice, f"no request applied twice (applied twice: {' '.join(twice[:5])})")


SCENARIO = build("dedup-crash", recover_table=False)
