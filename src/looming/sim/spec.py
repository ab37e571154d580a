"""Scenarios: which nodes, on which network, with which faults, checked how.

A scenario file defines ``SCENARIO = Scenario(...)``, adds nodes and a
fault schedule, and names a driver: an ``async def`` that receives the
running :class:`~looming.sim.world.World`, drives clients and checks what
happened. Everything a scenario says is checked before the run starts
(:meth:`Scenario.problems`), so a typo in a node name is a clear message,
not a failure an hour into a sweep.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import TYPE_CHECKING, Any

from looming.errors import UsageError
from looming.sim.disk import DiskFaults
from looming.sim.network import Fixed, LinkSpec
from looming.sim.node import NodeSpec

if TYPE_CHECKING:
    from looming.sim.swarm import Swarm
    from looming.sim.world import World

Driver = Callable[["World"], Awaitable[None]]


# -- faults ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """Something that happens to the network or a node at a virtual time."""

    def nodes(self) -> list[str]:
        return []

    def problems(self) -> list[str]:
        return []

    def apply(self, world: World) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__.lower()


@dataclass(frozen=True)
class Crash(Fault):
    node: str

    def nodes(self) -> list[str]:
        return [self.node]

    def apply(self, world: World) -> None:
        world.node(self.node).crash()

    def describe(self) -> str:
        return f"crash {self.node}"


@dataclass(frozen=True)
class Restart(Fault):
    node: str
    keep_state: bool = True

    def nodes(self) -> list[str]:
        return [self.node]

    def apply(self, world: World) -> None:
        world.node(self.node).restart(keep_state=self.keep_state)

    def describe(self) -> str:
        return f"restart {self.node}"


@dataclass(frozen=True)
class Pause(Fault):
    node: str
    duration: float | None = None

    def nodes(self) -> list[str]:
        return [self.node]

    def problems(self) -> list[str]:
        if self.duration is not None and self.duration <= 0:
            return [f"pause of {self.node}: duration must be > 0, not {self.duration}"]
        return []

    def apply(self, world: World) -> None:
        node = world.node(self.node)
        node.pause()
        if self.duration is not None:
            world.after(self.duration, node.resume)

    def describe(self) -> str:
        return f"pause {self.node}"


@dataclass(frozen=True)
class Resume(Fault):
    node: str

    def nodes(self) -> list[str]:
        return [self.node]

    def apply(self, world: World) -> None:
        world.node(self.node).resume()

    def describe(self) -> str:
        return f"resume {self.node}"


@dataclass(frozen=True)
class Partition(Fault):
    """Cut ``side_a`` from ``side_b`` (only a->b when ``one_way``), for
    ``duration`` seconds or until a :class:`Heal`."""

    side_a: tuple[str, ...]
    side_b: tuple[str, ...]
    one_way: bool = False
    duration: float | None = None

    def nodes(self) -> list[str]:
        return [*self.side_a, *self.side_b]

    def problems(self) -> list[str]:
        found = []
        if not self.side_a or not self.side_b:
            found.append("a partition needs a node on each side")
        if set(self.side_a) & set(self.side_b):
            found.append(f"partition: {sorted(set(self.side_a) & set(self.side_b))} on both sides")
        if self.duration is not None and self.duration <= 0:
            found.append(f"partition duration must be > 0, not {self.duration}")
        return found

    def apply(self, world: World) -> None:
        world.network.partition(self.side_a, self.side_b, one_way=self.one_way)
        if self.duration is not None:
            world.after(self.duration, world.network.heal)

    def describe(self) -> str:
        arrow = "->" if self.one_way else "<->"
        return f"partition {','.join(self.side_a)} {arrow} {','.join(self.side_b)}"


@dataclass(frozen=True)
class Isolate(Fault):
    node: str
    duration: float | None = None

    def nodes(self) -> list[str]:
        return [self.node]

    def apply(self, world: World) -> None:
        world.network.isolate(self.node)
        if self.duration is not None:
            world.after(self.duration, world.network.heal)

    def describe(self) -> str:
        return f"isolate {self.node}"


@dataclass(frozen=True)
class Heal(Fault):
    def apply(self, world: World) -> None:
        world.network.heal()


@dataclass(frozen=True)
class Hold(Fault):
    """Hold every frame on ``node``'s link until a :class:`Release`."""

    node: str

    def nodes(self) -> list[str]:
        return [self.node]

    def apply(self, world: World) -> None:
        world.network.link_of(self.node).hold()

    def describe(self) -> str:
        return f"hold {self.node}"


