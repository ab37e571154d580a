"""Running a scenario: the world a driver sees, and one seeded run of it."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import random as _random
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looming.errors import UsageError
from looming.sim.artifact import Artifact, ensure_artifact
from looming.sim.devices import EPOCH_NS, derive_seed
from looming.sim.intercept import intercepted, real_perf_counter, suspended
from looming.sim.loop import SimDeadlock, VirtualEventLoop
from looming.sim.network import Link, SimNetwork
from looming.sim.node import CURRENT_NODE, NodeSpec, SimNode, key_arguments
from looming.sim.spec import Fault, Scenario
from looming.sim.trace import Trace, TraceLogHandler
from looming.sim.watchdog import SimStalled, Watchdog


class CheckFailed(AssertionError):
    """A scenario's check did not hold."""


class World:
    """The running simulation, as a scenario's driver sees it."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        artifacts: dict[str, Artifact],
        *,
        record_pcap: bool = True,
        keep_trace: bool = True,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.loop = VirtualEventLoop(
            derive_seed(seed, "same-instant order") if scenario.shuffle_ties else None
        )
        self.trace = Trace(self.loop.now_ns, keep=keep_trace)
        self.network = SimNetwork(self.loop, self.trace, seed, record_pcap)
        self.artifacts = artifacts
        self.nodes: dict[str, SimNode] = {}
        self.failures: list[str] = []
        self.checks = 0
        # The scenario's own seeded generator (choice, shuffle, uniform, ...):
        # drawn from the run's seed, independent of every node's stream.
        self.random = _random.Random(derive_seed(seed, "scenario"))
        # Set during a run: lets a node's --logs levels reach the loggers.
        self.lower_log_level: Callable[[str, int], None] = lambda _name, _level: None

    # -- time ---------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual seconds since the start of the run."""
        return self.loop.time()

    def virtual_wall_time(self) -> float:
        return (EPOCH_NS + self.loop.now_ns()) / 1e9

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def after(self, delay: float, action: Callable[[], object]) -> None:
        """Run ``action`` (as the scenario, not as a node) ``delay`` seconds from now."""
        self.loop.call_later(delay, action, context=contextvars.Context())

    # -- nodes and network ---------------------------------------------------

    def node(self, name: str) -> SimNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise UsageError(
                f"no node {name!r} in this scenario; nodes: {', '.join(self.nodes)}"
            ) from None

    def add(self, spec: NodeSpec, *, boot: bool = True) -> SimNode:
        """Add a node while running (the scenario's declared nodes are added for you)."""
        if spec.name in self.nodes:
            raise UsageError(f"there is already a node called {spec.name!r}")
        if spec.app is not None and spec.name not in self.artifacts:
            self.artifacts[spec.name] = prepare_artifact(spec)
        node = SimNode(self, spec, len(self.nodes) + 1)
        self.nodes[spec.name] = node
        if boot:
            node.boot()
        return node

    def add_host(self, name: str, **options: Any) -> SimNode:
        """Add and boot a host (see :meth:`Scenario.host` for the options)."""
        holder = Scenario("added")
        holder.host(name, **options)
        return self.add(holder.nodes[0])

    def add_node(self, name: str, app: str | Path, **options: Any) -> SimNode:
        """Add and boot a unikernel node (see :meth:`Scenario.node` for the options)."""
        holder = Scenario("added")
        holder.node(name, Path(app).resolve(), **options)
        return self.add(holder.nodes[0])

    def link(self, node: str) -> Link:
        """The link between ``node`` and its switch (hold, release, in_flight)."""
        self.node(node)
        return self.network.link_of(node)

    def partition(self, side_a: list[str], side_b: list[str], *, one_way: bool = False) -> None:
        self.network.partition(side_a, side_b, one_way=one_way)

    def isolate(self, node: str) -> None:
        self.network.isolate(node)

    def heal(self) -> None:
        self.network.heal()

    # -- checks -----------------------------------------------------------------

    def check(self, condition: object, message: str) -> None:
        """Record a check; a false one fails the run (and the run goes on)."""
        self.checks += 1
        if condition:
            self.trace.record("check", f"ok {message}")
        else:
            self.trace.record("check", f"FAILED {message}")
            self.failures.append(f"check failed at t={self.now:.3f} s: {message}")

    def note(self, text: str) -> None:
        """Put a line of the driver's own in the trace."""
        self.trace.record("note", text)


