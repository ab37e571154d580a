"""Received bytes: in-order data for the application, and the reassembly
queue of out-of-order segments, from which SACK blocks are reported."""

from __future__ import annotations

import bisect
from collections import deque

from looming.sim.buggify import buggify

_Bytes = bytes | bytearray | memoryview


# What one queued chunk costs beyond its bytes: the deque slot, the charge
# kept beside it and, for a view, the memoryview object (CPython 3.11, 64-bit).
CHUNK_OVERHEAD = 8 + 8 + 32
VIEW_OVERHEAD = 184
BYTES_OVERHEAD = 33  # sys.getsizeof(b"")
BYTEARRAY_OVERHEAD = 57  # sys.getsizeof(bytearray())
# Out-of-order ranges: the left edge (an int), its list slots and the recent list.
RANGE_OVERHEAD = 32 + 8 + 8 + 8 + 32
# Segments smaller than this are copied into a shared buffer instead of
# being kept as their own object (or a view pinning a whole packet).
COALESCE_BELOW = 1024
COALESCED_CHUNK = 16 * 1024
# What every connection of a pool may hold whatever the others hold (Linux's
# tcp_rmem[0]): a few segments by true size, so that connections whose
# peers never read cannot stop the others. It is set aside from the limit.
RESERVE = 16 * 1024
# The same for the data a connection's application has queued to send.
SEND_RESERVE = 16 * 1024
# More than one segment costs beyond its bytes (a view, its frame's headers).
SEGMENT_MARGIN = 512


def true_size(data: bytes | bytearray | memoryview) -> int:
    """The memory ``data`` keeps alive (a view keeps its whole buffer)."""
    if type(data) is bytes:
        return BYTES_OVERHEAD + len(data)  # (the last case below, tested first)
    if isinstance(data, memoryview):
        base = data.obj
        held = base.nbytes if isinstance(base, memoryview) else len(base)  # type: ignore[arg-type]
        return VIEW_OVERHEAD + BYTES_OVERHEAD + held
    if isinstance(data, bytearray):
        return BYTEARRAY_OVERHEAD + _capacity(data)
    return BYTES_OVERHEAD + len(data)


def _capacity(buffer: bytearray) -> int:
    # CPython over-allocates a growing bytearray by an eighth.
    return len(buffer) + (len(buffer) >> 3)


class MemoryPool:
    """Receive memory shared by every connection of one stack, with a limit
    (``None``: none). Buffers charge it as they grow and release it as they
    are read or freed; data that would go past the limit is dropped.

    Each member may hold ``reserve`` received bytes and ``send_reserve``
    bytes queued to send whatever the others hold; the rest of the limit
    (``limit - members * (reserve + send_reserve)``) is shared, and what a
    member holds beyond its reserves (:attr:`excess`, :attr:`send_excess`)
    is charged to it. The limit therefore holds while the reserves fit in
    it; past that, each member still has its reserves."""

    __slots__ = (
        "connection_refused",
        "excess",
        "held",
        "limit",
        "members",
        "refused",
        "reserve",
        "send_excess",
        "send_held",
        "send_reserve",
        "shared",
    )

    def __init__(
        self, limit: int | None = None, reserve: int = RESERVE, send_reserve: int = SEND_RESERVE
    ) -> None:
        self.limit = limit
        self.reserve = reserve
        self.send_reserve = send_reserve
        self.held = 0
        self.excess = 0  # held beyond each member's reserve, summed
        self.send_held = 0  # bytes queued in send buffers
        self.send_excess = 0  # ... beyond each member's send reserve
        self.members = 0  # buffers charging this pool
        # The part of the limit not set aside as the members' reserves.
        self.shared = 0 if limit is None else limit
        self.refused = 0  # segments dropped at this limit
        self.connection_refused = 0  # ... at a connection's own limit

    def room(self) -> int | None:
        return None if self.limit is None else self.limit - self.held

    def add_member(self, count: int = 1) -> None:
        """``count`` buffers (or -``count``) join (leave) the pool."""
        self.members += count
        if self.limit is not None:
            self.shared = self.limit - self.members * (self.reserve + self.send_reserve)

    def fits(self, charged: int, cost: int) -> bool:
        """Whether a member holding ``charged`` may take ``cost`` more."""
        if self.limit is None:
            return True
        after = charged + cost
        reserve = self.reserve
        if after <= reserve:
            return True
        grown = after - (charged if charged > reserve else reserve)
        return grown <= self.shared - self.excess - self.send_excess

    def allowance(self, charged: int) -> int:
        """How much more a member holding ``charged`` should be offered:
        what is left of its reserve, plus, of the shared part, what is
        free; under pressure (under a quarter of it free) no more than a
        fair share, so the biggest holders are shrunk first (to nothing
        beyond what they hold)."""
        # (Runs several times a segment: attributes only, no calls.)
        shared = self.shared
        reserve = self.reserve
        excess = charged - reserve if charged > reserve else 0
        room = shared - self.excess - self.send_excess
        if room < shared // 4:
            fair = shared // (self.members or 1) - excess
            if fair < room:
                room = fair
        own = reserve - charged if charged < reserve else 0
        # Less than the room, in bytes: what arrives costs more than its
        # bytes (up to a frame's overhead each), and what was offered
        # should find room.
        offer = (own - SEGMENT_MARGIN) // 2 if own > SEGMENT_MARGIN else 0
        if room > SEGMENT_MARGIN:
            offer += room * 3 // 4 - SEGMENT_MARGIN
        return offer

    def send_space(self, queued: int) -> int:
        """How much more a member with ``queued`` bytes to send may queue:
        the rest of its send reserve plus the free shared part."""
        own = self.send_reserve - queued
        room = self.shared - self.excess - self.send_excess
        return (own if own > 0 else 0) + (room if room > 0 else 0)

    def charge_send(self, before: int, after: int) -> None:
        """A member's send queue went from ``before`` to ``after`` bytes."""
        self.send_held += after - before
        reserve = self.send_reserve
        if after > reserve or before > reserve:
            self.send_excess += max(after - reserve, 0) - max(before - reserve, 0)


