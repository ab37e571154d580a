"""Shrinking a failing run: fewer faults, fewer nodes, a shorter duration.

When a seed fails, the run that failed is rarely the smallest that shows
the bug: a swarm schedule may hold a dozen faults of which one matters.
``looming sim shrink SCENARIO --seed N`` searches for a smaller run that
fails the same way:

1. fewer faults: delta debugging (Zeller's ddmin) over the run's whole
   fault schedule - the fixed faults and every swarm's draw - first over
   whole faults (a crash with its restart, a hold with its release), then
   over single entries;
2. fewer nodes: without each node the scenario marks optional
   (``SCENARIO.optional("client2")``), with the faults that name it;
3. a shorter duration: a binary search between the end of the last fault
   and the scenario's duration.

Every candidate is an ordinary seeded run with an explicit override
(``Scenario.schedule``, ``duration``, nodes left out), so the smallest one
found is printed as a ``looming sim run`` command with ``--faults``,
``--duration`` and ``--without`` that replays it in a fresh process.

"Fails the same way" means one of its failures reads like one of the
original run's once numbers and parenthesized details are masked
(``check failed at t=# s: no request applied twice (...)``);
``--any-failure`` accepts any failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from looming.errors import UsageError

if TYPE_CHECKING:
    from looming.sim.artifact import Artifact
    from looming.sim.disk import DiskFaults
    from looming.sim.spec import Fault, Scenario
    from looming.sim.world import RunResult

# The command line imports this module when it starts: the simulator's own
# modules are imported inside the functions that need them.
Timed = tuple[float, "Fault"]

# -- faults as text ---------------------------------------------------------------


def format_fault(when: float, fault: Fault) -> str:
    """``fault`` at ``when`` as one word of a ``--faults`` list."""
    from looming.sim.spec import (
        Crash,
        Heal,
        Hold,
        Isolate,
        Partition,
        Pause,
        Release,
        Restart,
        Resume,
    )

    at = repr(float(when))
    match fault:
        case Crash(node):
            return f"{at}:crash:{node}"
        case Restart(node, keep_state):
            return f"{at}:restart:{node}:{'keep' if keep_state else 'lose'}"
        case Pause(node, duration):
            return f"{at}:pause:{node}" + ("" if duration is None else f":{duration!r}")
        case Resume(node):
            return f"{at}:resume:{node}"
        case Partition(side_a, side_b, one_way, duration):
            way = "oneway" if one_way else "both"
            tail = "" if duration is None else f":{duration!r}"
            return f"{at}:partition:{','.join(side_a)}:{','.join(side_b)}:{way}{tail}"
        case Isolate(node, duration):
            return f"{at}:isolate:{node}" + ("" if duration is None else f":{duration!r}")
        case Heal():
            return f"{at}:heal"
        case Hold(node):
            return f"{at}:hold:{node}"
        case Release(node, drop):
            return f"{at}:release:{node}:{'drop' if drop else 'deliver'}"
    from looming.sim.diskfault import DiskFault

    if isinstance(fault, DiskFault):
        tail = "" if fault.duration is None else f":{fault.duration!r}"
        return f"{at}:disk:{fault.node}:{format_disk_faults(fault.faults)}{tail}"
    raise UsageError(
        f"a {type(fault).__name__} fault cannot be written for --faults; "
        "replay the run with its scenario's faults instead"
    )


def format_disk_faults(faults: DiskFaults) -> str:
    """What differs from a well-behaved disk, as ``name=value`` words joined
    by commas (``lost_writes=0.25,latency=uniform/0.001/0.01``)."""
    from dataclasses import fields

    from looming.sim.disk import DiskFaults

    plain = DiskFaults()
    words = []
    for field in fields(faults):
        value = getattr(faults, field.name)
        if value == getattr(plain, field.name):
            continue
        if isinstance(value, int | float):
            words.append(f"{field.name}={float(value)!r}")
        else:
            numbers = "/".join(repr(float(getattr(value, f.name))) for f in fields(value))
            words.append(f"{field.name}={type(value).__name__.lower()}/{numbers}")
    return ",".join(words) or "none"


def parse_disk_faults(text: str, word: str) -> DiskFaults:
    """The inverse of :func:`format_disk_faults`; a bad setting is a
    UsageError naming it."""
    from dataclasses import fields

    from looming.sim.disk import DiskFaults
    from looming.sim.network import Exponential, Fixed, Uniform

    shapes: dict[str, type[Fixed | Uniform | Exponential]] = {
        "fixed": Fixed,
        "uniform": Uniform,
        "exponential": Exponential,
    }
    names = {field.name for field in fields(DiskFaults)}
    settings: dict[str, object] = {}
    for setting in [] if text == "none" else text.split(","):
        name, _, value = setting.partition("=")
        if name not in names or not value:
            raise UsageError(
                f"--faults: {word!r}: {setting!r} is not NAME=VALUE with NAME one of "
                f"{', '.join(sorted(names))}"
            )
        shape, *numbers = value.split("/")
        if not numbers:
            settings[name] = _rate(value, word)
            continue
        if shape not in shapes:
            raise UsageError(
                f"--faults: {word!r}: {name} is fixed/S, uniform/LOW/HIGH or "
                "exponential/MEAN/MINIMUM"
            )
        try:
            settings[name] = shapes[shape](*(float(n) for n in numbers))
        except (TypeError, ValueError):
            raise UsageError(f"--faults: {word!r}: {value!r} does not fit {shape}") from None
    faults = DiskFaults(**settings)  # type: ignore[arg-type]
    if problems := faults.problems():
        raise UsageError(f"--faults: {word!r}: {'; '.join(problems)}")
    return faults


def _rate(text: str, word: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--faults: {word!r}: {text!r} is not a probability") from None


def format_faults(schedule: Iterable[Timed]) -> str:
    """A schedule as the value of ``--faults`` (``none`` when empty)."""
    return " ".join(format_fault(when, fault) for when, fault in schedule) or "none"


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--faults: {what} {text!r} is not a number of seconds") from None
    if value != value or value < 0:
        raise UsageError(f"--faults: {what} {text!r} must be 0 or more seconds")
    return value


def _optional_number(args: list[str], index: int, word: str) -> float | None:
    return _number(args[index], f"the duration in {word!r}") if len(args) > index else None


def _choice(text: str, yes: str, no: str, word: str) -> bool:
    if text not in (yes, no):
        raise UsageError(f"--faults: {word!r}: say {yes!r} or {no!r}, not {text!r}")
    return text == yes


_ARITY = {
    "crash": (1, 1),
    "restart": (2, 2),
    "pause": (1, 2),
    "resume": (1, 1),
    "partition": (3, 4),
    "isolate": (1, 2),
    "heal": (0, 0),
    "hold": (1, 1),
    "release": (2, 2),
    "disk": (2, 3),
}


def parse_fault(word: str) -> Timed:
    """One word of a ``--faults`` list (``12.5:crash:server``) as a timed fault."""
    from looming.sim.spec import (
        Crash,
        Heal,
        Hold,
        Isolate,
        Partition,
        Pause,
        Release,
        Restart,
        Resume,
    )

    at, _, rest = word.partition(":")
    kind, *args = rest.split(":") if rest else [""]
    if kind not in _ARITY:
        raise UsageError(
            f"--faults: {word!r} is not TIME:KIND[:ARGS]; kinds: {', '.join(_ARITY)} "
            "(e.g. 12.5:crash:server 14.0:restart:server:keep)"
        )
    low, high = _ARITY[kind]
    if not low <= len(args) <= high or any(not a for a in args):
        raise UsageError(f"--faults: {word!r}: {kind} takes {low} to {high} arguments")
    when = _number(at, f"the time of {word!r}")
    fault: Fault
    if kind == "crash":
        fault = Crash(args[0])
    elif kind == "restart":
        fault = Restart(args[0], _choice(args[1], "keep", "lose", word))
    elif kind == "pause":
        fault = Pause(args[0], _optional_number(args, 1, word))
    elif kind == "resume":
        fault = Resume(args[0])
    elif kind == "partition":
        one_way = _choice(args[2], "oneway", "both", word)
        sides = tuple(args[0].split(",")), tuple(args[1].split(","))
        fault = Partition(*sides, one_way, _optional_number(args, 3, word))
    elif kind == "isolate":
        fault = Isolate(args[0], _optional_number(args, 1, word))
    elif kind == "heal":
        fault = Heal()
    elif kind == "hold":
        fault = Hold(args[0])
    elif kind == "release":
        fault = Release(args[0], _choice(args[1], "drop", "deliver", word))
    else:
        from looming.sim.diskfault import DiskFault

        fault = DiskFault(
            args[0], parse_disk_faults(args[1], word), _optional_number(args, 2, word)
        )
    return when, fault


def parse_faults(text: str) -> list[Timed]:
    """A ``--faults`` list: words separated by spaces, or ``none``."""
    if text.strip() == "none":
        return []
    return [parse_fault(word) for word in text.split()]


# -- a run with an override ---------------------------------------------------------


@dataclass(frozen=True)
class Override:
    """What a candidate run changes: the whole fault schedule, the
    duration, and the optional nodes it leaves out."""

    schedule: tuple[Timed, ...] | None = None
    duration: float | None = None
    without: tuple[str, ...] = ()
    buggify: bool = False

    def apply(self, scenario: Scenario) -> Scenario:
        """A copy of ``scenario`` changed as this override says."""
        for node in self.without:
            if node not in scenario.optional_nodes:
                optional = ", ".join(scenario.optional_nodes) or "none"
                raise UsageError(
                    f"--without: {node!r} is not an optional node of scenario "
                    f"{scenario.name!r} (optional: {optional}); mark it with SCENARIO.optional()"
                )
        changes: dict[str, object] = {}
        if self.duration is not None:
            changes["duration"] = self.duration
        gone = set(self.without)
        if self.schedule is not None:
            changes["schedule"] = [(t, f) for t, f in self.schedule if not set(f.nodes()) & gone]
            changes["faults"] = []
            changes["swarms"] = []
        elif self.without:
            changes["faults"] = [(t, f) for t, f in scenario.faults if not set(f.nodes()) & gone]
            changes["swarms"] = [
                dataclasses.replace(swarm, nodes=tuple(n for n in swarm.nodes if n not in gone))
                for swarm in scenario.swarms
                if set(swarm.nodes) - gone
            ]
        if self.without:
            changes["nodes"] = [n for n in scenario.nodes if n.name not in self.without]
            changes["optional_nodes"] = [
                n for n in scenario.optional_nodes if n not in self.without
            ]
        if self.buggify:
            changes["buggify"] = True
        copy = dataclasses.replace(scenario, **changes)  # type: ignore[arg-type]
        problems = copy.problems()
        if problems:
            listing = "\n".join(f"  - {p}" for p in problems)
            raise UsageError(f"the override leaves scenario {scenario.name!r} invalid:\n{listing}")
        return copy

    def arguments(self) -> list[str]:
        """The ``looming sim run`` options that make the same run."""
        words: list[str] = []
        if self.buggify:
            words.append("--buggify")
        if self.schedule is not None:
            words += ["--faults", format_faults(self.schedule)]
        if self.duration is not None:
            words += ["--duration", repr(self.duration)]
        if self.without:
            words += ["--without", ",".join(self.without)]
        return words


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """``--buggify``, ``--faults``, ``--duration`` and ``--without``."""
    parser.add_argument(
        "--buggify",
        action="store_true",
        help="let looming.sim.buggify points fire (as Scenario(buggify=True))",
    )
    parser.add_argument(
        "--faults",
        metavar="LIST",
        help="the whole fault schedule instead of the scenario's faults and swarms: "
        "'TIME:KIND[:ARGS] ...' (e.g. '12.5:crash:server 14.0:restart:server:keep'), "
        "or 'none'",
    )
    parser.add_argument("--duration", metavar="S", help="the scenario's duration, in seconds")
    parser.add_argument(
        "--without",
        metavar="NODE[,NODE]",
        help="leave out nodes the scenario marks optional",
    )


def override_from(args: argparse.Namespace) -> Override:
    """The override the command line asks for (a UsageError when malformed)."""
    schedule = None if args.faults is None else tuple(parse_faults(args.faults))
    duration = None
    if args.duration is not None:
        duration = _number(args.duration, "--duration")
        if duration <= 0:
            raise UsageError(f"--duration: {args.duration!r}: give more than 0 seconds")
    without = tuple(n for n in (args.without or "").split(",") if n)
    return Override(schedule, duration, without, bool(args.buggify))


def apply_arguments(args: argparse.Namespace, scenario: Scenario) -> Scenario:
    """``scenario`` changed by the override options, or itself without any."""
    override = override_from(args)
    if override == Override():
        return scenario
    return override.apply(scenario)


# -- the search ---------------------------------------------------------------------

_NUMBER = re.compile(r"\d+(\.\d+)?")
_DETAIL = re.compile(r"\([^()]*\)")


def signature(failure: str) -> str:
    """A failure with its numbers and its parenthesized details masked: the
    same bug at another moment, or hitting more requests, reads the same."""
    return _NUMBER.sub("#", _DETAIL.sub("(...)", failure))


def group_faults(schedule: list[Timed]) -> list[list[int]]:
    """Indexes of ``schedule`` grouped into whole faults: a crash with the
    restart after it, a hold with its release, a pause with its resume, a
    partition or isolation with the heal after it."""
    from looming.sim.spec import (
        Crash,
        Heal,
        Hold,
        Isolate,
        Partition,
        Pause,
        Release,
        Restart,
        Resume,
    )

    closes: dict[type[Fault], type[Fault]] = {Crash: Restart, Hold: Release, Pause: Resume}
    groups: list[list[int]] = []
    open_by: dict[tuple[type[Fault], str], list[int]] = {}
    open_network: list[int] | None = None
    for index, (_when, fault) in enumerate(schedule):
        target = fault.nodes()[0] if isinstance(fault, Restart | Release | Resume) else ""
        key = (type(fault), target)
        if key in open_by:
            open_by.pop(key).append(index)
            continue
        if isinstance(fault, Heal) and open_network is not None:
            open_network.append(index)
            open_network = None
            continue
        group = [index]
        groups.append(group)
        if type(fault) in closes and not getattr(fault, "duration", None):
            open_by[(closes[type(fault)], fault.nodes()[0])] = group
        if isinstance(fault, Partition | Isolate) and fault.duration is None:
            open_network = group
    return groups


def ddmin(units: list[int], fails: Callable[[list[int]], bool]) -> list[int]:
    """A 1-minimal sublist of ``units`` for which ``fails`` holds (Zeller and
    Hildebrandt's delta debugging); ``fails(units)`` is assumed."""
    parts = 2
    while len(units) >= 2:
        size = -(-len(units) // parts)
        chunks = [units[i : i + size] for i in range(0, len(units), size)]
        for chunk in chunks:
            if fails(chunk):
                units, parts = chunk, 2
                break
        else:
            for chunk in chunks:
                rest = [u for u in units if u not in chunk]
                if len(chunks) > 2 and fails(rest):
                    units, parts = rest, max(parts - 1, 2)
                    break
            else:
                if parts >= len(units):
                    break
                parts = min(len(units), parts * 2)
    if len(units) == 1 and fails([]):
        return []
    return units


class Shrinker:
    """Candidate runs of one scenario and seed, each an :class:`Override`
    of the original, judged against the original's failures."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        artifacts: dict[str, Artifact],
        *,
        any_failure: bool = False,
        max_runs: int = 300,
        say: Callable[[str], None] = print,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.artifacts = artifacts
        self.any_failure = any_failure
        self.max_runs = max_runs
        self.say = say
        self.runs = 0
        self.wanted: set[str] = set()
        self.tried: dict[Override, bool] = {}

    def run(self, override: Override) -> RunResult:
        from looming.sim.world import run

        self.runs += 1
        scenario = override.apply(self.scenario)
        return run(scenario, self.seed, artifacts=self.artifacts, keep_trace=False)

    def same_failure(self, result: RunResult) -> bool:
        if result.ok:
            return False
        return self.any_failure or any(signature(f) in self.wanted for f in result.failures)

    def fails(self, override: Override, what: str) -> bool:
        """Whether the run ``override`` makes fails the same way (each
        candidate run once; False once the run budget is spent)."""
        known = self.tried.get(override)
        if known is not None:
            return known
        if self.runs >= self.max_runs:
            return False
        result = self.run(override)
        verdict = self.same_failure(result)
        self.tried[override] = verdict
        outcome = (
            "fails the same way" if verdict else ("passes" if result.ok else "fails otherwise")
        )
        self.say(f"run {self.runs}: {what}: {outcome}")
        return verdict

    def start(self, override: Override) -> Override | None:
        """Run the seed as given; the same run with its whole fault schedule
        written out, or None when the seed passes."""
        result = self.run(override)
        if result.ok:
            self.say(f"seed {self.seed} passes: nothing to shrink")
            return None
        from looming.sim.world import fault_schedule

        schedule = fault_schedule(override.apply(self.scenario), self.seed)
        self.say(f"run 1: seed {self.seed} as given: {len(schedule)} faults: fails")
        self.wanted = {signature(f) for f in result.failures}
        for failure in result.failures:
            self.say(f"failure: {failure}")
        explicit = dataclasses.replace(override, schedule=tuple(schedule))
        if not self.fails(explicit, f"the same {len(schedule)} faults, written out"):
            raise UsageError(
                "the run does not fail the same way with its fault schedule written out; "
                "the scenario may depend on something besides the seed"
            )
        return explicit

    def fewer_faults(self, best: Override) -> Override:
        """ddmin over whole faults, then over single entries."""
        schedule = list(best.schedule or ())

        def with_entries(indexes: list[int]) -> Override:
            kept = tuple(schedule[i] for i in sorted(indexes))
            return dataclasses.replace(best, schedule=kept)

        def fails_with(indexes: list[int]) -> bool:
            return self.fails(with_entries(indexes), f"{len(indexes)} of {len(schedule)} faults")

        if fails_with([]):
            return with_entries([])
        groups = group_faults(schedule)
        kept = ddmin(list(range(len(groups))), lambda g: fails_with(_flat(groups, g)))
        entries = ddmin(_flat(groups, kept), fails_with)
        return with_entries(entries)

    def fewer_nodes(self, best: Override) -> Override:
        for node in self.scenario.optional_nodes:
            if node in best.without:
                continue
            candidate = dataclasses.replace(best, without=(*best.without, node))
            try:
                candidate.apply(self.scenario)
            except UsageError:
                continue
            if self.fails(candidate, f"without node {node}"):
                best = candidate
        return best

    def shorter(self, best: Override) -> Override:
        """A binary search for the shortest duration that still fails."""
        high = best.duration if best.duration is not None else self.scenario.duration
        low = max(
            (
                when + (getattr(fault, "duration", None) or 0.0)
                for when, fault in best.schedule or ()
            ),
            default=0.0,
        )
        step = max(0.5, high / 100)
        while high - low > step:
            middle = round((low + high) / 2, 3)
            candidate = dataclasses.replace(best, duration=middle)
            if self.fails(candidate, f"{middle} s instead of {high} s"):
                best, high = candidate, middle
            else:
                low = middle
        return best

    def shrink(self, override: Override) -> Override | None:
        best = self.start(override)
        if best is None:
            return None
        best = self.fewer_faults(best)
        best = self.fewer_nodes(best)
        best = self.shorter(best)
        if self.runs >= self.max_runs:
            self.say(f"stopped after {self.max_runs} runs (--max-runs): the smallest so far")
        return best


def _flat(groups: list[list[int]], chosen: list[int]) -> list[int]:
    return sorted(index for group in chosen for index in groups[group])


# -- the command ----------------------------------------------------------------------


def add_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``looming sim shrink``."""
    parser = verbs.add_parser(
        "shrink",
        help="search for a smaller run failing the same way as a failing seed",
        description="Run SCENARIO.py with the seed, then search for a smaller run that fails "
        "the same way: fewer faults (delta debugging over the fixed faults and the swarms' "
        "draws), without the nodes the scenario marks optional, a shorter duration. Each "
        "candidate is a seeded run with an explicit override; the smallest is printed as a "
        "'looming sim run' command that replays it, and checked in a fresh process. "
        "Exit code 0: a failing run was shrunk; 1: the seed passes; 2: bad input.",
    )
    parser.add_argument("scenario", metavar="SCENARIO.py", help="the scenario file")
    parser.add_argument("--seed", type=str, default=None, help="the failing seed (default: 1)")
    parser.add_argument("--name", help="which scenario, when the file defines several")
    add_override_arguments(parser)
    parser.add_argument(
        "--any-failure",
        action="store_true",
        help="accept a smaller run that fails in any way (default: the same failure, "
        "numbers and parenthesized details aside)",
    )
    parser.add_argument(
        "--max-runs",
        type=str,
        default="300",
        metavar="N",
        help="give up after N candidate runs, keeping the smallest so far (default: 300)",
    )
    parser.add_argument(
        "--no-confirm",
        action="store_true",
        help="do not replay the result in a fresh process",
    )


def replay_words(args: argparse.Namespace, seed: int, override: Override) -> list[str]:
    """``looming sim run`` with the seed and override (what to type)."""
    words = ["looming", "sim", "run", args.scenario, "--seed", str(seed)]
    if args.name:
        words += ["--name", args.name]
    return words + override.arguments()


def _max_runs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--max-runs: {text!r} is not a whole number") from None
    if value < 1:
        raise UsageError(f"--max-runs: {value}; give 1 or more")
    return value


def confirm(words: list[str], wanted: set[str], any_failure: bool) -> bool:
    """Whether ``looming sim run ...`` fails the same way in a new process."""
    command = [sys.executable, "-m", "looming.cli", *words[1:], "--no-pcap"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    failures = [
        line.removeprefix("failure:").strip()
        for line in done.stdout.splitlines()
        if line.startswith("failure:")
    ]
    if done.returncode != 1 or not failures:
        return False
    return any_failure or any(signature(f) in wanted for f in failures)


def command(
    args: argparse.Namespace, scenario: Scenario, artifacts: dict[str, Artifact], seed: int
) -> int:
    """``looming sim shrink``: the exit code."""
    try:
        override = override_from(args)
        override.apply(scenario)
        max_runs = _max_runs(args.max_runs)
    except UsageError as error:
        print(f"looming sim shrink: {error}", file=sys.stderr)
        return 2

    def say(text: str) -> None:
        print(f"shrink: {text}", flush=True)

    shrinker = Shrinker(
        scenario, seed, artifacts, any_failure=args.any_failure, max_runs=max_runs, say=say
    )
    try:
        best = shrinker.shrink(override)
    except UsageError as error:
        print(f"looming sim shrink: {error}", file=sys.stderr)
        return 1
    if best is None:
        return 1
    schedule = best.schedule or ()
    duration = best.duration if best.duration is not None else scenario.duration
    print(
        f"smallest failing run ({shrinker.runs} runs): {len(schedule)} faults, "
        f"{duration} s, {len(scenario.nodes) - len(best.without)} nodes"
    )
    for when, fault in schedule:
        print(f"  t={when:.6f} s  {fault.describe()}")
    try:
        words = replay_words(args, seed, best)
    except UsageError as error:  # a fault kind --faults cannot say
        print(f"no replay command: {error}")
        return 1
    print(f"replay: {shlex.join(words)}")
    if not args.no_confirm:
        same = confirm(words, shrinker.wanted, args.any_failure)
        print(
            "confirmed: the replay fails the same way in a fresh process"
            if same
            else "WARNING: the replay did not fail the same way in a fresh process"
        )
        if not same:
            return 1
    return 0
