"""The helper channel's codec: round trips, and nothing but Malformed on bad input."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.errors import Malformed
from looming.ffi.codec import (
    CALLABLE,
    Address,
    PointedTo,
    WireHandle,
    Writable,
    decode,
    decode_all,
    encode,
    encode_message,
)

plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats(allow_nan=False)
    | st.binary(max_size=64)
    | st.text(max_size=32),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(plain_values)
@settings(max_examples=300, deadline=None)
def test_plain_values_round_trip(value: Any) -> None:
    out = bytearray()
    encode(value, out)
    decoded, end = decode(bytes(out), 0)
    assert end == len(out)
    assert decoded == value


def test_marked_values_keep_their_kind() -> None:
    message = encode_message(
        b"C", Writable(b"w"), PointedTo(b"p"), Address(77), WireHandle(3, 0xDEAD), CALLABLE, True, 1
    )
    values = decode_all(bytes(message), 1, lambda index, address: ("handle", index, address))
    assert type(values[0]) is Writable and values[0] == b"w"
    assert type(values[1]) is PointedTo and values[1] == b"p"
    assert type(values[2]) is Address and values[2] == 77
    assert values[3] == ("handle", 3, 0xDEAD)
    assert values[4] is CALLABLE
    assert values[5] is True and values[6] == 1 and type(values[6]) is int


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_garbage_raises_only_malformed(data: bytes) -> None:
    try:
        decode_all(data, 0)
    except Malformed:
        pass


def test_lengths_beyond_the_message_are_malformed() -> None:
    for message in (
        b"b\xff\xff\xff\x7f",
        b"l\xff\xff\xff\x7f",
        b"i\x01",
        b"h\x00",
        b"I\x09\x01",
        b"Z",
    ):
        try:
            decode_all(message, 0)
        except Malformed:
            continue
        raise AssertionError(f"{message!r} decoded")
    deep = b"l\x01\x00\x00\x00" * 100 + b"N"
    try:
        decode_all(deep, 0)
    except Malformed as exc:
        assert "deeply" in str(exc)
    else:
        raise AssertionError("unbounded nesting decoded")