class ReadyBytes:
    """In-order bytes waiting for the application, kept as the segments'
    own buffers: a read joins them once, instead of every arrival growing
    (and moving) one big buffer that the read then copies again. Small
    segments are copied into a shared buffer instead, so that a stream of
    tiny segments costs about its bytes, not a packet each.

    :attr:`charge` is the memory held, overheads included."""

    __slots__ = ("_charges", "_chunks", "_length", "_tail_open", "charge")

    def __init__(self) -> None:
        self._chunks: deque[bytes | bytearray | memoryview] = deque()
        self._charges: deque[int] = deque()
        self._length = 0
        self._tail_open = False  # the last chunk is our bytearray, still growing
        self.charge = 0

    def __len__(self) -> int:
        return self._length

    def __bool__(self) -> bool:
        return self._length > 0

    def append(self, data: _Bytes) -> None:
        if not data:
            return
        size = len(data)
        chunks = self._chunks
        if size < COALESCE_BELOW:
            if self._tail_open and len(chunks[-1]) + size <= COALESCED_CHUNK:
                tail = chunks[-1]
                assert isinstance(tail, bytearray)
                tail += data
                cost = BYTEARRAY_OVERHEAD + _capacity(tail) + CHUNK_OVERHEAD
                self.charge += cost - self._charges[-1]
                self._charges[-1] = cost
            else:
                buffer = bytearray(data)
                cost = BYTEARRAY_OVERHEAD + _capacity(buffer) + CHUNK_OVERHEAD
                chunks.append(buffer)
                self._charges.append(cost)
                self.charge += cost
                self._tail_open = True
            self._length += size
            return
        # Keep a view only over immutable bytes: a caller may reuse a
        # mutable buffer once we return.
        if type(data) is memoryview and type(data.obj) is bytes:
            # A segment's payload, the usual case: what true_size says of it.
            cost = VIEW_OVERHEAD + BYTES_OVERHEAD + len(data.obj) + CHUNK_OVERHEAD
        elif type(data) is bytes:
            cost = BYTES_OVERHEAD + size + CHUNK_OVERHEAD  # (merged segments: as true_size)
        else:
            if isinstance(data, bytearray) or (
                isinstance(data, memoryview) and not isinstance(data.obj, bytes)
            ):
                data = bytes(data)
            cost = true_size(data) + CHUNK_OVERHEAD
        chunks.append(data)
        self._charges.append(cost)
        self.charge += cost
        self._length += size
        self._tail_open = False

    def take(self, limit: int | None = None) -> bytes:
        """Up to ``limit`` bytes (all of them without a limit), oldest first."""
        chunks = self._chunks
        if limit is None or limit >= self._length:
            data = bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._charges.clear()
            self._length = 0
            self.charge = 0
            self._tail_open = False
            return data
        pieces: list[bytes | bytearray | memoryview] = []
        need = limit
        while need:
            chunk = chunks[0]
            if len(chunk) <= need:
                pieces.append(chunks.popleft())
                self.charge -= self._charges.popleft()
                need -= len(chunk)
            else:
                # The rest stays as a view (still holding the whole chunk,
                # and still charged for it); the tail grows no more.
                view = memoryview(chunk)
                pieces.append(view[:need])
                chunks[0] = view[need:]
                if len(chunks) == 1:
                    self._tail_open = False
                need = 0
        if not chunks:
            self._tail_open = False
        self._length -= limit
        return b"".join(pieces)


