"""Storage on sim nodes, end to end: a kv_store node crashed and restarted
many times under lost and torn writes keeps every acknowledged commit (the
linearizability checker says so), a backend that writes its ref before its
objects are durable is caught, and disk faults replay exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from looming.sim.diskstore import SimDiskBackend
from looming.sim.spec import load_scenario
from looming.sim.storage import SimKvRw
from looming.sim.world import RunResult, prepare, run
from looming.store.objects import ObjectId
from tests.sim.conftest import run_looming

SCENARIO = """
import asyncio

from looming import sim

SCENARIO = sim.Scenario("store_crashes", duration=200.0)
SCENARIO.node("server", {app!r}, ipv4="10.0.0.1/24")
SCENARIO.host("client", ipv4="10.0.0.2/24")
SCENARIO.disk("server", {disk})
{extra}
KEYS = ["a", "b", "c"]


async def request(world, line):
    async def talk(stack):
        flow = await stack.tcp.connect("10.0.0.1", 7000)
        await flow.write(line.encode() + b"\\n")
        reply = b""
        while not reply.endswith(b"\\n"):
            data = await flow.read()
            if not data:
                break
            reply += data
        await flow.close()
        return reply.decode().strip()

    try:
        return await asyncio.wait_for(world.node("client").run(talk), 2.0)
    except Exception as error:
        return f"LOST {{type(error).__name__}}"


async def crash_often(world):
    server = world.node("server")
    for _ in range({crashes}):
        await world.sleep(world.random.uniform(0.2, 1.5))
        server.crash()
        await world.sleep(world.random.uniform(0.05, 0.3))
        server.restart(keep_state=True)


async def use(world, history, number):
    key = world.random.choice(KEYS)
    if world.random.random() < 0.6:
        op = history.invoke("client", "write", key, value=number)
        reply = await request(world, f"{write} {{key}} {{number}}")
        history.ok(op) if reply == "OK" else history.unknown(op)
        return reply
    else:
        op = history.invoke("client", "read", key)
        reply = await request(world, f"{read} {{key}}")
        if reply.startswith("VAL "):
            history.ok(op, int(reply[4:]))
        elif reply == "NONE":
            history.ok(op, None)
        else:
            world.note(f"read of {{key}}: {{reply}}")
            history.unknown(op)
        return reply


@SCENARIO.main
async def drive(world):
    history = sim.History(world)
    crasher = asyncio.ensure_future(crash_often(world))
    number = 0
    while not crasher.done():
        number += 1
        reply = await use(world, history, number)
        if reply.startswith("ERR"):  # the store is broken: no need to go on
            world.check(False, f"the store answered {{reply}}")
            crasher.cancel()
            return
    await world.sleep(0.5)
    for key in KEYS:
        op = history.invoke("client", "read", key)
        reply = await request(world, f"{read} {{key}}")
        world.check(reply.startswith(("VAL ", "NONE")), f"final read of {{key}}: {{reply}}")
        history.ok(op, int(reply[4:]) if reply.startswith("VAL ") else None)
    world.note(f"{{number}} operations")
    world.check(history.check(), "every acknowledged commit is kept")
