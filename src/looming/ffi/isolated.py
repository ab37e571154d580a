"""The isolated backend: the library runs in a helper process.

The helper (``python -m looming.ffi.helper``, the same interpreter as the
caller) links the description with the dynamic backend and serves calls over
a channel. Arguments are copied over: ``bytes`` in; ``bytearray`` buffers,
:class:`~looming.ffi.types.Ref` out-parameters, lists and struct dicts in and
back out; callbacks call back across the channel. Handles and
:class:`~looming.ffi.types.Memory` blocks name the helper's memory.

A crash of the helper (a segfault, an abort, a resource limit) raises
:class:`~looming.ffi.errors.HelperCrashed` in the caller, with the signal.
The next call starts a new helper if the :class:`RestartPolicy` allows it;
handles and memory from the dead helper raise
:class:`~looming.ffi.errors.StaleHandle`.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import warnings as _warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from looming.devices.time import Time
from looming.errors import Malformed
from looming.ffi.channel import Channel, ChannelClosed, Transport, default_transport
from looming.ffi.codec import (
    CALLABLE,
    Address,
    PointedTo,
    WireHandle,
    Writable,
    decode_all,
    encode_message,
)
from looming.ffi.confine import Confinement, ConfinementWarning
from looming.ffi.deadlines import DEFAULT_TIMEOUT, CallWatch
from looming.ffi.description import Bindings, Function
from looming.ffi.errors import (
    CallCancelled,
    CallTimedOut,
    DescriptionMismatch,
    HelperCrashed,
    HelperError,
    HelperUnavailable,
    StaleHandle,
)
from looming.ffi.library import LinkedLibrary, check_argument
from looming.ffi.types import (
    Buffer,
    Callback,
    CString,
    CType,
    Enum,
    Handle,
    Memory,
    Opaque,
    Pointer,
    Record,
    Ref,
    Scalar,
    Void,
    pack_into,
    packed,
    unpack_value,
)


@dataclass(frozen=True)
class RestartPolicy:
    """When a crashed helper may be started again.

    ``mode``: ``"always"`` (at the next call), ``"never"`` (the library stays
    down), or ``"backoff"`` (the n-th restart waits ``initial_delay *
    factor**n`` seconds after the crash, capped at ``max_delay``; calls in
    between raise HelperUnavailable). ``max_restarts`` bounds the total.
    """

    mode: str = "always"
    max_restarts: int | None = None
    initial_delay: float = 0.1
    factor: float = 2.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.mode not in ("always", "never", "backoff"):
            raise ValueError(f"restart mode {self.mode!r}: use 'always', 'never' or 'backoff'")

    def delay_ns(self, restarts_so_far: int) -> int:
        if self.mode != "backoff":
            return 0
        delay = min(self.initial_delay * self.factor**restarts_so_far, self.max_delay)
        return int(delay * 1e9)


@dataclass(frozen=True)
class Limits:
    """Resource limits applied in the helper once the library is loaded.

    The defaults bound a helper that misbehaves without getting in the way
    of an ordinary library: 1 GiB of address space (a larger ``malloc``
    fails), 300 s of CPU over the helper's life (then SIGXCPU), 64 open
    files, 64 processes or threads. ``Limits.none()`` sets none.
    """

    address_space: int | None = 1 << 30  # bytes, RLIMIT_AS
    cpu_seconds: int | None = 300  # RLIMIT_CPU: SIGXCPU when exceeded
    open_files: int | None = 64  # RLIMIT_NOFILE
    processes: int | None = 64  # RLIMIT_NPROC (threads count)

    @classmethod
    def none(cls) -> Limits:
        return cls(address_space=None, cpu_seconds=None, open_files=None, processes=None)


def fast_kind(ctype: CType) -> tuple[type, int | None, int | None] | None:
    """(Python type, min, max) of values sent unconverted for ``ctype``, if any."""
    if isinstance(ctype, Scalar) and ctype.kind == "int":
        return (int, ctype.minimum, ctype.maximum)
    if isinstance(ctype, Scalar) and ctype.kind == "float":
        return (float, None, None)
    if isinstance(ctype, Buffer):
        return (bytes, None, None)
    if isinstance(ctype, CString):
        return (str, None, None) if ctype.as_text else (bytes, None, None)
    return None


class RemoteMemory(Memory):
    """A block in the helper's memory; reads and writes are round trips."""

    def __init__(self, library: IsolatedLibrary, ctype: CType, count: int, address: int) -> None:
        super().__init__(ctype, count, address, library.origin)
        self._library = library
        self._freed = False

    def _check_alive(self) -> None:
        if self.origin is not self._library.origin:
            raise StaleHandle("this memory belonged to a helper process that has since died")

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        self._check_alive()
        length = self.size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > self.size:
            raise IndexError(f"read of {length} bytes at {offset} outside a {self.size}-byte block")
        data = self._library._request(b"G", "read", self.address + offset, length)
        if not isinstance(data, bytes) or len(data) != length:
            raise HelperError("the helper answered a read with the wrong length")
        return data

    def write(self, data: bytes, offset: int = 0) -> None:
        self._check_alive()
        if offset < 0 or offset + len(data) > self.size:
            raise IndexError(
                f"write of {len(data)} bytes at {offset} outside a {self.size}-byte block"
            )
        self._library._request(b"P", "write", self.address + offset, bytes(data))

    def free(self) -> None:
        if self.origin is self._library.origin and not self._freed:
            self._freed = True
            self._library._request(b"D", "free", self.address)

    def __del__(self) -> None:
        # Dropped without free(): the helper is told with the next message
        # (not now: this may run in the middle of a call's exchange).
        if not getattr(self, "_freed", True) and self.origin is self._library.origin:
            self._library._pending_frees.append(self.address)


