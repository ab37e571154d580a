"""The pure parts of the HTTP package: target paths, ranges, content types, dates."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.http.content_types import content_type_for
from looming.http.dates import format_http_date, parse_http_date
from looming.http.paths import target_to_key
from looming.http.ranges import Unsatisfiable, parse_byte_ranges


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/", ("", True)),
        ("/index.html", ("index.html", False)),
        ("/css/site.css?v=2", ("css/site.css", False)),
        ("/docs/", ("docs", True)),
        ("/a%20b.txt", ("a b.txt", False)),
        ("/caf%C3%A9.html", ("café.html", False)),
        ("//double//slash", ("double/slash", False)),
        ("http://example.com/x/y", ("x/y", False)),
        ("http://example.com", ("", True)),
    ],
)
def test_targets_map_to_keys(target: str, expected: tuple[str, bool]) -> None:
    assert target_to_key(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "/..",
        "/../x",
        "/a/../../x",
        "/%2e%2e/x",
        "/%2E%2e/x",
        "/.",
        "/./x",
        "/%2e/x",
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/a\\b",
        "/a%00b",
        "/%ff",
        "/%0a",
        "x",
        "*",
        "",
        "../x",
    ],
)
def test_escaping_targets_map_to_nothing(target: str) -> None:
    assert target_to_key(target) is None


@given(st.text(alphabet="/.%2eEfF5cC0\\ab", max_size=30))
def test_no_target_yields_a_key_with_dot_segments(suffix: str) -> None:
    found = target_to_key("/" + suffix)
    if found is not None:
        key, _ = found
        for name in key.split("/"):
            assert name not in (".", "..")
            assert "\\" not in name and "\x00" not in name


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (b"bytes=0-0", 10, [(0, 0)]),
        (b"bytes=0-", 10, [(0, 9)]),
        (b"bytes=5-100", 10, [(5, 9)]),
        (b"bytes=-3", 10, [(7, 9)]),
        (b"bytes=-30", 10, [(0, 9)]),
        (b"bytes=0-1, 4-5", 10, [(0, 1), (4, 5)]),
        (b"bytes=0-1,20-30", 10, [(0, 1)]),
        (b"Bytes = 2-3", 10, [(2, 3)]),
        (b"bytes=3-2", 10, None),
        (b"bytes=a-b", 10, None),
        (b"lines=1-2", 10, None),
        (b"bytes=", 10, None),
        (b"bytes=1", 10, None),
        (b"bytes=" + b",".join(b"%d-%d" % (i, i) for i in range(20)), 100, None),
    ],
)
def test_byte_ranges(header: bytes, size: int, expected: list[tuple[int, int]] | None) -> None:
    assert parse_byte_ranges(header, size) == expected


@pytest.mark.parametrize("header", [b"bytes=10-", b"bytes=10-20", b"bytes=-0", b"bytes=0-"])
def test_unsatisfiable_ranges(header: bytes) -> None:
    size = 0 if header == b"bytes=0-" else 10
    with pytest.raises(Unsatisfiable):
        parse_byte_ranges(header, size)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("a/b/site.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("logo.SVG", "image/svg+xml; charset=utf-8"),
        ("photo.JPG", "image/jpeg"),
        ("font.woff2", "font/woff2"),
        ("module.wasm", "application/wasm"),
        ("README", "application/octet-stream"),
        ("archive.unknownext", "application/octet-stream"),
    ],
)
def test_content_types(name: str, content_type: str) -> None:
    assert content_type_for(name) == content_type


def test_http_dates_round_trip() -> None:
    assert format_http_date(784111777) == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT") == 784111777
    assert parse_http_date(b"Sun Nov  6 08:49:37 1994") == 784111777
    assert parse_http_date(b"garbage") is None
    assert parse_http_date(b"\xff\xfe") is None


# The standard library's email.utils is the reference the dates are checked
# against (looming formats and parses them itself, to keep email, datetime
# and calendar out of a unikernel's imports).
_LAST_FOUR_DIGIT_SECOND = 253402300799  # 9999-12-31 23:59:59


@given(st.integers(min_value=0, max_value=_LAST_FOUR_DIGIT_SECOND))
def test_http_dates_are_formatted_as_email_utils_does(seconds: int) -> None:
    assert format_http_date(seconds) == formatdate(seconds, usegmt=True).encode("ascii")
    assert format_http_date(seconds + 0.75) == format_http_date(seconds)


def _three_forms(seconds: int) -> list[bytes]:
    moment = time.gmtime(seconds)
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    month, day = months[moment.tm_mon - 1], days[moment.tm_wday]
    clock = f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d}"
    return [
        format_http_date(seconds),
        f"{day}, {moment.tm_mday:02d}-{month}-{moment.tm_year % 100:02d} {clock} GMT".encode(),
        f"{day[:3]} {month} {moment.tm_mday:2d} {clock} {moment.tm_year}".encode(),
    ]


@given(st.integers(min_value=0, max_value=_LAST_FOUR_DIGIT_SECOND))
def test_http_dates_in_all_three_forms_parse_as_email_utils_parses_them(seconds: int) -> None:
    imf, rfc850, asctime = _three_forms(seconds)
    assert parse_http_date(imf) == float(seconds)
    assert parse_http_date(asctime) == float(seconds)
    # A two-digit year is read in 1969-2068, as email.utils reads it.
    expected = parsedate_to_datetime(rfc850.decode()).replace(tzinfo=UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_http_date(rfc850) == (expected - epoch).total_seconds()
    if 1969 <= time.gmtime(seconds).tm_year <= 2068:
        assert parse_http_date(rfc850) == float(seconds)


@given(
    st.integers(min_value=86400, max_value=_LAST_FOUR_DIGIT_SECOND - 86400),
    st.sampled_from(["+0000", "+0130", "-0845", "+1400", "UTC", "UT", "Z"]),
)
def test_http_dates_with_another_zone_agree_with_email_utils(seconds: int, zone: str) -> None:
    text = format_http_date(seconds)[: -len(b"GMT")] + zone.encode()
    assert parse_http_date(text) == parsedate_to_datetime(text.decode()).timestamp()


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
        b"Sun, 29 Feb 1900 08:49:37 GMT",  # 1900 was no leap year
        b"Sun, 06 Nov 1994 24:00:00 GMT",
        b"Sun, 06 Nov 1994 08:60:00 GMT",
        b"Sun, 06 Nov 1994 08:49:37 CEST",
        b"Sun, 06 Nov 1994 08:49:37 +0160",
        b"Sun, 06 Foo 1994 08:49:37 GMT",
        b"Sun, 06 Nov 199 08:49:37 GMT",
        b"Sun, 06 Nov 1994 08:49 GMT",
        b"Sun, \xd9\xa0\xd9\xa6 Nov 1994 08:49:37 GMT",  # Arabic-Indic digits
        b"Sunday, 06-Nov-94 08:49:37",
        b"Sun Nov  6 08:49:37",
        b"1994 Nov  6 08:49:37 1994",
    ],
)
def test_malformed_http_dates_do_not_parse(text: bytes) -> None:
    assert parse_http_date(text) is None


def test_a_leap_day_parses() -> None:
    assert parse_http_date(b"Tue, 29 Feb 2000 00:00:00 GMT") == 951782400.0
