"""Event channels between two processes: an eventfd, or a pipe without one.

A vchan endpoint waits on its own event and kicks the peer's. With eventfd
both are a single descriptor each (the counter is the event); with pipes
each event is a pipe whose read end the waiter drains and whose write end
the kicker writes one byte to. Descriptors start non-blocking: a kick to
an event that is already pending (full pipe, saturated counter) is a no-op.
A blocking endpoint may switch its own eventfd to blocking reads (see
:mod:`looming.vchan.endpoint`); writes to an eventfd still never block
short of the counter's overflow, which a draining reader never lets happen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

EVENTFD = "eventfd"
PIPE = "pipe"


def default_kind() -> str:
    """``eventfd`` where the platform has it, else ``pipe``."""
    return EVENTFD if hasattr(os, "eventfd") else PIPE


@dataclass(slots=True)
class Event:
    """One direction's event: a descriptor to wait on and one to kick.

    For eventfd both are the same descriptor.
    """

    wait_fd: int
    kick_fd: int

    @property
    def fds(self) -> list[int]:
        return [self.wait_fd] if self.wait_fd == self.kick_fd else [self.wait_fd, self.kick_fd]


def make_event(kind: str) -> Event:
    """A new event of ``kind`` (``eventfd`` or ``pipe``)."""
    if kind == EVENTFD:
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return Event(fd, fd)
    if kind == PIPE:
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        return Event(read_end, write_end)
    raise ValueError(f"unknown notifier {kind!r}: use {EVENTFD!r} or {PIPE!r}")


class Notifier:
    """This end's wiring: wait on ``own``, kick ``peer``.

    Only the descriptors this end uses are held (the peer's wait end and our
    own kick end stay with the peer), so closing them is this end's business.
    """

    __slots__ = ("_is_eventfd", "kick_fd", "wait_fd")

    def __init__(self, kind: str, wait_fd: int, kick_fd: int) -> None:
        if kind not in (EVENTFD, PIPE):
            raise ValueError(f"unknown notifier {kind!r}")
        self._is_eventfd = kind == EVENTFD
        self.wait_fd = wait_fd
        self.kick_fd = kick_fd

    def kick(self) -> None:
        """Signal the peer; never blocks."""
        try:
            if self._is_eventfd:
                os.eventfd_write(self.kick_fd, 1)
            else:
                os.write(self.kick_fd, b"\x01")
        except BlockingIOError:
            pass  # an event is already pending, which is all a kick means
        except (BrokenPipeError, OSError):
            pass  # the peer is gone; its death is noticed on the control socket

    @property
    def is_eventfd(self) -> bool:
        return self._is_eventfd

    def wake_self(self) -> None:
        """Wake whoever waits on this end's own eventfd (never blocks).

        Only an eventfd can be kicked from this side (a pipe's write end is
        the peer's); with pipes, waiters use ``poll`` with a timeout instead.
        """
        if self._is_eventfd:
            try:
                os.eventfd_write(self.wait_fd, 1)
            except OSError:
                pass  # already pending, or closing

    def drain(self) -> None:
        """Consume pending kicks so the next wait blocks until a new one."""
        try:
            if self._is_eventfd:
                os.eventfd_read(self.wait_fd)
            else:
                while os.read(self.wait_fd, 4096):
                    pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in {self.wait_fd, self.kick_fd}:
            try:
                os.close(fd)
            except OSError:
                pass
