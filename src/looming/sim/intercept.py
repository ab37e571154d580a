"""The standard library's time and randomness, inside a simulation run.

While a run is going on in a thread, code in that thread that asks the
standard library for the time or for random bytes gets the answer of the
node it runs as (its virtual ``time``, ``clock`` and ``random`` devices), or
of the scenario (virtual time and a stream drawn from the seed) when it runs
as the scenario's driver. What cannot be answered from virtual time raises
:class:`HostAccessError` naming the call site. Nothing is silently real.

Redirected: ``time.time``/``time_ns``, ``monotonic``/``monotonic_ns``,
``perf_counter``/``perf_counter_ns``, ``clock_gettime``/``clock_gettime_ns``
(real-time and monotonic clocks), ``localtime``/``gmtime``/``ctime``/
``strftime`` without a time, ``datetime.datetime.now``/``utcnow``/``today``
and ``datetime.date.today``, ``os.urandom``, ``os.getrandom``, the
``secrets`` module and ``random.SystemRandom`` (through ``random``'s
``_urandom``), ``uuid.uuid4``, ``random.Random()`` created without a seed,
``random``'s global generator (seeded from the run's seed for the run and
put back afterwards). Naive local times (``localtime``, ``now()`` without a
zone) follow the host's ``TZ``, as outside a run: compare runs made under
the same ``TZ``.

The ``datetime`` classes stay what they are: their ``now``, ``utcnow`` and
``today`` are replaced in the C types' own dictionaries for the run (the
types refuse ``setattr``), so subclasses, ``isinstance`` checks, pydantic's
schemas and values made by C code all see the real classes, and a call made
through the C API is redirected too.

Run inline, as the node and in virtual time: work given to anyio's worker
threads (sync FastAPI endpoints, ``BackgroundTasks``, ``anyio.to_thread``)
and, through the loop's ``run_in_executor``, ``asyncio.to_thread``.

Refused: ``time.sleep`` of more than 0 s (it would stop every node: use
``await asyncio.sleep``), ``time.process_time``/``thread_time``, CPU-time
clocks of ``clock_gettime`` and ``uuid.uuid1`` (host CPU time and the host's
MAC address).

Not intercepted: host work the simulator does on a run's behalf in the
run's thread, inside :func:`suspended` (building the artifact of a node added
mid-run, whose smoke import waits for a child process).

Scope: the functions are replaced for as long as at least one run is going
on, and they consult a per-thread record of the running world, so other
threads (and everything after the run) get the real functions. Names bound
before a run with ``from time import monotonic`` (or ``now = datetime.now``)
keep the real function; looming's own code reads time only through devices.
"""

from __future__ import annotations

import ctypes
import datetime
import gc
import os
import random
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from looming.sim.devices import EPOCH_NS, SimRandom, derive_seed

if TYPE_CHECKING:
    from looming.sim.world import World

# The real functions, for looming's own measurements of wall time.
real_perf_counter = time.perf_counter
real_monotonic = time.monotonic


class HostAccessError(RuntimeError):
    """Code in a simulation asked the host for something only devices may give."""


class _Active(threading.local):
    def __init__(self) -> None:
        self.worlds: list[World] = []
        self.scenario_random: list[SimRandom] = []


_active = _Active()
_lock = threading.Lock()
_installed = 0
_saved: list[tuple[Any, str, Any]] = []
_saved_types: list[tuple[type, str, Any]] = []


def _world() -> World | None:
    worlds = _active.worlds
    return worlds[-1] if worlds else None


def _call_site(depth: int = 3) -> str:
    frame = sys._getframe(depth)
    return f"{frame.f_code.co_filename}:{frame.f_lineno} (in {frame.f_code.co_name})"


def _refuse(what: str, advice: str) -> HostAccessError:
    return HostAccessError(
        f"{what} at {_call_site()} would use the host inside a simulation, where "
        f"runs must depend only on the seed; {advice}"
    )


# -- where the answers come from ---------------------------------------------------


def _monotonic_ns(world: World) -> int:
    from looming.sim.node import CURRENT_NODE

    incarnation = CURRENT_NODE.get()
    return incarnation.time.now_ns() if incarnation is not None else world.loop.now_ns()


