"""The asyncio form: a blocking C call runs while the event loop keeps turning."""

from __future__ import annotations

import asyncio
import errno
import os
import zlib as stdlib_zlib
from pathlib import Path

from looming.ffi import Handle, LinkedLibrary

DATA = b"async looming " * 100


def test_acall_gives_the_same_results(z: LinkedLibrary) -> None:
    async def main() -> list[int]:
        chunks = [DATA[i:] for i in range(8)]
        return list(
            await asyncio.gather(*(z.acall.crc32(0, chunk, len(chunk)) for chunk in chunks))
        )

    results = asyncio.run(main())
    assert results == [stdlib_zlib.crc32(DATA[i:]) for i in range(8)]


async def open_writer_when_a_reader_waits(fifo: Path) -> int:
    # Opening a FIFO for writing without blocking fails (ENXIO) until a reader
    # has it open: success proves the C fopen() is waiting right now.
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            await asyncio.sleep(0.005)


def test_a_blocked_call_does_not_block_the_loop(c: LinkedLibrary, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def main() -> bytes:
        # fopen() on a FIFO blocks in C until a writer opens the other end, and
        # only this event loop will: if the call blocked the loop, it never would.
        opening = asyncio.ensure_future(c.acall.fopen(str(fifo), "rb"))
        writer = await open_writer_when_a_reader_waits(fifo)
        os.write(writer, b"through the fifo")
        os.close(writer)
        stream = await opening
        assert isinstance(stream, Handle)
        buffer = bytearray(64)
        count = await c.acall.fread(buffer, 1, 64, stream)
        assert await c.acall.fclose(stream) == 0
        return bytes(buffer[:count])

    assert asyncio.run(main()) == b"through the fifo"


def test_acall_raises_like_the_plain_call(c: LinkedLibrary, tmp_path: Path) -> None:
    async def main() -> None:
        await c.acall.access(str(tmp_path / "missing"), 0)

    try:
        asyncio.run(main())
    except FileNotFoundError as exc:
        assert exc.errno == errno.ENOENT
    else:
        raise AssertionError("access() of a missing file succeeded")
