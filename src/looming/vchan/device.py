"""vchan as a device of a unikernel: what ``vchan(port)`` in config.py becomes.

A unikernel either serves a port (it publishes ``<its name>/<port>`` and
waits for the one peer that connects) or connects to a port another
unikernel serves. Either way the application receives a :class:`Vchan`: a
:class:`~looming.devices.Flow` with vchan's packet mode and ring queries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from looming.devices.flow import Flow
from looming.errors import ConfigError
from looming.vchan import aio
from looming.vchan.endpoint import DEFAULT_RING_SIZE
from looming.vchan.registry import check_name

log = logging.getLogger("looming.vchan")

NAME_ENV = "LOOMING_VCHAN_NAME"


@runtime_checkable
class Vchan(Flow, Protocol):
    """A vchan between two unikernels on one host."""

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Packet mode: write all of ``data`` at once when the ring has room."""
        ...

    async def recv(self, count: int) -> bytes:
        """Packet mode: exactly ``count`` bytes (``b""`` if the peer closed first)."""
        ...

    def data_ready(self) -> int:
        """Bytes that can be read without waiting."""
        ...

    def buffer_space(self) -> int:
        """Bytes that can be written without waiting."""
        ...


class VchanDevice:
    """The :class:`Vchan` device the generated code connects at start-up."""

    def __init__(self, flow: aio.VchanFlow, description: str) -> None:
        self._flow = flow
        self.description = description

    @classmethod
    async def connect(
        cls,
        port: str,
        *,
        peer: str | None = None,
        name: str | None = None,
        read_size: int = DEFAULT_RING_SIZE,
        write_size: int = DEFAULT_RING_SIZE,
        registry: str | None = None,
        wait_for_server: float = 30.0,
    ) -> VchanDevice:
        """Serve ``port`` (no ``peer``) or connect to ``peer``'s ``port``.

        A server publishes under ``name``, which defaults to
        ``$LOOMING_VCHAN_NAME`` (the process deployment sets it to the
        unikernel's name). Sizes are the minimum ring sizes for what this
        side reads and writes.
        """
        registry_dir = Path(registry) if registry else None
        try:
            check_name("port", port)
            if peer is not None:
                check_name("peer", peer)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if peer is not None:
            log.info("vchan: connecting to %s/%s", peer, port)
            flow = await aio.connect(
                peer, port, registry_dir=registry_dir, wait_for_server=wait_for_server
            )
            return cls(flow, f"client of {peer}/{port}")
        own = name or os.environ.get(NAME_ENV)
        if not own:
            raise ConfigError(
                f"vchan({port!r}) serves a port but this unikernel has no vchan name: "
                f"pass --vchan-name NAME or set {NAME_ENV} (the process deployment does)"
            )
        listener = await aio.listen(
            check_name("name", own),
            port,
            read_min=read_size,
            write_min=write_size,
            registry_dir=registry_dir,
        )
        log.info("vchan: serving %s/%s, waiting for the peer", own, port)
        try:
            flow = await listener.accept()
        except BaseException:
            await listener.close()
            raise
        log.info("vchan: %s/%s connected", own, port)
        return cls(flow, f"server of {own}/{port}")

    # -- Flow and packet mode --------------------------------------------------------

    async def read(self) -> bytes:
        return await self._flow.read()

    async def write(self, data: bytes) -> None:
        await self._flow.write(data)

    async def writev(self, buffers: Iterable[bytes]) -> None:
        await self._flow.writev(buffers)

    async def shutdown(self) -> None:
        await self._flow.shutdown()

    async def close(self) -> None:
        await self._flow.close()

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        await self._flow.send(data)

    async def recv(self, count: int) -> bytes:
        return await self._flow.recv(count)

    def data_ready(self) -> int:
        return self._flow.data_ready()

    def buffer_space(self) -> int:
        return self._flow.buffer_space()

    async def disconnect(self) -> None:
        """Close the channel (the device's end of life)."""
        await self._flow.close()
