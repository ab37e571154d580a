"""Block devices backed by a host file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from looming.devices.block import BlockInfo
from looming.errors import BlockOutOfRange, DeviceError, ReadOnly


class FileBlock:
    """:class:`looming.devices.Block` over a regular file.

    A missing file is created with ``size_bytes`` (default 1 MiB) of zeros.
    I/O runs in a worker thread so the event loop never waits on the disk.
    """

    def __init__(self, fd: int, info: BlockInfo, path: Path) -> None:
        self._fd: int | None = fd
        self._info = info
        self._path = path

    @classmethod
    async def connect(
        cls,
        path: str | os.PathLike[str],
        *,
        sector_size: int = 512,
        read_write: bool = True,
        size_bytes: int = 1 << 20,
    ) -> FileBlock:
        p = Path(path)
        if not p.exists():
            if not read_write:
                raise DeviceError(f"block: {p} does not exist")
            p.parent.mkdir(parents=True, exist_ok=True)
            with p.open("wb") as f:
                f.truncate(size_bytes)
        fd = os.open(p, os.O_RDWR if read_write else os.O_RDONLY)
        size = os.fstat(fd).st_size
        return cls(fd, BlockInfo(sector_size, size // sector_size, read_write), p)

    def _check(self, sector: int, count: int) -> int:
        if self._fd is None:
            raise DeviceError(f"block {self._path} is disconnected")
        if sector < 0 or count < 0 or sector + count > self._info.sectors:
            raise BlockOutOfRange(
                f"sectors {sector}..{sector + count} outside 0..{self._info.sectors}"
            )
        return self._fd

    async def info(self) -> BlockInfo:
        return self._info

    async def read(self, sector: int, count: int) -> bytes:
        fd = self._check(sector, count)
        size = self._info.sector_size
        return await asyncio.to_thread(os.pread, fd, count * size, sector * size)

    async def write(self, sector: int, data: bytes) -> None:
        size = self._info.sector_size
        if len(data) % size:
            raise BlockOutOfRange(f"write of {len(data)} bytes is not whole {size}-byte sectors")
        fd = self._check(sector, len(data) // size)
        if not self._info.read_write:
            raise ReadOnly(f"block {self._path} is read-only")
        await asyncio.to_thread(os.pwrite, fd, data, sector * size)

    async def flush(self) -> None:
        fd = self._check(0, 0)
        await asyncio.to_thread(os.fsync, fd)

    async def disconnect(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
