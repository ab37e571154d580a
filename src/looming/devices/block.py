"""Block devices: fixed-size sectors read and written by number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """The geometry of a block device."""

    sector_size: int
    sectors: int
    read_write: bool

    @property
    def size_bytes(self) -> int:
        return self.sector_size * self.sectors


@runtime_checkable
class Block(Protocol):
    """A block device addressed in sectors.

    Reads and writes cover whole sectors: ``len(data)`` must be a multiple of
    ``info().sector_size``, and the range must lie inside the device, or
    :class:`~looming.errors.BlockOutOfRange` is raised.
    """

    async def info(self) -> BlockInfo:
        """The device's sector size, sector count and writability."""
        ...

    async def read(self, sector: int, count: int) -> bytes:
        """``count`` sectors starting at ``sector``."""
        ...

    async def write(self, sector: int, data: bytes) -> None:
        """Write whole sectors starting at ``sector``; durable after ``flush``."""
        ...

    async def flush(self) -> None:
        """Make every completed write durable."""
        ...

    async def disconnect(self) -> None:
        """Release the device; later calls fail."""
        ...
