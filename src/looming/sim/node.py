"""Simulated nodes: one unikernel (or a scenario-driven host) each.

A node owns what outlives its crashes (its cable, its disk) and
runs its code in *incarnations*: boot, perhaps pause and resume, and crash.
The code of an incarnation runs in a context naming the node, which is how
the generated ``start`` finds its devices (:class:`SimDevices`) and how the
event loop gates its callbacks.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from looming.devices.net import MacAddress
from looming.errors import DeviceError
from looming.sim.devices import (
    SimClock,
    SimConsole,
    SimRandom,
    SimTime,
    derive_seed,
)
from looming.sim.disk import DiskFaults, SimDisk
from looming.sim.loop import CURRENT_GATE, Gate, kill_tasks
from looming.sim.network import Attachment, LinkSpec, SimNic
from looming.sim.storage import SimBlock, SimKvRw

if TYPE_CHECKING:
    from looming.net.stack import DirectStack
    from looming.sim.artifact import Artifact, LoadedUnikernel
    from looming.sim.diskstore import SimStoreKv
    from looming.sim.world import World

_T = TypeVar("_T")

CURRENT_NODE: contextvars.ContextVar[Incarnation | None] = contextvars.ContextVar(
    "looming_sim_node", default=None
)


class NodeCrashed(Exception):
    """The node running this work crashed (or was stopped) before it finished."""


@dataclass
class NodeSpec:
    """A node as a scenario declares it."""

    name: str
    app: Path | None = None
    ipv4: IPv4Interface | None = None
    gateway: IPv4Address | None = None
    switch: str = "lan"
    link: LinkSpec | None = None
    keys: dict[str, Any] = field(default_factory=dict)
    skew_s: float | None = None
    drift_ppm: float | None = None
    unikernel: str | None = None
    ipv6: IPv6Interface | None = None

    @property
    def is_host(self) -> bool:
        return self.app is None


class Incarnation:
    """One boot of a node: its gate, devices and tasks."""

    def __init__(self, node: SimNode, number: int) -> None:
        world = node.world
        self.node = node
        self.number = number
        self.gate = Gate(node.name if number == 0 else f"{node.name}#{number}")
        loop = world.loop
        seed = world.seed
        self.time = SimTime(loop.now_ns, derive_seed(seed, node.name, "time", number) % 10**15)
        self.clock = SimClock(loop.now_ns, skew_s=node.skew_s, drift_ppm=node.drift_ppm)
        self.random = SimRandom(derive_seed(seed, node.name, "random", number))
        self.console = SimConsole(self._console_line)
        self.nic = SimNic(node.attachment, node.link_spec.mtu)
        self.stack: DirectStack | None = None
        self.main: asyncio.Task[Any] | None = None
        self.loaded: LoadedUnikernel | None = None
        self.waiters: list[asyncio.Future[Any]] = []
        # The node's --logs key: (default level, levels by logger name).
        self.log_levels: tuple[int | None, dict[str, int]] | None = None

    def _console_line(self, line: str) -> None:
        self.node.world.trace.record("console", f"{self.node.name}: {line}")

    def context(self) -> contextvars.Context:
        ctx = contextvars.Context()
        ctx.run(CURRENT_GATE.set, self.gate)
        ctx.run(CURRENT_NODE.set, self)
        return ctx


class SimDevices:
    """Where a sim-target unikernel's generated ``start`` gets its devices."""

    @staticmethod
    def _current() -> Incarnation:
        incarnation = CURRENT_NODE.get()
        if incarnation is None:
            raise DeviceError(
                "a sim-target unikernel runs only as a node of a scenario: "
                "'looming sim run SCENARIO.py'"
            )
        return incarnation

    @staticmethod
    def console() -> SimConsole:
        return SimDevices._current().console

    @staticmethod
    def time() -> SimTime:
        return SimDevices._current().time

    @staticmethod
    def clock() -> SimClock:
        return SimDevices._current().clock

    @staticmethod
    def random() -> SimRandom:
        return SimDevices._current().random

    @staticmethod
    async def kv_ro(name: str) -> Any:
        from looming.unix.kv import CrunchedKv

        node = SimDevices._current().node
        assert node.artifact is not None
        return CrunchedKv.load(name, str(node.artifact.path))

    @staticmethod
    async def kv_rw(name: str) -> SimKvRw:
        """A store kept as a log on the node's disk (each change synced)."""
        incarnation = SimDevices._current()
        return await SimKvRw.open(incarnation.node.disk, name, incarnation.clock.now)

    @staticmethod
    async def kv_store(name: str, *, branch: str = "main") -> SimStoreKv:
        """The store (commits, branches, merges) on the node's disk."""
        from looming.sim.diskstore import SimStoreKv

        incarnation = SimDevices._current()
        return await SimStoreKv.open(incarnation.node.disk, name, branch, incarnation.clock)

    @staticmethod
    async def block(name: str, *, sector_size: int = 512, size_bytes: int = 1 << 20) -> SimBlock:
        """A block device: one file of the node's disk, durable after ``flush``."""
        from looming.devices.block import BlockInfo

        disk = SimDevices._current().node.disk
        return SimBlock(disk, name, BlockInfo(sector_size, size_bytes // sector_size, True))

    @staticmethod
    def network(name: str) -> SimNic:
        return SimDevices._current().nic

    @staticmethod
    async def stack(network: SimNic, *, time: Any, clock: Any, random: Any) -> DirectStack:
        from looming.net.stack import DirectStack

        incarnation = SimDevices._current()
        node = incarnation.node
        stack = await DirectStack.connect(
            network, time=time, clock=clock, random=random, **node.stack_addresses()
        )
        incarnation.stack = stack
        node._stack_is(stack)
        return stack


class SimNode:
    """A node of a running simulation (the handle a scenario gets)."""

    def __init__(self, world: World, spec: NodeSpec, index: int) -> None:
        self.world = world
        self.spec = spec
        self.name = spec.name
        self.index = index
        self.ipv4 = spec.ipv4 or IPv4Interface(f"10.0.{index // 250}.{index % 250 + 1}/16")
        self.gateway = spec.gateway
        self.ipv6 = spec.ipv6
        self.link_spec = spec.link or world.scenario.link
        rng = SimRandom(derive_seed(world.seed, spec.name, "clock"))
        max_skew = world.scenario.max_clock_skew_s
        max_drift = world.scenario.max_clock_drift_ppm
        self.skew_s = spec.skew_s if spec.skew_s is not None else rng.uniform(-max_skew, max_skew)
        self.drift_ppm = (
            spec.drift_ppm if spec.drift_ppm is not None else rng.uniform(-max_drift, max_drift)
        )
        mac = MacAddress(
            bytes((0x02, 0x10, 0, (index >> 16) & 255, (index >> 8) & 255, index & 255))
        )
        self.attachment: Attachment = world.network.attach(
            spec.name, mac, spec.switch, self.link_spec
        )
        self.artifact: Artifact | None = world.artifacts.get(spec.name)
        faults = world.scenario.disks.get(spec.name, DiskFaults())
        self.disk = SimDisk(
            spec.name,
            world.loop.time,
            SimRandom(derive_seed(world.seed, spec.name, "disk")),
            world.trace.record,
            faults,
        )
        self.incarnations = 0
        self.current: Incarnation | None = None
        self.status = "down"
        self.exit_error: str | None = None
        self._stack_ready: asyncio.Future[DirectStack] | None = None

    # -- lifecycle ----------------------------------------------------------

    def boot(self) -> None:
        """Start a new incarnation of the node's code."""
        if self.current is not None:
            raise RuntimeError(f"node {self.name} is already running")
        incarnation = Incarnation(self, self.incarnations)
        self.incarnations += 1
        self.current = incarnation
        self.attachment.nic = incarnation.nic
        self.attachment.context = incarnation.context
        self.status = "running"
        self.exit_error = None
        loop = self.world.loop
        self._stack_ready = loop.create_future()
        self.world.trace.record("node", f"boot {self.name} #{incarnation.number}")
        if self.artifact is not None:
            incarnation.loaded = self.artifact.load(f"{self.name}_{incarnation.number}")
            coro = self._run_unikernel(incarnation)
        else:
            coro = self._run_host(incarnation)
        task = loop.create_task(coro, context=incarnation.context())
        incarnation.main = task
        task.add_done_callback(lambda t: self._main_done(incarnation, t))

    async def _run_unikernel(self, incarnation: Incarnation) -> None:
        from looming.runtime import parse_keys

        loaded = incarnation.loaded
        assert loaded is not None
        keys = parse_keys(loaded.keys, key_arguments(self.spec.keys))
        if "logs" in self.spec.keys:
            from looming.runtime import parse_log_levels

            default, named = parse_log_levels(str(self.spec.keys["logs"]))
            incarnation.log_levels = (default, named)
            if default is not None:
                self.world.lower_log_level("", default)
            for name, level in named.items():
                self.world.lower_log_level(name, level)
        async with AsyncExitStack() as devices:
            await loaded.start(keys, devices)

    async def _run_host(self, incarnation: Incarnation) -> None:
        from looming.net.stack import DirectStack

        stack = await DirectStack.connect(
            incarnation.nic,
            time=incarnation.time,
            clock=incarnation.clock,
            random=incarnation.random,
            **self.stack_addresses(),
        )
        incarnation.stack = stack
        self._stack_is(stack)
        await asyncio.Event().wait()

    def stack_addresses(self) -> dict[str, Any]:
        """The node's addresses as DirectStack.connect takes them: IPv4, and
        a static IPv6 one when the scenario gave it (no router discovery:
        a simulated LAN has no router unless the scenario runs one), ready
        when the node starts (its duplicate address detection done)."""
        addresses: dict[str, Any] = {"address": self.ipv4, "gateway": self.gateway}
        if self.ipv6 is not None:
            addresses.update(
                ipv6=True, ipv6_address=self.ipv6, slaac=False, dhcp6=False, wait_for_ipv6=True
            )
        return addresses

    def _stack_is(self, stack: DirectStack) -> None:
        if self._stack_ready is not None and not self._stack_ready.done():
            self._stack_ready.set_result(stack)

    def _main_done(self, incarnation: Incarnation, task: asyncio.Task[Any]) -> None:
        if self.current is not incarnation:
            return
        if task.cancelled():
            self.status = "stopped"
            detail = "cancelled"
        elif task.exception() is not None:
            error = task.exception()
            self.status = "failed"
            self.exit_error = f"{type(error).__name__}: {error}"
            detail = f"failed {self.exit_error}"
        else:
            self.status = "exited"
            detail = "exited"
        self.world.trace.record("node", f"{self.name} {detail}")

    def crash(self, *, reason: str = "crash") -> None:
        """Stop the node's code where it stands; frames to it are lost."""
        incarnation = self.current
        if incarnation is None:
            return
        self.current = None
        self.attachment.nic = None
        self.attachment.context = None
        killed = kill_tasks(incarnation.gate)
        gone = NodeCrashed(f"node {self.name} {'crashed' if reason == 'crash' else 'stopped'}")
        for waiter in [*incarnation.waiters, self._stack_ready]:
            if waiter is not None and not waiter.done():
                waiter.set_exception(gone)
                waiter.exception()  # whoever awaits it gets it; nobody must
        if incarnation.loaded is not None:
            incarnation.loaded.unload()
        if reason == "crash":
            self.disk.crash()
        self.status = "crashed" if reason == "crash" else "down"
        self.world.trace.record("node", f"{reason} {self.name} ({killed} tasks)")

    def restart(self, *, keep_state: bool = True) -> None:
        """Crash if running, then boot again from the artifact."""
        if self.current is not None:
            self.crash()
        if not keep_state:
            self.disk.wipe()
        self.world.trace.record(
            "node", f"restart {self.name} {'keeping' if keep_state else 'losing'} state"
        )
        self.boot()

    def pause(self) -> None:
        """Freeze the node: its callbacks and frames wait until :meth:`resume`."""
        if self.current is not None:
            self.current.gate.paused = True
            self.status = "paused"
            self.world.trace.record("node", f"pause {self.name}")

    def resume(self) -> None:
        incarnation = self.current
        if incarnation is None or not incarnation.gate.paused:
            return
        gate = incarnation.gate
        gate.paused = False
        deferred, gate.deferred = gate.deferred, []
        for callback, args, ctx in deferred:
            self.world.loop.call_soon(callback, *args, context=ctx)
        self.status = "running"
        self.world.trace.record("node", f"resume {self.name} ({len(deferred)} waiting callbacks)")

    # -- what a scenario does with a node -----------------------------------

    @property
    def console(self) -> list[str]:
        """Console lines of the current incarnation."""
        return list(self.current.console.lines) if self.current is not None else []

    async def stack(self) -> DirectStack:
        """The node's TCP/IP stack, once it is up."""
        if self.current is None:
            raise NodeCrashed(f"node {self.name} is not running")
        if self.current.stack is not None:
            return self.current.stack
        assert self._stack_ready is not None
        return await asyncio.shield(self._stack_ready)

    async def run(self, work: Callable[[DirectStack], Awaitable[_T]]) -> _T:
        """Run ``work(stack)`` as this node's code and return its result.

        Raises :class:`NodeCrashed` if the node crashes first.
        """
        stack = await self.stack()
        incarnation = self.current
        assert incarnation is not None
        loop = self.world.loop
        result: asyncio.Future[_T] = loop.create_future()
        incarnation.waiters.append(result)

        async def body() -> None:
            try:
                value = await work(stack)
            except GeneratorExit:
                raise  # the node crashed: crash() tells the waiter
            except BaseException as error:
                if not result.done():
                    result.set_exception(error)
                if not isinstance(error, Exception):
                    raise
            else:
                if not result.done():
                    result.set_result(value)

        loop.create_task(body(), context=incarnation.context())
        try:
            return await result
        finally:
            if result in incarnation.waiters:
                incarnation.waiters.remove(result)


def key_arguments(keys: dict[str, Any]) -> list[str]:
    """``{"port": 80}`` as ``["--port", "80"]``."""
    argv: list[str] = []
    for name, value in keys.items():
        argv += [
            "--" + name.replace("_", "-"),
            str(value).lower() if isinstance(value, bool) else str(value),
        ]
    return argv
