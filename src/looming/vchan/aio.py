"""vchan on asyncio: :class:`VchanFlow` is a :class:`looming.devices.Flow`.

The event loop watches the endpoint's event descriptor and its control
socket with ``add_reader``; a kick or the peer's death wakes every task
waiting on the flow, and each re-asks for notification and re-checks the
ring before sleeping again (so a wake-up is never lost, and nothing polls
in a loop). Before sleeping, a waiter spins briefly over the indices, which
catches a reply already under way without a trip through the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from looming.devices.time import Time
from looming.errors import Closed, ConnectionRefused, ConnectionTimeout
from looming.vchan import listener as blocking
from looming.vchan import registry, rendezvous
from looming.vchan.endpoint import DEFAULT_RING_SIZE, DEFAULT_SPIN, SAFETY_RECHECK_MS, Endpoint


class VchanFlow:
    """A connected vchan as an asyncio byte stream (stream and packet mode).

    vchan's shared page has no half-close, so :meth:`shutdown` only stops
    this side writing; the peer sees end of stream when we :meth:`close`.
    """

    def __init__(self, channel: Endpoint) -> None:
        self._endpoint = channel
        self._loop = asyncio.get_running_loop()
        self._waiters: set[asyncio.Future[None]] = set()
        self._read_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._write_shut = False
        self._closed = False
        self._watching_control = True
        self._wait_fd = channel.wait_fd
        self._control_fd = channel.control_fd
        self._loop.add_reader(self._wait_fd, self._on_kick)
        self._loop.add_reader(self._control_fd, self._on_control)
        # However the endpoint closes (by us, or after a corrupt peer), the
        # loop stops watching its descriptors before they are closed.
        channel.add_close_hook(self._forget)

    local_address: tuple[str, int] | None = None  # a vchan has no (host, port)
    remote_address: tuple[str, int] | None = None

    @property
    def endpoint(self) -> Endpoint:
        """The blocking endpoint underneath (for sizes and statistics)."""
        return self._endpoint

    def data_ready(self) -> int:
        """Bytes waiting to be read."""
        return self._endpoint.data_ready()

    def buffer_space(self) -> int:
        """Bytes that can be written without waiting."""
        return self._endpoint.buffer_space()

    def is_open(self) -> bool:
        return not self._closed and self._endpoint.is_open()

    # -- Flow -----------------------------------------------------------------------

    async def read(self) -> bytes:
        """The bytes available (at least one), or ``b""`` once the peer closed."""
        async with self._read_lock:
            channel = self._endpoint
            while True:
                data = channel.try_read(channel.read_size)
                if data is not None:
                    return data
                await self._wait(channel.readable_now, channel.request_data_notify)

    async def read_into(self, buffer: bytearray | memoryview) -> int:
        """Stream mode into ``buffer``: a count, 0 once the peer closed."""
        async with self._read_lock:
            channel = self._endpoint
            while True:
                count = channel.try_read_into(buffer)
                if count is not None:
                    return count
                await self._wait(channel.readable_now, channel.request_data_notify)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Stream mode: returns when all of ``data`` is in the ring."""
        async with self._write_lock:
            self._check_writable()
            channel = self._endpoint
            view = memoryview(data)
            while view:
                written = channel.try_write(view)
                view = view[written:]
                if view:
                    await self._wait(channel.writable_now, channel.request_space_notify)

    async def writev(self, buffers: Iterable[bytes]) -> None:
        await self.write(b"".join(buffers))

    async def shutdown(self) -> None:
        """Stop writing (later writes raise :class:`Closed`); reading goes on."""
        self._write_shut = True

    async def close(self) -> None:
        """Tell the peer we left and release everything. Idempotent."""
        self.close_now()

    def close_now(self) -> None:
        """:meth:`close` for synchronous callers (finalizers, signal handlers)."""
        self._endpoint.close()  # runs _forget first

    def _forget(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._wait_fd)
        if self._watching_control:
            self._loop.remove_reader(self._control_fd)
            self._watching_control = False
        self._wake()

    # -- packet mode ------------------------------------------------------------------

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` in one piece once the ring has room for all of it."""
        async with self._write_lock:
            self._check_writable()
            channel, need = self._endpoint, len(data)
            while not channel.try_send(data):
                await self._wait(lambda: channel.writable_now(need), channel.request_space_notify)

    async def recv(self, count: int) -> bytes:
        """Exactly ``count`` bytes, or ``b""`` when the peer closed first."""
        async with self._read_lock:
            channel = self._endpoint
            while True:
                data = channel.try_recv(count)
                if data is not None:
                    return data
                await self._wait(lambda: channel.receivable_now(count), channel.request_data_notify)

    # -- waiting ----------------------------------------------------------------------

    async def _wait(self, ready: Callable[[], bool], request: Callable[[], None]) -> None:
        channel = self._endpoint
        if channel.spin_succeeded(ready):
            return
        while True:
            if self._closed:
                return  # the caller's next try_* says why (closed, or corrupt)
            request()
            if ready():
                break
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters.add(waiter)
            # See SAFETY_RECHECK_MS: a rare lost request costs at most this.
            timer = self._loop.call_later(SAFETY_RECHECK_MS / 1000, _settle, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiters.discard(waiter)
            if self._closed:
                return
            if ready():
                break

    def _on_kick(self) -> None:
        self._endpoint.drain_events()
        self._wake()

    def _on_control(self) -> None:
        self._endpoint.poll_control()
        if self._endpoint.control_eof and self._watching_control:
            self._loop.remove_reader(self._control_fd)
            self._watching_control = False
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            _settle(waiter)
        self._waiters.clear()

    def _check_writable(self) -> None:
        if self._write_shut and not self._closed:
            raise Closed("this vchan flow was shut down for writing")


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AsyncListener:
    """A published port; :meth:`accept` waits for the client without blocking the loop."""

    def __init__(self, listener: blocking.Listener) -> None:
        self._listener = listener

    @property
    def entry(self) -> registry.Entry:
        return self._listener.entry

    async def accept(self) -> VchanFlow:
        loop = asyncio.get_running_loop()
        listening = self._listener.listening_socket
        listening.setblocking(False)
        control, _ = await loop.sock_accept(listening)
        try:
            control.setblocking(False)
            self._listener.offer(control)  # small: fits a fresh socket's buffer
            answer = await loop.sock_recv(control, rendezvous.MAX_MESSAGE)
        except BaseException:
            control.close()
            raise
        return VchanFlow(self._listener.complete(control, answer))

    async def close(self) -> None:
        self._listener.close()

    def close_now(self) -> None:
        self._listener.close()


async def listen(
    name: str,
    port: str,
    *,
    read_min: int = DEFAULT_RING_SIZE,
    write_min: int = DEFAULT_RING_SIZE,
    registry_dir: Path | None = None,
    notifier: str | None = None,
    spin: int = DEFAULT_SPIN,
    time: Time,
) -> AsyncListener:
    """Publish ``port`` under ``name`` (see :func:`looming.vchan.listener.listen`);
    channel deadlines are measured on ``time``, the unikernel's time device."""
    return AsyncListener(
        blocking.listen(
            name,
            port,
            read_min=read_min,
            write_min=write_min,
            registry_dir=registry_dir,
            notifier=notifier,
            spin=spin,
            time=time,
        )
    )


class ServingPort:
    """A port that stays published: :meth:`accept` takes one client after another.

    Each client gets a vchan of its own (a vchan joins exactly two ends);
    the port is published again as soon as one is accepted, so the next
    client, or the same one restarted, can connect while the first is served.
    """

    def __init__(self, name: str, port: str, *, time: Time, **options: Any) -> None:
        self.name = name
        self.port = port
        self._time = time
        self._options = options
        self._listener: AsyncListener | None = None
        self.accepted = 0

    async def publish(self) -> None:
        if self._listener is None:
            self._listener = await listen(self.name, self.port, time=self._time, **self._options)

    async def accept(self) -> VchanFlow:
        await self.publish()
        assert self._listener is not None
        try:
            flow = await self._listener.accept()
        except BaseException:
            await self.close()
            raise
        self._listener = None
        self.accepted += 1
        await self.publish()
        return flow

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()


async def connect(
    peer: str,
    port: str,
    *,
    registry_dir: Path | None = None,
    spin: int = DEFAULT_SPIN,
    wait_for_server: float = 0.0,
    time: Time,
) -> VchanFlow:
    """Connect to ``peer``'s ``port``, waiting up to ``wait_for_server`` seconds
    of ``time`` (the unikernel's time device) for it to be published (useful
    when both sides start together)."""
    clock = time
    target = registry.entry(peer, port, registry_dir)
    give_up = clock.now_ns() + int(wait_for_server * 1e9)
    while True:
        try:
            control = blocking.open_control(target)
            break
        except ConnectionRefused:
            if clock.now_ns() >= give_up:
                raise
            await clock.sleep(0.01)
    try:
        control.setblocking(False)
        await _readable(control, max(wait_for_server, 30.0))
        channel = blocking.attach(control, spin=spin, time=time)
    except BaseException:
        control.close()
        raise
    return VchanFlow(channel)


async def _readable(sock: socket.socket, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(sock.fileno(), _settle, ready)
    try:
        async with asyncio.timeout(timeout):
            await ready
    except TimeoutError:
        raise ConnectionTimeout("the vchan server did not offer a channel in time") from None
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(sock.fileno())
