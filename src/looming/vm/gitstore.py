"""The Git store (``kv_store``) inside a VM, kept on the VM's disk.

Apart from :mod:`looming.vm.storage` so that a unikernel without a
``kv_store`` carries neither the store nor dulwich in its image.
"""

from __future__ import annotations

from looming.devices.clock import Clock
from looming.store.kv import StoreKv
from looming.vm.storage import on_disk


async def connect_kv_store(path: str, *, clock: Clock, branch: str = "main") -> StoreKv:
    """The repository at ``path`` on the VM's disk (created when missing), on ``branch``."""
    return await StoreKv.connect(on_disk("kv_store", path), clock=clock, branch=branch)
