"""SQLite: open a database, run SQL with a row callback, prepared statements."""

from __future__ import annotations

from looming.ffi import (
    Bindings,
    Buffer,
    Callback,
    CountedArray,
    Opaque,
    Pointer,
    c_double,
    c_int,
    c_longlong,
    c_str,
    foreign,
)
from looming.ffi.types import CString

SQLITE_OK = 0
SQLITE_ABORT = 4
SQLITE_ROW = 100
SQLITE_DONE = 101

sqlite3_db = Opaque("sqlite3")
sqlite3_stmt = Opaque("sqlite3_stmt")

# int (*)(void *context, int columns, char **values, char **names)
exec_row = Callback(
    c_int,
    [
        Buffer("void *"),
        c_int,
        CountedArray(CString(as_text=True, c="char *"), 1),
        CountedArray(CString(as_text=True, c="char *"), 1),
    ],
)

sqlite3 = Bindings(
    "sqlite3",
    library="sqlite3",
    soname="libsqlite3.so.0",
    headers=["sqlite3.h"],
    dev_package="libsqlite3-dev",
    functions=[
        foreign("sqlite3_libversion", [], c_str),
        foreign("sqlite3_open", [("filename", c_str), ("db", Pointer(sqlite3_db))], c_int),
        foreign("sqlite3_close", [("db", sqlite3_db)], c_int),
        foreign("sqlite3_errmsg", [("db", sqlite3_db)], c_str),
        foreign(
            "sqlite3_exec",
            [
                ("db", sqlite3_db),
                ("sql", c_str),
                ("callback", exec_row),
                ("context", Buffer("void *")),
                ("errmsg", Pointer(CString(as_text=True, c="char *"))),
            ],
            c_int,
        ),
        foreign(
            "sqlite3_prepare_v2",
            [
                ("db", sqlite3_db),
                ("sql", c_str),
                ("n_bytes", c_int),
                ("stmt", Pointer(sqlite3_stmt)),
                ("tail", Pointer(CString(as_text=False, c="const char *"))),
            ],
            c_int,
        ),
        foreign(
            "sqlite3_bind_int64",
            [("stmt", sqlite3_stmt), ("index", c_int), ("value", c_longlong)],
            c_int,
        ),
        foreign(
            "sqlite3_bind_double",
            [("stmt", sqlite3_stmt), ("index", c_int), ("value", c_double)],
            c_int,
        ),
        foreign("sqlite3_step", [("stmt", sqlite3_stmt)], c_int),
        foreign("sqlite3_column_count", [("stmt", sqlite3_stmt)], c_int),
        foreign("sqlite3_column_int64", [("stmt", sqlite3_stmt), ("column", c_int)], c_longlong),
        foreign("sqlite3_column_double", [("stmt", sqlite3_stmt), ("column", c_int)], c_double),
        foreign(
            "sqlite3_column_text",
            [("stmt", sqlite3_stmt), ("column", c_int)],
            CString(as_text=True, c="const unsigned char *"),
        ),
        foreign("sqlite3_finalize", [("stmt", sqlite3_stmt)], c_int),
        foreign("sqlite3_changes", [("db", sqlite3_db)], c_int),
    ],
)
