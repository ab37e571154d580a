"""``looming sim``: run scenarios, sweep seeds, and check that runs replay.

    looming sim run SCENARIO.py --seed N        one run: summary, trace digest, pcaps
    looming sim run SCENARIO.py --seeds A..B    a sweep: failing seeds and how to replay them
    looming sim check SCENARIO.py --seed N      two runs; the first event where they differ

Exit codes: 0 when every run passed (or both runs agree), 1 when a run
failed (or runs differ), 2 for bad input. Imported when ``looming`` starts,
so the simulator itself is imported only when a verb runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from looming.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from looming.sim.artifact import Artifact
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
        "--out",
        metavar="DIR",
        help="where pcaps and the trace go (default: sim-out/SCENARIO-seedN)",
    )
    run.add_argument("--no-pcap", action="store_true", help="do not write pcaps")
    run.add_argument("--trace", action="store_true", help="print the whole trace after the summary")
    check = verbs.add_parser(
        "check",
        help="run a scenario twice and show the first event where the runs differ",
        description="Run SCENARIO.py twice with the same seed and compare the traces event "
        "by event; a difference means something in the run is not deterministic.",
    )
    _common(check)


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
    if not dots or first < 0 or last < first:
        raise UsageError(
            f"--seeds: {text!r} is not a range of seeds; write A..B with 0 <= A <= B, e.g. 1..100"
        )
    return range(first, last + 1)


def run(args: argparse.Namespace) -> int:
    verb = getattr(args, "sim_verb", None)
    if verb is None:
        print("looming sim: say 'run' or 'check' (looming sim --help)", file=sys.stderr)
        return 2
    try:
        from looming.sim.spec import load_scenario
        from looming.sim.world import prepare

        if verb == "run" and args.seeds is not None and args.seed is not None:
            raise UsageError("give --seed or --seeds, not both")
        seeds = parse_seed_range(args.seeds) if verb == "run" and args.seeds else None
        seed = _seed(args.seed)
        scenario = load_scenario(args.scenario, args.name)
        artifacts = prepare(scenario)
    except (UsageError, ConfigError) as error:
        print(f"looming sim: {error}", file=sys.stderr)
        return 2
    if verb == "check":
        return _check(args, scenario, artifacts, seed)
    if seeds is not None:
        return _sweep(args, scenario, artifacts, seeds)
    return _run_one(args, scenario, artifacts, seed)


def _replay_command(args: argparse.Namespace, seed: int) -> str:
    parts = ["looming", "sim", "run", args.scenario, "--seed", str(seed)]
    if args.name:
        parts += ["--name", args.name]
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


def _sweep(
    args: argparse.Namespace, scenario: Scenario, artifacts: dict[str, Artifact], seeds: range
) -> int:
    import time

    from looming.sim.world import run as run_scenario

    failing: list[tuple[int, str]] = []
    started = time.perf_counter()
    for seed in seeds:
        result = run_scenario(scenario, seed, artifacts=artifacts, keep_trace=False)
        verdict = "ok" if result.ok else "FAILED"
        print(
            f"seed {seed}: {verdict}  {result.virtual_seconds:.1f} s virtual  "
            f"digest {result.digest[:16]}",
            flush=True,
        )
        if not result.ok:
            failing.append((seed, result.failures[0]))
    elapsed = time.perf_counter() - started
    print(
        f"{len(seeds)} seeds in {elapsed:.2f} s ({len(seeds) / elapsed:.1f} seeds/s): "
        f"{len(seeds) - len(failing)} passed, {len(failing)} failed"
    )
    for seed, reason in failing:
        print(f"seed {seed} failed: {reason}")
        print(f"  replay: {_replay_command(args, seed)}")
    return 1 if failing else 0


def _check(
    args: argparse.Namespace, scenario: Scenario, artifacts: dict[str, Artifact], seed: int
) -> int:
    from looming.sim.world import run as run_scenario

    first = run_scenario(scenario, seed, artifacts=artifacts)
    second = run_scenario(scenario, seed, artifacts=artifacts)
    print(f"run 1: digest {first.digest}  {first.event_count} events")
    print(f"run 2: digest {second.digest}  {second.event_count} events")
    difference = first_difference(first.events, second.events)
    if difference is None:
        print(f"the two runs of seed {seed} are identical")
        return 0
    index, a, b = difference
    print(f"the runs differ first at event {index}:")
    print(f"  run 1: {a}")
    print(f"  run 2: {b}")
    return 1


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
