"""looming's simulator: many unikernels, one process, virtual time, one seed.

Scenario files import what they need from here::

    from looming import sim
    SCENARIO = sim.Scenario("name", duration=60.0)

The names are loaded lazily so that ``looming`` starts quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from looming.sim.disk import DiskFaults
    from looming.sim.diskfault import DiskFault
    from looming.sim.linearizability import History, Op, check_history
    from looming.sim.loop import Gate, SimDeadlock, VirtualEventLoop
    from looming.sim.network import Exponential, Fixed, LinkSpec, Uniform
    from looming.sim.node import NodeCrashed, SimNode
    from looming.sim.pytest_plugin import scenario
    from looming.sim.spec import (
        Crash,
        Fault,
        Heal,
        Hold,
        Isolate,
        Partition,
        Pause,
        Release,
        Restart,
        Resume,
        Scenario,
        load_scenario,
        partition,
    )
    from looming.sim.world import RunResult, World, run

_EXPORTS = {
    "DiskFaults": "looming.sim.disk",
    "DiskFault": "looming.sim.diskfault",
    "History": "looming.sim.linearizability",
    "Op": "looming.sim.linearizability",
    "check_history": "looming.sim.linearizability",
    "Gate": "looming.sim.loop",
    "SimDeadlock": "looming.sim.loop",
    "VirtualEventLoop": "looming.sim.loop",
    "Exponential": "looming.sim.network",
    "Fixed": "looming.sim.network",
    "LinkSpec": "looming.sim.network",
    "Uniform": "looming.sim.network",
    "NodeCrashed": "looming.sim.node",
    "SimNode": "looming.sim.node",
    "scenario": "looming.sim.pytest_plugin",
    "Crash": "looming.sim.spec",
    "Fault": "looming.sim.spec",
    "Heal": "looming.sim.spec",
    "Hold": "looming.sim.spec",
    "Isolate": "looming.sim.spec",
    "Partition": "looming.sim.spec",
    "Pause": "looming.sim.spec",
    "Release": "looming.sim.spec",
    "Restart": "looming.sim.spec",
    "Resume": "looming.sim.spec",
    "Scenario": "looming.sim.spec",
    "load_scenario": "looming.sim.spec",
    "partition": "looming.sim.spec",
    "RunResult": "looming.sim.world",
    "World": "looming.sim.world",
    "run": "looming.sim.world",
}

__all__ = [
    "Crash",
    "DiskFault",
    "DiskFaults",
    "Exponential",
    "Fault",
    "Fixed",
    "Gate",
    "Heal",
    "History",
    "Hold",
    "Isolate",
    "LinkSpec",
    "NodeCrashed",
    "Op",
    "Partition",
    "Pause",
    "Release",
    "Restart",
    "Resume",
    "RunResult",
    "Scenario",
    "SimDeadlock",
    "SimNode",
    "Uniform",
    "VirtualEventLoop",
    "World",
    "check_history",
    "load_scenario",
    "partition",
    "run",
    "scenario",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'looming.sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