"""

FAULTS = "lost_writes=0.5, torn_writes=0.3, latency=sim.Uniform(0.0005, 0.004)"


def scenario_file(
    tmp_path: Path,
    app: Path,
    disk: str = FAULTS,
    crashes: int = 6,
    extra: str = "",
    verbs: tuple[str, str] = ("SET", "GET"),  # kv_store; PUT, FETCH: kv_rw
) -> Path:
    path = tmp_path / "store_crashes.py"
    write, read = verbs
    text = SCENARIO.format(
        app=str(app), disk=disk, crashes=crashes, extra=extra, write=write, read=read
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def store_app(app_copies: Path) -> Path:
    return app_copies / "storage"


def sweep(path: Path, seeds: range) -> list[RunResult]:
    scenario = load_scenario(path)
    artifacts = prepare(scenario)
    return [run(scenario, seed, artifacts=artifacts) for seed in seeds]


def test_a_crashing_store_keeps_every_acknowledged_commit(store_app: Path, tmp_path: Path) -> None:
    results = sweep(scenario_file(tmp_path, store_app), range(1, 7))
    for result in results:
        assert result.ok, (result.seed, result.failures)
        text = "\n".join(result.events)
        assert text.count("crash server") >= 6
        assert "ok every acknowledged commit is kept" in text
    every = "\n".join("\n".join(r.events) for r in results)
    # The faults happened, and each one is in a trace.
    assert "disk server lost write kv_store/data_git/" in every
    assert "disk server torn write " in every
    acknowledged = sum("\n".join(r.events).count("ok every acknowledged") for r in results)
    assert acknowledged == len(results)


def test_a_crashing_kv_rw_keeps_every_acknowledged_write(store_app: Path, tmp_path: Path) -> None:
    path = scenario_file(tmp_path, store_app, verbs=("PUT", "FETCH"))
    results = sweep(path, range(1, 4))
    for result in results:
        assert result.ok, (result.seed, result.failures)
    every = "\n".join("\n".join(r.events) for r in results)
    assert "disk server lost write kv_rw/notes" in every
    assert "ok every acknowledged commit is kept" in every


def _ref_before_objects(
    self: SimDiskBackend, name: str, old: ObjectId | None, new: ObjectId | None
) -> None:
    """The bug: the ref table is synced before the objects it names."""
    if self._refs.get(name) != old:
        from looming.store.errors import RefChanged

        raise RefChanged(f"{name} moved")
    refs = dict(self._refs)
    if new is None:
        refs.pop(name, None)
    else:
        refs[name] = new
    self._write_refs(refs)
    self.flush()
    self._refs = refs


def test_a_backend_writing_the_ref_before_its_objects_is_caught(
    store_app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SimDiskBackend, "set_ref", _ref_before_objects)
    results = sweep(scenario_file(tmp_path, store_app), range(1, 7))
    failing = [r for r in results if not r.ok]
    assert failing, "six seeds of crashes under lost writes find the misordered ref"
    assert any("missing commit" in "\n".join(r.events) for r in failing)


async def _ack_before_sync(self: SimKvRw, tag: bytes, payload: bytes = b"") -> None:
    """The bug: the change is acknowledged once its sync is issued, not done."""
    record, _done = self._log.append(tag, payload)
    self._apply(record)
    self._log.sync()


def test_a_kv_rw_acknowledging_before_its_sync_completes_is_caught(
    store_app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SimKvRw, "_commit", _ack_before_sync)
    path = scenario_file(tmp_path, store_app, verbs=("PUT", "FETCH"))
    failing = [r for r in sweep(path, range(1, 4)) if not r.ok]
    assert failing, "three seeds of crashes under lost writes find the early acknowledgement"
    assert any("FAILED every acknowledged commit is kept" in "\n".join(r.events) for r in failing)


def test_without_lost_writes_the_broken_backend_goes_unnoticed(
    store_app: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: it is the disk faults that find the bug."""
    monkeypatch.setattr(SimDiskBackend, "set_ref", _ref_before_objects)
    path = scenario_file(tmp_path, store_app, disk="latency=sim.Uniform(0.0005, 0.004)")
    for result in sweep(path, range(1, 4)):
        assert result.ok, (result.seed, result.failures)


