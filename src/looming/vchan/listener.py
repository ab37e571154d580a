"""Publishing a vchan port and connecting to one (the rendezvous, blocking).

:func:`listen` publishes a port and returns a :class:`Listener`, whose
:meth:`Listener.accept` waits for the one client; :func:`connect` is the
client's side. Both end with an :class:`~looming.vchan.endpoint.Endpoint`.
The asyncio versions in :mod:`looming.vchan.aio` reuse the pieces here
(:meth:`Listener.offer`, :meth:`Listener.complete`, :func:`attach`).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from pathlib import Path

from looming.devices.time import Time
from looming.errors import Closed, ConnectionRefused, ConnectionTimeout
from looming.vchan import layout, registry, rendezvous
from looming.vchan.endpoint import DEFAULT_RING_SIZE, DEFAULT_SPIN, Endpoint
from looming.vchan.errors import VchanCorrupt, VchanError
from looming.vchan.notify import Event, Notifier, default_kind, make_event
from looming.vchan.ring import RingEnd
from looming.vchan.segment import Segment, recover_segments


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


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
        time: Time,
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
    time: Time,
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


def attach(control: socket.socket, *, spin: int, time: Time) -> Endpoint:
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
    time: Time,
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
