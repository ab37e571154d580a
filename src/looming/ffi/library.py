"""What every backend's linked library has in common.

A linked library exposes each described function as an attribute
(``lib.crc32(0, data, len(data))``), an asyncio form (``await
lib.acall.crc32(...)``, run in a worker thread so the loop keeps turning),
the errno captured by the calling thread's last ``errno=True`` call
(``lib.last_errno``), and memory that lives in the library's address space
(``lib.alloc``). Cancelling an ``acall`` task stops the call where the
backend can: the isolated backend kills the helper serving it (the next call
starts a new one) and waits for its worker thread; the in-process backends
let the C call finish in its thread and drop the result.
"""

from __future__ import annotations

import asyncio
import functools
import keyword
import os
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from looming.ffi.description import Bindings, Function
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
    check_scalar,
    python_type_name,
)


class _WorkerCall:
    """A call queued for a worker thread, which may be cancelled before it starts."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._call = call
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._cancelled = False

    def __call__(self) -> Any:
        with self._lock:
            if self._cancelled:
                return None
            self._thread = threading.get_ident()
        return self._call()

    def cancel(self) -> int | None:
        """Keep it from starting; the worker thread running it, if it has started."""
        with self._lock:
            self._cancelled = True
            return self._thread


class AsyncCalls:
    """``lib.acall.name(...)``: the call runs in a worker thread."""

    def __init__(self, library: LinkedLibrary) -> None:
        self._library = library
        self._cache: dict[str, Callable[..., Awaitable[Any]]] = {}

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        function = self._library.functions.get(name)
        if function is None:
            raise AttributeError(f"{self._library.bindings.name} has no function {name!r}")
        library = self._library

        async def call(*args: Any) -> Any:
            loop = asyncio.get_running_loop()
            run = _WorkerCall(functools.partial(function, *args))
            future = loop.run_in_executor(library.executor(), run)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                thread = run.cancel()
                if thread is not None and library._abandon_call(thread):
                    # The backend ended the call (the isolated helper was
                    # killed): wait for the worker so nothing runs on.
                    await asyncio.wait([future])
                    if not future.cancelled():
                        future.exception()  # retrieved: the call's end is expected
                raise

        call.__name__ = name
        self._cache[name] = call
        return call


class LinkedLibrary:
    """A description linked by one backend. Subclasses bind the functions."""

    backend = "abstract"

    def __init__(self, bindings: Bindings) -> None:
        self.bindings = bindings
        self._thread_state = threading.local()
        self.acall = AsyncCalls(self)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        # Handles and memory carry this token so they cannot cross libraries.
        self.origin: object = object()
        self.functions: dict[str, Callable[..., Any]] = {}

    def _bind_function(self, name: str, wrapper: Callable[..., Any]) -> None:
        """Make ``lib.name`` call the function, unless the name is taken.

        A C function named like a library method (``close``, ``alloc``) stays
        reachable as ``lib[name]``.
        """
        self.functions[name] = wrapper
        if name not in vars(self) and not hasattr(type(self), name):
            setattr(self, name, wrapper)

    def __getitem__(self, name: str) -> Callable[..., Any]:
        try:
            return self.functions[name]
        except KeyError:
            raise KeyError(f"{self.bindings.name} has no function {name!r}") from None

    # -- errno -------------------------------------------------------------

    @property
    def last_errno(self) -> int:
        """errno after this thread's last call of an ``errno=True`` function."""
        value: int = getattr(self._thread_state, "errno", 0)
        return value

    def _record_errno(self, function: Function, result: Any, errno: int) -> None:
        self._thread_state.errno = errno
        if function.failed(result):
            raise OSError(errno, f"{function.name}: {os.strerror(errno)}")

    # -- threads for the asyncio form ---------------------------------------

    def _abandon_call(self, thread: int) -> bool:
        """End the call ``thread`` makes for a cancelled task; True if it returns promptly.

        A call in this process cannot be interrupted: by default it runs on
        and its result is dropped. The isolated backend kills its helper.
        """
        return False

    def executor(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix=f"looming-ffi-{self.bindings.name}"
                )
            return self._executor

    # -- memory ------------------------------------------------------------

    def alloc(self, ctype: CType, count: int = 1) -> Memory:
        """Zeroed memory for ``count`` values of ``ctype``, kept until freed or dropped."""
        raise NotImplementedError

    def alloc_bytes(self, data: bytes) -> Memory:
        """Memory holding a copy of ``data`` (for pointers stored in structs)."""
        from looming.ffi.types import c_uchar

        memory = self.alloc(c_uchar, max(len(data), 1))
        if data:
            memory.write(bytes(data))
        return memory

    def string_at(self, address: int, length: int | None = None) -> bytes:
        """Bytes at ``address``: ``length`` of them, or up to the first NUL."""
        raise NotImplementedError

    def sizeof(self, ctype: CType) -> int:
        return ctype.size

    def close(self) -> None:
        """Release what the backend holds (threads, helper processes)."""
        with self._executor_lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def __enter__(self) -> LinkedLibrary:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not bound at link time.
        raise AttributeError(
            f"{self.bindings.name} ({self.backend} backend) has no function {name!r}; "
            f"described: {sorted(self.bindings.by_name)}"
        )

    def __repr__(self) -> str:
        return f"<{self.backend} {self.bindings!r}>"