def prepare_artifact(spec: NodeSpec, artifact: Artifact | None = None) -> Artifact:
    """Build (if needed) and read the artifact of an application node,
    checking the node's keys against the keys the unikernel declares."""
    from looming.runtime import UsageError as KeyUsageError
    from looming.runtime import parse_keys

    assert spec.app is not None
    if artifact is None:
        # Building is host work (files, a child interpreter for the smoke
        # import), also when a node is added mid-run: not the simulation's.
        with suspended():
            artifact = Artifact(ensure_artifact(spec.app, spec.unikernel))
    loaded = artifact.load(f"check_{spec.name}")
    try:
        parse_keys(loaded.keys, key_arguments(spec.keys))
    except KeyUsageError as error:
        raise UsageError(f"node {spec.name!r}: {error}") from None
    finally:
        loaded.unload()
    return artifact


def prepare(scenario: Scenario) -> dict[str, Artifact]:
    """Every application node's artifact, built and checked before any run."""
    by_app: dict[tuple[Path, str | None], Artifact] = {}
    artifacts: dict[str, Artifact] = {}
    for spec in scenario.nodes:
        if spec.app is None:
            continue
        key = (spec.app.resolve(), spec.unikernel)
        # Keys may differ per node even when the application is shared.
        by_app[key] = prepare_artifact(spec, by_app.get(key))
        artifacts[spec.name] = by_app[key]
    return artifacts


@dataclass
class RunResult:
    """What one seeded run did."""

    scenario: str
    seed: int
    failures: list[str]
    digest: str
    event_count: int
    events: list[str]
    virtual_seconds: float
    wall_seconds: float
    checks: int
    nodes: dict[str, str] = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)
    pcaps: list[Path] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    error: Exception | None = None
    garbage: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@contextmanager
def _logs_to_trace(world: World, level: int) -> Iterator[TraceLogHandler]:
    """Log records go to the trace, each node's at the levels of its own
    ``--logs`` key (or ``level``); records outside nodes at ``level``."""

    def label() -> str:
        incarnation = CURRENT_NODE.get()
        return incarnation.gate.label if incarnation is not None else "scenario"

    run_thread = threading.get_ident()

    def admits(record: logging.LogRecord) -> bool:
        if threading.get_ident() != run_thread:
            return False  # the host's own threads (a Dask worker's, say) are not the run
        incarnation = CURRENT_NODE.get()
        levels = incarnation.log_levels if incarnation is not None else None
        if levels is None:
            return record.levelno >= level
        default, named = levels
        name = record.name
        while True:
            if name in named:
                return record.levelno >= named[name]
            if "." not in name:
                break
            name = name.rpartition(".")[0]
        return record.levelno >= (level if default is None else default)

    handler = TraceLogHandler(world.trace, label, logging.NOTSET)
    handler.addFilter(admits)
    root = logging.getLogger()
    saved: dict[str, int] = {"": root.level}
    root.setLevel(min(level, root.level) if root.level else level)

    def lower(name: str, wanted: int) -> None:
        # Records below a logger's level are never made, so a node asking
        # for more detail lowers it for the run; the filter above keeps
        # every other node at its own levels.
        logger = logging.getLogger(name) if name else root
        saved.setdefault(name, logger.level)
        if logger.getEffectiveLevel() > wanted:
            logger.setLevel(wanted)

    root.addHandler(handler)
    world.lower_log_level = lower
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        world.lower_log_level = lambda _name, _level: None
        for name, saved_level in saved.items():
            (logging.getLogger(name) if name else root).setLevel(saved_level)


def _apply(world: World, fault: Fault) -> None:
    world.trace.record("fault", f"apply {fault.describe()}")
    try:
        fault.apply(world)
    except Exception as error:
        world.failures.append(f"fault '{fault.describe()}' failed: {type(error).__name__}: {error}")


