"""``vchan(port)`` for config.py: a shared-memory channel to another unikernel.

Import it beside the other device functions::

    from looming.vchan.config import vchan

    store = main("store:Store", [vchan("kv")])                   # serves port kv
    front = main("front:Front", [stack(), vchan("kv", peer="store")])  # connects to it

The ``process`` target (``looming configure -t process``) provides it, and
the ``vm`` target between two VMs (ivshmem, :mod:`looming.vchan.pci`).
"""

from __future__ import annotations

import re
import sys

from looming.config.dsl import Device, Location, device, fail
from looming.vchan.layout import MAX_RING_SIZE

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def vchan(
    port: str, *, peer: str | None = None, read_size: int = 65536, write_size: int = 65536
) -> Device:
    """A vchan: serve ``port`` (without ``peer``) or connect to ``peer``'s ``port``.

    ``read_size``/``write_size`` are minimum ring sizes in bytes (rounded up
    to a power of two, at most 1 MiB); the serving side's choice is the one
    that counts.
    """
    caller = sys._getframe(1)  # the line of config.py that called us
    where = Location(caller.f_code.co_filename, caller.f_lineno)
    if not isinstance(port, str) or not _NAME.match(port):
        raise fail(f"vchan(): port {port!r} must match [A-Za-z0-9_-]+", where)
    if peer is not None and (not isinstance(peer, str) or not _NAME.match(peer)):
        raise fail(f"vchan(): peer {peer!r} must be a unikernel name ([A-Za-z0-9_-]+)", where)
    for label, size in (("read_size", read_size), ("write_size", write_size)):
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_RING_SIZE:
            raise fail(f"vchan(): {label} must be 1..{MAX_RING_SIZE} bytes, not {size!r}", where)
    role = "client" if peer is not None else "server"
    hint = re.sub(r"[^A-Za-z0-9_]", "_", f"vchan_{peer + '_' if peer else ''}{port}")
    return device(
        "vchan",
        where=where,
        name=hint,
        port=port,
        peer=peer,
        role=role,
        read_size=read_size,
        write_size=write_size,
    )