def _wall_ns(world: World) -> int:
    from looming.sim.node import CURRENT_NODE

    incarnation = CURRENT_NODE.get()
    if incarnation is not None:
        return incarnation.clock.now_ns()
    return EPOCH_NS + world.loop.now_ns()


def _random_bytes(world: World, n: int) -> bytes:
    from looming.sim.node import CURRENT_NODE

    incarnation = CURRENT_NODE.get()
    source = incarnation.random if incarnation is not None else _active.scenario_random[-1]
    return source.bytes(n)


# -- the replacements -------------------------------------------------------------------


def _redirect(real: Callable[..., Any], virtual: Callable[[World], Any]) -> Callable[..., Any]:
    def replacement(*args: Any, **kwargs: Any) -> Any:
        world = _world()
        if world is None:
            return real(*args, **kwargs)
        return virtual(world)

    replacement.__name__ = getattr(real, "__name__", "replacement")
    replacement.__doc__ = getattr(real, "__doc__", None)
    return replacement


def _with_time(real: Callable[..., Any]) -> Callable[..., Any]:
    """localtime(), gmtime(), ctime(): virtual time when none is given."""

    def replacement(seconds: float | None = None) -> Any:
        world = _world()
        if world is not None and seconds is None:
            seconds = _wall_ns(world) / 1e9
        return real(seconds)

    replacement.__name__ = real.__name__
    return replacement


def _strftime(real: Callable[..., str]) -> Callable[..., str]:
    def strftime(format: str, *when: Any) -> str:
        world = _world()
        if world is not None and not when:
            return real(format, time.gmtime(_wall_ns(world) / 1e9))
        return real(format, *when)

    return strftime


def _refusing(real: Callable[..., Any], what: str, advice: str) -> Callable[..., Any]:
    def replacement(*args: Any, **kwargs: Any) -> Any:
        if _world() is None:
            return real(*args, **kwargs)
        raise _refuse(what, advice)

    replacement.__name__ = getattr(real, "__name__", "replacement")
    return replacement


def _sleep(real: Callable[[float], None]) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        if _world() is None or seconds <= 0:
            real(seconds)
            return
        raise _refuse(
            f"time.sleep({seconds})",
            "it would stop every node without virtual time passing: use 'await asyncio.sleep' "
            "(or the node's time device)",
        )

    return sleep


def _urandom(real: Callable[[int], bytes]) -> Callable[..., bytes]:
    def urandom(n: int, *flags: Any) -> bytes:
        world = _world()
        if world is None:
            return real(n, *flags)
        return _random_bytes(world, n)

    urandom.__name__ = real.__name__
    return urandom


def _seed(real: Callable[..., None]) -> Callable[..., None]:
    def seed(self: random.Random, a: Any = None, version: int = 2) -> None:
        world = _world()
        if a is None and world is not None:
            a = int.from_bytes(_random_bytes(world, 32), "big")
        real(self, a, version)

    return seed


# -- clock_gettime and datetime ---------------------------------------------------------

_MONOTONIC_CLOCKS = frozenset(
    getattr(time, name)
    for name in ("CLOCK_MONOTONIC", "CLOCK_MONOTONIC_RAW", "CLOCK_BOOTTIME", "CLOCK_UPTIME")
    if hasattr(time, name)
)
_CPU_ADVICE = "host CPU time differs from run to run: measure with time.monotonic() (virtual)"


def _clock_gettime(real: Callable[[int], Any], in_ns: bool) -> Callable[[int], Any]:
    def clock_gettime(clock_id: int) -> Any:
        world = _world()
        if world is None:
            return real(clock_id)
        if clock_id == time.CLOCK_REALTIME:
            value = _wall_ns(world)
        elif clock_id in _MONOTONIC_CLOCKS:
            value = _monotonic_ns(world)
        else:
            raise _refuse(f"time.{real.__name__}({clock_id})", _CPU_ADVICE)
        return value if in_ns else value / 1e9

    clock_gettime.__name__ = real.__name__
    return clock_gettime


def _wall_parts(world: World) -> tuple[int, int]:
    """The virtual wall time as (whole seconds, microseconds), exactly."""
    seconds, nanoseconds = divmod(_wall_ns(world), 1_000_000_000)
    return seconds, nanoseconds // 1000


