"""Benchmark of the simulator: how much faster than real time, and how many seeds a second.

Measurements, each beside a peer in the same run:

1. idle-heavy: five hosts that ping one another every 30 s for an hour of
   virtual time. Figure: virtual seconds per wall second (goal >= 1000x).
   Peer: the same pings on stock asyncio for a few real seconds (1x by nature).
2. sweeps of the website scenario (three clients, 5% loss, a 10 s partition)
   and of https_website (a TLS 1.3 handshake per request, 2% loss): seeds per
   second and virtual seconds per wall second in one process (one core), on
   every core (``looming sim run --seeds``' process pool) and on a local Dask
   cluster of two worker processes (``--cluster``), in interleaved rounds
   (one core, every core, Dask, again); every way must give each seed the
   same digest. The one-core sweep is also counted in seeds per CPU second
   of the process, which other load on the machine does not lower (goal:
   >= 20 website seeds per CPU second, i.e. per core).
3. the overhead of determinism: the website without faults (three clients
   fetching every page three times) in the simulator against the same work on
   stock asyncio and the in-memory switch in real time, ABAB rounds.

    .venv/bin/python bench/sim.py [--quick] [--no-cluster] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
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
    parser.add_argument("--no-cluster", action="store_true", help="leave out the Dask cluster")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()

    from looming.sim.spec import load_scenario
    from looming.sim.world import prepare

    work = Path(tempfile.mkdtemp(prefix="looming-bench-sim-"))
    dask: LocalDask | None = None
    try:
        # Build in a copy so the repository's examples keep their own _build.
        ignore = shutil.ignore_patterns("_build", "dist", "__pycache__")
        shutil.copytree(REPO / "examples", work / "examples", ignore=ignore)
        SITE_COPY = work / "examples" / "static_website"
        rows = [idle_heavy(args.quick)]
        if not args.no_cluster:
            dask = LocalDask.start(work / "dask")
        for name, seeds in (("website", 24), ("https_website", 12)):
            scenario = load_scenario(work / "examples" / "scenarios" / f"{name}.py")
            artifacts = prepare(scenario)
            count = seeds // 2 if args.quick else seeds
            rows += sweep_rows(name, scenario, artifacts, range(1, count + 1), dask)
        rows.append(determinism_overhead(args.quick))
    finally:
        if dask is not None:
            dask.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_rows(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"sim": rows}, indent=2) + "\n")
        progress(f"wrote {args.json}")
    return 0


def versions() -> str:
    import looming

    found = [f"python {platform.python_version()}", f"looming {looming.__version__}"]
    for package in ("distributed", "h11"):
        try:
            from importlib.metadata import version

            found.append(f"{package} {version(package)}")
        except Exception:
            found.append(f"{package} (not installed)")
    return ", ".join(found) + f"; {os.cpu_count()} cores"


def print_rows(rows: list[dict[str, Any]]) -> None:
    print()
    print(versions())
    print(f"{'measure':<50} {'looming sim':>11} {'peer':>9} {'ratio':>9}  goal / peer")
    for row in rows:
        ratio = "" if row["ratio"] is None else f"{row['ratio']}x"
        mark = "met" if row["met"] else "NOT met"
        goal = f"goal {row['goal']} ({mark}); " if row["goal"] else ""
        print(
            f"{row['measure']:<50} {row['looming_sim']:>11} {row['peer_value']:>9} "
            f"{ratio:>9}  {goal}peer: {row['peer']}"
        )


def idle_heavy(quick: bool) -> dict[str, Any]:
    from looming.sim.world import run

    virtual = 3600.0 if not quick else 900.0
    progress(f"idle-heavy: 5 hosts pinging every 30 s for {virtual:.0f} virtual seconds")
    result = run(idle_scenario(virtual), 1, artifacts={}, keep_trace=False)
    assert result.ok, result.failures
    sim_speed = result.virtual_seconds / result.wall_seconds
    real_seconds = 3.0 if not quick else 1.5
    progress(f"idle-heavy on stock asyncio for {real_seconds} real seconds (pings every 0.5 s)")
    started = time.perf_counter()
    asyncio.run(idle_on_asyncio(real_seconds, 0.5))
    real_speed = real_seconds / (time.perf_counter() - started)
    return {
        "measure": "idle-heavy: virtual s per wall s",
        "looming_sim": round(sim_speed, 1),
        "peer": "stock asyncio, real time",
        "peer_value": round(real_speed, 3),
        "ratio": round(sim_speed / real_speed, 1),
        "goal": ">= 1000",
        "met": sim_speed >= 1000,
    }


# -- 2. sweeps: one core, every core, a local Dask cluster ------------------------------


class LocalDask:
    """A Dask scheduler and two single-threaded worker processes on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[subprocess.Popen[bytes]] = []
        self.address = ""

    @classmethod
    def start(cls, root: Path, workers: int = 2) -> LocalDask | None:
        try:
            import distributed
        except ImportError:
            progress("no dask.distributed (pip install 'looming[cluster]'): no cluster rows")
            return None
        root.mkdir(parents=True)
        dask = cls(root)
        scheduler_file = root / "scheduler.json"
        common = ["--no-dashboard", "--scheduler-file", str(scheduler_file)]
        dask._spawn("dask_scheduler", ["--host", "127.0.0.1", "--port", "0", *common])
        deadline = time.monotonic() + 30
        while not scheduler_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        for number in range(workers):
            local = ["--local-directory", str(root / f"w{number}"), "--host", "127.0.0.1"]
            dask._spawn("dask_worker", [*common, "--nthreads", "1", "--no-nanny", *local])
        time.sleep(0.2)
        dask.address = json.loads(scheduler_file.read_text())["address"]
        client: Any = distributed.Client(dask.address, timeout=10, set_as_default=False)  # type: ignore[no-untyped-call]
        with client:
            client.wait_for_workers(workers, timeout=30)
        progress(f"Dask cluster at {dask.address}, {workers} workers")
        return dask

    def _spawn(self, module: str, args: list[str]) -> None:
        log = (self.root / f"{module}-{len(self.processes)}.log").open("wb")
        command = [sys.executable, "-m", f"distributed.cli.{module}", *args]
        self.processes.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        log.close()

    def stop(self) -> None:
        import signal

        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def sweep_rows(
    name: str, scenario: Any, artifacts: Any, seeds: range, dask: LocalDask | None
) -> list[dict[str, Any]]:
    """Seeds/s of one scenario's sweep on one core, every core and the Dask
    cluster, in interleaved rounds; the last two as ratios over one core."""
    from looming.sim.cli import sweep_outcomes
    from looming.sim.cluster import ClusterSweep, make_bundle

    cores = os.cpu_count() or 1
    cluster = None if dask is None else ClusterSweep(dask.address, note=progress)
    ways: dict[str, Any] = {
        "1 core": lambda: sweep_outcomes(scenario, artifacts, seeds, 1),
        f"{cores} processes": lambda: sweep_outcomes(scenario, artifacts, seeds, cores),
    }
    if cluster is not None:
        bundle = make_bundle(scenario.source, None, scenario, artifacts)
        ways["Dask, 2 workers"] = lambda: cluster.outcomes(bundle, seeds)
    list(sweep_outcomes(scenario, artifacts, range(1, 2), 1))  # warm: compiled modules
    wall = dict.fromkeys(ways, 0.0)
    virtual = dict.fromkeys(ways, 0.0)
    cpu = 0.0
    digests: dict[str, dict[int, str]] = {}
    failed: set[int] = set()
    try:
        for number in range(2):
            for way, outcomes in ways.items():
                progress(f"{name} sweep, round {number + 1}: {len(seeds)} seeds, {way}")
                started, cpu_started = time.perf_counter(), time.process_time()
                done = list(outcomes())
                wall[way] += time.perf_counter() - started
                if way == "1 core":
                    cpu += time.process_time() - cpu_started
                virtual[way] += sum(o.virtual_seconds for o in done)
                digests[way] = {o.seed: o.digest for o in done}
                failed.update(o.seed for o in done if not o.ok)
    finally:
        if cluster is not None:
            cluster.close()
    for way, found in digests.items():
        assert found == digests["1 core"], f"{name}: a sweep on {way} changed a digest"
    rows = [per_cpu_row(name, 2 * len(seeds), cpu, virtual["1 core"])]
    rows += [sweep_row(name, way, 2 * len(seeds), wall, virtual) for way in ways]
    if failed:  # a benchmark of failing runs measures something else
        rows[0]["measure"] += f" ({len(failed)} seeds FAILED)"
        rows[0]["met"] = False
        rows[0]["failed_seeds"] = sorted(failed)
    return rows


