"""The console: where a unikernel's text output goes."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Console(Protocol):
    """A text console (stdout on unix, the serial port in a VM)."""

    async def log(self, message: str) -> None:
        """Write ``message`` followed by a newline and flush it."""
        ...

    async def write(self, data: bytes) -> None:
        """Write raw bytes, unbuffered; no newline is added."""
        ...

    async def read(self) -> bytes:
        """Read the next available input; ``b""`` at end of input."""
        ...