class HelperProcess:
    """One running helper: its process and its channel."""

    def __init__(self, process: subprocess.Popen[bytes], channel: Channel, pid: int) -> None:
        self.process = process
        self.channel = channel
        self.pid = pid  # the serving process, as the caller sees it

    def kill(self) -> None:
        """SIGKILL the helper's whole process group (watcher, namespace init, server)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class IsolatedLibrary(LinkedLibrary):
    """A description linked in a helper process, so C failures stay there."""

    backend = "isolated"

    def __init__(
        self,
        bindings: Bindings,
        *,
        restart: RestartPolicy | None = None,
        limits: Limits | None = None,
        seccomp: Any = None,
        transport: str | Transport | None = None,
        time: Time,
        check_layout: bool | None = None,
        check_declarations: bool | None = None,
        python: str | None = None,
        confinement: Confinement | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(bindings)
        from looming.ffi.declarations import check_description

        check_description(bindings, layouts=check_layout, declarations=check_declarations)
        self.restart_policy = restart if restart is not None else RestartPolicy()
        self.limits = limits if limits is not None else Limits()
        confinement = confinement if confinement is not None else Confinement()
        if seccomp is not None:
            confinement = replace(confinement, seccomp=seccomp)
        self.confinement = confinement
        self.seccomp = confinement.seccomp
        self.timeout = timeout
        self._timeouts = [f.timeout or timeout for f in bindings.functions]
        self.warnings: list[str] = []
        self._transport_choice = transport
        self._time: Time = time
        self.python = python or sys.executable
        self.restarts = 0
        self.crashes = 0
        self._crashed_at_ns: int | None = None
        self._lock = threading.RLock()
        self._helper: HelperProcess | None = None
        self._closed = False
        self._pending_frees: list[int] = []
        self._index = {f.name: i for i, f in enumerate(bindings.functions)}
        self._fast_kinds = [[fast_kind(t) for t in f.args] for f in bindings.functions]
        self._opaque_index = {id(o): i for i, o in enumerate(bindings.opaques)}
        self._watch = CallWatch(self._time, self._kill_inflight)
        self._inflight: HelperProcess | None = None
        self._inflight_thread: int | None = None
        self._abandoned_serial = -1
        self._cancel_before_start: set[int] = set()
        self._start()
        for function in bindings.functions:
            self._bind_function(function.name, self._bind(function))

    # -- the helper's life ----------------------------------------------------

    @property
    def helper_pid(self) -> int | None:
        """The process id of the helper process that runs the library (None while it is down).

        As this process sees it; inside its PID namespace the helper is 2.
        """
        return self._helper.pid if self._helper is not None else None

    def _start(self) -> None:
        transport = default_transport(self._transport_choice, time=self._time)
        channel, spec, fds = transport.open()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        process = subprocess.Popen(
            [self.python, "-m", "looming.ffi.helper", "--channel", spec],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            env=env,
            # A group of its own: a timeout kills the helper and all it started.
            start_new_session=True,
        )
        transport.after_spawn()
        config = {
            "bindings": self.bindings,
            "limits": self.limits,
            "confinement": self.confinement,
            "caller": os.getpid(),
        }
        try:
            channel.send(b"B" + pickle.dumps(config))
            ready = channel.recv()
        except ChannelClosed as exc:
            code = process.wait()
            channel.close()
            raise HelperError(
                f"the helper for {self.bindings.name} did not start (status {code})"
            ) from exc
        if ready[:1] == b"X":
            process.wait()
            channel.close()
            message = decode_all(ready, 1)[0]
            raise HelperError(
                f"the helper for {self.bindings.name} could not be confined: {message}"
            )
        if ready[:1] == b"E":
            process.wait()
            channel.close()
            message = decode_all(ready, 1)[0]
            raise DescriptionMismatch(f"the helper cannot link {self.bindings.name}: {message}")
        if ready[:1] != b"Y":
            process.kill()
            process.wait()
            channel.close()
            raise HelperError("the helper sent a malformed greeting")
        pid, warnings = decode_all(ready, 1)
        for warning in warnings:
            message = f"the helper for {self.bindings.name} runs with {warning}"
            if message not in self.warnings:
                self.warnings.append(message)
                _warnings.warn(ConfinementWarning(message), stacklevel=4)
        self.origin = object()
        self._pending_frees = []  # blocks of an earlier helper died with it
        self._helper = HelperProcess(process, channel, int(pid))

    def _ensure_running(self) -> HelperProcess:
        if self._closed:
            raise HelperUnavailable(f"{self.bindings.name} is closed", retry_after_ns=None)
        if self._helper is not None:
            return self._helper
        policy = self.restart_policy
        if policy.mode == "never":
            raise HelperUnavailable(
                f"the helper for {self.bindings.name} crashed and the restart policy is 'never'",
                retry_after_ns=None,
            )
        if policy.max_restarts is not None and self.restarts >= policy.max_restarts:
            raise HelperUnavailable(
                f"the helper for {self.bindings.name} crashed {self.crashes} times; "
                f"max_restarts={policy.max_restarts} reached",
                retry_after_ns=None,
            )
        if self._crashed_at_ns is not None:
            ready_at = self._crashed_at_ns + policy.delay_ns(self.restarts)
            now = self._time.now_ns()
            if now < ready_at:
                raise HelperUnavailable(
                    f"the helper for {self.bindings.name} is backing off after a crash",
                    retry_after_ns=ready_at - now,
                )
        self._start()
        self.restarts += 1
        assert self._helper is not None
        return self._helper

    def _crashed(
        self, helper: HelperProcess, function: str, detail: str = "", serial: int = -1
    ) -> HelperError:
        """Reap a helper whose channel broke; the exception to raise."""
        try:
            code = helper.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            helper.kill()
            code = helper.process.wait()
            detail = detail or "it stopped answering and was killed"
        helper.kill()  # anything it left in its group goes with it
        helper.channel.close()
        self._helper = None
        self.crashes += 1
        self._crashed_at_ns = self._time.now_ns()
        if serial >= 0 and serial == self._abandoned_serial:
            return CallCancelled(f"{function}() was cancelled; its helper was killed")
        if serial >= 0 and serial == self._watch.expired_serial:
            index = self._index.get(function)
            limit = self._timeouts[index] if index is not None else self.timeout
            return CallTimedOut(function, limit or 0.0)
        signal_number = -code if code < 0 else None
        return HelperCrashed(
            function,
            signal=signal_number,
            exit_code=code if code >= 0 else None,
            detail=detail,
        )

    def _protocol_failure(self, helper: HelperProcess, function: str, problem: str) -> HelperError:
        # A helper that speaks nonsense may be corrupted: end it.
        helper.kill()
        return self._crashed(helper, function, f"it sent a malformed message: {problem}")

    # -- deadlines and cancellation ---------------------------------------------

    def _begin(self, helper: HelperProcess, timeout: float | None) -> int:
        """Mark a call in flight on ``helper``; its serial (-1: no deadline)."""
        self._inflight = helper
        self._inflight_thread = threading.get_ident()
        return self._watch.arm(timeout) if timeout is not None else -1

    def _end(self, serial: int) -> None:
        if serial >= 0:
            self._watch.disarm()
        self._inflight = None
        self._inflight_thread = None

    def _kill_inflight(self) -> None:
        helper = self._inflight
        if helper is not None:
            helper.kill()

    def _abandon_call(self, thread: int) -> bool:
        """Give up the call ``thread`` makes (its task was cancelled).

        True if the thread will return promptly: its call was in flight and
        the helper has been killed, or it has not started and will not.
        """
        if self._inflight_thread == thread and self._inflight is not None:
            self._abandoned_serial = self._watch.current_serial
            self._inflight.kill()
            return True
        self._cancel_before_start.add(thread)
        return False

    def _check_cancelled(self, name: str) -> None:
        if self._cancel_before_start:
            thread = threading.get_ident()
            if thread in self._cancel_before_start:
                self._cancel_before_start.discard(thread)
                raise CallCancelled(f"{name}() was cancelled before it started")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            helper, self._helper = self._helper, None
            if helper is not None:
                try:
                    helper.channel.send(b"Q")
                except ChannelClosed:
                    pass
                try:
                    helper.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    helper.kill()
                    helper.process.wait()
                helper.kill()
                helper.channel.close()
        self._watch.stop()
        super().close()

    def __del__(self) -> None:
        helper = getattr(self, "_helper", None)
        if helper is not None and helper.process.poll() is None:
            helper.kill()
            helper.process.wait()
            helper.channel.close()
        watch = getattr(self, "_watch", None)
        if watch is not None:
            watch.stop()

    # -- values to and from the wire -------------------------------------------

    def _make_handle(self, index: int, address: int) -> Handle:
        if not 0 <= index < len(self.bindings.opaques):
            raise Malformed(f"handle of unknown opaque type {index}")
        return Handle(self.bindings.opaques[index], address, self.origin)

    def _check_origin(self, value: Any) -> None:
        if isinstance(value, Handle | Memory) and value.origin is not self.origin:
            raise StaleHandle(
                f"{value!r} belongs to a helper process that has since died (or to another library)"
            )

    def _argument(
        self, function: Function, index: int, ctype: CType, value: Any, callbacks: dict[int, Any]
    ) -> Any:
        self._check_origin(value)
        check_argument(function, index, value, self.origin)
        if isinstance(ctype, Buffer):
            if isinstance(value, bytearray) or (
                isinstance(value, memoryview) and not value.readonly
            ):
                return Writable(bytes(value))
            if isinstance(value, Memory):
                return Address(value.address)
            if isinstance(value, memoryview):
                return bytes(value)
            return value
        if isinstance(ctype, Opaque):
            if value is None:
                return None
            return WireHandle(self._opaque_index[id(ctype)], value.address)
        if isinstance(ctype, Pointer):
            if value is None:
                return None
            if isinstance(value, Memory):
                return Address(value.address)
            target = ctype.target
            items = (
                [value.value]
                if isinstance(value, Ref)
                else value
                if isinstance(value, list)
                else [value]
            )
            size = max(target.size, 1)
            raw = bytearray(size * max(len(items), 1))
            what = f"{function.name}() argument {function.arg_names[index]!r}"
            for i, item in enumerate(items):
                if item is not None:
                    pack_into(target, raw, i * size, item, what)
            return PointedTo(bytes(raw))
        if isinstance(ctype, Callback):
            if value is None:
                return None
            callbacks[index] = value
            return CALLABLE
        if isinstance(ctype, Record):
            return packed(ctype, value, function.name)
        return value

    def _write_back(self, ctype: CType, value: Any, data: Any) -> None:
        if data is None:
            return
        if not isinstance(data, bytes):
            raise Malformed("a written-back value is not bytes")
        if isinstance(ctype, Buffer):
            expected_size = value.nbytes if isinstance(value, memoryview) else len(value)
            if len(data) != expected_size:
                raise Malformed("a written-back buffer changed size")
            if isinstance(value, memoryview):
                value.cast("B")[:] = data
            else:
                value[:] = data
            return
        if isinstance(ctype, Pointer):
            target = ctype.target
            size = max(target.size, 1)
            if isinstance(value, Ref):
                if len(data) < target.size:
                    raise Malformed("a written-back value is too short")
                value.value = unpack_value(target, data, 0, self.origin)
            elif isinstance(value, list):
                if len(data) < size * len(value):
                    raise Malformed("a written-back array is too short")
                value[:] = [
                    unpack_value(target, data, i * size, self.origin) for i in range(len(value))
                ]
            elif isinstance(value, dict):
                if len(data) < target.size:
                    raise Malformed("a written-back struct is too short")
                value.update(unpack_value(target, data, 0, self.origin))

    def _result(self, ctype: CType, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(ctype, Record):
            if not isinstance(value, bytes) or len(value) != ctype.size:
                raise Malformed("a struct result has the wrong size")
            return unpack_value(ctype, value, 0, self.origin)
        if isinstance(ctype, Enum):
            if not isinstance(value, int):
                raise Malformed("an enum result is not an int")
            return ctype.to_python(value)
        if isinstance(ctype, CString):
            expected: type = str if ctype.as_text else bytes
            if not isinstance(value, expected):
                raise Malformed("a string result has the wrong type")
            return value
        if isinstance(ctype, Opaque):
            if not isinstance(value, Handle) or value.kind is not ctype:
                raise Malformed("a handle result has the wrong type")
            return value
        return value

    # -- calls ------------------------------------------------------------------

    def _bind(self, function: Function) -> Callable[..., Any]:
        index = self._index[function.name]
        call = self._call

        def wrapper(*args: Any) -> Any:
            return call(function, index, args)

        wrapper.__name__ = function.name
        wrapper.__doc__ = function.prototype()
        return wrapper

    def _call(self, function: Function, index: int, args: tuple[Any, ...]) -> Any:
        if len(args) != len(function.args):
            raise TypeError(
                f"{function.name}() takes {len(function.args)} arguments "
                f"({', '.join(function.arg_names)}), got {len(args)}"
            )
        with self._lock:
            self._check_cancelled(function.name)
            helper = self._ensure_running()
            callbacks: dict[int, Any] = {}
            wire = list(args)
            for i, (fast, value) in enumerate(zip(self._fast_kinds[index], args, strict=True)):
                # Ints in range, bytes and str go as they are; the rest is converted.
                if fast is not None and type(value) is fast[0]:
                    low, high = fast[1], fast[2]
                    number: Any = value
                    if low is None or high is None or low <= number <= high:
                        continue
                wire[i] = self._argument(function, i, function.args[i], value, callbacks)
            serial = self._begin(helper, self._timeouts[index])
            try:
                self._send_pending_frees(helper)
                helper.channel.send(encode_message(b"C", index, wire))
                callback_error, reply = self._await_reply(helper, function, callbacks)
            except ChannelClosed as exc:
                raise self._crashed(helper, function.name, serial=serial) from exc
            except Malformed as exc:
                raise self._protocol_failure(helper, function.name, str(exc)) from exc
            finally:
                self._end(serial)
            tag = reply[:1]
            if tag == b"E":
                (message,) = decode_all(reply, 1)
                raise HelperError(f"{function.name}() failed in the helper: {message}")
            try:
                if tag != b"R":
                    raise Malformed(f"unexpected reply {tag!r}")
                values = decode_all(reply, 1, self._make_handle)
                if (
                    len(values) != 3
                    or not isinstance(values[0], int)
                    or not isinstance(values[2], list)
                ):
                    raise Malformed("a result has the wrong shape")
                errno, raw_result, backs = values
                if len(backs) != len(args):
                    raise Malformed("write-backs do not match the arguments")
                result = self._result(function.returns, raw_result)
                for ctype, value, data in zip(function.args, args, backs, strict=True):
                    self._write_back(ctype, value, data)
            except Malformed as exc:
                raise self._protocol_failure(helper, function.name, str(exc)) from exc
        if callback_error is not None:
            raise callback_error
        if function.errno:
            self._record_errno(function, result, errno)
        return result

    def _await_reply(
        self, helper: HelperProcess, function: Function, callbacks: dict[int, Any]
    ) -> tuple[BaseException | None, bytes]:
        """Serve callbacks until the call's reply arrives."""
        first_error: BaseException | None = None
        while True:
            message = helper.channel.recv()
            if message[:1] != b"K":
                return first_error, message
            values = decode_all(message, 1, self._make_handle)
            if (
                len(values) != 2
                or not isinstance(values[0], int)
                or not isinstance(values[1], list)
            ):
                raise Malformed("a callback request has the wrong shape")
            slot, cb_args = values
            fn = callbacks.get(slot)
            ctype = function.args[slot] if 0 <= slot < len(function.args) else None
            if fn is None or not isinstance(ctype, Callback):
                raise Malformed(f"a callback request for argument {slot}, which is no callback")
            ok = True
            result: Any = ctype.error_value
            try:
                converted = [
                    arg_type.to_python(v)
                    if isinstance(arg_type, Enum) and isinstance(v, int)
                    else v
                    for arg_type, v in zip(ctype.args, cb_args, strict=False)
                ]
                value = fn(*converted)
                if isinstance(ctype.returns, Void):
                    result = None
                elif isinstance(value, int | float):
                    result = value
                else:
                    raise TypeError(
                        f"callback {getattr(fn, '__name__', fn)!r} returned {type(value).__name__}, "
                        f"expected {ctype.returns.spell()}"
                    )
            except BaseException as exc:
                if first_error is None:
                    first_error = exc
                ok = False
                result = ctype.error_value
            helper.channel.send(encode_message(b"k", ok, result if ok else ctype.error_value))

    def _send_pending_frees(self, helper: HelperProcess) -> None:
        if self._pending_frees:
            addresses, self._pending_frees = self._pending_frees, []
            helper.channel.send(encode_message(b"F", addresses))  # no reply

    def _request(self, tag: bytes, what: str, *values: Any) -> Any:
        with self._lock:
            helper = self._ensure_running()
            serial = self._begin(helper, self.timeout)
            try:
                self._send_pending_frees(helper)
                helper.channel.send(encode_message(tag, *values))
                reply = helper.channel.recv()
                if reply[:1] == b"E":
                    (message,) = decode_all(reply, 1)
                    raise HelperError(f"{what} failed in the helper: {message}")
                if reply[:1] != b"r":
                    raise Malformed(f"unexpected reply {reply[:1]!r}")
                (result,) = decode_all(reply, 1)
            except ChannelClosed as exc:
                raise self._crashed(helper, what, serial=serial) from exc
            except Malformed as exc:
                raise self._protocol_failure(helper, what, str(exc)) from exc
            finally:
                self._end(serial)
            return result

    # -- memory ------------------------------------------------------------------

    def alloc(self, ctype: CType, count: int = 1) -> Memory:
        if count < 1:
            raise ValueError("count must be at least 1")
        address = self._request(b"A", "alloc", max(ctype.size, 1) * count)
        if not isinstance(address, int):
            raise HelperError("the helper answered alloc with a non-address")
        return RemoteMemory(self, ctype, count, address)

    def string_at(self, address: int, length: int | None = None) -> bytes:
        if not address:
            raise ValueError("string_at(NULL)")
        data = self._request(b"S", "string_at", address, length)
        if not isinstance(data, bytes):
            raise HelperError("the helper answered string_at with a non-bytes value")
        return data
