"""``looming sim``: run scenarios, sweep seeds, and check that runs replay.

    looming sim run SCENARIO.py --seed N        one run: summary, trace digest, pcaps
    looming sim run SCENARIO.py --seeds A..B    a sweep on every core (-j N: N processes):
                                                failing seeds and how to replay them
        ... --seeds A..B --cluster ADDRESS      the sweep on a Dask distributed cluster
    looming sim check SCENARIO.py --seed N      two runs in two fresh processes with
                                                different PYTHONHASHSEEDs; the first
                                                event (or frame) where they differ
    looming sim shrink SCENARIO.py --seed N     a smaller run failing the same way, and
                                                the command that replays it

Exit codes: 0 when every run passed (or both runs agree), 1 when a run
failed (or runs differ), 2 for bad input. Imported when ``looming`` starts,
so the simulator itself is imported only when a verb runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from looming.errors import ConfigError, UsageError
from looming.sim import shrink

if TYPE_CHECKING:
    from looming.sim.artifact import Artifact
    from looming.sim.cluster import ClusterSweep
    from looming.sim.spec import Scenario
    from looming.sim.world import RunResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="sim_verb", metavar="VERB")
    run = verbs.add_parser(
        "run",
        help="run a scenario with one seed (or sweep a range of seeds)",
        description="Run SCENARIO.py in virtual time. With --seed: print a summary and the "
        "trace digest and write one pcap per link. With --seeds A..B: run every seed and "
        "report each failing one with the command that replays it.",
    )
    _common(run)
    run.add_argument("--seeds", metavar="A..B", help="sweep seeds A to B (inclusive)")
    run.add_argument(
        "-j",
        "--jobs",
        type=str,
        default=None,
        metavar="N",
        help="with --seeds: run N seeds at a time in worker processes (default: every core)",
    )
    run.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="with --seeds: run the seeds on the Dask distributed cluster whose scheduler is "
        "at ADDRESS (e.g. tcp://10.0.0.5:8786); needs looming[cluster]",
    )
    run.add_argument(
        "--out",
        metavar="DIR",
        help="where pcaps and the trace go (default: sim-out/SCENARIO-seedN)",
    )
    run.add_argument("--no-pcap", action="store_true", help="do not write pcaps")
    shrink.add_override_arguments(run)
    run.add_argument("--trace", action="store_true", help="print the whole trace after the summary")
    run.add_argument(
        "--check-sample",
        type=int,
        default=1,
        metavar="K",
        help="after a sweep, replay K seeds (failing ones first) in two fresh processes "
        "and compare them as 'sim check' does (default: 1; 0: none)",
    )
    check = verbs.add_parser(
        "check",
        help="run a seed in two fresh processes and show the first event where they differ",
        description="Run SCENARIO.py with the same seed in two new Python processes with "
        "different PYTHONHASHSEED values and compare trace digests, the traces event by "
        "event and the pcaps frame by frame; a difference means something in the run is "
        "not deterministic (host time or randomness, set or dict order, ...).",
    )
    _common(check)
    shrink.add_override_arguments(check)
    shrink.add_parser(verbs)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO.py", help="the scenario file")
    parser.add_argument("--seed", type=str, default=None, help="the seed (default: 1)")
    parser.add_argument("--name", help="which scenario, when the file defines several")


def _seed(text: str | None) -> int:
    if text is None:
        return 1
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--seed: {text!r} is not a whole number") from None
    if value < 0:
        raise UsageError(f"--seed: {value} is negative; seeds are 0 or more")
    return value


def parse_seed_range(text: str) -> range:
    """``"A..B"`` (inclusive) as a range; a clear error otherwise."""
    low, dots, high = text.partition("..")
    try:
        first, last = int(low), int(high)
    except ValueError:
        first = last = -1
    if dots and 0 <= last < first:
        raise UsageError(
            f"--seeds: {text!r} is not a range of seeds: {first} is above {last}; "
            f"write {last}..{first}"
        )
    if not dots or first < 0 or last < first:
        raise UsageError(
            f"--seeds: {text!r} is not a range of seeds; write A..B with 0 <= A <= B, e.g. 1..100"
        )
    return range(first, last + 1)


def _jobs(text: str | None) -> int:
    if text is None:
        return os.cpu_count() or 1
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"-j: {text!r} is not a whole number of processes") from None
    if value < 1:
        raise UsageError(f"-j: {value} processes; give 1 or more")
    return value


def run(args: argparse.Namespace) -> int:
    verb = getattr(args, "sim_verb", None)
    if verb is None:
        print("looming sim: say 'run', 'check' or 'shrink' (looming sim --help)", file=sys.stderr)
        return 2
    cluster: ClusterSweep | None = None
    try:
        from looming.sim.spec import load_scenario
        from looming.sim.world import prepare

        if verb == "run" and args.seeds is not None and args.seed is not None:
            raise UsageError("give --seed or --seeds, not both")
        seeds = parse_seed_range(args.seeds) if verb == "run" and args.seeds else None
        jobs = _jobs(args.jobs) if verb == "run" else 1
        if verb == "run" and args.check_sample < 0:
            raise UsageError(f"--check-sample: {args.check_sample} is negative; give 0 or more")
        seed = _seed(args.seed)
        if verb == "run" and args.cluster is not None:
            from looming.sim.cluster import connect

            cluster = connect(args.cluster, args.seeds, args.jobs)
        scenario = load_scenario(args.scenario, args.name)
        if verb in ("run", "check"):
            scenario = shrink.apply_arguments(args, scenario)
        artifacts = prepare(scenario)
    except (UsageError, ConfigError) as error:
        if cluster is not None:
            cluster.close()
        print(f"looming sim: {error}", file=sys.stderr)
        return 2
    if verb == "check":
        return _check(args, seed)
    if verb == "shrink":
        return shrink.command(args, scenario, artifacts, seed)
    if seeds is not None:
        return _sweep(args, scenario, artifacts, seeds, jobs, cluster)
    return _run_one(args, scenario, artifacts, seed)


def _replay_command(args: argparse.Namespace, seed: int) -> str:
    parts = ["looming", "sim", "run", args.scenario, "--seed", str(seed)]
    if args.name:
        parts += ["--name", args.name]
    if hasattr(args, "faults"):
        parts += shrink.override_from(args).arguments()
    return shlex.join(parts)


def _run_one(
    args: argparse.Namespace, scenario: Scenario, artifacts: dict[str, Artifact], seed: int
) -> int:
    from looming.sim.world import run as run_scenario

    out = Path(args.out) if args.out else Path("sim-out") / f"{scenario.name}-seed{seed}"
    pcap_dir = None if args.no_pcap else out
    result = run_scenario(scenario, seed, artifacts=artifacts, pcap_dir=pcap_dir)
    _print_summary(result)
    if not args.no_pcap:
        out.mkdir(parents=True, exist_ok=True)
        trace_file = out / "trace.txt"
        trace_file.write_text("\n".join(result.events) + "\n", encoding="utf-8")
        print(f"trace:    {trace_file}")
        for path in result.pcaps:
            print(f"pcap:     {path}")
    if args.trace:
        print("\n".join(result.events))
    if not result.ok:
        print(f"replay:   {_replay_command(args, seed)}")
    return 0 if result.ok else 1


def _print_summary(result: RunResult) -> None:
    verdict = "passed" if result.ok else "FAILED"
    speed = result.virtual_seconds / result.wall_seconds if result.wall_seconds > 0 else 0.0
    print(f"scenario: {result.scenario}  seed {result.seed}  {verdict}")
    print(
        f"time:     {result.virtual_seconds:.3f} s virtual in {result.wall_seconds:.3f} s "
        f"({speed:.0f}x)"
    )
    print(f"events:   {result.event_count}  checks: {result.checks}")
    print(f"digest:   {result.digest}")
    for node, status in result.nodes.items():
        print(f"node:     {node} {status}")
    for link, (delivered, dropped) in result.links.items():
        print(f"link:     {link} {delivered} frames delivered, {dropped} dropped")
    for failure in result.failures:
        print(f"failure:  {failure}")


# What the worker processes of a sweep run: set before the pool forks.
_SWEEP: tuple[Scenario, dict[str, Artifact]] | None = None


@dataclass
class SeedOutcome:
    seed: int
    ok: bool
    virtual_seconds: float
    digest: str
    failure: str | None


def run_seed(seed: int) -> SeedOutcome:
    """One seed of a sweep (in a worker process, or in this one)."""
    from looming.sim.world import run as run_scenario

    assert _SWEEP is not None
    scenario, artifacts = _SWEEP
    result = run_scenario(scenario, seed, artifacts=artifacts, keep_trace=False)
    failure = result.failures[0] if result.failures else None
    return SeedOutcome(seed, result.ok, result.virtual_seconds, result.digest, failure)


def sweep_outcomes(
    scenario: Scenario, artifacts: dict[str, Artifact], seeds: range, jobs: int
) -> Iterator[SeedOutcome]:
    """Every seed's outcome, in seed order, run ``jobs`` at a time."""
    global _SWEEP
    _SWEEP = (scenario, artifacts)
    try:
        if jobs == 1 or len(seeds) == 1:
            yield from map(run_seed, seeds)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Forked workers inherit the loaded scenario and its built artifacts.
        context = multiprocessing.get_context("fork")
        workers = min(jobs, len(seeds))
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            yield from pool.map(run_seed, seeds, chunksize=1)
    finally:
        _SWEEP = None


