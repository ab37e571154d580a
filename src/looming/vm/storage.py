"""Storage devices inside a VM: the unix implementations, on the VM's disk.

``looming run`` attaches a disk image (ext4 on a virtio-blk device) to a VM
whose unikernel has a ``kv_rw``, ``kv_store`` or ``block`` device; the
guest's /init mounts it at :data:`MOUNT` before the unikernel starts. The
devices are then exactly the unix target's (a folder, a Git repository, a
file), kept on that file system: what they fsync is on the host's disk
image when the call returns, as the guest's block layer passes each flush
to qemu, which passes it to the host.

A relative path in a key is on the disk; an absolute one must lie under
:data:`MOUNT` (anything else is in the guest's memory and would be lost at
power-off, so it is refused).
"""

from __future__ import annotations

import os

from looming.errors import DeviceError, UsageError
from looming.unix.block import FileBlock
from looming.unix.kv import DirectoryKvRw

MOUNT = "/disk"


def on_disk(kind: str, path: str, mount: str = MOUNT) -> str:
    """``path`` (a device's key) as a path on the VM's disk mounted at ``mount``."""
    if not os.path.ismount(mount):
        raise DeviceError(
            f"{kind} {path!r}: this VM has no disk mounted at {mount}; boot it with "
            "'looming run', which attaches one (--vm-disk PATH)"
        )
    full = os.path.normpath(os.path.join(mount, path))
    if full != mount and not full.startswith(mount + "/"):
        raise UsageError(
            f"{kind} {path!r} is not on the VM's disk: give a path relative to the "
            f"disk, or one under {mount}/ (anywhere else is the guest's memory, lost at "
            "power-off)"
        )
    return full


async def connect_kv_rw(path: str) -> DirectoryKvRw:
    """A kv_rw device: the folder ``path`` on the VM's disk."""
    return await DirectoryKvRw.connect(on_disk("kv_rw", path))


async def connect_block(path: str, *, sector_size: int = 512) -> FileBlock:
    """A block device: the file ``path`` on the VM's disk (1 MiB when created)."""
    return await FileBlock.connect(on_disk("block", path), sector_size=sector_size)
