"""The message codec between the caller and the helper process.

Values are tagged: one byte saying what follows. The helper side is
untrusted (C code may have corrupted it), so :func:`decode` checks every
length against what is left and raises only :class:`looming.errors.Malformed`.

Tags::

    N None   T True   F False   i int64   I big int (u8 length, big-endian)
    d double   b bytes   s str (UTF-8, surrogateescape)   l list   m dict
    h handle (u16 opaque index, u64 address)   w bytes C may write (written back)
    p bytes of a pointed-to value (written back)   c a callable   a a memory address
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from looming.errors import Malformed

_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_F64 = struct.Struct("<d")
MAX_DEPTH = 32


class Writable(bytes):
    """Bytes the C side may change; the new contents come back after the call."""


class PointedTo(bytes):
    """The packed bytes of a value passed by pointer; they come back after the call."""


class Address(int):
    """An address in the helper's memory (a Memory block)."""


class CallableMarker:
    """Stands for a Python callable; the helper calls back over the channel."""


CALLABLE = CallableMarker()


class WireHandle:
    """A handle on the wire: which opaque type, and the address."""

    __slots__ = ("address", "index")

    def __init__(self, index: int, address: int) -> None:
        self.index = index
        self.address = address


def encode(value: Any, out: bytearray) -> None:
    """Append ``value`` to ``out``."""
    kind = type(value)
    if value is None:
        out += b"N"
    elif kind is bool:
        out += b"T" if value else b"F"
    elif kind is int or kind is Address:
        if -(1 << 63) <= value < (1 << 63):
            out += (b"a" if kind is Address else b"i") + _I64.pack(value)
        else:
            raw = int(value).to_bytes((value.bit_length() + 8) // 8 + 1, "big", signed=True)
            out += b"I" + bytes([len(raw)]) + raw
    elif kind is float:
        out += b"d" + _F64.pack(value)
    elif kind is bytes or kind is Writable or kind is PointedTo:
        tag = b"b" if kind is bytes else b"w" if kind is Writable else b"p"
        out += tag + _U32.pack(len(value)) + value
    elif kind is str:
        raw = value.encode("utf-8", "surrogateescape")
        out += b"s" + _U32.pack(len(raw)) + raw
    elif kind is list or kind is tuple:
        out += b"l" + _U32.pack(len(value))
        for item in value:
            encode(item, out)
    elif kind is dict:
        out += b"m" + _U32.pack(len(value))
        for key, item in value.items():
            encode(str(key), out)
            encode(item, out)
    else:
        _encode_rare(value, out)


def _encode_rare(value: Any, out: bytearray) -> None:
    """The kinds :func:`encode` meets less often: handles, callables and
    subclasses of the plain kinds."""
    kind = type(value)
    if kind is WireHandle:
        out += b"h" + _U16.pack(value.index) + _U64.pack(value.address)
    elif kind is CallableMarker:
        out += b"c"
    elif isinstance(value, int):  # IntEnum members and other int subclasses
        encode(int(value), out)
    elif isinstance(value, bytearray | memoryview):
        encode(bytes(value), out)
    else:
        raise TypeError(f"cannot send a {type(value).__name__} to the helper")


def encode_message(tag: bytes, *values: Any) -> bytearray:
    out = bytearray(tag)
    for value in values:
        encode(value, out)
    return out


HandleMaker = Callable[[int, int], Any]


def _plain_handle(index: int, address: int) -> Any:
    return WireHandle(index, address)


def decode(
    buf: bytes, pos: int, make_handle: HandleMaker = _plain_handle, depth: int = 0
) -> tuple[Any, int]:
    """One value from ``buf`` at ``pos``: (value, position after it)."""
    if depth > MAX_DEPTH:
        raise Malformed("values nested too deeply")
    if pos >= len(buf):
        raise Malformed("message ends where a value should start")
    tag = buf[pos]
    pos += 1
    if tag == 0x4E:  # N
        return None, pos
    if tag == 0x54:  # T
        return True, pos
    if tag == 0x46:  # F
        return False, pos
    if tag in (0x69, 0x61, 0x64):  # i a d
        return _decode_number(buf, pos, tag)
    if tag == 0x49:  # I
        return _decode_big_integer(buf, pos)
    if tag in (0x62, 0x73, 0x77, 0x70):  # b s w p
        return _decode_bytes(buf, pos, tag)
    if tag in (0x6C, 0x6D):  # l m
        return _decode_container(buf, pos, tag, make_handle, depth)
    if tag == 0x68:  # h
        if pos + 10 > len(buf):
            raise Malformed("truncated handle")
        (index,) = _U16.unpack_from(buf, pos)
        (address,) = _U64.unpack_from(buf, pos + 2)
        return make_handle(index, address), pos + 10
    if tag == 0x63:  # c
        return CALLABLE, pos
    raise Malformed(f"unknown value tag {tag:#x}")


def _decode_number(buf: bytes, pos: int, tag: int) -> tuple[Any, int]:
    """An int64 (i), an address (a) or a double (d)."""
    if pos + 8 > len(buf):
        raise Malformed("truncated number")
    if tag == 0x64:
        return _F64.unpack_from(buf, pos)[0], pos + 8
    number = _I64.unpack_from(buf, pos)[0]
    return (Address(number) if tag == 0x61 else number), pos + 8


def _decode_big_integer(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise Malformed("truncated big integer")
    length = buf[pos]
    if pos + 1 + length > len(buf):
        raise Malformed("truncated big integer")
    return int.from_bytes(buf[pos + 1 : pos + 1 + length], "big", signed=True), pos + 1 + length


def _decode_bytes(buf: bytes, pos: int, tag: int) -> tuple[Any, int]:
    """Length-prefixed bytes (b), text (s), writable (w) or pointed-to (p) bytes."""
    end = len(buf)
    if pos + 4 > end:
        raise Malformed("truncated length")
    (length,) = _U32.unpack_from(buf, pos)
    pos += 4
    if pos + length > end:
        raise Malformed(f"a {length}-byte value overruns the message")
    raw = bytes(buf[pos : pos + length])
    pos += length
    if tag == 0x73:
        return raw.decode("utf-8", "surrogateescape"), pos
    if tag == 0x77:
        return Writable(raw), pos
    if tag == 0x70:
        return PointedTo(raw), pos
    return raw, pos


def _decode_container(
    buf: bytes, pos: int, tag: int, make_handle: HandleMaker, depth: int
) -> tuple[Any, int]:
    """A counted list (l) or dict with string keys (m)."""
    end = len(buf)
    if pos + 4 > end:
        raise Malformed("truncated count")
    (count,) = _U32.unpack_from(buf, pos)
    pos += 4
    if count > end - pos:
        raise Malformed(f"{count} items cannot fit in the message")
    if tag == 0x6C:
        items: list[Any] = []
        for _ in range(count):
            item, pos = decode(buf, pos, make_handle, depth + 1)
            items.append(item)
        return items, pos
    mapping: dict[str, Any] = {}
    for _ in range(count):
        key, pos = decode(buf, pos, make_handle, depth + 1)
        if not isinstance(key, str):
            raise Malformed("a dict key is not a string")
        mapping[key], pos = decode(buf, pos, make_handle, depth + 1)
    return mapping, pos


def decode_all(buf: bytes, pos: int, make_handle: HandleMaker = _plain_handle) -> list[Any]:
    """Every value from ``pos`` to the end of ``buf``."""
    values: list[Any] = []
    while pos < len(buf):
        value, pos = decode(buf, pos, make_handle)
        values.append(value)
    return values
