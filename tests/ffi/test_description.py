"""The description language: layouts, refusals, and mismatches caught before the first call."""

from __future__ import annotations

import ctypes
import pickle
from pathlib import Path

import pytest

from looming.ffi import (
    Array,
    Bindings,
    Buffer,
    Callback,
    CompilerMissing,
    DescriptionError,
    DescriptionMismatch,
    Enum,
    LibraryNotFound,
    Opaque,
    Pointer,
    Ref,
    Struct,
    Union,
    VariadicFunction,
    c_bytes,
    c_char,
    c_double,
    c_int,
    c_long,
    c_str,
    c_uint,
    foreign,
    int8,
    int16,
    int64,
    link,
    size_t,
    uint8,
    void,
)
from looming.ffi.libs.libc import div_t, libc, sigval, struct_tm
from looming.ffi.libs.zlib import z_stream, zlib
from looming.ffi.types import pack_into, packed, unpack_value
from looming.unix.time import UnixTime


def test_struct_layouts_follow_the_c_rules() -> None:
    padded = Struct("struct padded", [("a", int8), ("b", int64), ("c", int16)])
    assert [f.offset for f in padded.fields] == [0, 8, 16]
    assert (padded.size, padded.align) == (24, 8)
    nested = Struct(
        "struct nested", [("tag", uint8), ("inner", padded), ("tail", Array(c_char, 3))]
    )
    assert [f.offset for f in nested.fields] == [0, 8, 32]
    assert nested.size == 40
    assert (z_stream.size, struct_tm.size, div_t.size, sigval.size) == (112, 56, 8, 8)


def test_layouts_agree_with_ctypes() -> None:
    class Tm(ctypes.Structure):
        _fields_ = [(f"f{i}", ctypes.c_int) for i in range(9)] + [
            ("gmtoff", ctypes.c_long),
            ("zone", ctypes.c_char_p),
        ]

    assert ctypes.sizeof(Tm) == struct_tm.size
    assert Tm.gmtoff.offset == struct_tm.offsetof("tm_gmtoff")


def test_stated_size_is_checked() -> None:
    with pytest.raises(DescriptionError, match="computed size 16 differs from the stated size 12"):
        Struct("struct three", [("a", c_int), ("b", c_long)], size=12)


def test_pack_and_unpack_round_trip() -> None:
    record = Struct(
        "struct sample",
        [("n", c_int), ("x", c_double), ("name", Array(c_char, 8)), ("ids", Array(c_uint, 3))],
    )
    value = {"n": -7, "x": 2.5, "name": b"looming\0", "ids": [1, 2, 3]}
    raw = packed(record, value, "sample")
    assert len(raw) == record.size
    assert unpack_value(record, raw, 0) == value
    union = Union("union number", [("i", int64), ("d", c_double)])
    raw = packed(union, {"d": 1.0}, "number")
    assert unpack_value(union, raw, 0)["i"] == 0x3FF0000000000000
    buf = bytearray(4)
    with pytest.raises(OverflowError, match="does not fit"):
        pack_into(c_int, buf, 0, 2**40, "x")
    with pytest.raises(TypeError, match="has no field"):
        packed(record, {"nope": 1}, "sample")


def test_variadic_functions_are_refused_clearly() -> None:
    with pytest.raises(VariadicFunction, match=r"printf\(\) is variadic.*vprintf"):
        foreign("printf", [c_str, ...], c_int)
    with pytest.raises(VariadicFunction, match="fixed-arity"):
        foreign("open", [c_str, c_int], c_int, variadic=True)


def test_malformed_descriptions_are_refused() -> None:
    with pytest.raises(DescriptionError, match="cannot be void"):
        foreign("f", [void], c_int)
    with pytest.raises(DescriptionError, match="decay to pointers"):
        foreign("f", [Array(c_int, 4)], c_int)
    with pytest.raises(DescriptionError, match="needs errno=True"):
        foreign("f", [], c_int, error_when="negative")
    with pytest.raises(DescriptionError, match="not a C identifier"):
        foreign("no such", [], c_int)
    with pytest.raises(DescriptionError, match="described twice"):
        Bindings("twice", library="c", functions=[foreign("f", [], c_int), foreign("f", [], c_int)])
    undefined = Struct("struct later")
    with pytest.raises(DescriptionError, match="never defined"):
        Bindings("later", library="c", functions=[foreign("f", [Pointer(undefined)], c_int)])
    with pytest.raises(DescriptionError, match="Buffer"):
        Pointer(void)


