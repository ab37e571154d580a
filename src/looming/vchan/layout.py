"""The shared page, byte for byte as libxenvchan lays it out.

Xen's ``struct vchan_interface`` (``xen/io/libxenvchan.h``) sits at offset 0
of the first page of the shared segment, in the host's byte order::

    offset  size  field
         0     4  left.cons     left ring: the client writes, the server reads
         4     4  left.prod
         8     4  right.cons    right ring: the server writes, the client reads
        12     4  right.prod
        16     2  left_order    log2 of each ring's size, 10..20
        18     2  right_order
        20     1  cli_live      0 exited, 1 connected, 2 not yet connected
        21     1  srv_live
        22     1  cli_notify    bits the client acts on (the server sets them)
        23     1  srv_notify    bits the server acts on (the client sets them)
        24   4*n  grants[]      pages of the rings of order >= 12, left first

Indices run freely over 32 bits and are masked by the ring size when used
as offsets. A ring of order 10 lives at offset 1024 of the first page and
one of order 11 at offset 2048 (so at most one ring may have each of these
orders); a ring of order 12 or more occupies ``2**(order-12)`` pages of its
own. Xen puts grant references in ``grants[]``; here, where the segment is
one mapping, they are page numbers inside the segment, and a ring's pages
must be consecutive.

Everything in this module is pure: it works on any writable buffer and is
tested without processes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from looming.vchan.errors import VchanCorrupt

PAGE_SIZE = 4096
PAGE_SHIFT = 12

LEFT_CONS = 0
LEFT_PROD = 4
RIGHT_CONS = 8
RIGHT_PROD = 12
LEFT_ORDER = 16
RIGHT_ORDER = 18
CLI_LIVE = 20
SRV_LIVE = 21
CLI_NOTIFY = 22
SRV_NOTIFY = 23
GRANTS = 24
HEADER_SIZE = 24

# Notification bits: the reader asks to hear about writes, the writer about reads.
NOTIFY_WRITE = 0x1
NOTIFY_READ = 0x2

# Liveness byte values.
LIVE_EXITED = 0
LIVE_CONNECTED = 1
LIVE_WAITING = 2

SMALL_RING_ORDER = 10
LARGE_RING_ORDER = 11
SMALL_RING_OFFSET = 1024
LARGE_RING_OFFSET = 2048
MIN_ORDER = SMALL_RING_ORDER
MAX_ORDER = 20
MIN_RING_SIZE = 1 << MIN_ORDER
MAX_RING_SIZE = 1 << MAX_ORDER

_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")


@dataclass(frozen=True, slots=True)
class Geometry:
    """Where each ring lives inside the shared segment (byte offsets)."""

    left_order: int
    right_order: int
    left_offset: int
    right_offset: int
    segment_size: int

    @property
    def left_size(self) -> int:
        return 1 << self.left_order

    @property
    def right_size(self) -> int:
        return 1 << self.right_order


def _order_for(minimum: int) -> int:
    """The smallest page-or-larger order holding ``minimum`` bytes."""
    order = PAGE_SHIFT
    while minimum > (1 << order):
        order += 1
    return order


def choose_orders(left_min: int, right_min: int) -> tuple[int, int]:
    """Ring orders for rings of at least ``left_min`` and ``right_min`` bytes.

    Sizes are minimums, as in ``libxenvchan_server_init``: each is rounded up
    to a power of two, a ring that fits in 1 KiB or 2 KiB goes inside the
    header page when the other ring leaves room (saving pages), and anything
    else gets whole pages. So 1023 and 1024 give 1 KiB, 2047 and 2048 give
    2 KiB (or a page when the other ring took the in-page slot), 4095 and
    4096 give 4 KiB. Sizes outside 0..1 MiB are refused.
    """
    for label, value in (("left", left_min), ("right", right_min)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{label} ring size must be an int, not {value!r}")
        if value < 0 or value > MAX_RING_SIZE:
            raise ValueError(
                f"{label} ring size {value} is outside 0..{MAX_RING_SIZE} bytes "
                "(vchan rings are 1 KiB to 1 MiB)"
            )
    left, right = _order_for(left_min), _order_for(right_min)
    small, large = 1 << SMALL_RING_ORDER, 1 << LARGE_RING_ORDER
    if left_min <= small and right_min <= large:
        return SMALL_RING_ORDER, LARGE_RING_ORDER
    if left_min <= large and right_min <= small:
        return LARGE_RING_ORDER, SMALL_RING_ORDER
    if left_min <= large:
        return LARGE_RING_ORDER, right
    if right_min <= large:
        return left, LARGE_RING_ORDER
    return left, right


def _pages(order: int) -> int:
    return 1 << (order - PAGE_SHIFT) if order >= PAGE_SHIFT else 0


def _in_page_offset(order: int) -> int:
    return SMALL_RING_OFFSET if order == SMALL_RING_ORDER else LARGE_RING_OFFSET


def plan(left_order: int, right_order: int) -> Geometry:
    """The server's placement of two rings: header page, left pages, right pages."""
    _check_orders(left_order, right_order, error=ValueError)
    next_page = 1
    offsets = []
    for order in (left_order, right_order):
        if order < PAGE_SHIFT:
            offsets.append(_in_page_offset(order))
        else:
            offsets.append(next_page * PAGE_SIZE)
            next_page += _pages(order)
    return Geometry(left_order, right_order, offsets[0], offsets[1], next_page * PAGE_SIZE)


