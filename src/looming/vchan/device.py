"""vchan as a device of a unikernel: what ``vchan(port)`` in config.py becomes.

A unikernel either serves a port (it publishes ``<its name>/<port>`` and
serves one peer at a time, the next once the last has gone) or connects to
a port another unikernel serves, again after that one restarts. Either way the application receives a :class:`Vchan`: a
:class:`~looming.devices.Flow` with vchan's packet mode and ring queries.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from looming.devices.flow import Flow
from looming.devices.time import Time
from looming.errors import Closed, ConfigError, LoomingError
from looming.vchan import aio
from looming.vchan.endpoint import DEFAULT_RING_SIZE
from looming.vchan.registry import check_name

log = logging.getLogger("looming.vchan")

NAME_ENV = "LOOMING_VCHAN_NAME"
_T = TypeVar("_T")


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


RECONNECT_WAIT = 0.5


class VchanDevice:
    """The :class:`Vchan` device the generated code connects at start-up.

    It outlives its peer: when the peer dies or restarts, the operation in
    progress fails (``ConnectionReset``, or ``b""`` from a read when the peer
    closed cleanly) and the application learns it there; the next operation
    connects again, a client to the restarted server (waiting up to
    :data:`RECONNECT_WAIT` seconds for it to publish, then failing with
    ``ConnectionRefused`` or ``ConnectionTimeout``), a server to its next
    client (its port stays published: see :class:`looming.vchan.aio.ServingPort`).
    """

    local_address: tuple[str, int] | None = None  # a vchan has no (host, port)
    remote_address: tuple[str, int] | None = None

    def __init__(
        self,
        flow: aio.VchanFlow,
        description: str,
        *,
        reconnect: Callable[[], Awaitable[aio.VchanFlow]] | None = None,
        serving: aio.ServingPort | None = None,
    ) -> None:
        self._flow: aio.VchanFlow | None = flow
        self.description = description
        self._reconnect = reconnect
        self._serving = serving
        self.connections = 1

    @classmethod
    async def connect(
        cls,
        port: str,
        *,
        time: Time,
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
        side reads and writes; waits and deadlines are measured on ``time``.
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
                peer, port, registry_dir=registry_dir, wait_for_server=wait_for_server, time=time
            )

            async def again() -> aio.VchanFlow:
                log.info("vchan: connecting again to %s/%s", peer, port)
                return await aio.connect(
                    peer, port, registry_dir=registry_dir, wait_for_server=RECONNECT_WAIT, time=time
                )

            return cls(flow, f"client of {peer}/{port}", reconnect=again)
        own = name or os.environ.get(NAME_ENV)
        if not own:
            raise ConfigError(
                f"vchan({port!r}) serves a port but this unikernel has no vchan name: "
                f"pass --vchan-name NAME or set {NAME_ENV} (the process deployment does)"
            )
        serving = aio.ServingPort(
            check_name("name", own),
            port,
            read_min=read_size,
            write_min=write_size,
            registry_dir=registry_dir,
            time=time,
        )
        await serving.publish()
        log.info("vchan: serving %s/%s, waiting for the peer", own, port)
        flow = await serving.accept()
        log.info("vchan: %s/%s connected", own, port)
        return cls(flow, f"server of {own}/{port}", serving=serving)

    # -- the connection, again when the peer restarts -------------------------------

    async def _current(self) -> aio.VchanFlow:
        if self._flow is not None:
            return self._flow
        if self._serving is not None:
            self._flow = await self._serving.accept()
            log.info("vchan: %s: a new peer connected", self.description)
        elif self._reconnect is not None:
            self._flow = await self._reconnect()
        else:
            raise Closed(f"vchan {self.description} is closed")
        self.connections += 1
        return self._flow

    def _lost(self, flow: aio.VchanFlow) -> None:
        if self._flow is flow:
            self._flow = None
            flow.close_now()

    async def _use(self, operation: Callable[[aio.VchanFlow], Awaitable[_T]]) -> _T:
        flow = await self._current()
        try:
            return await operation(flow)
        except (LoomingError, OSError):
            self._lost(flow)
            raise

    # -- Flow and packet mode --------------------------------------------------------

    async def read(self) -> bytes:
        flow = await self._current()
        try:
            data = await flow.read()
        except (LoomingError, OSError):
            self._lost(flow)
            raise
        if not data:
            self._lost(flow)  # the peer closed: this read says so, the next reconnects
        return data

    async def write(self, data: bytes) -> None:
        await self._use(lambda flow: flow.write(data))

    async def writev(self, buffers: Iterable[bytes]) -> None:
        await self._use(lambda flow: flow.writev(buffers))

    async def shutdown(self) -> None:
        if self._flow is not None:
            await self._flow.shutdown()

    async def close(self) -> None:
        self._reconnect = None
        serving, self._serving = self._serving, None
        if serving is not None:
            await serving.close()
        flow, self._flow = self._flow, None
        if flow is not None:
            await flow.close()

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        await self._use(lambda flow: flow.send(data))

    async def recv(self, count: int) -> bytes:
        data = await self._use(lambda flow: flow.recv(count))
        if not data and self._flow is not None:
            self._lost(self._flow)
        return data

    def data_ready(self) -> int:
        return self._flow.data_ready() if self._flow is not None else 0

    def buffer_space(self) -> int:
        return self._flow.buffer_space() if self._flow is not None else 0

    async def disconnect(self) -> None:
        """Close the channel (the device's end of life)."""
        await self.close()
