"""Blocking vchan endpoints for two processes on one host.

:func:`~looming.vchan.listener.listen` and
:func:`~looming.vchan.listener.connect` give an :class:`Endpoint`: the shell around
:class:`~looming.vchan.ring.RingEnd` that kicks the peer when asked and
waits (a short spin, then blocking in ``poll`` on its event and the
control socket) when a ring is empty or full. The asyncio shell in
:mod:`looming.vchan.aio` drives the same endpoint's non-blocking methods.

Blocking calls may come from two threads at once (one reading, one
writing); each direction is used from one thread at a time.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from looming.devices.time import Time
from looming.errors import Closed, ConnectionReset, ConnectionTimeout
from looming.unix.time import UnixTime
from looming.vchan import layout
from looming.vchan.errors import VchanCorrupt, VchanError
from looming.vchan.notify import Notifier
from looming.vchan.ring import RingEnd
from looming.vchan.segment import Segment

DEFAULT_RING_SIZE = 64 * 1024
# Index checks before blocking: enough to catch a reply already on its way
# (a few microseconds here) without burning a core while the peer is idle.
DEFAULT_SPIN = 64
# A blocked wait re-checks the indices this often even without a kick. The
# notify bytes are updated without atomic instructions (Python has none for
# shared memory), so a request may very rarely be lost; this bounds the cost.
SAFETY_RECHECK_MS = 50
# The adaptive spin budget never drops below this (nor exceeds the endpoint's spin).
_MIN_SPIN = 4
_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR
_T = TypeVar("_T")
_CONNECTED = layout.LIVE_CONNECTED


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Endpoint:
    """One connected end of a vchan (see the module docstring)."""

    def __init__(
        self,
        *,
        segment: Segment,
        view: memoryview,
        ring: RingEnd,
        notifier: Notifier,
        control: socket.socket,
        spin: int = DEFAULT_SPIN,
        time: Time | None = None,
    ) -> None:
        self._segment = segment
        self._view = view
        self._ring = ring
        self._peer_live = layout.CLI_LIVE if ring.is_server else layout.SRV_LIVE
        self._notifier = notifier
        self._control = control
        self._control.setblocking(False)
        self._control_eof = False
        self._closed = False
        self._close_hooks: list[Callable[[], None]] = []
        self._failure: BaseException | None = None
        self.spin = spin
        self._spin_budget = spin
        self._spin_spent_ns = 0
        self._time = time or UnixTime()
        # When a reader thread and a writer thread both block, one of them
        # polls the event and wakes the other after draining it; two pollers
        # would race to drain one kick and the loser would sleep through it.
        self._poll_token = threading.Lock()
        self._waiters = threading.Condition()
        self._followers = 0
        # Only the one polling thread uses this (see _block).
        self._poller = select.poll()
        self._poller.register(notifier.wait_fd, select.POLLIN)
        self._poller.register(control.fileno(), _POLL_IN)
        self._control_polled = True

    # -- facts ---------------------------------------------------------------------

    @property
    def is_server(self) -> bool:
        return self._ring.is_server

    @property
    def read_size(self) -> int:
        """Capacity of the ring this end reads."""
        return self._ring.read_size

    @property
    def write_size(self) -> int:
        """Capacity of the ring this end writes."""
        return self._ring.write_size

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def wait_fd(self) -> int:
        """Readable when the peer has kicked this end."""
        return self._notifier.wait_fd

    @property
    def control_fd(self) -> int:
        """Readable when the peer process has gone away."""
        return self._control.fileno()

    def data_ready(self) -> int:
        """Bytes waiting to be read; asks the peer to kick when it writes more."""
        self._check_usable()
        self._guard(self._ring.request_data_notify)
        return self._guard(self._ring.data_ready)

    def buffer_space(self) -> int:
        """Bytes that can be written now; asks the peer to kick when it reads."""
        self._check_usable()
        self._guard(self._ring.request_space_notify)
        return self._guard(self._ring.buffer_space)

    def is_open(self) -> bool:
        """Whether the peer is still connected (not closed, not dead)."""
        if self._closed:
            return False
        self.poll_control()
        return not self._control_eof and self._guard(self._ring.peer_state) == 1

    # -- non-blocking core (shared with the asyncio shell) --------------------------------

    def try_read(self, limit: int) -> bytes | None:
        """Up to ``limit`` bytes, ``b""`` at end of stream, ``None`` if none yet."""
        if self._closed:
            self._check_usable()
        try:
            data, kick = self._ring.read(limit)
        except VchanCorrupt as exc:
            raise self._fail(exc) from None
        if data:
            if kick:
                self._notifier.kick()
            return data
        return None if self._peer_may_write() else b""

    def try_read_into(self, buffer: bytearray | memoryview) -> int | None:
        """Like :meth:`try_read` into ``buffer``: a count, 0 at end, ``None`` if none yet."""
        if self._closed:
            self._check_usable()
        try:
            count, kick = self._ring.read_into(buffer)
        except VchanCorrupt as exc:
            raise self._fail(exc) from None
        if count:
            if kick:
                self._notifier.kick()
            return count
        return None if self._peer_may_write() else 0

    def try_recv(self, count: int) -> bytes | None:
        """Exactly ``count`` bytes, ``b""`` if the peer closed first, ``None`` if not yet."""
        if self._closed:
            self._check_usable()
        try:
            data, kick = self._ring.recv(count)
        except VchanCorrupt as exc:
            raise self._fail(exc) from None
        if data is not None:
            if kick:
                self._notifier.kick()
            return data
        return None if self._peer_may_write() else b""

    def try_write(self, data: bytes | bytearray | memoryview) -> int:
        """Write what fits now; 0 means the ring is full. Raises if the peer left."""
        if self._closed or self._control_eof or self._view[self._peer_live] != _CONNECTED:
            self._check_writable()
        try:
            written, kick = self._ring.write(data)
        except VchanCorrupt as exc:
            raise self._fail(exc) from None
        if kick:
            self._notifier.kick()
        return written

    def try_send(self, data: bytes | bytearray | memoryview) -> bool:
        """Write all of ``data`` or nothing; ``False`` means not enough space yet."""
        if self._closed or self._control_eof or self._view[self._peer_live] != _CONNECTED:
            self._check_writable()
        try:
            sent, kick = self._ring.send(data)
        except VchanCorrupt as exc:
            raise self._fail(exc) from None
        if kick:
            self._notifier.kick()
        return sent

    def spin_succeeded(self, ready: Callable[[], bool]) -> bool:
        """The first, spinning part of a wait: check ``ready`` up to the budget."""
        budget = self._spin_budget
        if budget <= 0:
            return False
        began = self._time.now_ns()
        for _ in range(budget):
            if ready():
                return True
        self._spin_spent_ns = self._time.now_ns() - began
        return False

    def blocked_for(self, duration_ns: int) -> None:
        """Adapt the spin budget after a spin failed and we blocked this long.

        As in KVM's halt polling: when the wait ended within another spin's
        length, a longer spin would have caught it (grow the budget); when
        it took longer, the peer is idle or shares our core, and spinning
        only steals its time (shrink it).
        """
        if self.spin <= 0:
            return
        if duration_ns <= self._spin_spent_ns:
            self._spin_budget = min(self.spin, max(self._spin_budget * 2, _MIN_SPIN))
        else:
            self._spin_budget = min(self.spin, max(self._spin_budget // 2, _MIN_SPIN))

    def now_ns(self) -> int:
        return self._time.now_ns()

    def request_data_notify(self) -> None:
        if not self._closed:
            self._ring.request_data_notify()

    def request_space_notify(self) -> None:
        if not self._closed:
            self._ring.request_space_notify()

    def readable_now(self) -> bool:
        """Something for a reader to act on: data, end of stream or a dead peer."""
        return self.receivable_now(1)

    def receivable_now(self, count: int) -> bool:
        """A packet of ``count`` bytes is there, or the peer is gone."""
        if self._closed:
            return True
        try:
            if self._ring.data_ready() >= count:
                return True
            return self._ring.peer_state() != layout.LIVE_CONNECTED or self._control_eof
        except VchanCorrupt:
            return True  # the next read reports it

    def writable_now(self, need: int = 1) -> bool:
        """Room for ``need`` bytes, or a peer gone (so a writer should stop waiting)."""
        if self._closed:
            return True
        try:
            if self._ring.buffer_space() >= need:
                return True
            return self._ring.peer_state() != layout.LIVE_CONNECTED or self._control_eof
        except VchanCorrupt:
            return True  # the next write reports it

    def poll_control(self) -> None:
        """Notice the peer process's end of the control socket closing."""
        if self._control_eof or self._closed:
            return
        try:
            data = self._control.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._control_eof = True

    @property
    def control_eof(self) -> bool:
        return self._control_eof

    def drain_events(self) -> None:
        self._notifier.drain()

    # -- blocking API ---------------------------------------------------------------

    def read(self, limit: int = DEFAULT_RING_SIZE, *, timeout: float | None = None) -> bytes:
        """Stream mode: block until some bytes arrive; ``b""`` once the peer closed."""
        deadline = self._deadline(timeout)
        while True:
            data = self.try_read(limit)
            if data is not None:
                return data
            self._wait(self.readable_now, self.request_data_notify, deadline)

    def read_into(self, buffer: bytearray | memoryview, *, timeout: float | None = None) -> int:
        """Stream mode into ``buffer``: a count, 0 once the peer closed."""
        deadline = self._deadline(timeout)
        while True:
            count = self.try_read_into(buffer)
            if count is not None:
                return count
            self._wait(self.readable_now, self.request_data_notify, deadline)

    def write(self, data: bytes | bytearray | memoryview, *, timeout: float | None = None) -> None:
        """Stream mode: block until all of ``data`` is in the ring (in pieces if need be)."""
        deadline = self._deadline(timeout)
        view = memoryview(data)
        while view:
            written = self.try_write(view)
            view = view[written:]
            if view:
                self._wait(self.writable_now, self.request_space_notify, deadline)

    def send(self, data: bytes | bytearray | memoryview, *, timeout: float | None = None) -> None:
        """Packet mode: block until ``data`` fits, then write it in one piece."""
        deadline = self._deadline(timeout)
        need = len(data)
        while not self.try_send(data):
            self._wait(lambda: self.writable_now(need), self.request_space_notify, deadline)

    def recv(self, count: int, *, timeout: float | None = None) -> bytes:
        """Packet mode: block until ``count`` bytes are there and take exactly those.

        Returns ``b""`` when the peer closed before ``count`` bytes arrived.
        """
        deadline = self._deadline(timeout)
        while True:
            data = self.try_recv(count)
            if data is not None:
                return data
            self._wait(lambda: self.receivable_now(count), self.request_data_notify, deadline)

    def wait(self, *, timeout: float | None = None) -> None:
        """Block until the peer kicks this end (or goes away)."""
        self._block(self._deadline(timeout))

    def close(self) -> None:
        """Tell the peer we left, then release everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for hook in self._close_hooks:
            with contextlib.suppress(Exception):
                hook()
        self._close_hooks.clear()
        with contextlib.suppress(Exception):
            self._ring.set_state(layout.LIVE_EXITED)
            self._notifier.kick()
        self._ring.release()
        self._view.release()
        self._segment.close()
        self._notifier.close()
        self._control.close()

    def add_close_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when this endpoint closes, before its descriptors do
        (an event loop watching them must let go first)."""
        self._close_hooks.append(hook)

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> int | None:
        return None if timeout is None else self._time.now_ns() + int(timeout * 1e9)

    def _wait(
        self, ready: Callable[[], bool], request: Callable[[], None], deadline: int | None
    ) -> None:
        if self.spin_succeeded(ready):
            return
        started = self._time.now_ns() if self.spin else 0
        while True:
            request()
            if ready():  # re-check after asking: the peer may have acted in between
                break
            self._block(deadline)
            if ready():
                break
        if self.spin:
            self.blocked_for(self._time.now_ns() - started)

    def _block(self, deadline: int | None) -> None:
        wait_ms = SAFETY_RECHECK_MS
        if deadline is not None:
            remaining_ns = deadline - self._time.now_ns()
            if remaining_ns <= 0:
                raise ConnectionTimeout("timed out waiting for the vchan peer")
            wait_ms = min(wait_ms, remaining_ns // 1_000_000 + 1)
        if not self._poll_token.acquire(blocking=False):
            # Another thread is polling; it wakes us when anything arrives.
            with self._waiters:
                self._followers += 1
                try:
                    if self._poll_token.locked():
                        self._waiters.wait(wait_ms / 1000)
                finally:
                    self._followers -= 1
            return
        try:
            if self._control_eof and self._control_polled:
                self._poller.unregister(self._control.fileno())
                self._control_polled = False
            for fd, _ in self._poller.poll(wait_ms):
                if fd == self._notifier.wait_fd:
                    self._notifier.drain()
                else:
                    self.poll_control()
        finally:
            self._poll_token.release()
            if self._followers:
                with self._waiters:
                    self._waiters.notify_all()

    def _peer_may_write(self) -> bool:
        """False once the peer exited; raises when it died without saying so.

        Death is learnt from the control socket while blocked (or through
        :meth:`poll_control`), never by a system call on the fast path.
        """
        try:
            state = self._ring.peer_state()
        except VchanCorrupt as exc:
            raise self._fail(exc) from None
        if state == layout.LIVE_EXITED:
            return False
        if self._control_eof:
            raise ConnectionReset("the vchan peer process died without closing the channel")
        return True

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise VchanError(f"vchan closed after an error: {self._failure}")
        if self._closed:
            raise Closed("this vchan endpoint is closed")

    def _check_writable(self) -> None:
        self._check_usable()
        if not self._peer_may_write():
            raise ConnectionReset("the vchan peer has closed the channel")

    def _guard(self, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except VchanCorrupt as exc:
            raise self._fail(exc) from None

    def _fail(self, exc: VchanCorrupt) -> VchanCorrupt:
        # A peer that breaks the layout gets no second chance.
        self._failure = exc
        self.close()
        return exc