def _check_orders(left: int, right: int, *, error: type[Exception]) -> None:
    for label, order in (("left", left), ("right", right)):
        if not MIN_ORDER <= order <= MAX_ORDER:
            raise error(f"{label} ring order {order} is outside {MIN_ORDER}..{MAX_ORDER}")
    if left == right and left < PAGE_SHIFT:
        raise error(f"both rings have order {left}: they would share one slot of the header page")
    grants_end = GRANTS + 4 * (_pages(left) + _pages(right))
    in_page = [_in_page_offset(o) for o in (left, right) if o < PAGE_SHIFT]
    limit = min(in_page, default=PAGE_SIZE)
    if grants_end > limit:
        raise error(
            f"orders {left}/{right} need {grants_end - GRANTS} bytes of page list, "
            f"which would run into the ring at offset {limit}"
        )


def initialize(segment: memoryview, geometry: Geometry) -> None:
    """Write a fresh server header: indices 0, client not yet connected.

    The client starts out asked to notify on writes, as libxenvchan's server
    does, so the server hears about the first data without spinning.
    """
    if len(segment) < geometry.segment_size:
        raise ValueError(f"segment of {len(segment)} bytes is smaller than {geometry}")
    segment[0:PAGE_SIZE] = bytes(PAGE_SIZE)
    _U16.pack_into(segment, LEFT_ORDER, geometry.left_order)
    _U16.pack_into(segment, RIGHT_ORDER, geometry.right_order)
    segment[CLI_LIVE] = LIVE_WAITING
    segment[SRV_LIVE] = LIVE_CONNECTED
    segment[CLI_NOTIFY] = NOTIFY_WRITE
    grant = GRANTS
    for order, offset in (
        (geometry.left_order, geometry.left_offset),
        (geometry.right_order, geometry.right_offset),
    ):
        first = offset // PAGE_SIZE
        for i in range(_pages(order)):
            _U32.pack_into(segment, grant, first + i)
            grant += 4


def parse(segment: memoryview) -> Geometry:
    """Validate a header written by the server and say where the rings are.

    Raises :class:`VchanCorrupt` for anything that would put a ring outside
    the segment, overlap the rings or the header, or break the layout rules.
    """
    size = len(segment)
    if size < PAGE_SIZE or size % PAGE_SIZE:
        raise VchanCorrupt(f"shared segment of {size} bytes is not a whole number of pages")
    left_order = _U16.unpack_from(segment, LEFT_ORDER)[0]
    right_order = _U16.unpack_from(segment, RIGHT_ORDER)[0]
    _check_orders(left_order, right_order, error=VchanCorrupt)
    total_pages = size // PAGE_SIZE
    used = [range(0, 1)]
    offsets = []
    grant = GRANTS
    for label, order in (("left", left_order), ("right", right_order)):
        if order < PAGE_SHIFT:
            offsets.append(_in_page_offset(order))
            continue
        count = _pages(order)
        first = _U32.unpack_from(segment, grant)[0]
        for i in range(count):
            page = _U32.unpack_from(segment, grant + 4 * i)[0]
            if page != first + i:
                raise VchanCorrupt(
                    f"{label} ring page {i} is page {page}, not {first + i}: "
                    "a ring's pages must be consecutive"
                )
        pages = range(first, first + count)
        if first < 1 or pages.stop > total_pages:
            raise VchanCorrupt(
                f"{label} ring pages {first}..{pages.stop - 1} lie outside the "
                f"{total_pages}-page segment"
            )
        if any(p.start < pages.stop and pages.start < p.stop for p in used):
            raise VchanCorrupt(f"{label} ring pages {first}..{pages.stop - 1} overlap")
        used.append(pages)
        offsets.append(first * PAGE_SIZE)
        grant += 4 * count
    return Geometry(left_order, right_order, offsets[0], offsets[1], size)


def read_u32(segment: memoryview, offset: int) -> int:
    return int(_U32.unpack_from(segment, offset)[0])


def write_u32(segment: memoryview, offset: int, value: int) -> None:
    _U32.pack_into(segment, offset, value & 0xFFFFFFFF)
