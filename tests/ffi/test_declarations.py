"""Descriptions compared with the header's declarations, on every backend."""

from __future__ import annotations

import pytest

from looming.ffi import (
    Bindings,
    Buffer,
    DescriptionMismatch,
    Opaque,
    Pointer,
    Struct,
    c_char,
    c_double,
    c_float,
    c_int,
    c_long,
    c_str,
    c_uint,
    c_ulong,
    foreign,
    int32,
    int64,
    link,
    size_t,
)
from looming.ffi.declarations import parse_aux_info, split_params
from looming.unix.time import UnixTime


def math_bindings(*functions: object) -> Bindings:
    return Bindings("m", library="m", soname="libm.so.6", headers=["math.h"], functions=functions)  # type: ignore[arg-type]


def test_frexp_with_a_double_exponent_is_refused_on_every_backend(backend: str) -> None:
    wrong = math_bindings(foreign("frexp", [("x", c_double), ("exp", Pointer(c_double))], c_double))
    with pytest.raises(DescriptionMismatch) as caught:
        link(wrong, backend, time=UnixTime())
    message = str(caught.value)
    assert (
        "frexp(): argument 2 'exp' is described as double * but <math.h> declares int *" in message
    )


def test_a_correct_description_links_and_calls(backend: str) -> None:
    right = math_bindings(foreign("frexp", [("x", c_double), ("exp", Pointer(c_int))], c_double))
    library = link(right, backend, time=UnixTime())
    try:
        from looming.ffi import Ref

        exponent = Ref(0)
        assert library.frexp(8.0, exponent) == 0.5
        assert exponent.value == 4
    finally:
        library.close()


@pytest.mark.parametrize(
    ("function", "problem"),
    [
        (
            foreign("ldexp", [("x", c_double), ("e", c_int)], c_float),
            "ldexp(): the result is described as float but <math.h> declares double",
        ),
        (
            foreign("ldexp", [("x", c_double), ("e", c_uint)], c_double),
            "argument 2 'e' is described as unsigned int but <math.h> declares int",
        ),
        (
            foreign("ldexp", [("x", c_long), ("e", c_int)], c_double),
            "argument 1 'x' is described as long but <math.h> declares double",
        ),
        (
            foreign("ldexp", [("x", c_double)], c_double),
            "ldexp(): 1 arguments described, 2 declared by <math.h> (double, int)",
        ),
        (foreign("no_such_function", [], c_int), "no_such_function(): not declared by <math.h>"),
    ],
)
def test_each_kind_of_mismatch_names_function_argument_and_types(
    function: object, problem: str
) -> None:
    with pytest.raises(DescriptionMismatch) as caught:
        link(math_bindings(function), "dynamic")
    assert problem in str(caught.value)


def test_pointers_compare_what_they_point_to() -> None:
    FILE = Opaque("FILE")
    bindings = Bindings(
        "stdio",
        library="c",
        soname="libc.so.6",
        headers=["stdio.h", "string.h"],
        functions=[
            foreign("fopen", [("path", c_str), ("mode", c_str)], FILE),
            foreign("fclose", [("stream", FILE)], c_int),
            foreign("strlen", [("s", Buffer("const char *"))], size_t),  # any buffer passes
            foreign(
                "memchr", [("s", Buffer("const void *")), ("c", c_int), ("n", size_t)], Buffer()
            ),
        ],
    )
    link(bindings, "dynamic").close()
    wrong = Bindings(
        "stdio",
        library="c",
        soname="libc.so.6",
        headers=["stdio.h"],
        functions=[foreign("fclose", [("stream", Opaque("struct not_a_file"))], c_int)],
    )
    with pytest.raises(
        DescriptionMismatch,
        match=r"described as struct not_a_file \* but <stdio.h> declares FILE \*",
    ):
        link(wrong, "dynamic")


def test_a_field_of_the_same_layout_but_the_wrong_type_is_refused(backend: str) -> None:
    # struct timespec is {time_t tv_sec; long tv_nsec}: a double where the
    # time_t is has the same size, alignment and offset, and is still wrong.
    timespec = Struct("struct timespec", [("tv_sec", c_double), ("tv_nsec", c_long)])
    bindings = Bindings(
        "timespec",
        library="c",
        soname="libc.so.6",
        headers=["time.h"],
        functions=[foreign("timespec_get", [("ts", Pointer(timespec)), ("base", c_int)], c_int)],
    )
    with pytest.raises(
        DescriptionMismatch,
        match=r"struct timespec.tv_sec: described as double \(floating point\), but the header's is integer",
    ):
        link(bindings, backend, time=UnixTime())
    right = Struct("struct timespec", [("tv_sec", int64), ("tv_nsec", c_long)])
    good = Bindings(
        "timespec",
        library="c",
        soname="libc.so.6",
        headers=["time.h"],
        functions=[foreign("timespec_get", [("ts", Pointer(right)), ("base", c_int)], c_int)],
    )
    link(good, backend, time=UnixTime()).close()


def test_a_field_of_the_wrong_size_is_named() -> None:
    timespec = Struct("struct timespec", [("tv_sec", int64), ("tv_nsec", int32)], size=None)
    bindings = Bindings(
        "timespec",
        library="c",
        soname="libc.so.6",
        headers=["time.h"],
        functions=[foreign("timespec_get", [("ts", Pointer(timespec)), ("base", c_int)], c_int)],
    )
    with pytest.raises(
        DescriptionMismatch, match=r"struct timespec.tv_nsec: size 4 described, 8 per the compiler"
    ):
        link(bindings, "dynamic")


def test_aux_info_lines_are_parsed_with_nested_parentheses() -> None:
    text = (
        "/* /usr/include/stdlib.h:851:NC */ extern void qsort (void *, size_t, size_t, int (*) (const void *, const void *));\n"
        "/* /usr/include/stdio.h:356:NC */ extern int printf (const char *, ...);\n"
        "/* /usr/include/x.h:1:NC */ extern char *strdup (const char *);\n"
        "/* /usr/include/x.h:2:NC */ extern int getchar (void);\n"
    )
    found = parse_aux_info(text, {"qsort", "printf", "strdup", "getchar"})
    assert found["qsort"].params == [
        "void *",
        "size_t",
        "size_t",
        "int (*) (const void *, const void *)",
    ]
    assert found["printf"].variadic and found["printf"].params == ["const char *"]
    assert found["strdup"].returns == "char *" and found["getchar"].params == []
    assert split_params("a, b (*)(c, d), e[3]") == ["a", "b (*)(c, d)", "e[3]"]
    assert c_char.size == 1 and c_ulong.size == 8
