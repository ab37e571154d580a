"""An asyncio reader/writer loop over a non-blocking frame-oriented fd,
shared by the TAP and AF_PACKET interfaces."""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Awaitable, Callable

from looming.devices.net import Capabilities, FrameHandler, MacAddress, NetworkStats
from looming.errors import DeviceError

# Frames read per wake-up before yielding to the loop: enough to amortise the
# wake-up, few enough that writers are not starved.
_BATCH = 64


class FrameDevice:
    """Reads and writes whole frames on ``fd`` (one read() is one frame)."""

    def __init__(
        self,
        fd: int,
        *,
        receive: Callable[[], bytes] | None = None,
        receive_checked: Callable[[], tuple[bytes, bool]] | None = None,
        send: Callable[[bytes], int] | None = None,
        read_size: int = 65536,
    ) -> None:
        """``receive`` reads one frame; ``receive_checked`` instead reads one
        with whether its checksum is known to be right, which goes to the
        handler with the frame (an interface with ``rx_checksum``)."""
        self._fd = fd
        self._read_size = read_size
        self._receive = receive if receive is not None else self._read
        self._receive_checked = receive_checked
        self._send = send if send is not None else self._write
        self._stats = NetworkStats()
        self._handler: FrameHandler | None = None
        self._closed = asyncio.Event()
        self._disconnected = False  # (what _closed says, read for every frame sent)
        # The frames waiting for the device to take frames again, in order:
        # each with its sender and what its writer awaits.
        self._waiting: deque[tuple[bytes, Callable[[bytes], int], asyncio.Future[None]]] = deque()
        self._listening = False
        # Called once the frames of a wake-up are all handed up: the layers
        # above end their pass there, in the same turn of the loop.
        self._batch_end: Callable[[], None] | None = None

    def _read(self) -> bytes:
        return os.read(self._fd, self._read_size)

    def _write(self, frame: bytes) -> int:
        return os.write(self._fd, frame)

    def stats(self) -> NetworkStats:
        s = self._stats
        return NetworkStats(
            s.rx_bytes, s.rx_packets, s.tx_bytes, s.tx_packets, s.rx_dropped, s.tx_dropped
        )

    async def write(self, frame: bytes, *, send: Callable[[bytes], int] | None = None) -> None:
        """Send one frame (with ``send`` instead of the device's own sender)."""
        pending = self.write_now(frame, send)
        if pending is not None:
            await pending

    def write_now(
        self, frame: bytes, send: Callable[[bytes], int] | None = None
    ) -> asyncio.Future[None] | None:
        """:meth:`write` without a coroutine while the device takes frames
        at once: None once the frame is sent (or refused and counted), else
        a future done once the device took it, in order behind any frame
        already waiting (it would block now)."""
        if self._disconnected:
            raise DeviceError("the network interface is disconnected")
        sender = send if send is not None else self._send
        if not self._waiting:
            try:
                sender(frame)
            except BlockingIOError:
                pass
            except OSError:
                # The device refused the frame (e.g. link down): like a full
                # transmit ring, the frame is lost and counted.
                self._stats.tx_dropped += 1
                return None
            else:
                stats = self._stats
                stats.tx_packets += 1
                stats.tx_bytes += len(frame)
                return None
        # The frame waits, behind those already waiting, for the device to
        # take frames again. One writer callback an fd sends them all in
        # order (several writers waiting each on its own callback would
        # silence one another: the loop keeps one an fd).
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not self._waiting:
            loop.add_writer(self._fd, self._send_waiting)
        self._waiting.append((frame, sender, done))
        return done

    def _send_waiting(self) -> None:
        """The device takes frames again: send those waiting, in order,
        until it would block again."""
        waiting = self._waiting
        stats = self._stats
        while waiting:
            frame, sender, done = waiting[0]
            if not done.cancelled():
                try:
                    sender(frame)
                except BlockingIOError:
                    return  # (the writer callback stays)
                except OSError:
                    stats.tx_dropped += 1
                else:
                    stats.tx_packets += 1
                    stats.tx_bytes += len(frame)
                done.set_result(None)
            waiting.popleft()
        asyncio.get_running_loop().remove_writer(self._fd)

    def after_batch(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` after each wake-up's frames went to the handler."""
        self._batch_end = callback

    def _on_readable(self) -> None:
        if self._receive_checked is not None:
            self._on_readable_checked(self._receive_checked)
        else:
            self._on_readable_plain()
        if self._batch_end is not None:
            self._batch_end()

    def _on_readable_plain(self) -> None:
        handler = self._handler
        stats = self._stats
        receive = self._receive
        for _ in range(_BATCH):
            try:
                frame = receive()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                stats.rx_dropped += 1
                return
            if not frame:
                continue
            stats.rx_packets += 1
            stats.rx_bytes += len(frame)
            if handler is not None:
                handler(frame)

    def _on_readable_checked(self, receive: Callable[[], tuple[bytes, bool]]) -> None:
        """:meth:`_on_readable` for frames read with their checksum state."""
        handler = self._handler
        stats = self._stats
        for _ in range(_BATCH):
            try:
                frame, verified = receive()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                stats.rx_dropped += 1
                return
            if not frame:
                continue
            stats.rx_packets += 1
            stats.rx_bytes += len(frame)
            if handler is not None:
                handler(frame, verified)

    async def listen(self, handler: FrameHandler) -> None:
        if self._listening:
            raise DeviceError("this network interface already has a listener")
        self._listening = True
        self._handler = handler
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fd, self._on_readable)
        try:
            await self._closed.wait()
        finally:
            loop.remove_reader(self._fd)
            self._listening = False

    def close(self) -> None:
        """Stop listening (the owner closes the fd)."""
        self._closed.set()
        self._disconnected = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.remove_reader(self._fd)
        if self._waiting:
            # The frames still waiting are lost, counted, and their writers go on.
            loop.remove_writer(self._fd)
            for _frame, _sender, done in self._waiting:
                if not done.done():
                    self._stats.tx_dropped += 1
                    done.set_result(None)
            self._waiting.clear()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


class FrameDeviceNetwork:
    """The :class:`looming.devices.net.Network` methods of an interface whose
    frames move through a :class:`FrameDevice` (TAP, AF_PACKET). Subclasses
    set ``_mac``, ``_mtu`` and ``_device`` and release their fd in
    :meth:`_release`."""

    _mac: MacAddress
    _mtu: int
    _device: FrameDevice

    @property
    def mac(self) -> MacAddress:
        return self._mac

    @property
    def mtu(self) -> int:
        return self._mtu

    @property
    def capabilities(self) -> Capabilities:
        """No offloads (a subclass that has some says so)."""
        return Capabilities(mtu=self._mtu)

    def stats(self) -> NetworkStats:
        return self._device.stats()

    async def write(self, frame: bytes) -> None:
        await self._device.write(frame)

    def write_now(self, frame: bytes) -> Awaitable[None] | None:
        """:class:`looming.net.ethernet.ImmediateNetwork`: :meth:`write`
        without a coroutine while the device takes frames at once."""
        if "write" in self.__dict__:
            # A wrapper set on this interface (a test's narrower path): it
            # sees every frame, as through write().
            return self.write(frame)
        return self._device.write_now(frame)

    async def listen(self, handler: FrameHandler) -> None:
        await self._device.listen(handler)

    def after_batch(self, callback: Callable[[], None] | None) -> None:
        """:class:`looming.net.ethernet.BatchingNetwork`: ``callback`` runs
        once each wake-up's frames are all handed up."""
        self._device.after_batch(callback)

    async def disconnect(self) -> None:
        if self._device.closed:
            return
        self._device.close()
        self._release()

    def _release(self) -> None:
        raise NotImplementedError
