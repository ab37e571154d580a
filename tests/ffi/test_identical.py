"""One battery of calls per library, run through the three backends: identical results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from looming.ffi import BACKENDS, Bindings, LinkedLibrary, Ref
from looming.ffi.libs.crypt import crypt
from looming.ffi.libs.libc import libc
from looming.ffi.libs.sqlite3 import sqlite3
from looming.ffi.libs.zlib import ZReturn, z_stream, zlib

Linker = Callable[[Bindings, str], LinkedLibrary]


def zlib_battery(z: LinkedLibrary) -> list[Any]:
    data = b"identical " * 300
    dest = bytearray(z.compressBound(len(data)))
    size = Ref(len(dest))
    results: list[Any] = [
        z.crc32(0, data, len(data)),
        z.adler32(1, bytearray(data), len(data)),
        z.compress2(dest, size, data, len(data), 9),
        size.value,
        bytes(dest[: size.value]),
        z.uncompress(bytearray(10), Ref(10), b"junk", 4),
        z.zlibVersion(),
    ]
    stream = z.alloc(z_stream)
    results.append(z.deflateInit_(stream, 1, z.zlibVersion(), z.sizeof(z_stream)))
    state = stream.get()
    # Addresses (zlib's state and its default allocator) differ between processes.
    results.append({k: v for k, v in state.items() if k not in ("state", "zalloc", "zfree")})
    results.append(z.deflateEnd(stream))
    return results


def libc_battery(c: LinkedLibrary) -> list[Any]:
    values = [5, -1, 3, 3, 12, 0]
    c.qsort(values, len(values), 4, lambda a, b: (a > b) - (a < b))
    tm: dict[str, Any] = {}
    c.gmtime_r(Ref(1_234_567_890), tm)
    tm.pop("tm_zone")  # an address in the library's process
    results: list[Any] = [
        c.strlen(b"identical"),
        values,
        tm,
        c.div(-7, 2),
        c.strtol(b"0x7fffffffffffffffff", None, 16),
        c.last_errno,
        c.getenv("LOOMING_SURELY_UNSET_VARIABLE"),
    ]
    try:
        c.access("/nonexistent/looming", 0)
    except OSError as exc:
        results.append((type(exc).__name__, exc.errno, exc.strerror))
    return results


def sqlite3_battery(sq: LinkedLibrary) -> list[Any]:
    db = Ref()
    results: list[Any] = [sq.sqlite3_open(":memory:", db)]
    rows: list[Any] = []

    def on_row(ctx: Any, n: int, values: list[Any], names: list[Any]) -> int:
        rows.append((ctx, n, values, names))
        return 0

    results.append(
        sq.sqlite3_exec(
            db.value,
            "create table t(a, b); insert into t values (1, 2.5), ('x', NULL); select * from t",
            on_row,
            None,
            None,
        )
    )
    results.append(rows)
    statement = Ref()
    results.append(sq.sqlite3_prepare_v2(db.value, "select a, b from t", -1, statement, None))
    while sq.sqlite3_step(statement.value) == 100:
        results.append(
            (
                sq.sqlite3_column_int64(statement.value, 0),
                sq.sqlite3_column_double(statement.value, 1),
                sq.sqlite3_column_text(statement.value, 0),
                sq.sqlite3_column_text(statement.value, 1),
            )
        )
    results.append(sq.sqlite3_finalize(statement.value))
    results.append(sq.sqlite3_close(db.value))
    return results


def crypt_battery(cr: LinkedLibrary) -> list[Any]:
    setting = cr.crypt_gensalt("$5$", 1000, b"fixed random bytes", 18)
    return [setting, cr.crypt("phrase", setting), cr.crypt("x", "$1$abc$")]


def test_every_backend_gives_the_same_values(linked: Linker) -> None:
    batteries: list[tuple[Bindings, Callable[[LinkedLibrary], list[Any]]]] = [
        (zlib, zlib_battery),
        (libc, libc_battery),
        (sqlite3, sqlite3_battery),
        (crypt, crypt_battery),
    ]
    for bindings, battery in batteries:
        outcomes = {backend: battery(linked(bindings, backend)) for backend in BACKENDS}
        assert outcomes["dynamic"] == outcomes["compiled"] == outcomes["isolated"], bindings.name
        # Enum results are enum members whichever backend made them.
    z_outcome = zlib_battery(linked(zlib, "isolated"))
    assert z_outcome[2] is ZReturn.Z_OK
