"""`looming sim` as a user drives it: runs, sweeps, checks, bad input,
determinism across processes, and the sim target through `looming`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.sim.conftest import run_looming

GOOD = """
from looming import sim

SCENARIO = sim.Scenario("tiny", duration=30.0)
SCENARIO.host("a", ipv4="10.0.0.1/24")
SCENARIO.host("b", ipv4="10.0.0.2/24")
{faults}

@SCENARIO.main
async def drive(world):
    stack = await world.node("a").stack()
    rtt = await stack.ping("10.0.0.2", timeout=1.0)
    world.note(f"rtt {{rtt:.9f}}")
    {extra}
"""


def scenario_file(tmp_path: Path, faults: str = "", extra: str = "", name: str = "s.py") -> Path:
    path = tmp_path / name
    path.write_text(GOOD.format(faults=faults, extra=extra))
    return path


def digest_of(output: str) -> str:
    match = re.search(r"^digest:\s+([0-9a-f]{64})$", output, re.M)
    assert match, output
    return match.group(1)


def test_run_prints_a_summary_digest_and_writes_pcaps(tmp_path: Path) -> None:
    path = scenario_file(tmp_path)
    out = tmp_path / "out"
    result = run_looming(["sim", "run", str(path), "--seed", "3", "--out", str(out)])
    assert result.returncode == 0, result.stderr
    assert "scenario: tiny  seed 3  passed" in result.stdout
    digest_of(result.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["a-lan.pcap", "b-lan.pcap", "trace.txt"]
    trace = (out / "trace.txt").read_text()
    assert " note rtt " in trace


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ('SCENARIO.at(5.0, sim.Crash("c"))', "names unknown node 'c'; nodes: a, b"),
        ('SCENARIO.swarm(["a", "zz"])', "swarm names unknown node 'zz'; nodes: a, b"),
        ('SCENARIO.swarm("a", kinds=["meteor"])', "unknown fault kind 'meteor'"),
        ('SCENARIO.swarm("a", end=99.0)', "past the end of the scenario"),
        ('SCENARIO.at(2.0, sim.Hold("nobody"))', "names unknown node 'nobody'"),
        ('SCENARIO.trunk("lan", "lna")', "trunk to switch 'lna', which no node is on"),
        ('SCENARIO.trunk("lan", "lan")', "joins switch 'lan' to itself"),
        ('SCENARIO.at(45.0, sim.Crash("a"))', "outside the scenario (0 to 30.0 s)"),
        ("SCENARIO.at(-1.0, sim.Heal())", "at t=-1.0 s is outside the scenario"),
        (
            'SCENARIO.at(25.0, sim.partition("a", "b", duration=10.0))',
            "lasts past the end of the scenario",
        ),
        ('SCENARIO.at(1.0, sim.partition("a", "a"))', "on both sides"),
        ('SCENARIO.node("web", "no/such/app")', "unknown application"),
        ('SCENARIO.host("c", link=sim.LinkSpec(loss=1.5))', "loss must be a probability"),
        ('SCENARIO.host("c", ipv4="10.0.0.1/24")', "share 10.0.0.1"),
        ('SCENARIO.host("d", ipv4="10.0.0.300/24")', "is not an IPv4 address"),
    ],
)
def test_bad_scenarios_fail_before_running_with_exit_code_2(
    tmp_path: Path, faults: str, message: str
) -> None:
    path = scenario_file(tmp_path, faults=faults)
    result = run_looming(["sim", "run", str(path), "--seed", "1"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "digest" not in result.stdout


def test_unknown_keys_for_a_node_fail_before_running(tmp_path: Path, app_copies: Path) -> None:
    faults = f'SCENARIO.node("echo", {str(app_copies / "echo")!r}, keys={{"prot": 80}})'
    result = run_looming(["sim", "run", str(scenario_file(tmp_path, faults=faults))])
    assert result.returncode == 2
    assert "node 'echo': unknown key --prot" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "5..2"], "is not a range of seeds: 5 is above 2; write 2..5"),
        (["--seeds", "9..1"], "9 is above 1; write 1..9"),
        (["--seeds", "1..3", "-j", "0"], "-j: 0 processes; give 1 or more"),
        (["--seeds", "1..3", "-j", "many"], "-j: 'many' is not a whole number"),
        (["--seeds", "1..3", "--check-sample", "-1"], "--check-sample: -1 is negative"),
        (["--seeds", "x"], "is not a range of seeds"),
        (["--seed", "-4"], "negative"),
        (["--seed", "one"], "not a whole number"),
        (["--seed", "1", "--seeds", "1..2"], "not both"),
    ],
)
def test_bad_seeds_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_looming(["sim", "run", str(scenario_file(tmp_path)), *args])
    assert result.returncode == 2
    assert message in result.stderr


def test_missing_or_empty_scenario_files_exit_2(tmp_path: Path) -> None:
    missing = run_looming(["sim", "run", str(tmp_path / "nope.py")])
    assert missing.returncode == 2 and "no scenario file" in missing.stderr
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    result = run_looming(["sim", "run", str(empty)])
    assert result.returncode == 2 and "defines no scenario" in result.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("raise ValueError('oops')\n")
    result = run_looming(["sim", "check", str(broken)])
    assert result.returncode == 2 and "failed to load: ValueError: oops" in result.stderr


def test_a_sweep_reports_each_failing_seed_with_its_replay_command(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path, extra='world.check(world.seed % 3 != 0, "seed not a multiple of 3")'
    )
    result = run_looming(["sim", "run", str(path), "--seeds", "1..7"])
    assert result.returncode == 1
    assert "7 seeds in" in result.stdout and "5 passed, 2 failed" in result.stdout
    for seed in (3, 6):
        assert f"seed {seed} failed: check failed" in result.stdout
        assert f"replay: looming sim run {path} --seed {seed}" in result.stdout
    replay = run_looming(["sim", "run", str(path), "--seed", "6", "--no-pcap"])
    assert replay.returncode == 1
    assert f"replay:   looming sim run {path} --seed 6" in replay.stdout


def _seed_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"seed \d+: (ok|FAILED) ", line)]


def test_a_sweep_on_worker_processes_gives_what_one_process_gives(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path, extra='world.check(world.seed % 3 != 0, "seed not a multiple of 3")'
    )
    common = ["sim", "run", str(path), "--seeds", "1..7", "--check-sample", "0"]
    one = run_looming([*common, "-j", "1"])
    two = run_looming([*common, "-j", "2"])
    assert one.returncode == two.returncode == 1, one.stdout + one.stderr + two.stderr
    assert "1 process)" in one.stdout and "2 processes)" in two.stdout
    assert _seed_lines(one.stdout) == _seed_lines(two.stdout)
    assert [line.split(":")[0] for line in _seed_lines(two.stdout)] == [
        f"seed {n}" for n in range(1, 8)
    ]
    for seed in (3, 6):
        assert f"seed {seed} failed: check failed" in two.stdout
        assert f"replay: looming sim run {path} --seed {seed}" in two.stdout
    default = run_looming(common)
    assert f"{min(os.cpu_count() or 1, 7)} process" in default.stdout


def test_the_same_seed_gives_the_same_digest_in_separate_processes(
    app_copies: Path, tmp_path: Path
) -> None:
    scenario = str(app_copies / "scenarios" / "website.py")
    digests = []
    for hash_seed, seed in (("1", "11"), ("2", "11"), ("3", "12")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = tmp_path / f"hash{hash_seed}"
        result = run_looming(["sim", "run", scenario, "--seed", seed, "--out", str(out)], env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        digests.append(digest_of(result.stdout))
    assert digests[0] == digests[1]
    assert digests[2] != digests[0]
    # The pcaps and the trace are byte-identical too.
    for name in ("server-lan.pcap", "client1-lan.pcap", "trace.txt"):
        assert (tmp_path / "hash1" / name).read_bytes() == (tmp_path / "hash2" / name).read_bytes()
        assert (tmp_path / "hash1" / name).read_bytes() != (tmp_path / "hash3" / name).read_bytes()


def test_a_broken_application_fails_before_running(tmp_path: Path) -> None:
    app = tmp_path / "broken"
    app.mkdir()
    (app / "config.py").write_text(
        "from looming.config import main, register, console\n"
        "job = main('unikernel:Missing', [console()])\n"
        "register('broken', [job])\n"
    )
    (app / "unikernel.py").write_text("class Other:\n    pass\n")
    path = scenario_file(tmp_path, faults=f"SCENARIO.node('web', {str(app)!r})")
    result = run_looming(["sim", "run", str(path)])
    assert result.returncode == 2
    assert (
        "config.py:2: main(): unikernel.py defines no class or function 'Missing'" in result.stderr
    )


def test_check_finds_identical_runs(app_copies: Path) -> None:
    result = run_looming(
        ["sim", "check", str(app_copies / "scenarios" / "echo_crash.py"), "--seed", "4"]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the two runs of seed 4 are identical" in result.stdout


HASH_ORDER = """
from looming import sim

