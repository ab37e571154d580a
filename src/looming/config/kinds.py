"""Which implementation backs each device kind, on each built-in target.

One table, read down a column for a target and along a row for a kind: the
built-in targets answer ``supports`` and ``implement`` from it, and a
target's refusal names the others that have the kind. A kind missing from
every column may still be portable (:data:`looming.config.devices.PORTABLE`,
e.g. ``tls``), and a target installed from an entry point implements kinds
its own way by overriding ``Target.supports`` and ``Target.implement``.
"""

from __future__ import annotations

from collections.abc import Callable

from looming.config.dsl import Device
from looming.config.plan import Impl
from looming.config.targets import process, sim, unix, vm

Build = Callable[[Device, dict[str, str]], Impl]
"""Make the implementation of a device from the target's options."""


def _on_host(build: Build) -> dict[str, Build]:
    """The process target provides every device the unix one has, the same way."""
    return {"unix": build, "process": build}


KINDS: dict[str, dict[str, Build]] = {
    "console": {**_on_host(unix.host_device), "sim": sim.node_device, "vm": vm.guest_device},
    "time": {**_on_host(unix.host_device), "sim": sim.node_device, "vm": vm.guest_device},
    "clock": {**_on_host(unix.host_device), "sim": sim.node_device, "vm": vm.guest_device},
    "random": {**_on_host(unix.host_device), "sim": sim.node_device, "vm": vm.guest_device},
    "kv_ro": {**_on_host(unix.kv_ro_impl), "sim": sim.kv_ro_impl, "vm": vm.kv_ro_impl},
    "kv_rw": {**_on_host(unix.kv_rw_impl), "sim": sim.kv_rw_impl, "vm": vm.kv_rw_impl},
    "kv_store": {"sim": sim.kv_store_impl, "vm": vm.kv_store_impl},
    "block": {**_on_host(unix.block_impl), "sim": sim.block_impl, "vm": vm.block_impl},
    "network": {**_on_host(unix.network_impl), "sim": sim.network_impl, "vm": vm.network_impl},
    "stack": {**_on_host(unix.stack_impl), "sim": sim.stack_impl, "vm": vm.stack_impl},
    "vchan": {"process": process.vchan_impl, "vm": vm.vchan_impl},
}


def targets_with(kind: str) -> list[str]:
    """The built-in targets that implement ``kind``."""
    return list(KINDS.get(kind, {}))
