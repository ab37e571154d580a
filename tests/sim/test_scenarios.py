"""The example scenarios, TCP under faults, and unikernels as nodes."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import subprocess
from pathlib import Path

import pytest

import looming.sim
from looming.errors import LoomingError
from looming.sim import World
from looming.sim.spec import load_scenario
from looming.sim.world import prepare, run


@pytest.fixture(scope="module")
def website(app_copies: Path) -> tuple[looming.sim.Scenario, dict]:  # type: ignore[type-arg]
    scenario = load_scenario(app_copies / "scenarios" / "website.py")
    return scenario, prepare(scenario)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_website_with_three_clients_loss_and_a_partition(website, seed: int) -> None:  # type: ignore[no-untyped-def]
    scenario, artifacts = website
    result = run(scenario, seed, artifacts=artifacts)
    assert result.ok, result.failures
    # 3 clients x 3 rounds x 4 pages, each 200 with the exact bytes, plus counts.
    ok_checks = [e for e in result.events if " check ok " in e]
    assert len(ok_checks) == result.checks == 3 + 3 * 3 * 4
    assert any(" drop " in e and " loss " in e for e in result.events)
    assert any(" drop partition server->client" in e for e in result.events)


def test_echo_server_crashes_and_restarts_mid_transfer(app_copies: Path) -> None:
    scenario = load_scenario(app_copies / "scenarios" / "echo_crash.py")
    artifacts = prepare(scenario)
    for seed in (1, 2):
        result = run(scenario, seed, artifacts=artifacts)
        assert result.ok, result.failures
        assert any("node crash server" in e for e in result.events)
        assert any("node boot server #1" in e for e in result.events)
        assert sum("echo listening on port 7777" in e for e in result.events) == 2
        broke = [e for e in result.events if "broke after" in e]
        assert broke and "reset" in broke[0]


def test_echo_crash_passes_when_the_first_syn_is_lost(app_copies: Path) -> None:
    """Seeds 3 and 7 lose the client's first SYN: no connection is up at the
    crash, one connection carries everything, and the scenario says so."""
    scenario = load_scenario(app_copies / "scenarios" / "echo_crash.py")
    artifacts = prepare(scenario)
    for seed in (3, 7):
        result = run(scenario, seed, artifacts=artifacts)
        assert result.ok, result.failures
        assert any("no connection was up at the crash" in e for e in result.events)
        assert sum(" note connection " in e and "resumes" in e for e in result.events) == 1


def _scenario_drawing(draws: list[float]) -> looming.sim.Scenario:
    scenario = looming.sim.Scenario("draws", duration=10.0)
    scenario.host("a")

    @scenario.main
    async def drive(world: World) -> None:
        for _ in range(4):
            draws.append(world.random.random())
        world.note(f"picked {world.random.choice(['x', 'y', 'z', 'w'])}")
        await world.sleep(world.random.uniform(0.1, 1.0))

    return scenario


def test_world_random_is_drawn_from_the_seed_alone() -> None:
    draws: list[float] = []
    scenario = _scenario_drawing(draws)
    first = run(scenario, 5, artifacts={})
    again = run(scenario, 5, artifacts={})
    other = run(scenario, 6, artifacts={})
    assert first.ok and again.ok and other.ok
    assert draws[0:4] == draws[4:8] != draws[8:12]
    assert first.digest == again.digest != other.digest
    assert first.virtual_seconds == again.virtual_seconds != other.virtual_seconds


def _payload(size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


@looming.sim.scenario(
    duration=600.0,
    link=looming.sim.LinkSpec(
        latency=looming.sim.Uniform(0.001, 0.004),
        jitter=0.001,
        loss=0.05,
        duplicate=0.02,
        reorder=0.02,
        corrupt=0.01,
        bandwidth_bps=50_000_000,
    ),
    seeds=(1, 2),
)
async def test_tcp_data_arrives_intact_under_loss_reordering_duplication_corruption(
    world: World,
) -> None:
    data = _payload(300_000)
    server = world.add_host("server", ipv4="10.0.0.1/24")
    client = world.add_host("client", ipv4="10.0.0.2/24")
    received: dict[str, bytes] = {}
    done = asyncio.Event()

    async def serve(flow) -> None:  # type: ignore[no-untyped-def]
        chunks = []
        while chunk := await flow.read():
            chunks.append(chunk)
        received["data"] = b"".join(chunks)
        await flow.write(hashlib.sha256(received["data"]).digest())
        await flow.close()
        done.set()

    server_stack = await server.stack()
    await server_stack.tcp.listen(5000, serve)

    async def send(stack) -> bytes:  # type: ignore[no-untyped-def]
        flow = await stack.tcp.connect("10.0.0.1", 5000, timeout=30.0)
        for offset in range(0, len(data), 16_384):
            await flow.write(data[offset : offset + 16_384])
        await flow.shutdown()
        reply = b""
        while chunk := await flow.read():
            reply += chunk
        await flow.close()
        return reply

    reply = await client.run(send)
    await done.wait()
    assert received["data"] == data
    assert reply == hashlib.sha256(data).digest()
    trace = world.trace.events
    assert any(" drop " in e and " loss " in e for e in trace)
    assert any(" corrupt " in e for e in trace)
    assert any(" duplicate " in e for e in trace)
    assert any(" reorder " in e for e in trace)


def test_faults_are_visible_in_the_pcap(app_copies: Path, tmp_path: Path) -> None:
    """The website's partition (t=4 s to 14 s) as tshark sees it: nothing
    reaches the server while the server and clients keep retransmitting."""
    scenario = load_scenario(app_copies / "scenarios" / "website.py")
    result = run(scenario, 7, artifacts=prepare(scenario), pcap_dir=tmp_path)
    assert result.ok, result.failures
    assert sorted(p.name for p in result.pcaps) == [
        "client1-lan.pcap",
        "client2-lan.pcap",
        "client3-lan.pcap",
        "server-lan.pcap",
    ]

    def times(pcap: Path, display_filter: str = "") -> list[float]:
        command = ["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.time_relative"]
        if display_filter:
            command += ["-Y", display_filter]
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
        return [float(line) for line in out.stdout.split()]

    server = "02:10:00:00:00:01"
    # Relative times count from the first frame, the ARP announcement at t=0.
    to_server = times(tmp_path / "server-lan.pcap", f"eth.src != {server}")
    assert to_server, "tshark read no frames"
    inside = [t for t in to_server if 4.1 < t < 13.9]
    assert inside == [], f"frames reached the partitioned server: {inside}"
    assert any(t > 14.0 for t in to_server), "traffic resumes after the partition"
    from_server = times(
        tmp_path / "server-lan.pcap", f"eth.src == {server} && tcp.analysis.retransmission"
    )
    from_client = times(tmp_path / "client1-lan.pcap", "tcp.analysis.retransmission")
    assert any(4.0 < t < 14.0 for t in from_server + from_client)
    http = subprocess.run(
        ["tshark", "-r", str(tmp_path / "server-lan.pcap"), "-Y", "http.response.code == 200"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert http.stdout.count("200 OK") >= 3 * 3 * 4


@looming.sim.scenario(duration=100.0)
async def test_kv_rw_state_is_kept_or_lost_across_restarts(world: World) -> None:
    app = Path(__file__).resolve().parent / "apps" / "counter"
    node = world.add_node("counter", app)
    await asyncio.sleep(2.5)
    assert node.console[0].startswith("boot 1 ")
    assert node.console[1:] == [
        f"tick 1 at {node.current.time.now_ns() - 1_500_000_000}",  # type: ignore[union-attr]
        f"tick 2 at {node.current.time.now_ns() - 500_000_000}",  # type: ignore[union-attr]
    ]
    node.restart(keep_state=True)
    await asyncio.sleep(0.1)
    assert node.console[0].startswith("boot 2 ")
    node.crash()
    assert node.status == "crashed" and node.console == []
    await asyncio.sleep(10.0)
    node.restart(keep_state=False)
    await asyncio.sleep(0.1)
    assert node.console[0].startswith("boot 1 ")
    assert node.incarnations == 3


@looming.sim.scenario(duration=100.0)
async def test_a_paused_node_misses_nothing_but_time(world: World) -> None:
    app = Path(__file__).resolve().parent / "apps" / "counter"
    node = world.add_node("counter", app)
    await asyncio.sleep(2.5)
    node.pause()
    await asyncio.sleep(10.0)
    assert len(node.console) == 3
    node.resume()
    await asyncio.sleep(0.0)
    await asyncio.sleep(0.0)
    # The tick due during the pause runs at once; then one a second again.
    assert len(node.console) == 4
    await asyncio.sleep(1.0)
    assert len(node.console) == 5


@looming.sim.scenario(duration=100.0)
async def test_two_applications_with_the_same_module_names_share_a_network(world: World) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    echo = world.add_node("echo", _copy(examples / "echo"), ipv4="10.0.0.1/24")
    hello = world.add_node("hello", _copy(examples / "hello"), keys={"greetings": 3})
    client = world.add_host("client", ipv4="10.0.0.3/24")
    await asyncio.sleep(2.5)
    assert hello.console == [f"hello from looming ({i}/3)" for i in (1, 2, 3)]
    assert echo.console == ["echo listening on port 7777"]

    async def echo_once(stack) -> bytes:  # type: ignore[no-untyped-def]
        flow = await stack.tcp.connect("10.0.0.1", 7777)
        await flow.write(b"ping")
        answer = await flow.read()
        await flow.close()
        return bytes(answer)

    assert await client.run(echo_once) == b"ping"


def _copy(app: Path) -> Path:
    import atexit
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="looming-sim-"))
    # Scenario tests take no fixtures, so the copy is removed when the run ends.
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    target = root / app.name
    shutil.copytree(app, target, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__"))
    return target


@looming.sim.scenario(duration=100.0)
async def test_work_on_a_crashing_node_raises_node_crashed(world: World) -> None:
    host = world.add_host("h")

    async def forever(stack) -> None:  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()

    world.after(3.0, host.crash)
    try:
        await host.run(forever)
    except looming.sim.NodeCrashed as error:
        assert "h crashed" in str(error)
        assert world.now == 3.0
    else:
        raise AssertionError("run() returned from a crashed node")
    assert isinstance(looming.sim.NodeCrashed("x"), Exception)
    assert not isinstance(looming.sim.NodeCrashed("x"), LoomingError)


def test_a_driver_waiting_for_nothing_is_reported_as_a_deadlock() -> None:
    scenario = looming.sim.Scenario("stuck", duration=3600.0)
    scenario.host("a")

    @scenario.main
    async def drive(world: World) -> None:
        await world.node("a").stack()
        await world.sleep(5.0)
        await asyncio.Event().wait()

    result = run(scenario, 1, artifacts={})
    assert not result.ok
    (failure,) = result.failures
    assert failure.startswith("deadlock at t=")
    assert "scenario/task-" in failure and "drive" in failure
    assert "the scenario (2 tasks):" in failure and "node a (2 tasks):" in failure
    assert "waiting in Event.wait (" in failure and "for a future nobody will complete" in failure
    # Well before the scenario's hour: as soon as nothing but the deadline is left.
    assert result.virtual_seconds < 100.0


def test_a_deadlock_between_nodes_says_which_node_waits_on_what() -> None:
    scenario = looming.sim.Scenario("waits", duration=3600.0)
    scenario.host("a")
    scenario.host("b")

    @scenario.main
    async def drive(world: World) -> None:
        never = asyncio.Event()

        async def wait_for_peer(stack: object) -> None:
            await never.wait()

        async def wait_for_task(stack: object) -> None:
            await asyncio.get_running_loop().create_task(never.wait())

        await asyncio.gather(world.node("a").run(wait_for_peer), world.node("b").run(wait_for_task))

    result = run(scenario, 1, artifacts={})
    (failure,) = result.failures
    assert "node a (" in failure and "node b (" in failure, failure
    lines = failure.splitlines()
    a_line = next(line for line in lines if "wait_for_peer" in line)
    assert a_line.lstrip().startswith("a/task-") and "Event.wait" in a_line
    b_line = next(line for line in lines if "wait_for_task" in line)
    assert b_line.lstrip().startswith("b/task-") and "for task b/task-" in b_line


def test_a_driver_that_overruns_fails_at_the_deadline() -> None:
    scenario = looming.sim.Scenario("slow", duration=30.0)

    @scenario.main
    async def drive(world: World) -> None:
        while True:
            await world.sleep(1.0)

    result = run(scenario, 1, artifacts={})
    assert result.failures == ["the driver did not finish within the scenario's 30.0 s"]
    assert result.virtual_seconds == 30.0


def test_a_fault_schedule_of_every_kind_runs_in_order() -> None:
    scenario = looming.sim.Scenario("schedule", duration=60.0)
    scenario.host("a", ipv4="10.0.0.1/24")
    scenario.host("b", ipv4="10.0.0.2/24")
    scenario.at(1.0, looming.sim.partition("a", "b", one_way=True, duration=1.0))
    scenario.at(3.0, looming.sim.Isolate("b", duration=1.0))
    scenario.at(5.0, looming.sim.Hold("a"))
    scenario.at(6.0, looming.sim.Release("a"))
    scenario.at(7.0, looming.sim.Pause("b", duration=2.0))
    scenario.at(10.0, looming.sim.Crash("b"))
    scenario.at(11.0, looming.sim.Restart("b", keep_state=False))

    @scenario.main
    async def drive(world: World) -> None:
        stack = await world.node("a").stack()
        answered = []
        while world.now < 15.0:
            try:
                await stack.ping("10.0.0.2", timeout=0.25)
                answered.append(round(world.now, 1))
            except LoomingError:
                pass
            await world.sleep(0.25)
        world.note(f"answered {answered}")

    result = run(scenario, 1, artifacts={})
    assert result.ok, result.failures
    faults = [
        re.sub(r"release a-lan \d+ frames", "release a-lan HELD frames", e.split(" ", 2)[2])
        for e in result.events
        if e.split(" ", 2)[1] in ("fault", "node")
    ]
    assert faults == [
        "boot a #0",
        "boot b #0",
        "apply partition a -> b",
        "partition a -> b",
        "heal",
        "apply isolate b",
        "partition b <-> a",
        "heal",
        "apply hold a",
        "hold a-lan",
        "apply release a",
        "release a-lan HELD frames",
        "apply pause b",
        "pause b",
        "resume b (4 waiting callbacks)",
        "apply crash b",
        "crash b (2 tasks)",
        "apply restart b",
        "restart b losing state",
        "boot b #1",
        "stop a (2 tasks)",
        "stop b (2 tasks)",
    ]
    (note,) = [e for e in result.events if " note answered " in e]
    answered = eval(note.split(" note answered ", 1)[1])  # a list of floats we wrote
    # No answers while cut, isolated, held, paused or crashed.
    for start, end in ((1.0, 2.0), (3.0, 4.0), (5.0, 6.0), (7.0, 9.0), (10.0, 11.0)):
        assert not [t for t in answered if start + 0.3 < t < end], (start, answered)
    assert any(t > 12.0 for t in answered)


def test_each_node_logs_at_the_levels_of_its_own_logs_key() -> None:
    site = _copy(Path(__file__).resolve().parents[2] / "examples" / "static_website")
    scenario = looming.sim.Scenario("logs", duration=30.0)
    scenario.node("chatty", site, ipv4="10.0.0.1/24", keys={"port": 8080, "logs": "http:debug"})
    scenario.node("plain", site, ipv4="10.0.0.2/24", keys={"port": 8080})
    scenario.host("client", ipv4="10.0.0.3/24")

    @scenario.main
    async def drive(world: World) -> None:
        async def garbage(stack, address: str) -> bytes:  # type: ignore[no-untyped-def]
            flow = await stack.tcp.connect(address, 8080, timeout=5.0)
            await flow.write(b"NOT HTTP AT ALL\r\n\r\n")
            answer = await flow.read()
            await flow.close()
            return bytes(answer)

        await world.sleep(1.0)
        for address in ("10.0.0.1", "10.0.0.2"):
            answer = await world.node("client").run(lambda stack, at=address: garbage(stack, at))
            world.check(answer.startswith(b"HTTP/1.1 400"), f"{address}: {answer[:20]!r}")

    result = run(scenario, 1)
    assert result.ok, result.failures
    bad_requests = [line for line in result.logs if "bad request" in line]
    # Only the node whose --logs asks for http debug records says so.
    assert bad_requests and all(
        line.startswith("chatty debug looming.http") for line in bad_requests
    )
    assert not any(line.startswith("plain debug") for line in result.logs)
    # Levels are the run's: after it, the loggers are as they were.
    assert logging.getLogger("looming.http").level == logging.NOTSET


@pytest.mark.parametrize("spin", ["cpu", "zero-sleep"])
def test_a_node_that_spins_is_stopped_by_the_watchdog(spin: str) -> None:
    scenario = looming.sim.Scenario("spin", duration=60.0, watchdog_s=0.5)
    scenario.host("busy")

    async def forever(stack: object) -> None:
        total = 0
        while True:
            total += 1
            if spin == "zero-sleep":
                await asyncio.sleep(0)

    @scenario.main
    async def drive(world: World) -> None:
        await world.sleep(2.5)
        await world.node("busy").run(forever)

    result = run(scenario, 1, artifacts={})
    assert not result.ok
    (failure,) = [f for f in result.failures if f.startswith("watchdog:")]
    assert "virtual time stood still at t=2.5" in failure
    if spin == "cpu":
        assert "node 'busy' ran forever (" in failure and __file__ in failure
    assert result.wall_seconds < 10


def test_the_watchdog_leaves_a_slow_but_moving_run_alone() -> None:
    scenario = looming.sim.Scenario("slow-moving", duration=60.0, watchdog_s=0.5)

    @scenario.main
    async def drive(world: World) -> None:
        from looming.sim.intercept import real_monotonic

        for _ in range(4):  # 1.2 s of wall time, never more than 0.3 s at one instant
            deadline = real_monotonic() + 0.3
            while real_monotonic() < deadline:
                pass
            await world.sleep(0.1)

    result = run(scenario, 1, artifacts={})
    assert result.ok, result.failures
    assert result.wall_seconds > 1.0
