"""The little protocol the front end and the store speak over their vchan.

Request:  op (1 byte: G get, P put, D delete), key length (2 bytes),
          value length (4 bytes), key, value.
Response: status (1 byte: 0 ok, 1 no such key, 2 bad request),
          value length (4 bytes), value.
All numbers big-endian.
"""

from __future__ import annotations

import struct

from looming.devices import Flow

REQUEST = struct.Struct(">cHI")
RESPONSE = struct.Struct(">BI")
GET, PUT, DELETE = b"G", b"P", b"D"
OK, NOT_FOUND, BAD_REQUEST = 0, 1, 2
MAX_VALUE = 16 << 20


class FrameReader:
    """Exact-length reads over a flow's arbitrary chunks."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.buffer = bytearray()

    async def exactly(self, count: int) -> bytes | None:
        """``count`` bytes, or ``None`` at end of stream."""
        while len(self.buffer) < count:
            chunk = await self.flow.read()
            if not chunk:
                return None
            self.buffer += chunk
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data


def request(op: bytes, key: bytes, value: bytes = b"") -> bytes:
    return REQUEST.pack(op, len(key), len(value)) + key + value


def response(status: int, value: bytes = b"") -> bytes:
    return RESPONSE.pack(status, len(value)) + value
