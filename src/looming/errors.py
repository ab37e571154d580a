"""The error hierarchy shared by every part of looming.

Every error says what was wrong and, where it can, what to do about it.
"""

from __future__ import annotations


class LoomingError(Exception):
    """Base class of every error looming raises on purpose."""


class Malformed(LoomingError):
    """Bytes from outside (network, disk, peer) that do not parse.

    Parsers raise only this; stacks count and drop the offending input.
    """


class ConfigError(LoomingError):
    """A problem in an application's ``config.py`` or in the command line.

    ``path`` and ``line`` point at the place to fix when known.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path is not None and self.line is not None:
            return f"{self.path}:{self.line}: {self.message}"
        if self.path is not None:
            return f"{self.path}: {self.message}"
        return self.message


class UsageError(LoomingError):
    """Bad input from a user on the command line: exit code 2."""


class NotReplayable(LoomingError):
    """Code in a simulation needs randomness its devices cannot give (a primitive
    that draws from OpenSSL's generator): the run could not be replayed from its
    seed. The message names the primitive and how to avoid it; the run fails."""


class DeviceError(LoomingError):
    """A device failed to connect or failed an operation."""


class KeyNotFound(DeviceError, KeyError):
    """A key-value store has no entry under this key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)

    def __str__(self) -> str:
        return f"no such key: {self.key!r}"


class NotAValue(DeviceError):
    """The key names a dictionary (a prefix), not a value."""


class ReadOnly(DeviceError):
    """A write to a device that was opened read-only."""


class BlockOutOfRange(DeviceError):
    """A block read or write outside the device or not sector aligned."""


class NetworkError(LoomingError):
    """Base class of network errors."""


class ConnectionRefused(NetworkError):
    """The peer answered a connection attempt with a reset."""


class ConnectionReset(NetworkError):
    """The peer reset an established connection."""


class ConnectionTimeout(NetworkError):
    """A connection attempt or a transfer timed out."""


class Closed(NetworkError):
    """The flow was closed (or shut down for writing) by this side."""


class AddressInUse(NetworkError):
    """A listener or binding already holds this port."""


class NoRoute(NetworkError):
    """No interface or gateway reaches the destination."""


class HostUnreachable(NetworkError):
    """Address resolution for the destination failed."""