def _sweep(
    args: argparse.Namespace,
    scenario: Scenario,
    artifacts: dict[str, Artifact],
    seeds: range,
    jobs: int,
    cluster: ClusterSweep | None = None,
) -> int:
    import time

    failing: list[tuple[int, str]] = []
    started = time.perf_counter()
    if cluster is None:
        outcomes = sweep_outcomes(scenario, artifacts, seeds, jobs)
    else:  # in the order the seeds complete; the workers apply the overrides too
        changes: shrink.Override | None = shrink.override_from(args)
        if changes == shrink.Override():
            changes = None
        outcomes = cluster.sweep(args.scenario, args.name, scenario, artifacts, seeds, changes)
    try:
        for outcome in outcomes:
            verdict = "ok" if outcome.ok else "FAILED"
            print(
                f"seed {outcome.seed}: {verdict}  {outcome.virtual_seconds:.1f} s virtual  "
                f"digest {outcome.digest[:16]}",
                flush=True,
            )
            if not outcome.ok:
                failing.append((outcome.seed, outcome.failure or "failed"))
    except UsageError as error:  # the cluster cannot go on
        print(f"looming sim: {error}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    workers = min(jobs, len(seeds))
    where = f"{workers} process{'es' if workers > 1 else ''}"
    print(
        f"{len(seeds)} seeds in {elapsed:.2f} s ({len(seeds) / elapsed:.1f} seeds/s, "
        f"{where if cluster is None else cluster.describe()}): "
        f"{len(seeds) - len(failing)} passed, {len(failing)} failed"
    )
    for seed, reason in sorted(failing):
        print(f"seed {seed} failed: {reason}")
        print(f"  replay: {_replay_command(args, seed)}")
    replays_differ = _check_sample(args, [s for s, _ in failing], seeds)
    return 1 if failing or replays_differ else 0


def _check_sample(args: argparse.Namespace, failing: list[int], seeds: range) -> bool:
    """Replay a sample of the sweep's seeds (failing ones first) in fresh
    processes; True when one of them does not replay identically."""
    sample: list[int] = []
    for seed in [*failing, *seeds]:
        if len(sample) >= args.check_sample:
            break
        if seed not in sample:
            sample.append(seed)
    differ = False
    for seed in sample:
        code, report = check_across_processes(args, seed)
        if code == 0:
            print(f"seed {seed} replays identically in two fresh processes")
            continue
        differ = True
        print(f"seed {seed} does NOT replay identically in two fresh processes:")
        print("\n".join(f"  {line}" for line in report))
        print(
            f"  check: {shlex.join(['looming', 'sim', 'check', args.scenario, '--seed', str(seed)])}"
        )
    return differ


# Two values that give different string hashes, so that code depending on set
# or dict order of strings behaves differently in the two runs of a check.
HASH_SEEDS = ("1", "2")


@dataclass
class Replay:
    """What one run of a seed in a fresh process left behind."""

    hash_seed: str
    returncode: int
    digest: str | None
    events: list[str] = field(default_factory=list)
    pcaps: dict[str, bytes] = field(default_factory=dict)
    stderr: str = ""


def replay_in_process(args: argparse.Namespace, seed: int, hash_seed: str, out: Path) -> Replay:
    """Run ``seed`` with ``looming sim run`` in a new interpreter."""
    command = [sys.executable, "-m", "looming.cli", "sim", "run", args.scenario]
    command += ["--seed", str(seed), "--out", str(out)]
    if args.name:
        command += ["--name", args.name]
    command += shrink.override_from(args).arguments()
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    digest = None
    for line in done.stdout.splitlines():
        if line.startswith("digest:"):
            digest = line.split()[1]
    trace = out / "trace.txt"
    events = trace.read_text(encoding="utf-8").splitlines() if trace.is_file() else []
    pcaps = {p.name: p.read_bytes() for p in sorted(out.glob("*.pcap"))}
    return Replay(hash_seed, done.returncode, digest, events, pcaps, done.stderr)


def pcap_frames(data: bytes) -> list[bytes]:
    """The records (header and bytes) of a classic pcap file."""
    frames = []
    offset = 24
    while offset + 16 <= len(data):
        length = int.from_bytes(data[offset + 8 : offset + 12], "little")
        frames.append(data[offset : offset + 16 + length])
        offset += 16 + length
    return frames


def compare_replays(first: Replay, second: Replay) -> list[str]:
    """Lines saying where two replays differ; empty when they are identical."""
    found: list[str] = []
    difference = first_difference(first.events, second.events)
    if difference is not None:
        index, a, b = difference
        found += [f"the runs differ first at event {index}:", f"  run 1: {a}", f"  run 2: {b}"]
    elif first.digest != second.digest:
        found.append(f"the trace digests differ: {first.digest} and {second.digest}")
    for name in sorted(set(first.pcaps) | set(second.pcaps)):
        if name not in first.pcaps or name not in second.pcaps:
            found.append(f"pcap {name}: written by only one of the runs")
            continue
        a_frames, b_frames = pcap_frames(first.pcaps[name]), pcap_frames(second.pcaps[name])
        for number, (x, y) in enumerate(zip(a_frames, b_frames, strict=False), start=1):
            if x != y:
                found.append(f"pcap {name}: frame {number} differs")
                break
        else:
            if len(a_frames) != len(b_frames):
                found.append(
                    f"pcap {name}: {len(a_frames)} frames in run 1, {len(b_frames)} in run 2"
                )
    return found


def check_across_processes(args: argparse.Namespace, seed: int) -> tuple[int, list[str]]:
    """(exit code, report lines) for ``seed`` run in two fresh processes."""
    with tempfile.TemporaryDirectory(prefix="looming-sim-check-") as scratch:
        replays = [
            replay_in_process(args, seed, hash_seed, Path(scratch) / f"run{n}")
            for n, hash_seed in enumerate(HASH_SEEDS, start=1)
        ]
    report = []
    for n, replay in enumerate(replays, start=1):
        if replay.digest is None:
            message = replay.stderr.strip() or f"exit code {replay.returncode}"
            return 2 if replay.returncode == 2 else 1, [f"run {n}: {message}"]
        report.append(
            f"run {n}: digest {replay.digest}  {len(replay.events)} events  "
            f"(PYTHONHASHSEED={replay.hash_seed}, a new process)"
        )
    differences = compare_replays(*replays)
    if not differences:
        pcaps = len(replays[0].pcaps)
        report.append(
            f"the two runs of seed {seed} are identical (trace and {pcaps} pcaps, in two processes)"
        )
        return 0, report
    return 1, report + differences


def _check(args: argparse.Namespace, seed: int) -> int:
    code, report = check_across_processes(args, seed)
    stream = sys.stderr if code == 2 else sys.stdout
    print("\n".join(report), file=stream)
    return code


def first_difference(a: list[str], b: list[str]) -> tuple[int, str, str] | None:
    """(index, event of a, event of b) where two traces first differ, or None."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index, x, y
    if len(a) != len(b):
        index = min(len(a), len(b))
        missing = "(the trace ends here)"
        return (
            index,
            a[index] if index < len(a) else missing,
            b[index] if index < len(b) else missing,
        )
    return None