class ReceiveBuffer:
    """In-order bytes ready to read plus out-of-order ranges above ``rcv_nxt``.

    Sequence numbers are unwrapped. ``rcv_nxt`` is the next byte expected.
    Out-of-order ranges are merged as they arrive; the most recently changed
    ones are reported first in SACK blocks (RFC 2018 section 4).

    Everything held is charged by its true size (:attr:`charged`); data that
    would take the charge past ``memory_limit`` (or the shared ``pool``'s
    limit) is dropped and counted in :attr:`refused`, for the sender to
    retransmit once the application has read.
    """

    __slots__ = (
        "_lefts",
        "_ooo_charge",
        "_pieces",
        "_recent",
        "dsack",
        "max_ranges",
        "memory_limit",
        "pool",
        "pruned",
        "rcv_nxt",
        "ready",
        "refused",
    )

    def __init__(
        self,
        rcv_nxt: int,
        max_ranges: int,
        *,
        memory_limit: int | None = None,
        pool: MemoryPool | None = None,
    ) -> None:
        self.rcv_nxt = rcv_nxt
        self.ready = ReadyBytes()
        self.max_ranges = max_ranges
        self.memory_limit = memory_limit
        self.pool: MemoryPool | None = None
        self.refused = 0
        self.pruned = 0  # out-of-order ranges dropped to make room
        self._lefts: list[int] = []
        self._pieces: list[bytearray] = []
        self._recent: list[int] = []  # left edges, most recently changed first
        self._ooo_charge = 0
        # A range received twice, for the next ACK's first SACK block (RFC 2883).
        self.dsack: tuple[int, int] | None = None
        if pool is not None:
            self.join(pool)

    @property
    def has_gaps(self) -> bool:
        return bool(self._lefts)

    @property
    def out_of_order_bytes(self) -> int:
        return sum(len(p) for p in self._pieces)

    @property
    def charged(self) -> int:
        """Memory held by ready and out-of-order data, overheads included."""
        return self.ready.charge + self._ooo_charge

    def window_space(self, buffer_size: int) -> int:
        """How much more the receive window may offer: the buffer less the
        bytes ready, shrunk further when their true size runs past twice the
        buffer (tiny segments) or the shared pool runs low."""
        # (Runs several times a segment: the fields are read directly.)
        ready = self.ready
        space = buffer_size - ready._length
        by_charge = 2 * buffer_size - ready.charge - self._ooo_charge
        if by_charge < space:
            space = by_charge
        pool = self.pool
        if pool is not None and pool.limit is not None:
            # The pool's allowance only when it may be the smaller: under
            # pressure, or with less free than the space.
            shared = pool.shared
            room = shared - pool.excess - pool.send_excess
            if room < shared // 4 or room * 3 // 4 - SEGMENT_MARGIN < space:
                allowance = pool.allowance(ready.charge + self._ooo_charge)
                if allowance < space:
                    space = allowance
        return space

    def can_hold(self, cost: int) -> bool:
        """Whether ``cost`` more bytes of true size fit the limits now."""
        return self._fits(cost)

    def holds_none_of(self, left: int, right: int) -> bool:
        """Whether no out-of-order range held touches [left, right) from
        inside (ranges that end at ``left`` or start at ``right`` may)."""
        lefts = self._lefts
        i = bisect.bisect_right(lefts, left) - 1
        if i >= 0 and lefts[i] + len(self._pieces[i]) > left:
            return False
        return i + 1 >= len(lefts) or lefts[i + 1] >= right

    def _fits(self, cost: int) -> bool:
        charged = self.ready.charge + self._ooo_charge  # (self.charged, without the call)
        limit = self.memory_limit
        if limit is not None and charged + cost > limit:
            return False
        pool = self.pool
        return pool is None or pool.fits(charged, cost)

    def _prune_out_of_order(self, cost: int) -> None:
        """Drop out-of-order ranges, furthest first, until ``cost`` more fits
        (RFC 2018 allows reneging; Linux prunes so): in-order data must
        always find room, or a full queue above a hole would stall forever."""
        while self._lefts and not self._fits(cost):
            before = self.charged
            left = self._lefts.pop()
            piece = self._pieces.pop()
            self._ooo_charge -= _range_cost(piece)
            self._forget_recent(left)
            self.pruned += 1
            self._charge_pool(before)

    def _room(self, cost: int) -> bool:
        charged = self.ready.charge + self._ooo_charge  # (self.charged, without the call)
        limit = self.memory_limit
        if limit is not None and charged + cost > limit:
            self.refused += 1
            if self.pool is not None:
                self.pool.connection_refused += 1
            return False
        pool = self.pool
        if pool is not None and not pool.fits(charged, cost):
            pool.refused += 1
            self.refused += 1
            return False
        return True

    def join(self, pool: MemoryPool) -> None:
        """Charge ``pool`` from now on (nothing is held yet)."""
        if self.pool is not None:
            self.release()
        self.pool = pool
        pool.add_member()
        pool.held += self.charged
        pool.excess += max(self.charged - pool.reserve, 0)

    def release(self) -> None:
        """Give everything back to the pool (the connection is gone)."""
        pool = self.pool
        if pool is not None:
            pool.held -= self.charged
            pool.excess -= max(self.charged - pool.reserve, 0)
            pool.add_member(-1)
            self.pool = None

    def insert(self, seq: int, data: bytes | memoryview) -> bool:
        """Add a segment's data; returns whether ``rcv_nxt`` advanced.

        The caller has already trimmed ``data`` to the receive window.
        """
        if seq < self.rcv_nxt:
            skip = self.rcv_nxt - seq
            self.note_duplicate(seq, min(seq + len(data), self.rcv_nxt))
            if skip >= len(data):
                return False
            data = data[skip:]
            seq = self.rcv_nxt
        if not data:
            return False
        before = self.charged
        if seq == self.rcv_nxt:
            size = len(data)
            cost = size + CHUNK_OVERHEAD if size < COALESCE_BELOW else true_size(data)
            lefts = self._lefts
            if lefts and not self._fits(cost):
                self._prune_out_of_order(cost)
                before = self.charged
            if not self._room(cost):
                return False
            self.ready.append(data)
            self.rcv_nxt += size
            if lefts:
                self._pull_contiguous()
            if self.pool is not None:
                self._charge_pool(before)
            return True
        if not self._room(len(data) + BYTEARRAY_OVERHEAD + RANGE_OVERHEAD):
            return False
        if buggify("tcp.drop_out_of_order"):
            return False  # as if there were no room for it: the sender resends it
        self._note_held_twice(seq, seq + len(data))
        self._insert_out_of_order(seq, bytes(data))
        self._charge_pool(before)
        return False

    def _charge_pool(self, before: int) -> None:
        pool = self.pool
        if pool is not None:
            after = self.charged
            pool.held += after - before
            reserve = pool.reserve
            if after > reserve or before > reserve:
                pool.excess += max(after - reserve, 0) - max(before - reserve, 0)

    def _pull_contiguous(self) -> None:
        while self._lefts and self._lefts[0] <= self.rcv_nxt:
            left = self._lefts.pop(0)
            piece = self._pieces.pop(0)
            self._ooo_charge -= _range_cost(piece)
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
            self._ooo_charge -= _range_cost(piece)
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
            self._ooo_charge -= _range_cost(next_piece)
            self._forget_recent(next_left)
            next_end = next_left + len(next_piece)
            if next_end > left + len(piece):
                piece += next_piece[left + len(piece) - next_left :]
        self._ooo_charge += _range_cost(piece)
        self._recent.insert(0, left)

    def note_duplicate(self, left: int, right: int) -> None:
        """[left, right) arrived again: the next ACK reports it (RFC 2883)."""
        if left < right:
            self.dsack = (left, right)

    def _note_held_twice(self, left: int, right: int) -> None:
        i = bisect.bisect_right(self._lefts, left) - 1
        if i >= 0 and right <= self._lefts[i] + len(self._pieces[i]):
            self.note_duplicate(left, right)

    @property
    def latest_range(self) -> int | None:
        """The left edge of the out-of-order range that changed last (the
        first SACK block of the next ACK), or None when there is none."""
        return self._recent[0] if self._recent else None

    def sack_block_count(self, limit: int) -> int:
        """How many blocks :meth:`sack_blocks` would give now, without
        consuming the D-SACK."""
        count = 1 if self.dsack is not None else 0
        for left in self._recent[: limit - count]:
            i = bisect.bisect_left(self._lefts, left)
            if i < len(self._lefts) and self._lefts[i] == left:
                count += 1
        return min(count, limit)

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` [left, right) ranges, most recently changed first,
        after a pending D-SACK block (RFC 2883 section 4), which is then
        consumed: it is reported once."""
        blocks: list[tuple[int, int]] = []
        if self.dsack is not None:
            blocks.append(self.dsack)
            self.dsack = None
            limit -= 1
        for left in self._recent[:limit]:
            i = bisect.bisect_left(self._lefts, left)
            if i < len(self._lefts) and self._lefts[i] == left:
                blocks.append((left, left + len(self._pieces[i])))
        return blocks

    def read(self, limit: int | None = None) -> bytes:
        before = self.charged
        if limit is None and len(self.ready) > 1 and buggify("tcp.short_read"):
            limit = len(self.ready) // 2
        data = self.ready.take(limit)
        self._charge_pool(before)
        return data


def _range_cost(piece: bytearray) -> int:
    return BYTEARRAY_OVERHEAD + _capacity(piece) + RANGE_OVERHEAD
