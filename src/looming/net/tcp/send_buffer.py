"""Bytes waiting to be sent or acknowledged.

Data stays in :class:`SendBuffer` from the moment the application writes it
until it is cumulatively acknowledged, so retransmission is a slice of the
same buffer. What the receiver reported holding (SACK) is in
:mod:`looming.net.tcp.scoreboard`.
"""

from __future__ import annotations

from looming.net.tcp.receive_buffer import MemoryPool


class SendBuffer:
    """A byte queue addressed by (unwrapped) sequence numbers.

    With a ``pool`` (the stack's memory limit) the bytes queued are charged
    to it, and what may be queued is bounded by it too."""

    __slots__ = ("_data", "capacity", "pool", "start")

    def __init__(self, start: int, capacity: int) -> None:
        self.start = start
        self.capacity = capacity
        self._data = bytearray()
        self.pool: MemoryPool | None = None

    def join(self, pool: MemoryPool) -> None:
        """Charge ``pool`` for the bytes queued from now on."""
        self.release()
        self.pool = pool
        pool.charge_send(0, len(self._data))

    def release(self) -> None:
        """Give the charge back (the connection is gone)."""
        if self.pool is not None:
            self.pool.charge_send(len(self._data), 0)
            self.pool = None

    @property
    def end(self) -> int:
        """Sequence number just past the last byte held."""
        return self.start + len(self._data)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def space(self) -> int:
        space = self.capacity - len(self._data)
        pool = self.pool
        if pool is not None and pool.limit is not None:
            space = min(space, pool.send_space(len(self._data)))
        return space if space > 0 else 0

    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as fits; returns how many bytes were taken."""
        taken = min(len(data), self.space)
        if taken:
            self._data += data[:taken]
            if self.pool is not None:
                self.pool.charge_send(len(self._data) - taken, len(self._data))
        return taken

    def slice(self, seq: int, length: int) -> bytes:
        offset = seq - self.start
        return bytes(self._data[offset : offset + length])

    def release_to(self, seq: int) -> int:
        """Forget bytes before ``seq`` (they were acknowledged); returns how many."""
        count = min(max(seq - self.start, 0), len(self._data))
        if count:
            # Deleting from the front of a bytearray is cheap in CPython.
            del self._data[:count]
            self.start += count
            if self.pool is not None:
                self.pool.charge_send(len(self._data) + count, len(self._data))
        return count