def _now(real: Any) -> classmethod[Any, Any, Any]:
    def now(cls: type[datetime.datetime], tz: datetime.tzinfo | None = None) -> Any:
        world = _world()
        if world is None:
            return real.__get__(None, cls)(tz)
        seconds, micro = _wall_parts(world)
        return cls.fromtimestamp(seconds, tz).replace(microsecond=micro)

    return classmethod(now)


def _utcnow(real: Any) -> classmethod[Any, Any, Any]:
    def utcnow(cls: type[datetime.datetime]) -> Any:
        world = _world()
        if world is None:
            return real.__get__(None, cls)()
        if sys.version_info >= (3, 12):
            warnings.warn(
                "datetime.datetime.utcnow() is deprecated: use datetime.datetime.now(datetime.UTC)",
                DeprecationWarning,
                stacklevel=2,
            )
        seconds, micro = _wall_parts(world)
        moment = cls.fromtimestamp(seconds, datetime.UTC)
        return moment.replace(tzinfo=None, microsecond=micro)

    return classmethod(utcnow)


def _today(real: Any) -> classmethod[Any, Any, Any]:
    """date.today(), which datetime.today() inherits."""

    def today(cls: type[datetime.date]) -> Any:
        world = _world()
        if world is None:
            return real.__get__(None, cls)()
        seconds, micro = _wall_parts(world)
        day = cls.fromtimestamp(seconds)
        return day.replace(microsecond=micro) if isinstance(day, datetime.datetime) else day

    return classmethod(today)


def _type_replacements() -> list[tuple[type, str, Any]]:
    """(C type, attribute, replacement): set in the type's own dictionary."""
    moment, day = datetime.datetime, datetime.date
    return [
        (moment, "now", _now(moment.__dict__["now"])),
        (moment, "utcnow", _utcnow(moment.__dict__["utcnow"])),
        (day, "today", _today(day.__dict__["today"])),
    ]


def _type_dict(cls: type) -> dict[str, Any]:
    """The dictionary behind ``cls.__dict__`` (a read-only proxy)."""
    for referent in gc.get_referents(cls.__dict__):
        if isinstance(referent, dict):
            return referent
    raise RuntimeError(f"cannot reach the attributes of {cls.__qualname__}")


def _set_type_attribute(cls: type, name: str, value: Any) -> None:
    """Set an attribute of a type that refuses ``setattr`` (datetime's C types):
    in its dictionary, then tell the interpreter, whose attribute caches and
    specialised bytecode then look it up again (in subclasses too)."""
    _type_dict(cls)[name] = value
    ctypes.pythonapi.PyType_Modified(ctypes.py_object(cls))