def test_self_referencing_struct() -> None:
    node = Struct("struct node")
    node.define([("value", c_int), ("next", Pointer(node))])
    assert node.size == 16
    bindings = Bindings("list", library="c", functions=[foreign("f", [Pointer(node)], c_int)])
    assert "struct node {" in bindings.cdef()


def test_descriptions_pickle_with_their_enums() -> None:
    copy = pickle.loads(pickle.dumps(zlib))
    assert copy.digest == zlib.digest
    returns = copy.by_name["deflate"].returns
    assert isinstance(returns, Enum)
    assert returns.python(1).name == "Z_STREAM_END"
    assert returns.to_python(1) == returns.python.Z_STREAM_END  # type: ignore[attr-defined]  # a generated IntEnum


def test_the_digest_changes_with_the_description() -> None:
    one = Bindings("d", library="c", functions=[foreign("strlen", [c_bytes], size_t)])
    two = Bindings("d", library="c", functions=[foreign("strlen", [c_str], size_t)])
    assert one.digest != two.digest
    assert (
        one.digest
        == Bindings("d", library="c", functions=[foreign("strlen", [c_bytes], size_t)]).digest
    )


def test_cdef_text() -> None:
    text = libc.cdef()
    assert "typedef int... time_t;" in text
    assert "typedef ... FILE;" in text
    assert "typedef struct {\n    int quot;\n    int rem;\n} div_t;" in text
    assert (
        "void qsort(int *base, size_t nmemb, size_t size, int (*compar)(const void *, const void *));"
        in text
    )


# -- mismatches caught when linking --------------------------------------------

missing_symbol = Bindings(
    "missing",
    library="z",
    soname="libz.so.1",
    headers=["zlib.h"],
    functions=[
        foreign("crc32", [c_uint, Buffer(), c_uint], c_uint),
        foreign("crc33", [c_int], c_int),
    ],
)


def test_missing_symbol_is_reported_by_every_backend(backend: str) -> None:
    with pytest.raises(DescriptionMismatch, match="crc33"):
        link(missing_symbol, backend, time=UnixTime())


def wrong_tm_bindings() -> Bindings:
    wrong_tm = Struct(
        "struct tm",
        [(name, c_int) for name in ("tm_sec", "tm_min", "tm_hour", "tm_mday", "tm_mon", "tm_year")]
        + [
            ("tm_wday", c_int),
            ("tm_yday", c_int),
            ("tm_isdst", c_int),
            ("tm_gmtoff", c_int),
            ("tm_zone", c_str),
        ],
    )
    return Bindings(
        "wrongtm",
        library="c",
        soname="libc.so.6",
        headers=["time.h"],
        functions=[foreign("gmtime_r", [Pointer(int64), Pointer(wrong_tm)], Pointer(wrong_tm))],
    )


def test_struct_layout_mismatch_is_reported_before_the_first_call(backend: str) -> None:
    with pytest.raises(DescriptionMismatch, match=r"tm_(gmtoff|zone)"):
        link(wrong_tm_bindings(), backend, time=UnixTime())


def test_wrong_argument_type_is_caught_by_the_compiler() -> None:
    wrong = Bindings(
        "wrongstrlen",
        library="c",
        soname="libc.so.6",
        headers=["string.h"],
        functions=[foreign("strlen", [Pointer(Struct("struct x", [("a", c_int)]))], size_t)],
    )
    with pytest.raises(DescriptionMismatch, match="does not compile"):
        link(wrong, "compiled")


def test_a_missing_library_is_named() -> None:
    nowhere = Bindings(
        "nowhere", library="looming_no_such_library", functions=[foreign("f", [], c_int)]
    )
    with pytest.raises(LibraryNotFound, match="liblooming_no_such_library"):
        link(nowhere, "dynamic")


