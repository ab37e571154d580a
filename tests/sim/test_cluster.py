"""`looming sim run --seeds A..B --cluster ADDRESS` against a real Dask cluster:
a scheduler and worker processes on 127.0.0.1, started by the tests with
the `distributed` command-line programs and stopped afterwards, whatever
happens. A seed's digest on the cluster must be the one a local sweep
gives, also when a worker dies mid-sweep."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim.conftest import LOOMING, run_looming

distributed = pytest.importorskip("distributed")

SCENARIO = """
from pathlib import Path

from looming import sim
from looming.http.client import HttpClient

# {token}
SITE = Path(__file__).resolve().parent.parent / "static_website"
SCENARIO = sim.Scenario(
    "cluster-site",
    duration=30.0,
    link=sim.LinkSpec(latency=sim.Uniform(0.0005, 0.002), jitter=0.0005, loss=0.03),
)
SCENARIO.node("server", "../static_website", ipv4="10.0.0.1/24", keys={{"port": 8080}})
SCENARIO.host("client", ipv4="10.0.0.2/24")


@SCENARIO.main
async def drive(world):
    # Read on the machine running the seed: a worker reads its unpacked copy.
    expected = (SITE / "htdocs" / "index.html").read_bytes()

    async def fetch(stack, address="10.0.0.1"):
        flow = await stack.tcp.connect(address, 8080, timeout=10.0)
        response = await HttpClient(flow).request("GET", "/index.html")
        await flow.close()
        return response.status, response.body

    # Wall time (the same work whatever the seed), to make a sweep last.
    world.note(f"burnt {{sum(i * i for i in range({burn})) % 7}}")
    for _ in range({rounds}):
        status, body = await world.node("client").run(fetch)
        world.check(status == 200 and body == expected, f"index.html: {{status}}, {{len(body)}}")
    if {added}:  # a node added while running, from a shipped application
        world.add_node("late", SITE, ipv4="10.0.0.3/24", keys={{"port": 8080}})
        status, body = await world.node("client").run(lambda s: fetch(s, "10.0.0.3"))
        world.check(status == 200 and body == expected, f"late: {{status}}, {{len(body)}}")
    world.check(world.random.random() >= 0.3, "the seed's draw is at least 0.3")
"""

SEED_LINE = re.compile(r"^seed (\d+): (ok|FAILED) .* digest ([0-9a-f]{16}|\(worker died\))$", re.M)


def write_scenario(examples: Path, rounds: int = 1, burn: int = 0, added: bool = False) -> Path:
    """A scenario file of its own (a new bundle hash) beside the example scenarios."""
    folder = examples / f"cluster-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    path = folder / "site.py"
    path.write_text(SCENARIO.format(token=uuid.uuid4().hex, rounds=rounds, burn=burn, added=added))
    return path


def seed_lines(output: str) -> dict[int, tuple[str, str]]:
    return {int(s): (verdict, digest) for s, verdict, digest in SEED_LINE.findall(output)}


class DaskCluster:
    """A scheduler and workers, each a process group of its own."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = {**os.environ, **(env or {})}
        self.scheduler_file = root / "scheduler.json"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str, module: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", f"distributed.cli.{module}", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.env,
        )
        log.close()
        self.processes[name] = process
        return process

    def start_scheduler(self) -> str:
        self._start(
            "scheduler",
            "dask_scheduler",
            [
                *("--host", "127.0.0.1", "--port", "0", "--no-dashboard"),
                # Should the test run itself be killed: gone after 5 idle minutes.
                *("--idle-timeout", "300s"),
                *("--scheduler-file", str(self.scheduler_file)),
            ],
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.scheduler_file.is_file():
                try:
                    return str(json.loads(self.scheduler_file.read_text())["address"])
                except (ValueError, KeyError):
                    pass
            time.sleep(0.05)
        raise AssertionError(f"no scheduler: {self.log('scheduler')}")

    def start_worker(self, name: str) -> None:
        self._start(
            name,
            "dask_worker",
            [
                *("--scheduler-file", str(self.scheduler_file), "--name", name),
                *("--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard"),
                *("--local-directory", str(self.root / name)),
                *("--death-timeout", "30s"),  # without a scheduler, gone in 30 s
            ],
        )

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-3000:]

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        """Every process group killed (a graceful close takes seconds)."""
        for name in self.processes:
            self.kill(name)


