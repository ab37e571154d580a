"""Blocking vchan endpoints for two processes on one host.

:func:`~looming.vchan.listener.listen` and
:func:`~looming.vchan.listener.connect` give an :class:`Endpoint`: the shell around
:class:`~looming.vchan.ring.RingEnd` that kicks the peer when asked and
waits when a ring is empty or full: a short spin (backing off while spins
find nothing), then sleeping. Without a timeout, a sleep over an eventfd is
one blocking read of it, and a watchdog thread watches the control socket
for the peer's death and re-wakes a sleeper now and then (see
SAFETY_RECHECK_MS); with a timeout, or over pipes, it is ``poll`` on the
event and the control socket. The asyncio shell in
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
from functools import partial
from typing import TypeVar

from looming.devices.time import Time
from looming.errors import Closed, ConnectionReset, ConnectionTimeout
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
# At most this many waits block at once after spins found nothing (see
# spin_succeeded), so an idle peer costs a spin once in this many waits.
SPIN_RETRY_AFTER = 64
_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR
_T = TypeVar("_T")
_A = TypeVar("_A")
_R = TypeVar("_R")
_CONNECTED = layout.LIVE_CONNECTED


def _unused() -> bool:
    """The spin's readiness check for an endpoint that does not spin (should
    ``spin`` be raised during the wait, the spin finds nothing and it sleeps)."""
    return False


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _reader(
    operation: Callable[[RingEnd, _A], tuple[_R | None, bool]],
    nothing: _R | None,
    end: _R,
    doc: str,
) -> Callable[[Endpoint, _A], _R | None]:
    """An endpoint's non-blocking read over the ring's ``operation``: kick
    the peer if it asked, and tell "nothing yet" (``None``) from the end of
    the stream (``end``). ``nothing`` is what the operation returns when it
    moved nothing.

    Made by a factory rather than as methods calling a shared helper: the
    helper's extra call and bound method cost 140 ns an operation (a
    64-byte message moves in about 550 ns); the factory's reader costs 35 ns
    more than the five hand-copied methods it replaces did.
    """

    def nonblocking_read(self: Endpoint, argument: _A) -> _R | None:
        if self._closed:
            self._check_usable()
        try:
            got, kick = operation(self._ring, argument)
        except VchanCorrupt as exc:
            raise self._fail(exc) from None
        if got != nothing:
            if kick:
                self._notifier.kick()
            return got
        if self._view[self._peer_live] == _CONNECTED and not self._control_eof:
            return None  # the common case, without the full check's calls
        return None if self._peer_may_write() else end

    nonblocking_read.__doc__ = doc
    return nonblocking_read


def _writer(
    operation: Callable[[RingEnd, bytes | bytearray | memoryview], tuple[_R, bool]], doc: str
) -> Callable[[Endpoint, bytes | bytearray | memoryview], _R]:
    """An endpoint's non-blocking write over the ring's ``operation``: refuse
    once the peer left, kick the peer if it asked (see :func:`_reader`)."""

    def nonblocking_write(self: Endpoint, data: bytes | bytearray | memoryview) -> _R:
        if self._closed or self._control_eof or self._view[self._peer_live] != _CONNECTED:
            self._check_writable()
        try:
            result, kick = operation(self._ring, data)
        except VchanCorrupt as exc:
            raise self._fail(exc) from None
        if kick:
            self._notifier.kick()
        return result

    nonblocking_write.__doc__ = doc
    return nonblocking_write


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
        time: Time,
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
        self._spin_skip = 0
        self._spin_backoff = 0
        self._time = time
        # When a reader thread and a writer thread both block, one of them
        # polls the event and wakes the other after draining it; two pollers
        # would race to drain one kick and the loser would sleep through it.
        self._poll_token = threading.Lock()
        self._waiters = threading.Condition()
        self._followers = 0
        # Only the one polling thread uses these (see _block).
        self._wait_fd = notifier.wait_fd
        self._poller: select.poll | None = None
        self._control_polled = False
        self._blocking_reads = notifier.is_eventfd
        self._watchdog: threading.Thread | None = None
        self._sleeping = False

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

    # One implementation of each: a reader for every kind of read, a writer
    # for every kind of write, each made once from the ring operation it
    # wraps (see _reader and _writer).
    try_read = _reader(
        RingEnd.read,
        b"",
        b"",
        'Up to ``limit`` bytes, ``b""`` at end of stream, ``None`` if none yet.',
    )
    try_read_into = _reader(
        RingEnd.read_into,
        0,
        0,
        "Into ``buffer``: a count, 0 at end of stream, ``None`` if none yet.",
    )
    try_recv = _reader(
        RingEnd.recv,
        None,
        b"",
        'Exactly ``count`` bytes, ``b""`` if the peer closed first, ``None`` if not yet.',
    )
    try_write = _writer(
        RingEnd.write, "Write what fits now; 0 means the ring is full. Raises if the peer left."
    )
    try_send = _writer(
        RingEnd.send, "Write all of ``data`` or nothing; ``False`` means not enough space yet."
    )

    def spin_succeeded(self, ready: Callable[[], bool]) -> bool:
        """The first, spinning part of a wait: check ``ready`` up to ``spin`` times.

        A spin pays only when the peer is awake and answers within it: then
        neither side makes a system call (the peer sees no request, so it
        does not kick, and we do not sleep). When it is asleep, its wake-up
        alone outlasts a short spin, and a failed spin only adds its length
        to the wait and steals a core on a busy machine. So each spin that
        finds nothing doubles the number of waits that then block at once
        (up to SPIN_RETRY_AFTER) before one spin tries again, and a spin that
        succeeds resets it: a spinning pair stays spinning through a hiccup,
        and an idle peer costs a spin only now and then.
        """
        if self._spin_skip:
            self._spin_skip -= 1
            return False
        if self.spin <= 0:
            return False
        for _ in range(self.spin):
            if ready():
                self._spin_backoff = 0
                return True
        self._spin_backoff = min(SPIN_RETRY_AFTER, self._spin_backoff * 2 + 1)
        self._spin_skip = self._spin_backoff
        return False

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
        data = self.try_read(limit)
        if data is not None:
            return data
        deadline = None if timeout is None else self._deadline(timeout)
        want = partial(self._ring.want_data, 1)
        while True:
            self._wait(self.readable_now, want, deadline)
            data = self.try_read(limit)
            if data is not None:
                return data

    def read_into(self, buffer: bytearray | memoryview, *, timeout: float | None = None) -> int:
        """Stream mode into ``buffer``: a count, 0 once the peer closed."""
        count = self.try_read_into(buffer)
        if count is not None:
            return count
        deadline = None if timeout is None else self._deadline(timeout)
        want = partial(self._ring.want_data, 1)
        while True:
            self._wait(self.readable_now, want, deadline)
            count = self.try_read_into(buffer)
            if count is not None:
                return count

    def write(self, data: bytes | bytearray | memoryview, *, timeout: float | None = None) -> None:
        """Stream mode: block until all of ``data`` is in the ring (in pieces if need be)."""
        if not data:
            return
        written = self.try_write(data)
        if written == len(data):
            return
        deadline = None if timeout is None else self._deadline(timeout)
        view = memoryview(data)[written:]
        want = partial(self._ring.want_space, 1)
        while view:
            self._wait(self.writable_now, want, deadline)
            view = view[self.try_write(view) :]

    def send(self, data: bytes | bytearray | memoryview, *, timeout: float | None = None) -> None:
        """Packet mode: block until ``data`` fits, then write it in one piece."""
        if self.try_send(data):
            return
        deadline = None if timeout is None else self._deadline(timeout)
        need = len(data)
        want = partial(self._ring.want_space, need)
        ready = partial(self.writable_now, need) if self.spin else _unused
        while True:
            self._wait(ready, want, deadline)
            if self.try_send(data):
                return

    def recv(self, count: int, *, timeout: float | None = None) -> bytes:
        """Packet mode: block until ``count`` bytes are there and take exactly those.

        Returns ``b""`` when the peer closed before ``count`` bytes arrived.
        """
        data = self.try_recv(count)
        if data is not None:
            return data
        deadline = None if timeout is None else self._deadline(timeout)
        want = partial(self._ring.want_data, count)
        ready = partial(self.receivable_now, count) if self.spin else _unused
        while True:
            self._wait(ready, want, deadline)
            data = self.try_recv(count)
            if data is not None:
                return data

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
        if self._watchdog is not None:
            # A thread of ours asleep in the eventfd read would sleep on
            # after the descriptor closes: wake it to find the endpoint closed.
            self._notifier.wake_self()
            # Shutting the control socket down wakes the watchdog's poll
            # (closing it would not); the peer learns no more than from close.
            with contextlib.suppress(OSError):
                self._control.shutdown(socket.SHUT_RDWR)
            if self._watchdog is not threading.current_thread():
                self._watchdog.join(timeout=5)
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
        self, ready: Callable[[], bool], want: Callable[[], bool], deadline: int | None
    ) -> None:
        """Return once ``ready()`` may hold; the caller re-checks by trying again.

        The vchan discipline: ``want`` asks the peer to kick and then looks
        again, and we sleep only if there is still nothing, so a kick is never
        missed. Nor is the peer's exit (its close kicks whatever the bits say)
        or death (the control socket, watched while we sleep, wakes us). A
        wake-up leads to the caller's next try, and a wait that still finds
        nothing asks again (a kick uses up the request).
        """
        if self.spin and self.spin_succeeded(ready):
            return
        try:
            if want():
                return
        except VchanCorrupt:
            return  # the caller's next try reports it
        self._block(deadline)

    def _block(self, deadline: int | None) -> None:
        """Sleep until a kick, the peer's death or the periodic re-check."""
        if not self._poll_token.acquire(blocking=False):
            self._follow(deadline)
            return
        try:
            if deadline is None and self._blocking_reads:
                # The fast path: one system call to sleep and consume the
                # kick. The watchdog thread wakes us when the peer dies and
                # every SAFETY_RECHECK_MS while we sleep.
                if self._watchdog is None:
                    self._start_watchdog()
                self._sleeping = True
                try:
                    os.eventfd_read(self._wait_fd)
                finally:
                    self._sleeping = False
            else:
                self._poll_once(deadline)
        finally:
            self._poll_token.release()
            if self._followers:
                with self._waiters:
                    self._waiters.notify_all()

    def _follow(self, deadline: int | None) -> None:
        """Another thread is polling; it wakes us when anything arrives."""
        wait_ms = self._wait_ms(deadline)
        with self._waiters:
            self._followers += 1
            try:
                if self._poll_token.locked():
                    self._waiters.wait(wait_ms / 1000)
            finally:
                self._followers -= 1

    def _wait_ms(self, deadline: int | None) -> int:
        if deadline is None:
            return SAFETY_RECHECK_MS
        remaining_ns = deadline - self._time.now_ns()
        if remaining_ns <= 0:
            raise ConnectionTimeout("timed out waiting for the vchan peer")
        return min(SAFETY_RECHECK_MS, remaining_ns // 1_000_000 + 1)

    def _poll_once(self, deadline: int | None) -> None:
        """Wait in ``poll`` on the event and the control socket (with a deadline,
        or where the event is a pipe)."""
        wait_ms = self._wait_ms(deadline)
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self._wait_fd, select.POLLIN)
            self._poller.register(self._control.fileno(), _POLL_IN)
            self._control_polled = True
        if self._control_eof and self._control_polled:
            self._poller.unregister(self._control.fileno())
            self._control_polled = False
        for fd, _ in self._poller.poll(wait_ms):
            if fd == self._wait_fd:
                self._notifier.drain()
            else:
                self.poll_control()

    def _start_watchdog(self) -> None:
        # A blocking read of the eventfd: one system call per wake-up instead
        # of poll and then read. The flag belongs to the open file, which the
        # peer shares only to kick (writes to an eventfd never block short
        # of an overflow), and the asyncio shell reads only when it is readable.
        os.set_blocking(self._wait_fd, True)
        self._watchdog = threading.Thread(
            target=self._watch, name="looming-vchan-watchdog", daemon=True
        )
        self._watchdog.start()

    def _watch(self) -> None:
        """Watch the control socket for the peer's death, and re-wake a
        sleeping reader now and then (see SAFETY_RECHECK_MS)."""
        poller = select.poll()
        poller.register(self._control.fileno(), _POLL_IN)
        while not self._closed:
            try:
                events = poller.poll(SAFETY_RECHECK_MS)
            except OSError:
                return
            if self._closed:
                return
            if events:
                self.poll_control()
                if self._control_eof:
                    self._notifier.wake_self()
                    return
            elif self._sleeping:
                self._notifier.wake_self()

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