def _schedule_swarms(world: World) -> None:
    """Draw each swarm's fault schedule from the seed, put it in the trace
    and on the loop."""
    from looming.sim.swarm import draw

    everyone = [spec.name for spec in world.scenario.nodes]
    for number, swarm in enumerate(world.scenario.swarms):
        rng = _random.Random(derive_seed(world.seed, "swarm", number))
        schedule = draw(swarm, everyone, rng)
        world.trace.record("swarm", schedule.describe())
        for when, fault in schedule.faults:
            world.trace.record("swarm", f"at t={when:.6f} s: {fault.describe()}")
            world.loop.call_at(when, _apply, world, fault, context=contextvars.Context())


def _schedule_given(world: World, schedule: list[tuple[float, Fault]]) -> None:
    """A fault schedule given in full (instead of the scenario's faults and
    swarms), set on the loop in the order given."""
    world.trace.record("schedule", f"given: {len(schedule)} faults")
    for when, fault in schedule:
        world.trace.record("schedule", f"at t={when!r} s: {fault.describe()}")
        world.loop.call_at(when, _apply, world, fault, context=contextvars.Context())


def fault_schedule(scenario: Scenario, seed: int) -> list[tuple[float, Fault]]:
    """Every fault a run of ``scenario`` with ``seed`` sets, in the order it
    sets them: the given schedule, or the fixed faults by time and then each
    swarm's draw. As ``Scenario.schedule``, it gives the same run again."""
    from looming.sim.swarm import draw

    if scenario.schedule is not None:
        return list(scenario.schedule)
    faults = sorted(scenario.faults, key=lambda item: item[0])
    everyone = [spec.name for spec in scenario.nodes]
    for number, swarm in enumerate(scenario.swarms):
        rng = _random.Random(derive_seed(seed, "swarm", number))
        faults += draw(swarm, everyone, rng).faults
    return faults


@contextmanager
def _buggify_for(world: World, on: bool) -> Iterator[None]:
    """Buggify points fire (into the trace) during the block when ``on``."""
    if not on:
        yield
        return
    from looming.sim.buggify import buggified

    def record(text: str) -> None:
        incarnation = CURRENT_NODE.get()
        label = incarnation.gate.label if incarnation is not None else "scenario"
        world.trace.record("buggify", f"{label} {text}")

    world.trace.record("run", "buggify on")
    with buggified(world.seed, record):
        yield


def run(
    scenario: Scenario,
    seed: int,
    *,
    artifacts: dict[str, Artifact] | None = None,
    pcap_dir: Path | None = None,
    keep_trace: bool = True,
    log_level: int = logging.INFO,
    watchdog_s: float | None = None,
    buggify: bool | None = None,
) -> RunResult:
    """Run ``scenario`` once with ``seed`` and report what happened.

    ``watchdog_s`` (default: the scenario's) is how many wall seconds virtual
    time may stand still before the run is stopped as stalled; ``buggify``
    (default: the scenario's) lets :mod:`looming.sim.buggify` points fire."""
    if artifacts is None:
        artifacts = prepare(scenario)
    started = real_perf_counter()
    world = World(
        scenario, seed, dict(artifacts), record_pcap=pcap_dir is not None, keep_trace=keep_trace
    )
    loop = world.loop
    assert scenario.driver is not None, "a scenario needs a driver"
    world.trace.record("run", f"{scenario.name} seed {seed}")
    asyncio.set_event_loop(loop)
    # Collecting cycles mid-run would run destructors at moments that
    # depend on the process's history, not on the seed.
    collecting = gc.isenabled()
    gc.disable()
    try:
        limit = scenario.watchdog_s if watchdog_s is None else watchdog_s
        buggify_on = scenario.buggify if buggify is None else buggify
        with (
            intercepted(world),
            _logs_to_trace(world, log_level) as logs,
            _buggify_for(world, buggify_on),
        ):
            driver_error = _run_loop(world, limit)
            statuses = _stop_nodes(world, logs)
    finally:
        _cancel_leftovers(loop)
        loop.close()
        asyncio.set_event_loop(None)
        if collecting:
            gc.enable()
    return RunResult(
        scenario=scenario.name,
        seed=seed,
        failures=list(world.failures),
        digest=world.trace.digest(),
        event_count=world.trace.count,
        events=world.trace.events,
        virtual_seconds=loop.time(),
        wall_seconds=real_perf_counter() - started,
        checks=world.checks,
        nodes=statuses,
        links={n: (link.delivered, link.dropped) for n, link in world.network.links.items()},
        pcaps=_write_pcaps(world, pcap_dir),
        logs=logs.lines,
        error=driver_error,
        garbage=loop.garbage_reports,
    )


