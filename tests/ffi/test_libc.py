"""The C library through every backend: strings, processes, time, callbacks, structs, errno."""

from __future__ import annotations

import calendar
import errno
import os
import time
from pathlib import Path

import pytest

from looming.ffi import Handle, LinkedLibrary, Ref
from looming.ffi.libs.libc import F_OK, FILE, R_OK


def test_strlen(c: LinkedLibrary) -> None:
    assert c.strlen(b"") == 0
    assert c.strlen(b"looming") == 7
    assert c.strlen("é".encode()) == 2


def test_getpid_is_the_callers_unless_isolated(c: LinkedLibrary, backend: str) -> None:
    pid = c.getpid()
    if backend == "isolated":
        assert pid != os.getpid()
        assert pid == 2  # the helper is alone in its PID namespace, under its init
    else:
        assert pid == os.getpid()


def test_qsort_with_a_python_comparison(c: LinkedLibrary) -> None:
    values = [31, -4, 1000, 7, 7, 0, -99]
    calls: list[tuple[int, int]] = []

    def compare(a: int, b: int) -> int:
        calls.append((a, b))
        return (a > b) - (a < b)

    c.qsort(values, len(values), 4, compare)
    assert values == sorted([31, -4, 1000, 7, 7, 0, -99])
    assert calls and all(isinstance(a, int) and isinstance(b, int) for a, b in calls)

    c.qsort(values, len(values), 4, lambda a, b: (b > a) - (b < a))
    assert values == sorted(values, reverse=True)


def test_an_exception_in_a_callback_is_raised_after_the_call(c: LinkedLibrary) -> None:
    def compare(a: int, b: int) -> int:
        raise LookupError(f"refusing to compare {a} and {b}")

    values = [3, 2, 1]
    with pytest.raises(LookupError, match="refusing to compare"):
        c.qsort(values, 3, 4, compare)

    with pytest.raises(TypeError, match="returned str"):
        c.qsort(values, 3, 4, lambda a, b: "less")


def test_time_fills_its_out_parameter(c: LinkedLibrary) -> None:
    before = int(time.time())
    stored = Ref()
    now = c.time(stored)
    after = int(time.time())
    assert before <= now <= after
    assert stored.value == now
    assert c.time(None) >= now


def test_gmtime_r_fills_a_struct_like_pythons_gmtime(c: LinkedLibrary) -> None:
    moment = 1_700_000_000
    tm: dict[str, object] = {}
    assert c.gmtime_r(Ref(moment), tm) is not None
    expected = time.gmtime(moment)
    assert tm["tm_year"] == expected.tm_year - 1900
    assert tm["tm_mon"] == expected.tm_mon - 1
    assert tm["tm_mday"] == expected.tm_mday
    assert (tm["tm_hour"], tm["tm_min"], tm["tm_sec"]) == (
        expected.tm_hour,
        expected.tm_min,
        expected.tm_sec,
    )
    assert tm["tm_yday"] == expected.tm_yday - 1
    assert tm["tm_gmtoff"] == 0
    assert c.string_at(tm["tm_zone"]) == b"GMT"  # type: ignore[arg-type]  # an address
    assert calendar.timegm(expected) == moment


def test_div_returns_a_struct_by_value(c: LinkedLibrary) -> None:
    assert c.div(17, 5) == {"quot": 3, "rem": 2}
    assert c.div(-17, 5) == {"quot": -3, "rem": -2}


def test_sigqueue_takes_a_union_by_value(c: LinkedLibrary) -> None:
    # Signal 0 only checks that the process exists; the union rides along.
    assert c.sigqueue(c.getpid(), 0, {"sival_int": 42}) == 0
    assert c.sigqueue(c.getpid(), 0, {"sival_ptr": 0}) == 0


def test_strtol_reports_erange_through_errno(c: LinkedLibrary) -> None:
    assert c.strtol(b"12345", None, 10) == 12345
    assert c.last_errno == 0
    assert c.strtol(b"ff", None, 16) == 255
    assert c.strtol(b"9" * 40, None, 10) == 2**63 - 1
    assert c.last_errno == errno.ERANGE
    end = Ref()
    assert c.strtol(b"42 rest", end, 10) == 42
    assert isinstance(end.value, int)


def test_access_and_fopen_of_a_missing_file_raise_oserror(c: LinkedLibrary, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError) as caught:
        c.access(missing, F_OK)
    assert caught.value.errno == errno.ENOENT
    assert c.last_errno == errno.ENOENT
    with pytest.raises(FileNotFoundError):
        c.fopen(missing, "r")
    assert c.access(str(tmp_path), R_OK) == 0
    assert c.last_errno == 0


def test_fopen_fread_fclose_with_a_handle(c: LinkedLibrary, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    payload = bytes(range(200))
    path.write_bytes(payload)
    stream = c.fopen(str(path), "rb")
    assert isinstance(stream, Handle) and stream.kind is FILE
    buffer = bytearray(256)
    assert c.fread(buffer, 1, 256, stream) == 200
    assert bytes(buffer[:200]) == payload
    assert c.fclose(stream) == 0


def test_getenv_returns_text_or_none(c: LinkedLibrary) -> None:
    assert c.getenv("LOOMING_FFI_CACHE") == os.environ["LOOMING_FFI_CACHE"]
    assert c.getenv("LOOMING_SURELY_UNSET_VARIABLE") is None


def test_malloc_and_free_raw_addresses(c: LinkedLibrary) -> None:
    address = c.malloc(64)
    assert isinstance(address, int) and address != 0
    c.free(address)
