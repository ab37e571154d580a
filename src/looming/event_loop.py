"""Which event loop a unikernel on the unix target runs on: the ``loop`` key.

``auto`` (the default) is uvloop when it is installed (``looming[fast]``),
else asyncio's own loop; ``asyncio`` and ``uvloop`` ask for one. The key is
declared by the unix target's socket stack; ``looming.runtime`` reads it
before starting the loop. The simulator keeps its own deterministic loop
and never reads it. The module reaches for no host device, so it sits
beside ``looming.runtime`` rather than in ``looming.unix``.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

from looming.errors import UsageError

LOOPS = ("auto", "asyncio", "uvloop")
"""The values of the ``loop`` key."""

UVLOOP = "uvloop"


def loop_problem(value: object) -> str | None:
    """What is wrong with a ``loop`` key value, or None (configure checks it too)."""
    if value not in LOOPS:
        return f"{value!r} is not one of {', '.join(LOOPS)}"
    return None


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop ``choice`` names: None for asyncio's own,
    uvloop's ``new_event_loop`` for ``uvloop`` (and for ``auto`` when uvloop
    is installed). A value outside :data:`LOOPS`, or ``uvloop`` without
    uvloop installed, is a UsageError (exit 2)."""
    problem = loop_problem(choice)
    if problem is not None:
        raise UsageError(f"--loop: {problem}")
    if choice == "asyncio":
        return None
    try:
        # Found by name at run time, from the host's installation: the build
        # then packs no uvloop into images of targets that have no loop key.
        uvloop = importlib.import_module(UVLOOP)
    except ImportError:
        if choice == "auto":
            return None
        raise UsageError(
            "--loop uvloop: uvloop is not installed; pip install 'looming[fast]' "
            "or run with --loop asyncio"
        ) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
