"""The pure parts of the HTTP package: target paths, ranges, content types, dates."""

from __future__ import annotations

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