def sweep_row(
    name: str,
    way: str,
    runs: int,
    wall: dict[str, float],
    virtual: dict[str, float],
) -> dict[str, Any]:
    per_s = runs / wall[way]
    speed = virtual[way] / wall[way]
    if way == "1 core":
        return {
            "measure": f"{name} sweep, 1 core: seeds/s",
            "looming_sim": round(per_s, 1),
            "peer": f"real time (1 seed lasts its virtual time); {speed:.0f} virtual s/s",
            "peer_value": round(runs / virtual[way], 3),
            "ratio": round(speed, 1),
            "goal": "",
            "met": True,
        }
    one = runs / wall["1 core"]
    return {
        "measure": f"{name} sweep, {way}: seeds/s",
        "looming_sim": round(per_s, 1),
        "peer": f"the same sweep on 1 core; {speed:.0f} virtual s/s",
        "peer_value": round(one, 1),
        "ratio": round(per_s / one, 2),
        "goal": "",
        "met": True,
    }


def per_cpu_row(name: str, runs: int, cpu: float, virtual: float) -> dict[str, Any]:
    """Seeds per CPU second of the one-process sweep: what one core does,
    whatever else the machine runs meanwhile."""
    per_s = runs / cpu
    goal = ">= 20" if name == "website" else ""
    return {
        "measure": f"{name} sweep, 1 core: seeds per CPU second",
        "looming_sim": round(per_s, 1),
        "peer": "real time (1 seed lasts its virtual time)",
        "peer_value": round(runs / virtual, 3),
        "ratio": round(per_s * virtual / runs, 1),
        "goal": goal,
        "met": per_s >= 20 or not goal,
    }


