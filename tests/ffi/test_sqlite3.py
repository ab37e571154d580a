"""SQLite through every backend, with Python's sqlite3 module reading the same file."""

from __future__ import annotations

import sqlite3 as stdlib_sqlite3
from pathlib import Path

import pytest

from looming.ffi import Handle, LinkedLibrary, Ref
from looming.ffi.libs.sqlite3 import (
    SQLITE_ABORT,
    SQLITE_DONE,
    SQLITE_OK,
    SQLITE_ROW,
    sqlite3_db,
    sqlite3_stmt,
)


def open_db(sq: LinkedLibrary, path: str) -> Handle:
    db = Ref()
    assert sq.sqlite3_open(path, db) == SQLITE_OK
    assert isinstance(db.value, Handle) and db.value.kind is sqlite3_db
    return db.value


def test_version_matches_the_stdlib_module(sq: LinkedLibrary) -> None:
    assert sq.sqlite3_libversion() == stdlib_sqlite3.sqlite_version


def test_exec_with_a_row_callback(sq: LinkedLibrary) -> None:
    db = open_db(sq, ":memory:")
    rows: list[tuple[list[str | None], list[str | None]]] = []

    def on_row(
        context: object, count: int, values: list[str | None], names: list[str | None]
    ) -> int:
        assert context is None
        assert count == len(values) == len(names)
        rows.append((values, names))
        return 0

    sql = (
        "create table t(n integer, word text);"
        "insert into t values (1, 'one'), (2, 'twö'), (3, NULL);"
        "select n, word from t order by n"
    )
    assert sq.sqlite3_exec(db, sql, on_row, None, None) == SQLITE_OK
    assert rows == [
        (["1", "one"], ["n", "word"]),
        (["2", "twö"], ["n", "word"]),
        (["3", None], ["n", "word"]),
    ]
    # A callback returning non-zero stops the statement.
    seen: list[list[str | None]] = []
    result = sq.sqlite3_exec(
        db, "select n from t", lambda c, n, v, k: seen.append(v) or 1, None, None
    )
    assert result == SQLITE_ABORT
    assert seen == [["1"]]
    assert sq.sqlite3_close(db) == SQLITE_OK


def test_errors_come_back_as_codes_and_messages(sq: LinkedLibrary) -> None:
    db = open_db(sq, ":memory:")
    assert sq.sqlite3_exec(db, "select * from nowhere", None, None, None) != SQLITE_OK
    assert sq.sqlite3_errmsg(db) == "no such table: nowhere"
    assert sq.sqlite3_close(db) == SQLITE_OK


def test_prepared_statements_write_a_file_the_stdlib_reads(
    sq: LinkedLibrary, tmp_path: Path
) -> None:
    path = tmp_path / "shared.db"
    db = open_db(sq, str(path))
    assert sq.sqlite3_exec(db, "create table m(k integer, v real)", None, None, None) == SQLITE_OK
    statement = Ref()
    assert (
        sq.sqlite3_prepare_v2(db, "insert into m values (?, ?)", -1, statement, None) == SQLITE_OK
    )
    assert statement.value.kind is sqlite3_stmt
    assert sq.sqlite3_finalize(statement.value) == SQLITE_OK
    for k in range(5):
        insert = Ref()
        assert (
            sq.sqlite3_prepare_v2(db, "insert into m values (?, ?)", -1, insert, None) == SQLITE_OK
        )
        assert sq.sqlite3_bind_int64(insert.value, 1, k * 1_000_000_000_000) == SQLITE_OK
        assert sq.sqlite3_bind_double(insert.value, 2, k / 4) == SQLITE_OK
        assert sq.sqlite3_step(insert.value) == SQLITE_DONE
        assert sq.sqlite3_changes(db) == 1
        assert sq.sqlite3_finalize(insert.value) == SQLITE_OK

    query = Ref()
    assert (
        sq.sqlite3_prepare_v2(db, "select k, v, 'k=' || k from m order by k", -1, query, None)
        == SQLITE_OK
    )
    assert sq.sqlite3_column_count(query.value) == 3
    got = []
    while sq.sqlite3_step(query.value) == SQLITE_ROW:
        got.append(
            (
                sq.sqlite3_column_int64(query.value, 0),
                sq.sqlite3_column_double(query.value, 1),
                sq.sqlite3_column_text(query.value, 2),
            )
        )
    assert sq.sqlite3_finalize(query.value) == SQLITE_OK
    assert sq.sqlite3_close(db) == SQLITE_OK
    expected = [(k * 1_000_000_000_000, k / 4, f"k={k * 1_000_000_000_000}") for k in range(5)]
    assert got == expected

    with stdlib_sqlite3.connect(path) as peer:
        assert peer.execute("select k, v, 'k=' || k from m order by k").fetchall() == expected


def test_a_handle_of_the_wrong_kind_is_a_type_error(sq: LinkedLibrary) -> None:
    db = open_db(sq, ":memory:")
    with pytest.raises(TypeError, match=r"sqlite3_step\(\) argument 'stmt'.*got a sqlite3 handle"):
        sq.sqlite3_step(db)
    assert sq.sqlite3_close(db) == SQLITE_OK