def test_disk_faults_replay_identically_in_fresh_processes(store_app: Path, tmp_path: Path) -> None:
    disk = (
        "lost_writes=0.5, torn_writes=0.3, read_errors=0.02, corruption=0.0005, "
        "slow_io=0.05, latency=sim.Exponential(0.001)"
    )
    path = scenario_file(tmp_path, store_app, disk=disk, crashes=3)
    checked = run_looming(["sim", "check", str(path), "--seed", "4"])
    assert checked.returncode in (0, 1), checked.stdout + checked.stderr
    assert "identical" in checked.stdout, checked.stdout
    out = [tmp_path / "a", tmp_path / "b"]
    for seed, where in zip(("4", "5"), out, strict=True):
        result = run_looming(["sim", "run", str(path), "--seed", seed, "--out", str(where)])
        assert "digest:" in result.stdout, result.stdout + result.stderr
    traces = [(where / "trace.txt").read_text() for where in out]
    assert traces[0] != traces[1]
    for trace in traces:
        assert " disk server " in trace


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('SCENARIO.disk("nobody", lost_writes=0.5)', "disk faults for unknown node 'nobody'"),
        (
            'SCENARIO.disk("server", torn_writes=1.5)',
            "disk faults of node 'server': torn_writes is a probability: give 0 to 1, not 1.5",
        ),
        ('SCENARIO.disk("server", lost=0.5)', "unknown fault in ['lost']"),
        (
            'SCENARIO.at(1.0, sim.DiskFault("ghost", sim.DiskFaults(read_errors=0.1)))',
            "names unknown node 'ghost'",
        ),
        (
            'SCENARIO.at(1.0, sim.DiskFault("server", sim.DiskFaults(read_errors=2)))',
            "read_errors is a probability",
        ),
        ('SCENARIO.swarm("server", kinds=["disk", "flood"])', "unknown fault kind 'flood'"),
    ],
)
def test_bad_disk_faults_exit_2(store_app: Path, tmp_path: Path, line: str, message: str) -> None:
    path = scenario_file(tmp_path, store_app, extra=line)
    if "SCENARIO.disk" in line:
        path.write_text(path.read_text().replace(f'SCENARIO.disk("server", {FAULTS})\n', ""))
    result = run_looming(["sim", "run", str(path), "--seed", "1"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr + result.stdout


def test_a_swarm_of_disk_faults_is_drawn_from_the_seed(store_app: Path, tmp_path: Path) -> None:
    extra = 'SCENARIO.swarm("server", kinds=["disk"], max_rate=1.0, end=4.0, max_down=1.0)'
    path = scenario_file(tmp_path, store_app, disk="", crashes=4, extra=extra)
    scenario = load_scenario(path)
    artifacts = prepare(scenario)
    drawn_counts, disk_events = set(), 0
    for seed in range(1, 5):
        result = run(scenario, seed, artifacts=artifacts)
        drawn = [e for e in result.events if " swarm at " in e and ": disk server:" in e]
        applied = [e for e in result.events if " fault apply disk server:" in e]
        # Each drawn window is applied (the run may end before a late one).
        assert [e.split("disk server: ", 1)[1] for e in applied] == [
            e.split("disk server: ", 1)[1] for e in drawn[: len(applied)]
        ]
        drawn_counts.add(len(drawn))
        if applied:
            after = result.events[result.events.index(applied[0]) :]
            disk_events += sum(" disk server " in e for e in after)
    assert len(drawn_counts) > 1, "the seed decides how many disk windows there are"
    assert disk_events > 0, "the faults drawn happen, and show in the trace"


def test_the_sim_target_links_the_storage_devices_to_the_node_disk(store_app: Path) -> None:
    result = run_looming(["configure", "-t", "sim"], cwd=store_app)
    assert result.returncode == 0, result.stdout + result.stderr
    main = (store_app / "_build" / "sim" / "main.py").read_text()
    assert "await SimDevices.kv_store('data_git', branch='main')" in main
    assert "await SimDevices.kv_rw('notes')" in main
    assert "await SimDevices.block('disk_img', sector_size=512)" in main
    assert "kv_store store on the node's simulated disk (main)" in main


def test_keep_state_false_starts_with_an_empty_disk(store_app: Path, tmp_path: Path) -> None:
    extra = """
@SCENARIO.main
async def drive(world):
    world.check(await request(world, "SET a 1") == "OK", "set")
    world.check(await request(world, "PUT n 2") == "OK", "put")
    world.check(await request(world, "WRITE 3 abcd") == "OK", "write")
    world.node("server").restart(keep_state=True)
    await world.sleep(0.2)
    world.check(await request(world, "GET a") == "VAL 1", "kept a")
    world.check(await request(world, "FETCH n") == "VAL 2", "kept n")
    world.check(await request(world, "READ 3") == "VAL abcd", "kept sector 3")
    world.node("server").restart(keep_state=False)
    await world.sleep(0.2)
    world.check(await request(world, "GET a") == "NONE", "a gone")
    world.check(await request(world, "FETCH n") == "NONE", "n gone")
    world.check(await request(world, "READ 3") == "VAL", "sector 3 zero")
"""
    path = scenario_file(tmp_path, store_app, disk="lost_writes=1.0", extra="")
    path.write_text(path.read_text() + extra.replace("{{", "{").replace("}}", "}"))
    (result,) = sweep(path, range(1, 2))
    assert result.ok, result.failures
    assert result.checks == 9
