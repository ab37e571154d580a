"""A wall-clock watchdog for simulation runs.

Virtual time moves only when every callback has returned, so code that
spins (a CPU loop that never awaits, or one that awaits only
``asyncio.sleep(0)``) stops the whole simulation forever. The watchdog is a
thread that looks at the run's virtual clock; when it has stood still for
``limit_s`` seconds of wall time, it finds which node's code is running
(from the simulation thread's stack), records where, and raises
:class:`SimStalled` in the simulation thread, which ends the run.

Code spinning inside a C function that does not return to the interpreter
cannot be interrupted this way; the report is still made when it returns.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from types import FrameType

from looming.sim.intercept import host_work_in, real_monotonic
from looming.sim.loop import Gate, VirtualEventLoop

_GATE_CALL = Gate.__call__.__code__
_SIM_DIR = os.path.dirname(__file__)
_ASYNCIO_DIR = os.path.dirname(threading.__file__) + os.sep + "asyncio"


class SimStalled(KeyboardInterrupt):
    """Raised in the simulation thread when virtual time stood still too long.

    A KeyboardInterrupt so that asyncio lets it through the event loop
    instead of storing it in the task that was running."""


def _describe(frame: FrameType | None) -> tuple[str, str]:
    """(who: "node 'x'" or "the scenario", where: "function (file:line)")."""
    who = "the scenario"
    where = "the event loop"
    innermost = True
    while frame is not None:
        code = frame.f_code
        if code is _GATE_CALL:
            gate = frame.f_locals.get("self")
            if isinstance(gate, Gate):
                who = f"node {gate.label!r}"
            break
        filename = code.co_filename
        if innermost and not filename.startswith((_SIM_DIR, _ASYNCIO_DIR)):
            where = f"{code.co_name} ({filename}:{frame.f_lineno})"
            innermost = False
        frame = frame.f_back
    return who, where


class Watchdog:
    """Stops a run whose virtual time stands still for ``limit_s`` wall seconds.

    One monitor thread per process polls every running watchdog, so a run
    costs no thread start of its own."""

    def __init__(self, loop: VirtualEventLoop, limit_s: float) -> None:
        self.loop = loop
        self.limit_s = limit_s
        self.report: str | None = None
        self._target = threading.get_ident()
        self._seen = loop.time()
        self._since = real_monotonic()

    def __enter__(self) -> Watchdog:
        with _watched_changed:
            self._seen, self._since = self.loop.time(), real_monotonic()
            _watched.append(self)
            _ensure_monitor()
            _watched_changed.notify()
        return self

    def __exit__(self, *_exc: object) -> None:
        with _watched_changed:
            _watched.remove(self)

    def poll(self) -> None:
        """Called by the monitor, holding the lock (so the run cannot end meanwhile)."""
        now = self.loop.time()
        if now != self._seen or host_work_in(self._target):
            self._seen, self._since = now, real_monotonic()
            return
        stalled = real_monotonic() - self._since
        if stalled < self.limit_s:
            return
        who, where = _describe(sys._current_frames().get(self._target))
        if self.report is None:
            self.report = (
                f"watchdog: virtual time stood still at t={now:.6f} s for {stalled:.1f} s "
                f"of wall time while {who} ran {where}; the run was stopped. Code that "
                "loops without awaiting (or awaits only asyncio.sleep(0)) stops every "
                "node: await the node's time device or asyncio.sleep(seconds > 0) in it"
            )
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(self._target), ctypes.py_object(SimStalled)
        )
        self._since = real_monotonic()  # try again later if the exception was swallowed


_watched: list[Watchdog] = []
_watched_changed = threading.Condition()
_monitor: list[threading.Thread] = []


def _ensure_monitor() -> None:
    if not _monitor or not _monitor[0].is_alive():
        thread = threading.Thread(target=_watch, name="looming-sim-watchdog", daemon=True)
        _monitor[:] = [thread]
        thread.start()


def _watch() -> None:
    with _watched_changed:
        while True:
            if not _watched:
                _watched_changed.wait()
                continue
            interval = min(0.1, min(w.limit_s for w in _watched) / 4)
            _watched_changed.wait(interval)
            for watchdog in list(_watched):
                watchdog.poll()


def _after_fork_in_child() -> None:
    """A forked sweep worker has no monitor thread, and the lock may have
    been held by the parent's at the moment of the fork."""
    global _watched_changed
    _watched_changed = threading.Condition()
    _watched.clear()
    _monitor.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