SCENARIO = sim.Scenario("hash-order", duration=30.0)
SCENARIO.host("a", ipv4="10.0.0.1/24")
SCENARIO.host("b", ipv4="10.0.0.2/24")
NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


async def work(world, stack):
    names = {ORDER}
    for name in names:
        world.note("visit " + name)
    # The network sees the order too: one ping per name before 'alpha'.
    for _ in range(list(names).index("alpha") + 1):
        await stack.ping("10.0.0.2", timeout=1.0)


@SCENARIO.main
async def drive(world):
    await world.node("a").run(lambda stack: work(world, stack))
"""


def test_check_reports_a_node_depending_on_string_hash_order(tmp_path: Path) -> None:
    path = tmp_path / "hashy.py"
    path.write_text(HASH_ORDER.replace("{ORDER}", "set(NAMES)"))
    result = run_looming(["sim", "check", str(path), "--seed", "1"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PYTHONHASHSEED=1" in result.stdout and "PYTHONHASHSEED=2" in result.stdout
    assert "the runs differ first at event" in result.stdout
    lines = result.stdout.splitlines()
    first, second = (next(x for x in lines if x.startswith(f"  run {n}: ")) for n in (1, 2))
    assert " note visit " in first and " note visit " in second and first != second
    assert "pcap a-lan.pcap: " in result.stdout


def test_check_passes_a_node_that_sorts_its_set(tmp_path: Path) -> None:
    path = tmp_path / "sorted.py"
    path.write_text(HASH_ORDER.replace("{ORDER}", "sorted(set(NAMES))"))
    result = run_looming(["sim", "check", str(path), "--seed", "1"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the two runs of seed 1 are identical (trace and 2 pcaps, in two processes)" in (
        result.stdout
    )


def test_a_sweep_checks_a_sample_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "hashy.py"
    path.write_text(HASH_ORDER.replace("{ORDER}", "set(NAMES)"))
    result = run_looming(["sim", "run", str(path), "--seeds", "1..2"])
    # Every seed passes its checks, but the sample does not replay.
    assert "2 passed, 0 failed" in result.stdout
    assert result.returncode == 1
    assert "seed 1 does NOT replay identically in two fresh processes" in result.stdout
    assert f"check: looming sim check {path} --seed 1" in result.stdout
    fine = tmp_path / "sorted.py"
    fine.write_text(HASH_ORDER.replace("{ORDER}", "sorted(set(NAMES))"))
    result = run_looming(["sim", "run", str(fine), "--seeds", "1..2", "--check-sample", "2"])
    assert result.returncode == 0, result.stdout
    for seed in (1, 2):
        assert f"seed {seed} replays identically in two fresh processes" in result.stdout


def test_host_randomness_in_a_scenario_replays_in_fresh_processes(tmp_path: Path) -> None:
    # os.urandom, uuid4 and secrets come from the seed inside a run.
    extra = (
        "import os, secrets, uuid, time; world.note(f'{os.urandom(4).hex()} {uuid.uuid4()} "
        "{secrets.token_hex(4)} {time.time()}')"
    )
    path = scenario_file(tmp_path, extra=extra)
    result = run_looming(["sim", "check", str(path), "--seed", "1"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the two runs of seed 1 are identical" in result.stdout


def test_check_names_the_first_event_where_runs_differ(tmp_path: Path) -> None:
    # The process id leaks into the trace: exactly what check is for.
    path = scenario_file(tmp_path, extra='import os; world.note(f"token {os.getpid()}")')
    result = run_looming(["sim", "check", str(path), "--seed", "1"])
    assert result.returncode == 1
    assert "the runs differ first at event" in result.stdout
    lines = result.stdout.splitlines()
    first, second = (next(x for x in lines if x.startswith(f"  run {n}: ")) for n in (1, 2))
    assert " note token " in first and " note token " in second and first[9:] != second[9:]


def test_the_sim_target_configures_and_builds_a_node_artifact(
    app_copies: Path, tmp_path: Path
) -> None:
    import shutil

    app = tmp_path / "hello"
    shutil.copytree(app_copies / "hello", app)
    configured = run_looming(["configure", "-t", "sim", "--greetings", "2"], cwd=app)
    assert configured.returncode == 0, configured.stderr
    main = (app / "_build" / "sim" / "main.py").read_text()
    assert "SimDevices.console()" in main and "SimDevices.time()" in main
    built = run_looming(["build"], cwd=app)
    assert built.returncode == 0, built.stderr
    artifact = app / "dist" / "hello-sim.pyz"
    assert artifact.is_file()
    ran = run_looming(["run"], cwd=app)
    assert ran.returncode != 0 and "looming sim run" in ran.stderr
    stamp = artifact.stat().st_mtime_ns
    scenario = tmp_path / "hello_scenario.py"
    scenario.write_text(
        "from looming import sim\n"
        'SCENARIO = sim.Scenario("hello", duration=10.0)\n'
        f'SCENARIO.node("h", {str(app)!r})\n'
        "@SCENARIO.main\n"
        "async def drive(world):\n"
        "    await world.sleep(5)\n"
        '    world.check(world.node("h").console == '
        '["hello from looming (1/2)", "hello from looming (2/2)"], "two greetings")\n'
    )
    result = run_looming(["sim", "run", str(scenario), "--no-pcap", "--trace"])
    assert result.returncode == 0, result.stdout + result.stderr
    # The greetings a virtual second apart, from the artifact `looming build` made.
    assert re.search(
        r"^000000000000000 console h: hello from looming \(1/2\)$", result.stdout, re.M
    )
    assert re.search(
        r"^000001000000000 console h: hello from looming \(2/2\)$", result.stdout, re.M
    )
    assert artifact.stat().st_mtime_ns == stamp


def _newest_other_python() -> Path | None:
    """The newest CPython 3.12+ installed beside this one (pyenv keeps them
    side by side), if any."""
    import sys

    found: list[tuple[tuple[int, ...], Path]] = []
    for candidate in Path(sys.base_prefix).parent.glob("3.*/bin/python3"):
        try:
            version = tuple(int(p) for p in candidate.parents[1].name.split(".")[:2])
        except ValueError:
            continue
        if version > sys.version_info[:2] and version >= (3, 12):
            found.append((version, candidate))
    return max(found)[1] if found else None


def test_the_digest_is_the_same_on_the_newest_python(app_copies: Path, tmp_path: Path) -> None:
    import h11

    newest = _newest_other_python()
    if newest is None:
        pytest.skip("no Python newer than this one is installed beside it")
    # The simulator needs only looming and h11 (pure Python) for this scenario.
    (tmp_path / "h11").symlink_to(Path(h11.__file__).parent)
    src = Path(__file__).resolve().parents[2] / "src"
    scenario = str(app_copies / "scenarios" / "website.py")
    args = ["sim", "run", scenario, "--seed", "21", "--no-pcap"]
    here = run_looming(args, env={**os.environ, "PYTHONHASHSEED": "5"})
    assert here.returncode == 0, here.stdout + here.stderr
    import subprocess

    there = subprocess.run(
        [str(newest), "-m", "looming.cli", *args],
        env={**os.environ, "PYTHONPATH": f"{src}:{tmp_path}", "PYTHONHASHSEED": "6"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert there.returncode == 0, there.stdout + there.stderr
    assert digest_of(here.stdout) == digest_of(there.stdout)