def _replacements() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, replacement) for everything redirected or refused."""
    wall_s = _redirect(time.time, lambda w: _wall_ns(w) / 1e9)
    mono_s = _redirect(time.monotonic, lambda w: _monotonic_ns(w) / 1e9)
    seed = _seed(random.Random.seed)
    found: list[tuple[Any, str, Any]] = [
        (time, "time", wall_s),
        (time, "time_ns", _redirect(time.time_ns, _wall_ns)),
        (time, "monotonic", mono_s),
        (time, "monotonic_ns", _redirect(time.monotonic_ns, _monotonic_ns)),
        (time, "perf_counter", _redirect(time.perf_counter, lambda w: _monotonic_ns(w) / 1e9)),
        (time, "perf_counter_ns", _redirect(time.perf_counter_ns, _monotonic_ns)),
        (time, "clock_gettime", _clock_gettime(time.clock_gettime, in_ns=False)),
        (time, "clock_gettime_ns", _clock_gettime(time.clock_gettime_ns, in_ns=True)),
        (time, "localtime", _with_time(time.localtime)),
        (time, "gmtime", _with_time(time.gmtime)),
        (time, "ctime", _with_time(time.ctime)),
        (time, "strftime", _strftime(time.strftime)),
        (time, "sleep", _sleep(time.sleep)),
        (os, "urandom", _urandom(os.urandom)),
        (random, "_urandom", _urandom(os.urandom)),
        (random.Random, "seed", seed),
        # random.seed is a method bound to the global generator at import.
        (random, "seed", lambda a=None, version=2: seed(random._inst, a, version)),
    ]
    found.extend(_anyio_threads())
    if hasattr(os, "getrandom"):
        found.append((os, "getrandom", _urandom(os.getrandom)))
    for name in ("process_time", "process_time_ns", "thread_time", "thread_time_ns"):
        if hasattr(time, name):
            found.append(
                (time, name, _refusing(getattr(time, name), f"time.{name}()", _CPU_ADVICE))
            )
    found.append(
        (
            uuid,
            "uuid1",
            _refusing(
                uuid.uuid1,
                "uuid.uuid1()",
                "it reads the host's clock and MAC address: use uuid.uuid4() (seeded here)",
            ),
        )
    )
    return found


def _anyio_threads() -> list[tuple[Any, str, Any]]:
    """anyio's worker threads (sync FastAPI endpoints, BackgroundTasks) run
    inline in a simulation, as the node, in virtual time."""
    try:
        from anyio._backends._asyncio import AsyncIOBackend
    except ImportError:
        return []
    real = AsyncIOBackend.__dict__["run_sync_in_worker_thread"]

    async def run_sync_in_worker_thread(
        cls: type, func: Callable[..., Any], args: tuple[Any, ...], *rest: Any, **kwargs: Any
    ) -> Any:
        if _world() is None:
            return await real.__func__(cls, func, args, *rest, **kwargs)
        import asyncio

        await asyncio.sleep(0)  # a checkpoint, as handing work to a thread is
        return func(*args)

    return [(AsyncIOBackend, "run_sync_in_worker_thread", classmethod(run_sync_in_worker_thread))]


def _install() -> None:
    global _installed
    with _lock:
        if _installed == 0:
            for owner, name, replacement in _replacements():
                _saved.append((owner, name, owner.__dict__[name]))
                setattr(owner, name, replacement)
            for cls, name, replacement in _type_replacements():
                _saved_types.append((cls, name, cls.__dict__[name]))
                _set_type_attribute(cls, name, replacement)
        _installed += 1


def _uninstall() -> None:
    global _installed
    with _lock:
        _installed -= 1
        if _installed == 0:
            for owner, name, original in reversed(_saved):
                setattr(owner, name, original)
            _saved.clear()
            for cls, name, original in reversed(_saved_types):
                _set_type_attribute(cls, name, original)
            _saved_types.clear()


@contextmanager
def intercepted(world: World) -> Iterator[None]:
    """For the duration of a run of ``world`` in this thread: the standard
    library's time and randomness come from the simulation."""
    state = random.getstate()
    _install()
    _active.worlds.append(world)
    _active.scenario_random.append(SimRandom(derive_seed(world.seed, "host", "scenario")))
    # The global generator, for the run: drawn from the seed, not the host.
    random.seed(derive_seed(world.seed, "host", "global"))
    try:
        yield
    finally:
        _active.worlds.pop()
        _active.scenario_random.pop()
        _uninstall()
        random.setstate(state)


@contextmanager
def suspended() -> Iterator[None]:
    """Host work done in a run's thread on the run's behalf (building a node's
    artifact when a scenario adds the node mid-run: files, a child interpreter
    and ``subprocess``'s wait for it, which polls with ``time.sleep``) gets the
    real functions, and the run's watchdog does not count the wall time it
    takes (virtual time stands still meanwhile). It draws nothing from the run's streams (the global
    generator is put back afterwards), so a run is the same whether the
    artifact had to be built or was found."""
    worlds, scenario_random = _active.worlds, _active.scenario_random
    state = random.getstate()
    _active.worlds, _active.scenario_random = [], []
    thread = threading.get_ident()
    _suspended_threads[thread] = _suspended_threads.get(thread, 0) + 1
    try:
        yield
    finally:
        _suspended_threads[thread] -= 1
        if not _suspended_threads[thread]:
            del _suspended_threads[thread]
        _active.worlds, _active.scenario_random = worlds, scenario_random
        random.setstate(state)


_suspended_threads: dict[int, int] = {}


def host_work_in(thread: int) -> bool:
    """Whether the thread ``thread`` is doing host work inside :func:`suspended`
    (the watchdog does not count it: virtual time stands still meanwhile)."""
    return thread in _suspended_threads


def active() -> bool:
    """Whether a run is going on in this thread."""
    return _world() is not None