@dataclass(frozen=True)
class Release(Fault):
    node: str
    drop: bool = False

    def nodes(self) -> list[str]:
        return [self.node]

    def apply(self, world: World) -> None:
        world.network.link_of(self.node).release(drop=self.drop)

    def describe(self) -> str:
        return f"release {self.node}"


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def partition(
    side_a: str | Iterable[str],
    side_b: str | Iterable[str],
    *,
    one_way: bool = False,
    duration: float | None = None,
) -> Partition:
    return Partition(_names(side_a), _names(side_b), one_way, duration)


# -- the scenario ---------------------------------------------------------------


@dataclass
class Scenario:
    """A declared simulation: nodes, network, faults and a driver."""

    name: str
    duration: float = 60.0
    link: LinkSpec = field(default_factory=lambda: LinkSpec(latency=Fixed(0.0005)))
    max_clock_skew_s: float = 0.5
    max_clock_drift_ppm: float = 50.0
    # Wall seconds virtual time may stand still before the run is stopped.
    watchdog_s: float = 30.0
    # Timers due at the same instant run in an order drawn from the seed.
    shuffle_ties: bool = True
    # Rare paths marked with looming.sim.buggify fire at seed-drawn moments.
    buggify: bool = False
    nodes: list[NodeSpec] = field(default_factory=list)
    trunks: list[tuple[str, str, LinkSpec]] = field(default_factory=list)
    faults: list[tuple[float, Fault]] = field(default_factory=list)
    swarms: list[Swarm] = field(default_factory=list)
    # Each node's disk faults from the start (``disk``); none by default.
    disks: dict[str, DiskFaults] = field(default_factory=dict)
    driver: Driver | None = None
    source: str = "<scenario>"
    # Nodes the driver can do without (``sim shrink`` tries runs without them).
    optional_nodes: list[str] = field(default_factory=list)
    # A given fault schedule, in the order set, instead of ``faults`` and the
    # swarms' draws (``sim run --faults``, ``sim shrink``).
    schedule: list[tuple[float, Fault]] | None = None

    def node(
        self,
        name: str,
        app: str | Path,
        *,
        ipv4: str | None = None,
        gateway: str | None = None,
        switch: str = "lan",
        link: LinkSpec | None = None,
        keys: dict[str, Any] | None = None,
        skew_s: float | None = None,
        drift_ppm: float | None = None,
        unikernel: str | None = None,
        ipv6: str | None = None,
    ) -> str:
        """Add a node running the unikernel of the application folder ``app``;
        ``ipv6`` (``ADDR/PREFIX``) gives its stack an IPv6 address too."""
        self.nodes.append(
            NodeSpec(
                name,
                Path(app),
                _interface(name, ipv4),
                _address(name, gateway),
                switch,
                link,
                dict(keys or {}),
                skew_s,
                drift_ppm,
                unikernel,
                _interface6(name, ipv6),
            )
        )
        return name

    def host(
        self,
        name: str,
        *,
        ipv4: str | None = None,
        gateway: str | None = None,
        switch: str = "lan",
        link: LinkSpec | None = None,
        skew_s: float | None = None,
        drift_ppm: float | None = None,
        ipv6: str | None = None,
    ) -> str:
        """Add a host: a looming stack the driver runs client code on;
        ``ipv6`` (``ADDR/PREFIX``) gives it an IPv6 address too."""
        self.nodes.append(
            NodeSpec(
                name,
                None,
                _interface(name, ipv4),
                _address(name, gateway),
                switch,
                link,
                {},
                skew_s,
                drift_ppm,
                ipv6=_interface6(name, ipv6),
            )
        )
        return name

    def trunk(self, switch_a: str, switch_b: str, link: LinkSpec | None = None) -> None:
        """Join two switches with a link."""
        self.trunks.append((switch_a, switch_b, link or self.link))

    def at(self, time: float, fault: Fault) -> None:
        """Schedule ``fault`` at virtual time ``time`` (seconds from the start)."""
        self.faults.append((time, fault))

    def swarm(
        self,
        nodes: str | Iterable[str],
        *,
        start: float = 0.0,
        end: float | None = None,
        kinds: Iterable[str] | None = None,
        max_rate: float = 0.2,
        min_down: float = 0.5,
        max_down: float = 5.0,
    ) -> None:
        """Faults drawn from the seed between ``start`` and ``end`` (default:
        the duration) on ``nodes``: see :mod:`looming.sim.swarm`."""
        from looming.sim.swarm import KINDS, Swarm

        self.swarms.append(
            Swarm(
                _names(nodes),
                start,
                self.duration if end is None else end,
                tuple(KINDS if kinds is None else kinds),
                max_rate,
                min_down,
                max_down,
            )
        )

    def optional(self, *nodes: str) -> None:
        """Say the driver copes without ``nodes`` (it looks them up in
        ``world.nodes``), so ``sim shrink`` may try runs without them."""
        self.optional_nodes.extend(nodes)

    def disk(self, node: str, **faults: Any) -> None:
        """How ``node``'s disk misbehaves for the whole run: the fields of
        :class:`looming.sim.disk.DiskFaults` (rates from 0 to 1, latencies)."""
        try:
            self.disks[node] = DiskFaults(**faults)
        except TypeError:
            known = "lost_writes, torn_writes, read_errors, corruption, slow_io, latency, slow"
            raise UsageError(
                f"disk({node!r}): unknown fault in {sorted(faults)}; give some of: {known}"
            ) from None

    def main(self, driver: Driver) -> Driver:
        """Decorator naming the scenario's driver."""
        self.driver = driver
        return driver

    def problems(self) -> list[str]:
        """Everything wrong with the scenario, before anything runs."""
        found: list[str] = []
        if not self.duration > 0:
            found.append(f"duration must be > 0 seconds, not {self.duration}")
        if not self.watchdog_s > 0:
            found.append(f"watchdog_s must be > 0 seconds, not {self.watchdog_s}")
        names = [n.name for n in self.nodes]
        seen = set(names)
        found.extend(self._name_problems(names))
        found.extend(self._node_problems())
        found.extend(f"default link: {problem}" for problem in self.link.problems())
        found.extend(self._fault_problems(names))
        found.extend(self._trunk_problems())
        found.extend(self._disk_problems(names))
        found.extend(
            f"optional node {node!r} is not a node of the scenario"
            for node in self.optional_nodes
            if node not in seen
        )
        for swarm in self.swarms:
            found.extend(swarm.problems(names))
            if swarm.end > self.duration:
                found.append(
                    f"swarm: end {swarm.end} s is past the end of the scenario ({self.duration} s)"
                )
        if self.driver is None:
            found.append("no driver: decorate an 'async def' with @SCENARIO.main")
        return found

    @staticmethod
    def _name_problems(names: list[str]) -> list[str]:
        """Node names must be unique and made of letters, digits, '-', '_'."""
        found = []
        seen: set[str] = set()
        for name in names:
            if name in seen:
                found.append(f"two nodes are called {name!r}")
            seen.add(name)
            if not name or not all(c.isalnum() or c in "-_" for c in name):
                found.append(f"node name {name!r}: use letters, digits, '-' and '_'")
        return found

    def _node_problems(self) -> list[str]:
        """Shared addresses, unknown applications and bad links, per node."""
        found = []
        addresses: dict[IPv4Address | IPv6Address, str] = {}
        for spec in self.nodes:
            for interface in (spec.ipv4, spec.ipv6):
                if interface is not None:
                    other = addresses.setdefault(interface.ip, spec.name)
                    if other != spec.name:
                        found.append(f"nodes {other!r} and {spec.name!r} share {interface.ip}")
            if spec.app is not None and not (spec.app / "config.py").is_file():
                found.append(
                    f"node {spec.name!r}: unknown application {str(spec.app)!r} "
                    "(no config.py in that folder)"
                )
            for problem in (spec.link or self.link).problems():
                found.append(f"link of node {spec.name!r}: {problem}")
        return found

    def _fault_problems(self, names: list[str]) -> list[str]:
        """Faults outside the run, lasting past its end or naming unknown nodes."""
        found = []
        seen = set(names)
        for time, fault in [*self.faults, *(self.schedule or [])]:
            what = fault.describe()
            if not 0 <= time <= self.duration:
                found.append(
                    f"fault '{what}' at t={time} s is outside the scenario (0 to {self.duration} s)"
                )
            end = time + (getattr(fault, "duration", None) or 0.0)
            if end > self.duration and 0 <= time <= self.duration:
                found.append(f"fault '{what}' lasts past the end of the scenario ({end} s)")
            for node in fault.nodes():
                if node not in seen:
                    found.append(
                        f"fault '{what}' at t={time} s names unknown node {node!r}; "
                        f"nodes: {', '.join(names) or 'none'}"
                    )
            found.extend(f"fault '{what}': {p}" for p in fault.problems())
        return found

    def _disk_problems(self, names: list[str]) -> list[str]:
        """Disk faults for unknown nodes or with bad rates."""
        found = []
        for node, disk in self.disks.items():
            if node not in names:
                found.append(
                    f"disk faults for unknown node {node!r}; nodes: {', '.join(names) or 'none'}"
                )
            found.extend(f"disk faults of node {node!r}: {p}" for p in disk.problems())
        return found

    def _trunk_problems(self) -> list[str]:
        """A trunk to a switch nothing else is on is a typo, not a network."""
        found = []
        with_nodes = {spec.switch for spec in self.nodes}
        trunks_at: dict[str, int] = {}
        for a, b, _spec in self.trunks:
            trunks_at[a] = trunks_at.get(a, 0) + 1
            trunks_at[b] = trunks_at.get(b, 0) + 1
            if a == b:
                found.append(f"trunk {a}-{b} joins switch {a!r} to itself")
        for switch, count in trunks_at.items():
            if switch not in with_nodes and count < 2:
                known = ", ".join(sorted(with_nodes)) or "none"
                found.append(
                    f"trunk to switch {switch!r}, which no node is on and no other trunk "
                    f"reaches; switches with nodes: {known}"
                )
        return found