def wait_for_workers(address: str, names: set[str], timeout: float = 30.0) -> dict[str, str]:
    """{worker name: address} once every named worker is in the scheduler."""
    with distributed.Client(address, timeout=10, set_as_default=False) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = client.scheduler_info()["workers"]
            found = {info["name"]: addr for addr, info in workers.items()}
            if names <= set(found):
                return found
            time.sleep(0.05)
    raise AssertionError(f"workers {sorted(names)} did not join {address}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaskCluster, str]]:
    dask = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        address = dask.start_scheduler()
        dask.start_worker("w1")
        dask.start_worker("w2")
        wait_for_workers(address, {"w1", "w2"})
        yield dask, address
    finally:
        dask.stop()


def test_a_cluster_sweep_gives_each_seed_the_digest_of_a_local_sweep(
    app_copies: Path, cluster: tuple[DaskCluster, str]
) -> None:
    dask, address = cluster
    path = write_scenario(app_copies, added=True)
    common = ["sim", "run", str(path), "--seeds", "1..8", "--check-sample", "0"]
    remote = run_looming([*common, "--cluster", address])
    local = run_looming([*common, "-j", "1"])
    assert remote.returncode == local.returncode == 1, remote.stdout + remote.stderr
    remote_seeds, local_seeds = seed_lines(remote.stdout), seed_lines(local.stdout)
    assert sorted(remote_seeds) == list(range(1, 9)), remote.stdout
    assert remote_seeds == local_seeds
    failing = [s for s, (verdict, _) in remote_seeds.items() if verdict == "FAILED"]
    assert 0 < len(failing) < 8, remote.stdout
    assert f"{8 - len(failing)} passed, {len(failing)} failed" in remote.stdout
    assert f"cluster: {address}, 2 workers" in remote.stdout
    assert "Dask workers at" in remote.stdout
    for seed in failing:
        assert f"seed {seed} failed: check failed at" in remote.stdout
        assert f"replay: looming sim run {path} --seed {seed}\n" in remote.stdout
    # The bundle went to each worker that ran a seed and was unpacked once,
    # under its content hash, in that worker's local directory.
    unpacked = list(dask.root.glob("w*/**/looming-sim/*/cluster-*/site.py"))
    assert unpacked, "no worker unpacked the bundle"
    assert all(re.fullmatch(r"[0-9a-f]{64}", p.parent.parent.name) for p in unpacked)
    assert all(p.read_text() == path.read_text() for p in unpacked)
    # The added node's artifact was shipped, not built again on a worker.
    assert not list(dask.root.glob("w*/**/looming-sim/*/static_website/_build"))


def test_the_workers_run_the_scenario_as_the_command_line_changes_it(
    app_copies: Path, cluster: tuple[DaskCluster, str]
) -> None:
    _, address = cluster
    path = write_scenario(app_copies)
    common = ["sim", "run", str(path), "--seeds", "1..3", "--check-sample", "0"]
    common += ["--duration", "0.001"]  # too short for the driver: every seed fails
    remote = run_looming([*common, "--cluster", address])
    assert remote.returncode == 1, remote.stdout + remote.stderr
    # Without --duration every seed gets further (see the test above).
    assert {v for v, _ in seed_lines(remote.stdout).values()} == {"FAILED"}
    for seed in (1, 2, 3):
        reason = "the driver did not finish within the scenario's 0.001 s"
        assert f"seed {seed} failed: {reason}" in remote.stdout
        assert f"--seed {seed} --duration 0.001\n" in remote.stdout


def test_workers_need_nothing_from_the_submitting_machines_files(
    app_copies: Path, tmp_path: Path, cluster: tuple[DaskCluster, str]
) -> None:
    from looming.sim.cluster import ClusterSweep, make_bundle
    from looming.sim.spec import load_scenario
    from looming.sim.world import prepare, run

    # A private copy of the application and scenario, removed before the sweep.
    examples = tmp_path / "examples"
    shutil.copytree(app_copies / "static_website", examples / "static_website")
    path = write_scenario(examples)
    scenario = load_scenario(path)
    artifacts = prepare(scenario)
    local = {s: run(scenario, s, artifacts=artifacts, keep_trace=False).digest for s in (1, 2, 3)}
    bundle = make_bundle(path, None, scenario, artifacts)
    shutil.rmtree(examples)

    _, address = cluster
    notes: list[str] = []
    sweep = ClusterSweep(address, notes.append)
    try:
        outcomes = list(sweep.outcomes(bundle, [1, 2, 3]))
    finally:
        sweep.close()
    assert {o.seed: o.digest for o in outcomes} == local
    assert notes == [f"cluster: {address}, 2 workers"]


def test_a_worker_killed_mid_sweep_has_its_seeds_run_by_the_others(
    app_copies: Path, tmp_path: Path, cluster: tuple[DaskCluster, str]
) -> None:
    dask, address = cluster
    dask.start_worker("doomed")
    workers = wait_for_workers(address, {"w1", "w2", "doomed"})
    path = write_scenario(app_copies, rounds=2, burn=1_000_000)
    command = [*LOOMING, "sim", "run", str(path), "--seeds", "1..12", "--check-sample", "0"]
    errors = (tmp_path / "stderr").open("w")
    sweep = subprocess.Popen(
        [*command, "--cluster", address], stdout=subprocess.PIPE, stderr=errors, text=True
    )
    errors.close()
    lines: list[str] = []
    assert sweep.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(sweep.stdout or []), daemon=True)
    reader.start()
    try:
        with distributed.Client(address, timeout=10, set_as_default=False) as client:
            deadline = time.monotonic() + 60
            # Kill it while it runs a seed, once the sweep is under way.
            while not (
                sum(line.startswith("seed ") for line in lines) >= 2
                and client.processing([workers["doomed"]]).get(workers["doomed"])
            ):
                assert time.monotonic() < deadline and sweep.poll() is None, "".join(lines)
                time.sleep(0.01)
            dask.kill("doomed")
        sweep.wait(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    reader.join(timeout=10)
    output = "".join(lines)
    assert sweep.returncode == 1, output + (tmp_path / "stderr").read_text()
    assert re.search(r"^cluster: 2 workers \(was 3\); \d+ seeds to go$", output, re.M), output
    local = run_looming(command[len(LOOMING) :])
    assert seed_lines(output) == seed_lines(local.stdout)
    assert sorted(seed_lines(output)) == list(range(1, 13))


KILLER = """
import os

from looming import sim

SCENARIO = sim.Scenario("killer", duration=10.0)
SCENARIO.host("a", ipv4="10.0.0.1/24")


@SCENARIO.main
async def drive(world):
    await world.sleep(1.0)
    if world.seed == 3:
        # Some wall time first, so that the worker has told the scheduler
        # about the seed it ran before; then the end of its interpreter.
        world.note(f"{sum(range(3_000_000))}")
        os._exit(17)
    world.note("still here")
"""


def test_a_seed_that_kills_its_worker_every_time_is_a_failing_seed(tmp_path: Path) -> None:
    # The scheduler gives up on a task after one death of its worker, and
    # gives a worker one task at a time (no bystander dies with the seed).
    settings = {
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
        "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0",
    }
    dask = DaskCluster(tmp_path, settings)
    path = tmp_path / "killer.py"
    path.write_text(KILLER)
    try:
        address = dask.start_scheduler()
        dask.start_worker("n1")
        dask.start_worker("n2")
        wait_for_workers(address, {"n1", "n2"})
        command = ["sim", "run", str(path), "--seeds", "1..5", "--check-sample", "0"]
        result = run_looming([*command, "--cluster", address])
    finally:
        dask.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    seeds = seed_lines(result.stdout)
    assert {s: v for s, (v, _) in seeds.items()} == {
        1: "ok",
        2: "ok",
        3: "FAILED",
        4: "ok",
        5: "ok",
    }, result.stdout
    assert "seed 3: FAILED  0.0 s virtual  digest (worker died)" in result.stdout
    assert "seed 3 failed: the worker running it died each time it was tried" in result.stdout
    assert f"replay: looming sim run {path} --seed 3\n" in result.stdout


def test_an_unreachable_scheduler_is_exit_2_within_seconds(app_copies: Path) -> None:
    path = write_scenario(app_copies)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = run_looming(
        ["sim", "run", str(path), "--seeds", "1..3", "--cluster", f"tcp://127.0.0.1:{port}"]
    )
    assert time.monotonic() - started < 8
    assert result.returncode == 2
    assert f"cannot connect to 127.0.0.1:{port} (Connection refused)" in result.stderr
    assert "dask scheduler" in result.stderr and "Traceback" not in result.stderr


def test_something_else_on_the_port_is_not_taken_for_a_scheduler(app_copies: Path) -> None:
    path = write_scenario(app_copies)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer() -> None:
            for _ in range(4):
                try:
                    peer, _ = server.accept()
                except OSError:
                    return
                with peer:
                    peer.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)

        threading.Thread(target=answer, daemon=True).start()
        started = time.monotonic()
        result = run_looming(
            ["sim", "run", str(path), "--seeds", "1..3", "--cluster", f"tcp://127.0.0.1:{port}"]
        )
    assert time.monotonic() - started < 12
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not a Dask scheduler" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "1"], "--cluster runs a sweep: give --seeds A..B"),
        (["--seeds", "1..3", "-j", "2"], "give -j or --cluster, not both"),
    ],
)
def test_cluster_with_the_wrong_companions_is_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "s.py"
    path.write_text("raise SystemExit('the scenario must not even load')\n")
    result = run_looming(["sim", "run", str(path), *args, "--cluster", "tcp://127.0.0.1:9"])
    assert result.returncode == 2
    assert message in result.stderr