# -- 3. the overhead of determinism ------------------------------------------------------


def determinism_overhead(quick: bool) -> dict[str, Any]:
    """The website without faults: simulator against stock asyncio, ABAB."""
    from looming.sim.world import prepare, run

    progress("website without faults: simulator vs stock asyncio, interleaved")
    clean = website_without_faults()
    clean_artifacts = prepare(clean)
    run(clean, 0, artifacts=clean_artifacts, keep_trace=False)  # warm
    rounds = 6 if not quick else 3
    sim_s = real_s = 0.0
    for seed in range(rounds):
        started = time.perf_counter()
        outcome = run(clean, seed, artifacts=clean_artifacts, keep_trace=False)
        sim_s += time.perf_counter() - started
        assert outcome.ok, outcome.failures
        started = time.perf_counter()
        good = asyncio.run(website_on_asyncio())
        real_s += time.perf_counter() - started
        assert good == 36, good
    return {
        "measure": "website, no faults: runs/s (overhead of determinism)",
        "looming_sim": round(rounds / sim_s, 1),
        "peer": "stock asyncio + memory switch, real time (ratio > 1: the sim is faster)",
        "peer_value": round(rounds / real_s, 1),
        "ratio": round(real_s / sim_s, 2),
        "goal": "",
        "met": True,
    }


if __name__ == "__main__":
    sys.exit(main())
