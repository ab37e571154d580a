"""Blocking vchan endpoints for two processes on one host.

:func:`listen` publishes a port and returns a :class:`Listener`, whose
:meth:`Listener.accept` waits for the one client; :func:`connect` is the
client's side. Both give an :class:`Endpoint`: the shell around
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
from pathlib import Path
from typing import TypeVar

from looming.devices.time import Time
from looming.errors import Closed, ConnectionRefused, ConnectionReset, ConnectionTimeout
from looming.unix.time import UnixTime
from looming.vchan import layout, registry, rendezvous
from looming.vchan.errors import VchanCorrupt, VchanError
from looming.vchan.notify import Event, Notifier, default_kind, make_event
from looming.vchan.ring import RingEnd
from looming.vchan.segment import Segment, recover_segments

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
            self._wait(
                lambda: (
                    self._closed
                    or self._guard(self._ring.data_ready) >= count
                    or not self._peer_may_write()
                ),
                self.request_data_notify,
                deadline,
            )

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


class Listener:
    """A published vchan port waiting for its one client."""

    def __init__(
        self,
        entry: registry.Entry,
        *,
        read_min: int,
        write_min: int,
        notifier_kind: str,
        spin: int,
        time: Time | None,
    ) -> None:
        self.entry = entry
        self._spin = spin
        self._time = time
        self._kind = notifier_kind
        left_order, right_order = layout.choose_orders(read_min, write_min)
        geometry = layout.plan(left_order, right_order)
        registry.claim(entry)
        self._segment: Segment | None = None
        self._events: list[Event] = []
        self._socket: socket.socket | None = None
        try:
            self._segment = Segment.create(geometry.segment_size)
            self._view = self._segment.view()
            layout.initialize(self._view, geometry)
            self._ring = RingEnd(self._view, geometry, is_server=True)
            self._own = make_event(notifier_kind)  # the server waits on this
            self._events.append(self._own)
            self._peer = make_event(notifier_kind)  # the client waits on this
            self._events.append(self._peer)
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._socket.bind(str(entry.socket_path))
            self._socket.listen(1)
        except BaseException:
            self._abandon()
            raise

    @property
    def listening_socket(self) -> socket.socket:
        if self._socket is None:
            raise Closed("this vchan listener is closed")
        return self._socket

    def accept(self, *, timeout: float | None = None) -> Endpoint:
        """Wait for the client, hand it the channel and return our endpoint."""
        listening = self.listening_socket
        listening.settimeout(timeout)
        try:
            control, _ = listening.accept()
        except TimeoutError:
            raise ConnectionTimeout(f"no vchan client connected within {timeout} s") from None
        control.settimeout(timeout if timeout is not None else 30.0)
        try:
            self.offer(control)
            answer = control.recv(rendezvous.MAX_MESSAGE)
        except TimeoutError:
            control.close()
            raise ConnectionTimeout("the vchan client did not answer during rendezvous") from None
        except BaseException:
            control.close()
            raise
        return self.complete(control, answer)

    def offer(self, control: socket.socket) -> None:
        """Send the segment and events to a freshly connected client."""
        assert self._segment is not None
        rendezvous.send_offer(
            control,
            self._kind,
            self._segment.size,
            self._segment.fd,
            self._peer.wait_fd,
            self._own.kick_fd,
        )

    def complete(self, control: socket.socket, answer: bytes) -> Endpoint:
        """Finish rendezvous with the client's answer; unpublishes the port."""
        try:
            rendezvous.parse_answer(answer)
            if self._ring.peer_state() != layout.LIVE_CONNECTED:
                raise VchanError("the vchan client answered but did not mark itself connected")
        except BaseException:
            control.close()
            self.close()
            raise
        assert self._segment is not None
        endpoint = Endpoint(
            segment=self._segment,
            view=self._view,
            ring=self._ring,
            notifier=Notifier(self._kind, self._own.wait_fd, self._peer.kick_fd),
            control=control,
            spin=self._spin,
            time=self._time,
        )
        # The endpoint owns the segment, our event and the peer's kick end
        # now; the client holds its own descriptors for the rest.
        self._close_unowned(keep={self._own.wait_fd, self._peer.kick_fd})
        self._segment.unlink()
        self._segment = None
        self._events = []
        self._close_socket()
        return endpoint

    def _close_unowned(self, keep: set[int]) -> None:
        for event in self._events:
            for fd in event.fds:
                if fd not in keep:
                    _close_fds(fd)

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self.entry.remove()

    def _abandon(self) -> None:
        self._close_unowned(keep=set())
        self._events = []
        if self._segment is not None:
            ring = getattr(self, "_ring", None)
            if ring is not None:
                ring.set_state(layout.LIVE_EXITED)
                ring.release()
            view = getattr(self, "_view", None)
            if view is not None:
                view.release()
            self._segment.close()
            self._segment = None
        self._close_socket()

    def close(self) -> None:
        """Stop waiting for a client and remove every trace. Idempotent."""
        self._abandon()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def listen(
    name: str,
    port: str,
    *,
    read_min: int = DEFAULT_RING_SIZE,
    write_min: int = DEFAULT_RING_SIZE,
    registry_dir: Path | None = None,
    notifier: str | None = None,
    spin: int = DEFAULT_SPIN,
    time: Time | None = None,
) -> Listener:
    """Publish ``port`` under our ``name``; rings of at least the given sizes.

    ``read_min`` is the ring the server reads (the client writes), as in
    ``libxenvchan_server_init``; sizes round up to powers of two (see
    :func:`~looming.vchan.layout.choose_orders`). Leftovers of crashed
    processes in the registry and ``/dev/shm`` are removed first.
    """
    target = registry.entry(name, port, registry_dir)
    recover(registry_dir)
    return Listener(
        target,
        read_min=read_min,
        write_min=write_min,
        notifier_kind=notifier or default_kind(),
        spin=spin,
        time=time,
    )