def test_without_distributed_one_line_names_the_extra(tmp_path: Path) -> None:
    # A `distributed` that cannot be imported, first on the path.
    shadow = tmp_path / "shadow" / "distributed"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named distributed')\n")
    path = tmp_path / "s.py"
    path.write_text("raise SystemExit('the scenario must not even load')\n")
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    result = run_looming(
        ["sim", "run", str(path), "--seeds", "1..3", "--cluster", "tcp://127.0.0.1:9"], env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "pip install 'looming[cluster]'" in result.stderr


def test_a_bundle_is_checked_and_unpacked_once(tmp_path: Path) -> None:
    import hashlib
    import io
    import zipfile

    from looming.sim.cluster import ClusterError, unpack

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("a/scenario.py", "x = 1\n")
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(ClusterError, match="arrived damaged"):
        unpack(data[:30] + bytes([data[30] ^ 0xFF]) + data[31:], digest, tmp_path)
    assert not (tmp_path / digest).exists()
    folder = unpack(data, digest, tmp_path)
    assert folder == tmp_path / digest
    assert (folder / "a" / "scenario.py").read_text() == "x = 1\n"
    (folder / "a" / "scenario.py").write_text("changed")
    assert unpack(data, digest, tmp_path) == folder  # found, not unpacked again
    assert (folder / "a" / "scenario.py").read_text() == "changed"
    assert [p.name for p in tmp_path.iterdir()] == [digest]


def test_log_records_of_the_hosts_other_threads_stay_out_of_the_trace() -> None:
    """A worker process has threads of its own (its event loop, heartbeats):
    what they log while a seed runs is not part of the seed's trace."""
    import logging

    from looming import sim
    from looming.sim.world import run

    scenario = sim.Scenario("pings", duration=120.0)
    scenario.host("a", ipv4="10.0.0.1/24")
    scenario.host("b", ipv4="10.0.0.2/24")

    @scenario.main
    async def drive(world: sim.World) -> None:
        stack = await world.node("a").stack()
        for _ in range(40):
            await stack.ping("10.0.0.2", timeout=1.0)
            world.note(f"burnt {sum(i * i for i in range(20_000)) % 7}")

    alone = run(scenario, 5, artifacts={}, keep_trace=True)
    stop = threading.Event()
    logger = logging.getLogger("host.heartbeat")

    def chatter() -> None:
        while not stop.is_set():
            logger.warning("heartbeat")
            time.sleep(0.0005)

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        beside = run(scenario, 5, artifacts={}, keep_trace=True)
    finally:
        stop.set()
        thread.join()
    assert not [e for e in beside.events if "heartbeat" in e]
    assert beside.digest == alone.digest


def test_a_scheduler_without_workers_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from looming.sim import cluster as cluster_module
    from looming.sim.cluster import Bundle, BundleInfo, ClusterError, ClusterSweep

    monkeypatch.setattr(cluster_module, "WORKER_WAIT_S", 0.5)
    dask = DaskCluster(tmp_path)
    try:
        address = dask.start_scheduler()
        notes: list[str] = []
        sweep = ClusterSweep(address, notes.append)
        try:
            bundle = Bundle(BundleInfo("0" * 64, "s.py", None, (), "0"), b"")
            with pytest.raises(ClusterError, match="has no workers: start some with 'dask worker"):
                list(sweep.outcomes(bundle, [1]))
        finally:
            sweep.close()
    finally:
        dask.stop()
    assert notes == ["cluster: waiting up to 0.5 s for a worker to join"]