def _interface(node: str, text: str | None) -> IPv4Interface | None:
    if text is None:
        return None
    try:
        return IPv4Interface(text)
    except ValueError as error:
        raise UsageError(
            f"node {node!r}: {text!r} is not an IPv4 address/prefix: {error}"
        ) from None


def _interface6(node: str, text: str | None) -> IPv6Interface | None:
    if text is None:
        return None
    try:
        return IPv6Interface(text)
    except ValueError as error:
        raise UsageError(
            f"node {node!r}: {text!r} is not an IPv6 address/prefix (e.g. fd00::1/64): {error}"
        ) from None


def _address(node: str, text: str | None) -> IPv4Address | None:
    if text is None:
        return None
    try:
        return IPv4Address(text)
    except ValueError as error:
        raise UsageError(
            f"node {node!r}: gateway {text!r} is not an IPv4 address: {error}"
        ) from None


_loaded = 0


def load_scenario(path: str | Path, name: str | None = None) -> Scenario:
    """The :class:`Scenario` defined by the file at ``path``.

    Raises :class:`UsageError` (exit code 2) when the file is missing, fails
    to import, defines no scenario, or defines an invalid one.
    """
    global _loaded
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"no scenario file {str(file)!r}")
    _loaded += 1
    module_name = f"_looming_scenario_{_loaded}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise UsageError(f"{file}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except UsageError as error:
        raise UsageError(f"{file}: {error}") from None
    except Exception as error:
        raise UsageError(
            f"{file}: the scenario failed to load: {type(error).__name__}: {error}"
        ) from None
    found = {v.name: v for v in vars(module).values() if isinstance(v, Scenario)}
    if not found:
        raise UsageError(f"{file} defines no scenario: add SCENARIO = looming.sim.Scenario(...)")
    if name is not None:
        if name not in found:
            raise UsageError(f"{file} has no scenario {name!r}; it has: {', '.join(found)}")
        scenario = found[name]
    elif len(found) > 1:
        raise UsageError(
            f"{file} defines several scenarios ({', '.join(found)}); pick one with --name"
        )
    else:
        scenario = next(iter(found.values()))
    scenario.source = str(file)
    # Application folders are relative to the scenario file.
    for node in scenario.nodes:
        if node.app is not None and not node.app.is_absolute():
            node.app = (file.parent / node.app).resolve()
    problems = scenario.problems()
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise UsageError(f"{file}: scenario {scenario.name!r} is not valid:\n{listing}")
    return scenario
