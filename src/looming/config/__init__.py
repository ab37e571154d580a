"""Configuration: the ``config.py`` language, the device graph and targets.

A ``config.py``::

    from looming.config import main, register, console, kv_ro, stack, default_network, key
    port = key("port", int, default=8080, doc="TCP port to serve on")
    website = main("unikernel:Website", [console(), kv_ro("htdocs"), stack(default_network())],
                   keys=[port])
    register("website", [website])
"""

from looming.config.devices import (
    block,
    clock,
    console,
    default_network,
    generic_stack,
    kv_ro,
    kv_rw,
    netif,
    random,
    stack,
    time,
)
from looming.config.dsl import Device, Job, Key, Unikernel, device, key, main, register

__all__ = [
    "Device",
    "Job",
    "Key",
    "Unikernel",
    "block",
    "clock",
    "console",
    "default_network",
    "device",
    "generic_stack",
    "key",
    "kv_ro",
    "kv_rw",
    "main",
    "netif",
    "random",
    "register",
    "stack",
    "time",
]
