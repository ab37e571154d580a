"""A C library of our own, built for the tests: unions and structs by value,
floating-point callbacks, arrays in structs, and a NULL dereference."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.ffi import (
    Array,
    Bindings,
    Callback,
    HelperCrashed,
    LinkedLibrary,
    Memory,
    Pointer,
    Struct,
    Union,
    c_char,
    c_double,
    c_float,
    c_int,
    foreign,
    int32,
    int64,
    link,
    uint8,
    uint16,
    uint32,
    void,
)
from looming.ffi.probe import find_compiler
from looming.unix.time import UnixTime

SOURCE = Path(__file__).parent / "clib"

number = Union("union looming_number", [("i", int64), ("d", c_double)])
point = Struct("struct looming_point", [("x", c_double), ("y", c_double)])
mixed = Struct(
    "struct looming_mixed",
    [
        ("tag", uint8),
        ("count", int32),
        ("weight", c_double),
        ("name", Array(c_char, 6)),
        ("flags", Array(uint16, 3)),
    ],
)


@pytest.fixture(scope="module")
def testlib_bindings(tmp_path_factory: pytest.TempPathFactory) -> Bindings:
    build = tmp_path_factory.mktemp("looming-testlib")
    library = build / "libloomingtest.so"
    subprocess.run(
        [
            *find_compiler(),
            "-shared",
            "-fPIC",
            "-O1",
            "-o",
            str(library),
            str(SOURCE / "looming_testlib.c"),
        ],
        check=True,
    )
    return Bindings(
        "loomingtest",
        library="loomingtest",
        soname=str(library),
        headers=["looming_testlib.h"],
        include_dirs=[str(SOURCE)],
        library_dirs=[str(build)],
        functions=[
            foreign("looming_union_int", [("number", number)], int64),
            foreign("looming_union_double", [("number", number)], c_double),
            foreign("looming_union_make", [("i", int64)], number),
            foreign("looming_point_scale", [("point", point), ("factor", c_double)], point),
            foreign(
                "looming_apply_twice",
                [("f", Callback(c_double, [c_double])), ("x", c_double)],
                c_double,
            ),
            foreign("looming_mixed_sum", [("mixed", Pointer(mixed, const=True))], int32),
            foreign("looming_mixed_fill", [("mixed", Pointer(mixed)), ("seed", int32)], void),
            foreign(
                "looming_sum_array",
                [("values", Pointer(int64, const=True)), ("count", uint32)],
                int64,
            ),
            foreign("looming_read_null", [("pointer", Pointer(c_int, const=True))], c_int),
            foreign("looming_negate_bool", [("flag", uint8)], uint8),
            foreign("looming_half", [("value", c_float)], c_float),
        ],
    )


@pytest.fixture
def t(testlib_bindings: Bindings, backend: str) -> Iterator[LinkedLibrary]:
    library = link(testlib_bindings, backend, time=UnixTime())
    yield library
    library.close()


def test_unions_by_value(t: LinkedLibrary) -> None:
    assert t.looming_union_int({"i": -123456789012}) == -123456789012
    assert t.looming_union_double({"d": 2.5}) == 2.5
    made = t.looming_union_make(0x3FF0000000000000)
    assert made["i"] == 0x3FF0000000000000
    assert made["d"] == 1.0


def test_structs_of_doubles_by_value(t: LinkedLibrary) -> None:
    assert t.looming_point_scale({"x": 1.5, "y": -2.0}, 4.0) == {"x": 6.0, "y": -8.0}


def test_floating_point_callback(t: LinkedLibrary) -> None:
    seen: list[float] = []

    def square(value: float) -> float:
        seen.append(value)
        return value * value

    assert t.looming_apply_twice(square, 3.0) == 81.0
    assert seen == [3.0, 9.0]


def test_struct_with_arrays_in_and_out(t: LinkedLibrary) -> None:
    value = {"tag": 1, "count": 10, "weight": 7.9, "name": b"ab", "flags": [100, 200, 300]}
    assert t.looming_mixed_sum(value) == 1 + 10 + 7 + ord("a") + ord("b") + 600
    filled: dict[str, object] = {}
    t.looming_mixed_fill(filled, 8)
    assert filled == {
        "tag": 8,
        "count": 16,
        "weight": 2.0,
        "name": b"fill\0\0",
        "flags": [8, 9, 10],
    }
    block: Memory = t.alloc(mixed)
    t.looming_mixed_fill(block, 3)
    assert block.get()["flags"] == [3, 4, 5]
    block.set(count=1000)
    assert t.looming_mixed_sum(block) == 3 + 1000 + 0 + sum(b"fill") + 12


def test_arrays_passed_as_lists(t: LinkedLibrary) -> None:
    values = [1, -2, 3_000_000_000_000, 4]
    assert t.looming_sum_array(values, len(values)) == sum(values)
    assert values == [1, -2, 3_000_000_000_000, 4]


def test_small_scalars(t: LinkedLibrary) -> None:
    assert t.looming_negate_bool(0) == 1
    assert t.looming_negate_bool(7) == 0
    assert t.looming_half(3.0) == 1.5


def test_null_dereference(t: LinkedLibrary, backend: str) -> None:
    assert t.looming_read_null([42]) == 42
    if backend != "isolated":
        return  # in-process, this would end the test run: that is the point of isolation
    with pytest.raises(HelperCrashed) as caught:
        t.looming_read_null(None)
    assert caught.value.signal == signal.SIGSEGV
    assert t.looming_read_null([7]) == 7
