"""Configuration: the ``config.py`` language, the device graph and targets.

A ``config.py``::

    from looming.config import main, register, console, kv_ro, stack, default_network, key
    port = key("port", int, default=8080, doc="TCP port to serve on")
    website = main("unikernel:Website", [console(), kv_ro("htdocs"), stack(default_network())],
                   keys=[port])
    register("website", [website])
"""

from typing import Any

from looming.config.devices import (
    block,
    clock,
    console,
    default_network,
    generic_stack,
    kv_ro,
    kv_rw,
    kv_store,
    netif,
    random,
    stack,
    time,
    tls,
)
from looming.config.dsl import (
    Device,
    Job,
    Key,
    Unikernel,
    device,
    http_keys,
    key,
    main,
    register,
)

# Device functions that live with their implementation, imported on first use
# so that a config.py which does not use them does not load them.
_LAZY = {"vchan": "looming.vchan.config"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'looming.config' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


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
    "http_keys",
    "key",
    "kv_ro",
    "kv_rw",
    "kv_store",
    "main",
    "netif",
    "random",
    "register",
    "stack",
    "time",
    "tls",
]
