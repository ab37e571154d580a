"""Parse and emit the TLS presentation language: integers and length-prefixed vectors.

``Reader`` trusts nothing and raises only :class:`looming.errors.Malformed`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from looming.bounded import Memo
from looming.errors import Malformed

_U16_STRUCTS: Memo[int, struct.Struct] = Memo(512)
_u16_structs_get = _U16_STRUCTS.get


def _u16_struct(count: int) -> struct.Struct:
    """A Struct reading ``count`` big-endian 16-bit values (cached per count)."""
    unpacker = _u16_structs_get(count)
    if unpacker is None:
        unpacker = _U16_STRUCTS.put(count, struct.Struct(f">{count}H"))
    return unpacker


class Reader:
    """Reads big-endian fields from a buffer, checking every length."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = data if type(data) is bytes else bytes(data)
        self._pos = 0
        self._end = len(self._data)

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def expect_end(self, what: str) -> None:
        if self._pos != self._end:
            raise Malformed(f"{self._end - self._pos} trailing bytes after {what}")

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > self._end:
            raise Malformed(f"need {n} bytes, have {self._end - self._pos}")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def uint(self, width: int) -> int:
        # take() inlined: handshake parsing reads thousands of small integers.
        pos = self._pos
        end = pos + width
        if end > self._end:
            raise Malformed(f"need {width} bytes, have {self._end - pos}")
        self._pos = end
        return int.from_bytes(self._data[pos:end], "big")

    def u8(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise Malformed("need 1 byte, have 0")
        self._pos = pos + 1
        return self._data[pos]

    def u16(self) -> int:
        pos = self._pos
        if pos + 2 > self._end:
            raise Malformed(f"need 2 bytes, have {self._end - pos}")
        self._pos = pos + 2
        data = self._data
        return (data[pos] << 8) | data[pos + 1]

    def u24(self) -> int:
        return self.uint(3)

    def u32(self) -> int:
        return self.uint(4)

    def vector(self, length_width: int, minimum: int = 0, maximum: int | None = None) -> bytes:
        # uint() and take() inlined: the commonest read in handshake parsing.
        data = self._data
        pos = self._pos
        start = pos + length_width
        if start > self._end:
            raise Malformed(f"need {length_width} bytes, have {self._end - pos}")
        if length_width == 2:
            n = (data[pos] << 8) | data[pos + 1]
        elif length_width == 1:
            n = data[pos]
        else:
            n = int.from_bytes(data[pos:start], "big")
        if n < minimum or (maximum is not None and n > maximum):
            raise Malformed(f"vector length {n} outside [{minimum}, {maximum}]")
        end = start + n
        if end > self._end:
            raise Malformed(f"need {n} bytes, have {self._end - start}")
        self._pos = end
        return data[start:end]

    def sub(self, length_width: int, minimum: int = 0) -> Reader:
        return Reader(self.vector(length_width, minimum))

    def u16_list(self, length_width: int, minimum: int = 0) -> list[int]:
        body = self.vector(length_width, minimum)
        if len(body) % 2:
            raise Malformed("odd length for a list of 16-bit values")
        return list(_u16_struct(len(body) // 2).unpack(body))


def u8(v: int) -> bytes:
    return v.to_bytes(1, "big")


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def u24(v: int) -> bytes:
    return v.to_bytes(3, "big")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def vec8(b: bytes) -> bytes:
    return u8(len(b)) + b


def vec16(b: bytes) -> bytes:
    return u16(len(b)) + b


def vec24(b: bytes) -> bytes:
    return u24(len(b)) + b


def u16_list(values: Iterable[int], length_width: int = 2) -> bytes:
    body = b"".join(u16(v) for v in values)
    return len(body).to_bytes(length_width, "big") + body


def handshake(msg_type: int, body: bytes) -> bytes:
    """A handshake message: type, 24-bit length, body."""
    return u8(msg_type) + u24(len(body)) + body


def extension(ext_type: int, body: bytes) -> bytes:
    return u16(ext_type) + vec16(body)


def parse_extensions(r: Reader) -> list[tuple[int, bytes]]:
    """Extensions in order; a repeated type is malformed (RFC 8446 section 4.2)."""
    out: list[tuple[int, bytes]] = []
    if r.at_end():
        return out
    # The block is walked by hand rather than through Reader calls: every
    # handshake parses several of these.
    block = r.vector(2)
    end = len(block)
    pos = 0
    seen: set[int] = set()
    while pos < end:
        if pos + 4 > end:
            raise Malformed(f"need 4 bytes, have {end - pos}")
        ext_type = (block[pos] << 8) | block[pos + 1]
        body_end = pos + 4 + ((block[pos + 2] << 8) | block[pos + 3])
        if body_end > end:
            raise Malformed(f"need {body_end - pos - 4} bytes, have {end - pos - 4}")
        if ext_type in seen:
            raise Malformed(f"extension {ext_type} appears twice")
        seen.add(ext_type)
        out.append((ext_type, block[pos + 4 : body_end]))
        pos = body_end
    return out
