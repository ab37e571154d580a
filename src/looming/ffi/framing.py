"""Length-prefixed messages over a byte stream: how every channel frames them.

A message travels as its length (32 bits, little-endian), then its bytes.
:func:`frame` makes one; :class:`MessageReader` takes what a stream delivers,
in whatever pieces, and gives whole messages back. Neither does I/O: a
channel hands :meth:`MessageReader.read` the function that reads its stream,
so the socketpair and the vchan channel share this code and differ only in
how they read, write and fail.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from looming.ffi.errors import HelperError

_LENGTH = struct.Struct("<I")
MAX_MESSAGE = 1 << 30


class ChannelClosed(HelperError):
    """The other end closed the channel (for the client: the helper died)."""


def frame(message: bytes | bytearray) -> bytes:
    """``message`` with its length in front, ready to write to the stream."""
    return _LENGTH.pack(len(message)) + message


class MessageReader:
    """Whole messages out of a stream read in pieces of up to ``chunk_size`` bytes.

    A length over ``limit`` raises :class:`ChannelClosed`: the stream cannot
    be trusted past it, and nothing is allocated for it.
    """

    def __init__(self, chunk_size: int, limit: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        # Read into one reusable buffer: a fresh large bytes per read costs.
        self._chunk = memoryview(bytearray(chunk_size))
        self._limit = limit

    def next_message(self) -> bytes | None:
        """The next message if all of it has been received, else None."""
        buffer = self._buffer
        if len(buffer) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(buffer)
        if length > self._limit:
            raise ChannelClosed(f"message of {length} bytes exceeds the limit")
        end = _LENGTH.size + length
        if len(buffer) < end:
            return None
        message = bytes(buffer[_LENGTH.size : end])
        del buffer[:end]
        return message

    def read(self, read_into: Callable[[memoryview], int]) -> bytes | None:
        """The next message, calling ``read_into`` (fill the buffer, return how
        many bytes; 0 at the end of the stream) until it has arrived.

        None when the stream ends first, even part way through a message.
        """
        while (message := self.next_message()) is None:
            count = read_into(self._chunk)
            if not count:
                return None
            self._buffer += self._chunk[:count]
        return message