def open_control(target: registry.Entry) -> socket.socket:
    """Connect to a published port's socket, or raise ConnectionRefused."""
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        control.connect(str(target.socket_path))
    except (FileNotFoundError, ConnectionRefusedError):
        control.close()
        raise ConnectionRefused(
            f"no vchan server publishes {target.name}/{target.port} in {target.directory}"
        ) from None
    except BaseException:
        control.close()
        raise
    return control


def attach(control: socket.socket, *, spin: int, time: Time | None) -> Endpoint:
    """The client's half of rendezvous once the offer is readable on ``control``."""
    offer = rendezvous.receive_offer(control)
    segment: Segment | None = None
    view: memoryview | None = None
    ring: RingEnd | None = None
    try:
        segment = Segment.adopt(offer.segment_fd)
        view = segment.view()
        geometry = layout.parse(view)
        ring = RingEnd(view, geometry, is_server=False)
        if ring.peer_state() != layout.LIVE_CONNECTED:
            raise VchanCorrupt("the server's liveness byte does not say connected")
        ring.set_state(layout.LIVE_CONNECTED)
        view[layout.SRV_NOTIFY] = view[layout.SRV_NOTIFY] | layout.NOTIFY_WRITE
    except BaseException as exc:
        with contextlib.suppress(OSError):
            control.sendall(rendezvous.refuse_message(str(exc)))
        if ring is not None:
            ring.release()
        if view is not None:
            view.release()
        if segment is not None:
            segment.close()  # closes the segment descriptor it adopted
        else:
            _close_fds(offer.segment_fd)
        _close_fds(offer.wait_fd, offer.kick_fd)
        control.close()
        raise
    control.sendall(rendezvous.accept_message())
    return Endpoint(
        segment=segment,
        view=view,
        ring=ring,
        notifier=Notifier(offer.kind, offer.wait_fd, offer.kick_fd),
        control=control,
        spin=spin,
        time=time,
    )


def connect(
    peer: str,
    port: str,
    *,
    registry_dir: Path | None = None,
    spin: int = DEFAULT_SPIN,
    timeout: float | None = 30.0,
    time: Time | None = None,
) -> Endpoint:
    """Connect to the port ``port`` published by ``peer``.

    Raises :class:`~looming.errors.ConnectionRefused` when nobody publishes it.
    """
    target = registry.entry(peer, port, registry_dir)
    control = open_control(target)
    control.settimeout(timeout)
    try:
        ready, _, _ = select.select([control], [], [], timeout)
        if not ready:
            raise ConnectionTimeout(f"vchan server {peer}/{port} did not offer a channel")
    except BaseException:
        control.close()
        raise
    control.settimeout(timeout)
    return attach(control, spin=spin, time=time)


def recover(registry_dir: Path | None = None) -> None:
    """Remove registry entries and segments left by processes that died."""
    registry.recover_entries(registry_dir)
    recover_segments()
