"""The Internet checksum (RFC 1071) and the TCP/UDP pseudo-header sum.

The one's-complement sum of 16-bit words is computed without visiting the
words: read the whole buffer as one big integer with ``int.from_bytes``; as
2**16 = 1 (mod 0xFFFF), that integer is congruent to the sum of its 16-bit
"digits" modulo 0xFFFF, and the end-around-carry sum of anything non-zero
lands in 1..0xFFFF.  One C-level conversion and one division by a small
number replace a Python loop, dozens of times faster.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

_Buffer = bytes | bytearray | memoryview


# Above this many bytes, halving the big integer with shifts before the
# division beats dividing it whole (CPython divides by a small number one
# 30-bit digit at a time, slower per digit than a shift and an add).
_FOLD_ABOVE = 4096
# Above this many bytes (a full segment's payload), the buffer is read as two
# numbers and their sum halved before the division; the masks for that
# split, in 128-bit steps.
_HALVE_ABOVE = 512
_MASKS = tuple((1 << (step << 7)) - 1 for step in range((_FOLD_ABOVE << 1 >> 7) + 1))
_from_bytes = int.from_bytes


def ones_complement_sum(data: _Buffer, initial: int = 0) -> int:
    """The 16-bit one's-complement sum of ``data`` (padded with a zero byte
    when odd) plus ``initial``, not yet inverted."""
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    length = len(data)
    if length > _FOLD_ABOVE:
        return _folded_sum(data, initial)
    if length > _HALVE_ABOVE:
        # The two halves read as numbers of their own and added (a split at
        # an even byte keeps the sum congruent), then halved once more by a
        # shift and a mask: the division has a quarter of the digits, and
        # these cost less than what they save (a full segment's sum takes a
        # fifth less time than with one split).
        half = (length >> 2) << 1
        total = _from_bytes(data[:half], "big") + _from_bytes(data[half:], "big")
        bits = (length << 1) & ~127
        total = (total >> bits) + (total & _MASKS[bits >> 7])
    else:
        total = _from_bytes(data, "big")
    total += initial
    folded = total % 0xFFFF
    if folded == 0 and total:
        return 0xFFFF  # one's complement "negative zero": the sum of non-zero words
    return folded


def _folded_sum(data: _Buffer, initial: int) -> int:
    """:func:`ones_complement_sum` for long buffers: add the upper half of
    the integer to the lower half (a split at a multiple of 16 bits keeps
    the sum congruent modulo 0xFFFF) until it is small, then divide.  The
    buffer is read little-endian, which sums byte-swapped words (RFC 1071
    2(B)); the result is swapped back."""
    total = int.from_bytes(data, "little")
    bits = total.bit_length()
    while bits > 64:
        half = ((bits >> 1) + 15) & ~15
        total = (total >> half) + (total & ((1 << half) - 1))
        bits = total.bit_length()
    folded = total % 0xFFFF
    if folded == 0 and total:
        folded = 0xFFFF
    swapped = (folded & 0xFF) << 8 | folded >> 8
    if not initial:
        return swapped
    total = swapped + initial
    folded = total % 0xFFFF
    return 0xFFFF if folded == 0 and total else folded


def internet_checksum(data: _Buffer, initial: int = 0) -> int:
    """The Internet checksum of ``data``: the inverted one's-complement sum.

    ``initial`` is a partial sum to include (for example from
    :func:`pseudo_header_sum`).  Verifying a received header that carries its
    checksum gives 0.
    """
    return ~ones_complement_sum(data, initial) & 0xFFFF


def pseudo_header_sum(
    src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, protocol: int, length: int
) -> int:
    """The uninverted sum of the pseudo-header used by TCP and UDP (RFC 793
    section 3.1, RFC 768; for IPv6 addresses RFC 8200 section 8.1), to pass
    as ``initial``."""
    # An address read as one number is congruent to the sum of its 16-bit
    # words modulo 0xFFFF, like the whole-buffer sum above; both
    # pseudo-headers hold the addresses, the protocol and the length.
    # (The addresses' integer slot is read directly: int() goes through
    # the Python-level __int__, and this runs twice a segment.)
    total: int = src._ip + dst._ip + protocol + length  # type: ignore[union-attr]
    folded = total % 0xFFFF
    return 0xFFFF if folded == 0 and total else folded


def packed_pseudo_header_sum(addresses: _Buffer, protocol: int, length: int) -> int:
    """:func:`pseudo_header_sum` for the source and destination addresses
    as an IP header holds them, one after the other (bytes 12-20 of an IPv4
    header): read as one number, they too are congruent to the sum of their
    16-bit words modulo 0xFFFF."""
    total = int.from_bytes(addresses, "big") + protocol + length
    folded = total % 0xFFFF
    return 0xFFFF if folded == 0 and total else folded
