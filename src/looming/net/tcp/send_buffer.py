"""Bytes waiting to be sent or acknowledged, and the SACK scoreboard.

Data stays in :class:`SendBuffer` from the moment the application writes it
until it is cumulatively acknowledged, so retransmission is a slice of the
same buffer. :class:`SackScoreboard` remembers which ranges above the
cumulative ACK the receiver has reported holding (RFC 2018), so the sender
skips them when it retransmits.
"""

from __future__ import annotations

import bisect


class SendBuffer:
    """A byte queue addressed by (unwrapped) sequence numbers."""

    __slots__ = ("_data", "capacity", "start")

    def __init__(self, start: int, capacity: int) -> None:
        self.start = start
        self.capacity = capacity
        self._data = bytearray()

    @property
    def end(self) -> int:
        """Sequence number just past the last byte held."""
        return self.start + len(self._data)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def space(self) -> int:
        return max(self.capacity - len(self._data), 0)

    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as fits; returns how many bytes were taken."""
        taken = min(len(data), self.space)
        if taken:
            self._data += data[:taken]
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
        return count


class SackScoreboard:
    """Disjoint, sorted [left, right) ranges the receiver has SACKed."""

    __slots__ = ("_lefts", "_rights")

    def __init__(self) -> None:
        self._lefts: list[int] = []
        self._rights: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._lefts)

    def __len__(self) -> int:
        return len(self._lefts)

    def clear(self) -> None:
        self._lefts.clear()
        self._rights.clear()

    def blocks(self) -> list[tuple[int, int]]:
        return list(zip(self._lefts, self._rights, strict=True))

    def add(self, left: int, right: int) -> bool:
        """Record a SACKed range; returns whether it told us anything new."""
        if right <= left:
            return False
        i = bisect.bisect_left(self._rights, left)
        j = bisect.bisect_right(self._lefts, right)
        if i < j:
            new_left = min(left, self._lefts[i])
            new_right = max(right, self._rights[j - 1])
            if new_left == self._lefts[i] and new_right == self._rights[i] and j == i + 1:
                return False
            self._lefts[i:j] = [new_left]
            self._rights[i:j] = [new_right]
        else:
            self._lefts.insert(i, left)
            self._rights.insert(i, right)
        return True

    def trim(self, cumulative_ack: int) -> None:
        """Drop everything below the cumulative ACK."""
        while self._lefts and self._rights[0] <= cumulative_ack:
            del self._lefts[0]
            del self._rights[0]
        if self._lefts and self._lefts[0] < cumulative_ack:
            self._lefts[0] = cumulative_ack

    @property
    def highest(self) -> int | None:
        return self._rights[-1] if self._rights else None

    @property
    def sacked_bytes(self) -> int:
        return sum(right - left for left, right in zip(self._lefts, self._rights, strict=True))

    def skip_sacked(self, seq: int) -> int:
        """``seq`` itself, or the end of the SACKed range that contains it."""
        i = bisect.bisect_right(self._lefts, seq) - 1
        if i >= 0 and seq < self._rights[i]:
            return self._rights[i]
        return seq

    def next_sacked_start(self, seq: int) -> int | None:
        """The left edge of the first SACKed range starting after ``seq``."""
        i = bisect.bisect_right(self._lefts, seq)
        return self._lefts[i] if i < len(self._lefts) else None

    def next_hole(self, seq: int) -> tuple[int, int] | None:
        """The first un-SACKed range at or after ``seq`` that lies below a
        SACKed range (so the receiver is known to be missing it)."""
        seq = self.skip_sacked(seq)
        following = self.next_sacked_start(seq)
        if following is None:
            return None
        return seq, following
