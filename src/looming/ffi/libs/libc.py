"""A few functions of the C library: strings, processes, time, sorting, errno.

``open`` is variadic in ``<fcntl.h>`` and so cannot be described; ``fopen``
and ``access`` show errno capture instead. ``strlen(NULL)`` and ``abort()``
are here on purpose: they crash, which the isolated backend must survive.
"""

from __future__ import annotations

from looming.ffi import (
    Bindings,
    Buffer,
    Callback,
    Deref,
    Opaque,
    Pointer,
    Struct,
    Union,
    c_bytes,
    c_int,
    c_long,
    c_str,
    c_uint,
    foreign,
    size_t,
    time_t,
    void,
)
from looming.ffi.types import CString

F_OK = 0
R_OK = 4

FILE = Opaque("FILE")

div_t = Struct("div_t", [("quot", c_int), ("rem", c_int)])

struct_tm = Struct(
    "struct tm",
    [
        ("tm_sec", c_int),
        ("tm_min", c_int),
        ("tm_hour", c_int),
        ("tm_mday", c_int),
        ("tm_mon", c_int),
        ("tm_year", c_int),
        ("tm_wday", c_int),
        ("tm_yday", c_int),
        ("tm_isdst", c_int),
        ("tm_gmtoff", c_long),
        ("tm_zone", CString(as_text=True, c="const char *")),
    ],
)

sigval = Union("union sigval", [("sival_int", c_int), ("sival_ptr", Buffer("void *"))])

compare_ints = Callback(c_int, [Deref(c_int), Deref(c_int)])

libc = Bindings(
    "libc",
    library="c",
    soname="libc.so.6",
    headers=["string.h", "stdlib.h", "unistd.h", "time.h", "stdio.h", "signal.h"],
    functions=[
        foreign("strlen", [("s", c_bytes)], size_t, release_gil=False),
        foreign("getpid", [], c_int, release_gil=False),
        foreign("time", [("tloc", Pointer(time_t))], time_t),
        foreign(
            "gmtime_r",
            [("timep", Pointer(time_t, const=True)), ("result", Pointer(struct_tm))],
            Pointer(struct_tm),
        ),
        foreign(
            "qsort",
            [
                ("base", Pointer(c_int)),
                ("nmemb", size_t),
                ("size", size_t),
                ("compar", compare_ints),
            ],
            void,
        ),
        foreign(
            "strtol",
            [
                ("nptr", c_bytes),
                ("endptr", Pointer(CString(as_text=False, c="char *"))),
                ("base", c_int),
            ],
            c_long,
            errno=True,
        ),
        foreign(
            "access", [("path", c_str), ("mode", c_int)], c_int, errno=True, error_when="minus_one"
        ),
        foreign("fopen", [("path", c_str), ("mode", c_str)], FILE, errno=True, error_when="null"),
        foreign(
            "fread",
            [("ptr", Buffer("void *")), ("size", size_t), ("n", size_t), ("stream", FILE)],
            size_t,
        ),
        foreign("fclose", [("stream", FILE)], c_int),
        foreign("div", [("numerator", c_int), ("denominator", c_int)], div_t),
        foreign("sigqueue", [("pid", c_int), ("sig", c_int), ("value", sigval)], c_int, errno=True),
        foreign("getenv", [("name", c_str)], c_str),
        foreign("usleep", [("usec", c_uint)], c_int),
        foreign("malloc", [("size", size_t)], Buffer("void *")),
        foreign("free", [("ptr", Buffer("void *"))], void),
        foreign("abort", [], void),
    ],
)
