"""Errors raised by vchan endpoints."""

from __future__ import annotations

from looming.errors import DeviceError, Malformed


class VchanError(DeviceError):
    """A vchan could not be set up or used."""


class VchanCorrupt(VchanError, Malformed):
    """The peer left the shared page in a state no correct peer produces.

    Examples: a producer index more than a ring's size ahead of its consumer
    index, a ring order outside 10..20, a page list pointing outside the
    shared segment. The channel is closed when this is raised; nothing is
    read or written outside the segment.
    """
