"""Host implementations of the device interfaces (the ``unix`` target).

A unikernel receives its devices from the generated ``main.py``. A program
that runs on the host instead (a command-line tool, a test, a library used
from plain asyncio) asks for the host's devices here, by name::

    from looming.unix import host_devices

    host = host_devices()
    config = TlsConfig(trust=..., random=host.random, clock=host.clock)

Nothing outside this package falls back to them on its own: a constructor
that needs time, a clock or randomness takes the device as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

# Imported when asked for: a unikernel that links one host device (the
# generated main.py imports looming.unix.clock, say) loads only that one.
if TYPE_CHECKING:
    from looming.unix.clock import UnixClock
    from looming.unix.random import UnixRandom
    from looming.unix.time import UnixTime


@dataclass(frozen=True)
class HostDevices:
    """The host's monotonic time, wall clock and randomness, as devices."""

    time: UnixTime
    clock: UnixClock
    random: UnixRandom


def host_devices(*, seed: int | None = None) -> HostDevices:
    """The host's time, clock and random devices; with ``seed``, the random
    device is a deterministic stream instead of ``os.urandom``."""
    from looming.unix.clock import UnixClock
    from looming.unix.random import UnixRandom
    from looming.unix.time import UnixTime

    return HostDevices(time=UnixTime(), clock=UnixClock(), random=UnixRandom(seed))


__all__ = ["HostDevices", "host_devices"]
