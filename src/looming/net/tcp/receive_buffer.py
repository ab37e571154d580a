"""Received bytes: in-order data for the application, and the reassembly
queue of out-of-order segments, from which SACK blocks are reported."""

from __future__ import annotations

import bisect
from collections import deque

_Bytes = bytes | bytearray | memoryview


class ReadyBytes:
    """In-order bytes waiting for the application, kept as the segments'
    own buffers: a read joins them once, instead of every arrival growing
    (and moving) one big buffer that the read then copies again."""

    __slots__ = ("_chunks", "_length")

    def __init__(self) -> None:
        self._chunks: deque[bytes | memoryview] = deque()
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def __bool__(self) -> bool:
        return self._length > 0

    def append(self, data: _Bytes) -> None:
        if not data:
            return
        # Keep a view only over immutable bytes: a caller may reuse a
        # mutable buffer once we return.
        if isinstance(data, bytearray) or (
            isinstance(data, memoryview) and not isinstance(data.obj, bytes)
        ):
            data = bytes(data)
        self._chunks.append(data)
        self._length += len(data)

    def take(self, limit: int | None = None) -> bytes:
        """Up to ``limit`` bytes (all of them without a limit), oldest first."""
        chunks = self._chunks
        if limit is None or limit >= self._length:
            data = bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._length = 0
            return data
        pieces: list[bytes | memoryview] = []
        need = limit
        while need:
            chunk = chunks[0]
            if len(chunk) <= need:
                pieces.append(chunks.popleft())
                need -= len(chunk)
            else:
                view = memoryview(chunk)
                pieces.append(view[:need])
                chunks[0] = view[need:]
                need = 0
        self._length -= limit
        return b"".join(pieces)


class ReceiveBuffer:
    """In-order bytes ready to read plus out-of-order ranges above ``rcv_nxt``.

    Sequence numbers are unwrapped. ``rcv_nxt`` is the next byte expected.
    Out-of-order ranges are merged as they arrive; the most recently changed
    ones are reported first in SACK blocks (RFC 2018 section 4).
    """

    __slots__ = ("_lefts", "_pieces", "_recent", "max_ranges", "rcv_nxt", "ready")

    def __init__(self, rcv_nxt: int, max_ranges: int) -> None:
        self.rcv_nxt = rcv_nxt
        self.ready = ReadyBytes()
        self.max_ranges = max_ranges
        self._lefts: list[int] = []
        self._pieces: list[bytearray] = []
        self._recent: list[int] = []  # left edges, most recently changed first

    @property
    def has_gaps(self) -> bool:
        return bool(self._lefts)

    @property
    def out_of_order_bytes(self) -> int:
        return sum(len(p) for p in self._pieces)

    def insert(self, seq: int, data: bytes | memoryview) -> bool:
        """Add a segment's data; returns whether ``rcv_nxt`` advanced.

        The caller has already trimmed ``data`` to the receive window.
        """
        if seq < self.rcv_nxt:
            skip = self.rcv_nxt - seq
            if skip >= len(data):
                return False
            data = data[skip:]
            seq = self.rcv_nxt
        if not data:
            return False
        if seq == self.rcv_nxt:
            self.ready.append(data)
            self.rcv_nxt += len(data)
            self._pull_contiguous()
            return True
        self._insert_out_of_order(seq, bytes(data))
        return False

    def _pull_contiguous(self) -> None:
        while self._lefts and self._lefts[0] <= self.rcv_nxt:
            left = self._lefts.pop(0)
            piece = self._pieces.pop(0)
            self._forget_recent(left)
            end = left + len(piece)
            if end > self.rcv_nxt:
                self.ready.append(bytes(piece[self.rcv_nxt - left :]))
                self.rcv_nxt = end

    def _forget_recent(self, left: int) -> None:
        if left in self._recent:
            self._recent.remove(left)

    def _insert_out_of_order(self, seq: int, data: bytes) -> None:
        end = seq + len(data)
        i = bisect.bisect_right(self._lefts, seq) - 1
        # Merge with a range that starts before and reaches seq.
        if i >= 0 and self._lefts[i] + len(self._pieces[i]) >= seq:
            left = self._lefts[i]
            piece = self._pieces[i]
            if left + len(piece) < end:
                piece += data[left + len(piece) - seq :]
            self._forget_recent(left)
        else:
            if len(self._lefts) >= self.max_ranges:
                return  # bounded: the sender will retransmit it later
            i += 1
            left = seq
            piece = bytearray(data)
            self._lefts.insert(i, left)
            self._pieces.insert(i, piece)
        # Swallow following ranges that now touch or overlap.
        while i + 1 < len(self._lefts) and self._lefts[i + 1] <= left + len(piece):
            next_left = self._lefts.pop(i + 1)
            next_piece = self._pieces.pop(i + 1)
            self._forget_recent(next_left)
            next_end = next_left + len(next_piece)
            if next_end > left + len(piece):
                piece += next_piece[left + len(piece) - next_left :]
        self._recent.insert(0, left)

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` [left, right) ranges, most recently changed first."""
        blocks: list[tuple[int, int]] = []
        for left in self._recent[:limit]:
            i = bisect.bisect_left(self._lefts, left)
            if i < len(self._lefts) and self._lefts[i] == left:
                blocks.append((left, left + len(self._pieces[i])))
        return blocks

    def read(self, limit: int | None = None) -> bytes:
        return self.ready.take(limit)
