"""Modular foreign-function bindings: describe a C library once, link it three ways.

A :class:`Bindings` description lists ``foreign`` functions over the C types
of :mod:`looming.ffi.types`. :func:`link` turns it into a callable library:

* ``backend="dynamic"``: ctypes, in this process, no compiler needed;
* ``backend="compiled"``: cffi API mode, built once by the C compiler and
  cached by the description's hash; the compiler checks every declaration;
* ``backend="isolated"``: the library runs in a helper process that serves
  calls over a channel, so a crash in C is an exception here; it needs
  ``time=`` (a Time device: restart back-off and call deadlines run on it).

All three give the same Python values for the same calls.
"""

from __future__ import annotations

from typing import Any

from looming.devices.time import Time
from looming.extras import require
from looming.ffi.confine import Confinement, ConfinementWarning
from looming.ffi.description import Bindings, Function, foreign
from looming.ffi.errors import (
    CallCancelled,
    CallTimedOut,
    CompilerMissing,
    DescriptionError,
    DescriptionMismatch,
    FfiError,
    HelperCrashed,
    HelperError,
    HelperUnavailable,
    LibraryNotFound,
    StaleHandle,
    VariadicFunction,
)
from looming.ffi.library import LinkedLibrary
from looming.ffi.types import (
    Array,
    Buffer,
    Callback,
    CountedArray,
    CString,
    CType,
    Deref,
    Enum,
    Handle,
    Memory,
    Opaque,
    Pointer,
    Ref,
    Scalar,
    Struct,
    Union,
    c_bool,
    c_bytes,
    c_char,
    c_double,
    c_float,
    c_int,
    c_long,
    c_longlong,
    c_schar,
    c_short,
    c_str,
    c_uchar,
    c_uint,
    c_ulong,
    c_ulonglong,
    c_ushort,
    const_void_p,
    int8,
    int16,
    int32,
    int64,
    intptr_t,
    size_t,
    ssize_t,
    time_t,
    uint8,
    uint16,
    uint32,
    uint64,
    uintptr_t,
    void,
    void_p,
)

BACKENDS = ("dynamic", "compiled", "isolated")


def link(
    bindings: Bindings, backend: str = "dynamic", *, time: Time | None = None, **options: Any
) -> LinkedLibrary:
    """Link ``bindings`` with one backend; ``options`` go to that backend.

    The isolated backend needs ``time``, the Time device its deadlines and
    restart back-off run on; the in-process backends take no device."""
    if backend == "dynamic":
        from looming.ffi.dynamic import DynamicLibrary

        return DynamicLibrary(bindings, **options)
    if backend == "compiled":
        require("ffi", "the compiled ffi backend")
        from looming.ffi.compiled import CompiledLibrary

        return CompiledLibrary(bindings, **options)
    if backend == "isolated":
        from looming.ffi.isolated import IsolatedLibrary

        if time is None:
            raise ValueError(
                "link(..., 'isolated') needs time=, a Time device: the unikernel's own, "
                "or on the host looming.unix.host_devices().time"
            )
        return IsolatedLibrary(bindings, time=time, **options)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Array",
    "Bindings",
    "Buffer",
    "CString",
    "CType",
    "CallCancelled",
    "CallTimedOut",
    "Callback",
    "CompilerMissing",
    "Confinement",
    "ConfinementWarning",
    "CountedArray",
    "Deref",
    "DescriptionError",
    "DescriptionMismatch",
    "Enum",
    "FfiError",
    "Function",
    "Handle",
    "HelperCrashed",
    "HelperError",
    "HelperUnavailable",
    "LibraryNotFound",
    "LinkedLibrary",
    "Memory",
    "Opaque",
    "Pointer",
    "Ref",
    "Scalar",
    "StaleHandle",
    "Struct",
    "Union",
    "VariadicFunction",
    "c_bool",
    "c_bytes",
    "c_char",
    "c_double",
    "c_float",
    "c_int",
    "c_long",
    "c_longlong",
    "c_schar",
    "c_short",
    "c_str",
    "c_uchar",
    "c_uint",
    "c_ulong",
    "c_ulonglong",
    "c_ushort",
    "const_void_p",
    "foreign",
    "int8",
    "int16",
    "int32",
    "int64",
    "intptr_t",
    "link",
    "size_t",
    "ssize_t",
    "time_t",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "uintptr_t",
    "void",
    "void_p",
]