def _build(world: World) -> None:
    """Wire the trunks, add the nodes, schedule the faults and boot."""
    scenario = world.scenario
    for a, b, trunk_spec in scenario.trunks:
        world.network.trunk(a, b, trunk_spec)
    for node_spec in scenario.nodes:
        world.add(node_spec, boot=False)
    if scenario.schedule is not None:
        _schedule_given(world, scenario.schedule)
    else:
        for when, fault in sorted(scenario.faults, key=lambda item: item[0]):
            world.loop.call_at(when, _apply, world, fault, context=contextvars.Context())
        _schedule_swarms(world)
    for node in world.nodes.values():
        node.boot()


async def _main(world: World) -> None:
    """Build the world, then run the driver for at most the scenario's duration."""
    scenario = world.scenario
    driver = scenario.driver
    assert driver is not None
    loop = world.loop
    _build(world)

    async def drive() -> None:
        await driver(world)

    driving = loop.create_task(drive(), context=contextvars.Context())
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        driving.cancel()

    deadline = loop.call_watchdog(scenario.duration, expire)
    try:
        await driving
    except asyncio.CancelledError:
        if not expired:
            raise
        world.failures.append(
            f"the driver did not finish within the scenario's {scenario.duration} s"
        )
    finally:
        deadline.cancel()


def _run_loop(world: World, limit: float) -> Exception | None:
    """Run :func:`_main` under the watchdog; failures go to ``world.failures``.
    Returns the exception the driver raised, if any."""
    loop = world.loop
    try:
        with Watchdog(loop, limit) as watchdog:
            loop.run_until_complete(loop.create_task(_main(world), context=contextvars.Context()))
    except SimStalled:
        world.trace.record("run", "stalled")
        world.failures.append(watchdog.report or "watchdog: the run stalled")
    except SimDeadlock as deadlock:
        world.failures.append(str(deadlock))
    except Exception as error:
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        where = traceback.extract_tb(error.__traceback__)[-1:]
        place = f" ({where[0].filename}:{where[0].lineno})" if where else ""
        world.failures.append(f"the driver raised {detail}{place}")
        return error
    return None


def _stop_nodes(world: World, logs: TraceLogHandler) -> dict[str, str]:
    """Record failed nodes and unreplayable logs, stop every node and
    return the statuses they had."""
    for node in world.nodes.values():
        if node.status == "failed":
            world.failures.append(f"node {node.name} failed: {node.exit_error}")
    world.failures += [f"not replayable: {m}" for m in logs.not_replayable]
    statuses = {name: node.status for name, node in world.nodes.items()}
    for node in world.nodes.values():
        node.crash(reason="stop")
    world.trace.record("run", f"end {'ok' if not world.failures else 'failed'}")
    return statuses


def _write_pcaps(world: World, pcap_dir: Path | None) -> list[Path]:
    """One capture file per link in ``pcap_dir`` (none without one)."""
    pcaps: list[Path] = []
    if pcap_dir is not None:
        pcap_dir.mkdir(parents=True, exist_ok=True)
        for name, link in world.network.links.items():
            path = pcap_dir / f"{name}.pcap"
            path.write_bytes(link.pcap_bytes())
            pcaps.append(path)
    return pcaps


def _cancel_leftovers(loop: VirtualEventLoop) -> None:
    """Tasks of the scenario itself still pending at the end are not leaks."""
    for task in asyncio.all_tasks(loop):
        task._log_destroy_pending = False  # type: ignore[attr-defined]  # the run is over
        coro: Any = task.get_coro()
        try:
            if coro is not None:
                coro.close()
        except BaseException:  # ending the run; nothing to report
            pass