# -- argument checking shared by the backends -----------------------------------


def parameter_names(function: Function) -> list[str]:
    """Names for a generated wrapper's parameters: the description's where safe.

    Python then names a missing argument itself; names that could clash with
    the wrapper's own locals (``r``, ``c0``, ``exc``, anything starting with
    an underscore) fall back to positional names.
    """
    names: list[str] = []
    for i, name in enumerate(function.arg_names):
        clash = (
            keyword.iskeyword(name)
            or name.startswith("_")
            or re.fullmatch(r"r|exc|c\d+|a\d+", name)
        )
        names.append(f"a{i}" if clash else name)
    return names


def describe_argument(function: Function, index: int) -> str:
    return f"{function.name}() argument {function.arg_names[index]!r} (#{index + 1})"


def check_argument(function: Function, index: int, value: Any, origin: object) -> None:
    """Raise TypeError naming the argument when ``value`` cannot be a ``ctype``."""
    ctype = function.args[index]
    what = describe_argument(function, index)
    if isinstance(ctype, Buffer | Opaque | Pointer):
        wrong = _wrong_reference(ctype, value, origin, what)
    else:
        wrong = _wrong_value(ctype, value, what)
    if wrong:
        raise TypeError(f"{what}: expected {python_type_name(ctype)}, got {type(value).__name__}")


def _wrong_value(ctype: CType, value: Any, what: str) -> bool:
    """Whether ``value`` is of the wrong kind for a type passed by value
    (other faults, a NUL inside a string or a number out of range, raise)."""
    if isinstance(ctype, Scalar):
        if (
            isinstance(value, str | bytes | bytearray | float | type(None))
            and ctype.kind != "float"
        ):
            return True
        check_scalar(ctype, value, what)
        return False
    if isinstance(ctype, Enum):
        return not isinstance(value, int)
    if isinstance(ctype, CString):
        if value is not None and not isinstance(value, str if ctype.as_text else bytes):
            return True
        if value is not None and ("\0" in value if ctype.as_text else b"\0" in value):
            raise ValueError(f"{what}: embedded NUL character")
        return False
    if isinstance(ctype, Callback):
        return value is not None and not callable(value)
    if isinstance(ctype, Record):
        return not isinstance(value, dict | bytes)
    return isinstance(ctype, Void)


def _wrong_reference(
    ctype: Buffer | Opaque | Pointer, value: Any, origin: object, what: str
) -> bool:
    """Whether ``value`` is of the wrong kind for a type passed by address;
    raises for memory or a handle of another library (``origin``)."""
    if value is None:
        return False
    if isinstance(ctype, Opaque):
        if not isinstance(value, Handle) or value.kind is not ctype:
            got = f"a {value.kind.c} handle" if isinstance(value, Handle) else type(value).__name__
            raise TypeError(f"{what}: expected {python_type_name(ctype)}, got {got}")
        if value.origin is not origin:
            raise TypeError(f"{what}: this handle belongs to another library or helper")
        return False
    if isinstance(value, Memory):
        if value.origin is not origin:
            raise TypeError(f"{what}: this memory belongs to another library or helper")
        return False
    if isinstance(ctype, Buffer):
        return not isinstance(value, bytes | bytearray | memoryview | int) or isinstance(
            value, bool
        )
    if isinstance(value, Ref | list):
        return False
    return not (isinstance(value, dict) and isinstance(ctype.target, Record))


def argument_error(
    function: Function, args: Sequence[Any], origin: object, cause: BaseException
) -> Exception:
    """The TypeError to raise for a call that C-side conversion refused."""
    if len(args) != len(function.args):
        return TypeError(
            f"{function.name}() takes {len(function.args)} arguments "
            f"({', '.join(function.arg_names)}), got {len(args)}"
        )
    for index, value in enumerate(args):
        try:
            check_argument(function, index, value, origin)
        except (TypeError, OverflowError, ValueError) as exc:
            return exc
    if isinstance(cause, TypeError | OverflowError | ValueError):
        return cause
    return TypeError(f"{function.name}(): {cause}")


def check_all(function: Function, args: Sequence[Any], origin: object) -> None:
    error = argument_error(function, args, origin, TypeError("no error"))
    if len(args) != len(function.args) or str(error) != "no error":
        raise error
