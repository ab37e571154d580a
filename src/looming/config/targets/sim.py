"""The ``sim`` target: a unikernel as a node of a deterministic simulation.

``looming configure -t sim`` and ``looming build`` make
``dist/NAME-sim.pyz``; a scenario (``looming sim run SCENARIO.py``) loads it
as a node. Every device is resolved, when the node boots, to the node's
simulated one through :class:`looming.sim.node.SimDevices`: virtual time and
clock (with the node's skew and drift), a random stream seeded from the
run's seed, a console that writes to the trace, kv_ro crunched into the
artifact, kv_rw, kv_store and block kept on the node's simulated disk
(:mod:`looming.sim.disk`: what was durably written survives a crash, as the
scenario's disk faults allow), and looming's own TCP/IP stack on the node's
simulated Ethernet interface.
"""

from __future__ import annotations

import sys
from pathlib import Path

from looming.config.dsl import Device, device
from looming.config.plan import Dep, Impl
from looming.config.targets import Target

_DEVICES = "looming.sim.node:SimDevices"


class SimTarget(Target):
    name = "sim"
    summary = "a node of a deterministic simulated network (looming sim run)"

    def run_command(self, artifact: Path, argv: list[str]) -> list[str]:
        # A sim artifact is a node, not a program: `looming run` explains.
        message = (
            f"{artifact.name} is built for the sim target: run it as a node of a scenario "
            "with 'looming sim run SCENARIO.py --seed N'"
        )
        return [sys.executable, "-c", f"import sys; sys.exit({message!r})"]


def node_device(dev: Device, options: dict[str, str]) -> Impl:
    """console, time, clock and random: the node's simulated ones."""
    return Impl(f"{_DEVICES}.{dev.kind}", summary=f"the node's simulated {dev.kind}")


def kv_ro_impl(dev: Device, options: dict[str, str]) -> Impl:
    return Impl(
        f"{_DEVICES}.kv_ro",
        args=[repr(dev.name_hint)],
        awaited=True,
        crunch=[(dev.name_hint, dev.setting("dirname"))],
        summary=f"{dev.setting('dirname')}/ crunched into the artifact",
    )


def kv_rw_impl(dev: Device, options: dict[str, str]) -> Impl:
    return Impl(
        f"{_DEVICES}.kv_rw",
        args=[repr(dev.name_hint)],
        awaited=True,
        summary="a log on the node's simulated disk, each change synced",
    )


def kv_store_impl(dev: Device, options: dict[str, str]) -> Impl:
    return Impl(
        f"{_DEVICES}.kv_store",
        args=[repr(dev.name_hint)],
        kwargs=[("branch", repr(dev.setting("branch")))],
        awaited=True,
        disconnect="disconnect",
        summary=f"store on the node's simulated disk ({dev.setting('branch')})",
    )


def block_impl(dev: Device, options: dict[str, str]) -> Impl:
    return Impl(
        f"{_DEVICES}.block",
        args=[repr(dev.name_hint)],
        kwargs=[("sector_size", repr(dev.setting("sector_size", 512)))],
        awaited=True,
        disconnect="disconnect",
        summary="sectors of the node's simulated disk, durable after flush",
    )


def network_impl(dev: Device, options: dict[str, str]) -> Impl:
    iface = dev.setting("iface")
    return Impl(
        f"{_DEVICES}.network",
        args=[repr(iface or "default")],
        summary="the node's simulated Ethernet interface",
    )


def stack_impl(dev: Device, options: dict[str, str]) -> Impl:
    """looming's TCP/IP stack on the node's interface, with the node's address."""
    time_dev = device("time", where=dev.where)
    clock_dev = device("clock", where=dev.where)
    random_dev = device("random", where=dev.where)
    return Impl(
        f"{_DEVICES}.stack",
        args=[Dep("network")],
        kwargs=[("time", Dep("time")), ("clock", Dep("clock")), ("random", Dep("random"))],
        awaited=True,
        disconnect="disconnect",
        deps={"network": dev.deps[0], "time": time_dev, "clock": clock_dev, "random": random_dev},
        summary="looming TCP/IP stack with the node's address",
    )


TARGET = SimTarget()
