"""Deadlines for the isolated backend's calls: a watchdog that kills a helper in overtime.

A call arms the :class:`CallWatch` of its library with its deadline and
disarms it when the reply is in; past the deadline the watch kills the
helper's process group, the call's channel breaks, and the call raises
:class:`~looming.ffi.errors.CallTimedOut`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from looming.devices.time import Time

DEFAULT_TIMEOUT = 30.0


class CallWatch:
    """Kills the helper of a call that outlives its deadline (one thread per library).

    A call arms it with its deadline and disarms it when the reply is in; the
    thread sleeps until the earliest armed deadline, so a call costs a lock
    and two assignments, not a timer.
    """

    def __init__(self, time: Time, kill: Callable[[], None]) -> None:
        self._time = time
        self._kill = kill
        self._condition = threading.Condition()
        self._deadline_ns: int | None = None
        self._sleeping_until: int | None = None
        self._serial = 0
        self.expired_serial = -1
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def current_serial(self) -> int:
        return self._serial

    def arm(self, seconds: float) -> int:
        with self._condition:
            self._serial += 1
            deadline = self._time.now_ns() + int(seconds * 1e9)
            self._deadline_ns = deadline
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="looming-ffi-call-watch", daemon=True
                )
                self._thread.start()
            elif self._sleeping_until is None or deadline < self._sleeping_until:
                self._condition.notify()
            return self._serial

    def disarm(self) -> None:
        with self._condition:
            self._deadline_ns = None

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while not self._stopped:
                deadline = self._deadline_ns
                if deadline is None:
                    self._sleeping_until = None
                    self._condition.wait()
                    continue
                now = self._time.now_ns()
                if now >= deadline:
                    self.expired_serial = self._serial
                    self._deadline_ns = None
                    self._kill()
                    continue
                self._sleeping_until = deadline
                self._condition.wait((deadline - now) / 1e9)