def test_a_missing_compiler_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOOMING_FFI_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "/nonexistent/looming-cc")
    with pytest.raises(CompilerMissing, match="apt-get install gcc"):
        link(libc, "compiled")
    # The layout probe is skipped without a compiler unless asked for.
    dynamic = link(libc, "dynamic")
    assert dynamic.div(7, 2) == {"quot": 3, "rem": 1}
    with pytest.raises(CompilerMissing):
        link(libc, "dynamic", check_layout=True)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="dynamic, compiled, isolated"):
        link(libc, "telepathy")


# -- wrong Python arguments -------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda z: z.crc32(0, "text", 4), r"crc32\(\) argument 'buf' \(#2\): expected bytes"),
        (lambda z: z.crc32("0", b"", 0), r"crc32\(\) argument 'crc' \(#1\): expected int, got str"),
        (lambda z: z.crc32(0, b"", 1.5), r"argument 'len' \(#3\): expected int, got float"),
        (
            lambda z: z.crc32(0, b""),
            r"crc32\(\) (takes 3 arguments \(crc, buf, len\), got 2|missing .* argument: 'len')",
        ),
        (
            lambda z: z.compress2(bytearray(8), 5, b"x", 1, 6),
            r"argument 'dest_len' \(#2\): expected Ref",
        ),
        (lambda z: z.zlibVersion(1), r"takes 0 (positional )?arguments"),
    ],
)
def test_wrong_python_types_raise_type_error_naming_the_argument(
    linked: object, backend: str, call: object, pattern: str
) -> None:
    library = linked(zlib, backend)  # type: ignore[operator]  # the session fixture
    with pytest.raises(TypeError, match=pattern):
        call(library)  # type: ignore[operator]  # a lambda from the table


def test_out_of_range_integers(linked: object, backend: str) -> None:
    library = linked(zlib, backend)  # type: ignore[operator]  # the session fixture
    if backend == "dynamic":
        # ctypes converts like C: the value is truncated to the parameter's width.
        assert library.crc32(0, b"", 2**32 + 0) == 0
    else:
        with pytest.raises(OverflowError):
            library.crc32(0, b"", 2**80)


def test_callbacks_and_handles_are_checked(linked: object, backend: str) -> None:
    library = linked(libc, backend)  # type: ignore[operator]  # the session fixture
    with pytest.raises(TypeError, match=r"qsort\(\) argument 'compar' \(#4\): expected a callable"):
        library.qsort([1], 1, 4, 42)
    with pytest.raises(
        TypeError, match=r"fclose\(\) argument 'stream' \(#1\): expected a FILE handle"
    ):
        library.fclose(b"not a handle")
    with pytest.raises(TypeError, match=r"fopen\(\) argument 'path' \(#1\): expected str"):
        library.fopen(b"/etc/hostname", "r")
    with pytest.raises(TypeError, match=r"time\(\) argument 'tloc' \(#1\): expected Ref"):
        library.time(5)
    assert library.time(Ref()) > 0


def test_callback_types_spell_like_c() -> None:
    compare = Callback(c_int, [Pointer(c_int), Pointer(c_int)])
    assert compare.spell("cmp") == "int (*cmp)(int *, int *)"
    assert Opaque("sqlite3").spell("db") == "sqlite3 *db"
    assert Pointer(Array(c_int, 4)).spell("p") == "int (*p)[4]"


def test_the_compiled_extension_is_built_once_and_cached(ffi_cache: Path) -> None:
    from looming.ffi.compiled import CompiledLibrary

    first = link(libc, "compiled")
    assert isinstance(first, CompiledLibrary)
    assert first.path.parent == ffi_cache / "compiled"
    assert first.path.name.startswith("_looming_ffi_libc_")
    built_at = first.path.stat().st_mtime_ns
    again = link(
        pickle.loads(pickle.dumps(libc)), "compiled", time=UnixTime()
    )  # an equal description
    assert isinstance(again, CompiledLibrary)
    assert again.path == first.path
    assert again.path.stat().st_mtime_ns == built_at
    assert again.div(9, 4) == {"quot": 2, "rem": 1}


def test_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from looming.ffi.probe import cache_dir

    monkeypatch.setenv("LOOMING_FFI_CACHE", "/somewhere/explicit")
    assert cache_dir() == Path("/somewhere/explicit")
    monkeypatch.delenv("LOOMING_FFI_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert cache_dir() == Path("/xdg/looming/ffi")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert cache_dir() == Path("/home/someone/.cache/looming/ffi")
