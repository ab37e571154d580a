"""Benchmark of the simulator: how much faster than real time, and how many seeds a second.

Three measurements, each beside a peer running the same work on stock
asyncio in real time (looming's stacks on the in-memory switch):

1. idle-heavy: five hosts that ping one another every 30 s for an hour of
   virtual time. Figure: virtual seconds per wall second (goal >= 1000x).
   Peer: the same pings on stock asyncio for a few real seconds (1x by nature).
2. website sweep: the example scenario (three clients, 5% loss, a 10 s
   partition), one run per seed. Figure: seeds per second (goal >= 10).
3. website without faults: the same three clients fetching every page three
   times, once in the simulator and once on stock asyncio: wall time per run.
4. website sweep on every core (``looming sim run --seeds``' process pool)
   against the same sweep in one process, in interleaved ABAB rounds.
   Figure: seeds per second each way, and the speed-up ratio.

    .venv/bin/python bench/sim.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# bench/http.py would shadow the standard library's http package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
SITE = REPO / "examples" / "static_website"
PAGES = ["/index.html", "/css/site.css", "/docs/index.html", "/images/loom.svg"]


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- 1. idle-heavy -----------------------------------------------------------------


def idle_scenario(virtual_seconds: float) -> Any:
    from looming import sim

    scenario = sim.Scenario("idle", duration=virtual_seconds + 60.0)
    names = [scenario.host(f"h{i}", ipv4=f"10.0.0.{i}/24") for i in range(1, 6)]

    @scenario.main
    async def drive(world: sim.World) -> None:
        async def pinger(index: int) -> int:
            stack = await world.node(names[index]).stack()
            answered = 0
            target = f"10.0.0.{(index + 1) % 5 + 1}"
            while world.now < virtual_seconds:
                await world.sleep(30.0)
                try:
                    await stack.ping(target, timeout=1.0)
                    answered += 1
                except Exception:
                    pass
            return answered

        results = await asyncio.gather(*(pinger(i) for i in range(5)))
        world.check(all(r > 0 for r in results), f"pings answered: {results}")

    return scenario


async def idle_on_asyncio(real_seconds: float, period: float) -> int:
    """The idle workload on stock asyncio and the in-memory switch, in real time."""
    from looming.net.netif.memory import MemorySwitch
    from looming.net.stack import DirectStack
    from looming.unix.clock import UnixClock
    from looming.unix.random import UnixRandom
    from looming.unix.time import UnixTime

    switch = MemorySwitch()
    stacks = [
        await DirectStack.connect(
            switch.port(),
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(seed=i),
            address=IPv4Interface(f"10.0.0.{i}/24"),
        )
        for i in range(1, 6)
    ]
    started = time.perf_counter()
    answered = 0

    async def pinger(index: int) -> None:
        nonlocal answered
        while time.perf_counter() - started < real_seconds:
            await asyncio.sleep(period)
            await stacks[index].ping(f"10.0.0.{(index + 1) % 5 + 1}", timeout=1.0)
            answered += 1

    await asyncio.gather(*(pinger(i) for i in range(5)))
    for stack in stacks:
        await stack.disconnect()
    return answered


# -- 3. website without faults on stock asyncio ---------------------------------------


async def website_on_asyncio() -> int:
    from looming.http import HttpServer, StaticSite
    from looming.http.client import HttpClient
    from looming.net.netif.memory import MemorySwitch
    from looming.net.stack import DirectStack
    from looming.unix.clock import UnixClock
    from looming.unix.kv import DirectoryKv
    from looming.unix.random import UnixRandom
    from looming.unix.time import UnixTime

    switch = MemorySwitch()

    async def host(number: int) -> DirectStack:
        return await DirectStack.connect(
            switch.port(),
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(seed=number),
            address=IPv4Interface(f"10.0.0.{number}/24"),
        )

    server = await host(1)
    site = HttpServer(StaticSite(await DirectoryKv.connect(SITE / "htdocs")), clock=UnixClock())
    await server.tcp.listen(8080, site.serve_flow)
    clients = [await host(n) for n in (2, 3, 4)]
    expected = {p: (SITE / "htdocs" / p.lstrip("/")).read_bytes() for p in PAGES}

    async def fetch(stack: DirectStack) -> int:
        flow = await stack.tcp.connect("10.0.0.1", 8080, timeout=10.0)
        client = HttpClient(flow)
        good = 0
        for _ in range(3):
            for page in PAGES:
                response = await client.request("GET", page)
                good += response.status == 200 and response.body == expected[page]
        await flow.close()
        return good

    results = await asyncio.gather(*(fetch(c) for c in clients))
    for stack in [server, *clients]:
        await stack.disconnect()
    return sum(results)


def website_without_faults() -> Any:
    from looming import sim
    from looming.http.client import HttpClient

    scenario = sim.Scenario("website-clean", duration=60.0)
    scenario.node("server", SITE_COPY, ipv4="10.0.0.1/24", keys={"port": 8080})
    for n in (2, 3, 4):
        scenario.host(f"c{n}", ipv4=f"10.0.0.{n}/24")
    expected = {p: (SITE / "htdocs" / p.lstrip("/")).read_bytes() for p in PAGES}

    @scenario.main
    async def drive(world: sim.World) -> None:
        async def fetch(stack: Any) -> int:
            flow = await stack.tcp.connect("10.0.0.1", 8080, timeout=10.0)
            client = HttpClient(flow)
            good = 0
            for _ in range(3):
                for page in PAGES:
                    response = await client.request("GET", page)
                    good += response.status == 200 and response.body == expected[page]
            await flow.close()
            return good

        results = await asyncio.gather(*(world.node(f"c{n}").run(fetch) for n in (2, 3, 4)))
        world.check(sum(results) == 36, f"{sum(results)} of 36 responses correct")

    return scenario


SITE_COPY = SITE


def main() -> int:
    global SITE_COPY
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds, shorter runs")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()

    from looming.sim.spec import load_scenario
    from looming.sim.world import prepare, run

    work = Path(tempfile.mkdtemp(prefix="looming-bench-sim-"))
    try:
        # Build in a copy so the repository's examples keep their own _build.
        ignore = shutil.ignore_patterns("_build", "dist", "__pycache__")
        shutil.copytree(REPO / "examples", work / "examples", ignore=ignore)
        SITE_COPY = work / "examples" / "static_website"
        rows: list[dict[str, Any]] = []

        virtual = 3600.0 if not args.quick else 900.0
        progress(f"idle-heavy: 5 hosts pinging every 30 s for {virtual:.0f} virtual seconds")
        idle = idle_scenario(virtual)
        result = run(idle, 1, artifacts={}, keep_trace=False)
        assert result.ok, result.failures
        sim_speed = result.virtual_seconds / result.wall_seconds
        real_seconds = 3.0 if not args.quick else 1.5
        progress(f"idle-heavy on stock asyncio for {real_seconds} real seconds (pings every 0.5 s)")
        started = time.perf_counter()
        asyncio.run(idle_on_asyncio(real_seconds, 0.5))
        real_speed = real_seconds / (time.perf_counter() - started)
        rows.append(
            {
                "measure": "idle-heavy: virtual s per wall s",
                "looming_sim": round(sim_speed, 1),
                "peer": "stock asyncio, real time",
                "peer_value": round(real_speed, 3),
                "ratio": round(sim_speed / real_speed, 1),
                "goal": ">= 1000",
                "met": sim_speed >= 1000,
            }
        )

        website = load_scenario(work / "examples" / "scenarios" / "website.py")
        artifacts = prepare(website)
        seeds = range(1, 31) if not args.quick else range(1, 11)
        progress(f"website sweep: seeds {seeds.start}..{seeds.stop - 1}")
        started = time.perf_counter()
        failed = []
        for seed in seeds:
            outcome = run(website, seed, artifacts=artifacts, keep_trace=False)
            if not outcome.ok:
                failed.append(seed)
        elapsed = time.perf_counter() - started
        seeds_per_s = len(seeds) / elapsed
        # In real time a seed lasts as long as its virtual run.
        real_seeds_per_s = 1.0 / result_virtual_of(website, artifacts)
        rows.append(
            {
                "measure": "website, 3 clients, loss, partition: seeds/s",
                "looming_sim": round(seeds_per_s, 1),
                "peer": "real time (1 seed lasts its virtual time)",
                "peer_value": round(real_seeds_per_s, 3),
                "ratio": round(seeds_per_s / real_seeds_per_s, 1),
                "goal": ">= 10",
                "met": seeds_per_s >= 10 and not failed,
                "failed_seeds": failed,
            }
        )

        progress("website without faults: simulator vs stock asyncio")
        clean = website_without_faults()
        clean_artifacts = prepare(clean)
        repeats = 5 if not args.quick else 2
        started = time.perf_counter()
        for seed in range(repeats):
            outcome = run(clean, seed, artifacts=clean_artifacts, keep_trace=False)
            assert outcome.ok, outcome.failures
        sim_run = (time.perf_counter() - started) / repeats
        started = time.perf_counter()
        for _ in range(repeats):
            good = asyncio.run(website_on_asyncio())
            assert good == 36, good
        real_run = (time.perf_counter() - started) / repeats
        rows.append(
            {
                "measure": "website, no faults: runs/s",
                "looming_sim": round(1 / sim_run, 1),
                "peer": "stock asyncio + memory switch, real time",
                "peer_value": round(1 / real_run, 1),
                "ratio": round(real_run / sim_run, 2),
                "goal": "",
                "met": True,
            }
        )
        rows.append(sweep_on_every_core(website, artifacts, args.quick))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import os
    import platform

    print()
    print(f"python {platform.python_version()}, {os.cpu_count()} cores")
    print(f"{'measure':<46} {'looming sim':>11} {'peer':>9} {'ratio':>9}  goal / peer")
    for row in rows:
        ratio = "" if row["ratio"] is None else f"{row['ratio']}x"
        mark = "met" if row["met"] else "NOT met"
        goal = f"goal {row['goal']} ({mark}); " if row["goal"] else ""
        print(
            f"{row['measure']:<46} {row['looming_sim']:>11} {row['peer_value']:>9} "
            f"{ratio:>9}  {goal}peer: {row['peer']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"sim": rows}, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 0


def sweep_on_every_core(website: Any, artifacts: Any, quick: bool) -> dict[str, Any]:
    """Seeds/s of a sweep on every core vs in one process, ABAB rounds."""
    import os

    from looming.sim.cli import sweep_outcomes

    cores = os.cpu_count() or 1
    seeds = range(1, 13) if quick else range(1, 25)
    rounds = 2
    elapsed = {1: 0.0, cores: 0.0}
    digests: dict[int, list[str]] = {}
    for number in range(rounds):
        for jobs in (1, cores):
            progress(f"website sweep, round {number + 1}: {len(seeds)} seeds on {jobs} process(es)")
            started = time.perf_counter()
            outcomes = list(sweep_outcomes(website, artifacts, seeds, jobs))
            elapsed[jobs] += time.perf_counter() - started
            digests[jobs] = [o.digest for o in outcomes]
    assert digests[1] == digests[cores], "a sweep on several processes changed a digest"
    one = rounds * len(seeds) / elapsed[1]
    every = rounds * len(seeds) / elapsed[cores]
    return {
        "measure": f"website sweep, {cores} processes: seeds/s",
        "looming_sim": round(every, 1),
        "peer": "the same sweep in one process",
        "peer_value": round(one, 1),
        "ratio": round(every / one, 2),
        "goal": "",
        "met": True,
    }


def result_virtual_of(scenario: Any, artifacts: Any) -> float:
    from looming.sim.world import run

    return float(run(scenario, 1, artifacts=artifacts, keep_trace=False).virtual_seconds)


if __name__ == "__main__":
    sys.exit(main())
