"""The isolated backend's channel over vchan (shared-memory rings).

The caller publishes a vchan port under a name unique to it, spawns the
helper, which connects to that port, and accepts it on first use. Messages
are framed as on the socketpair (:mod:`looming.ffi.framing`) and
streamed through the rings, so a message may be larger than a ring. A helper
that dies is seen by vchan's control socket and surfaces as ChannelClosed,
as on the socketpair.

    link(bindings, "isolated", transport=VchanTransport(time=time), time=time)
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from looming.devices.time import Time
from looming.errors import ConnectionTimeout, LoomingError
from looming.ffi.channel import Channel
from looming.ffi.framing import ChannelClosed, MessageReader, frame
from looming.vchan import Endpoint, Listener, connect, listen

RING_SIZE = 128 * 1024
ACCEPT_TIMEOUT = 30.0
_serial = itertools.count()


class VchanChannel:
    """Length-prefixed messages over a vchan endpoint (stream mode)."""

    def __init__(
        self,
        endpoint: Endpoint | None = None,
        listener: Listener | None = None,
        *,
        wait_slice: float | None = None,
    ) -> None:
        self._endpoint = endpoint
        # With a slice, waits poll in slices of it rather than sleep in a
        # blocking read watched by a thread: the helper must stay
        # single-threaded until it has entered its namespaces and forked.
        self._wait_slice = wait_slice
        self._listener = listener
        self._reader = MessageReader(RING_SIZE)

    def _ready(self) -> Endpoint:
        if self._endpoint is None:
            if self._listener is None:
                raise ChannelClosed("this vchan channel is closed")
            try:
                self._endpoint = self._listener.accept(timeout=ACCEPT_TIMEOUT)
            except (LoomingError, OSError) as exc:
                raise ChannelClosed(f"the helper did not connect over vchan: {exc}") from exc
            finally:
                self._listener.close()
                self._listener = None
        return self._endpoint

    def send(self, message: bytes | bytearray) -> None:
        endpoint = self._ready()
        try:
            endpoint.write(frame(message))
        except (LoomingError, OSError) as exc:
            raise ChannelClosed(f"vchan closed while sending: {exc}") from exc

    def recv(self) -> bytes:
        self._ready()
        message = self._reader.read(self._read_into)
        if message is None:
            raise ChannelClosed("vchan closed by the other end")
        return message

    def _read_into(self, chunk: memoryview) -> int:
        endpoint = self._ready()
        while True:
            try:
                return endpoint.read_into(chunk, timeout=self._wait_slice)
            except ConnectionTimeout:
                continue
            except (LoomingError, OSError) as exc:
                raise ChannelClosed(f"vchan closed while receiving: {exc}") from exc

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._endpoint is not None:
            self._endpoint.close()
            self._endpoint = None


class VchanTransport:
    """Open one vchan per helper; ``registry_dir`` as vchan's (default: its own)."""

    name = "vchan"

    def __init__(self, registry_dir: Path | None = None, *, time: Time) -> None:
        self.registry_dir = registry_dir
        self.time = time

    def open(self) -> tuple[Channel, str, tuple[int, ...]]:
        name = f"looming-ffi-{os.getpid()}-{next(_serial)}"
        port = "ffi"
        listener = listen(
            name,
            port,
            read_min=RING_SIZE,
            write_min=RING_SIZE,
            registry_dir=self.registry_dir,
            time=self.time,
        )
        where = str(self.registry_dir) if self.registry_dir is not None else ""
        spec = f"looming.ffi.vchan_transport:connect_vchan:{name}|{port}|{where}"
        return VchanChannel(listener=listener), spec, ()

    def after_spawn(self) -> None:
        return None


def connect_vchan(argument: str, time: Time) -> Channel:
    """Helper side: connect to the caller's published port."""
    name, port, where = argument.split("|", 2)
    endpoint = connect(name, port, registry_dir=Path(where) if where else None, time=time)
    return VchanChannel(endpoint=endpoint, wait_slice=3600.0)
