"""The Internet checksum (RFC 1071) and the TCP/UDP pseudo-header sum.

The one's-complement sum is computed over the whole buffer as one big
integer: ``int.from_bytes`` turns the bytes into a number whose 16-bit
"digits" are then folded together.  Folding a big integer by halving its
width keeps the work in C, which is dozens of times faster than a loop over
16-bit words in Python.
"""

from __future__ import annotations

from ipaddress import IPv4Address

_Buffer = bytes | bytearray | memoryview


def ones_complement_sum(data: _Buffer, initial: int = 0) -> int:
    """The 16-bit one's-complement sum of ``data`` (padded with a zero byte
    when odd) plus ``initial``, not yet inverted."""
    length = len(data)
    if length & 1:
        data = bytes(data) + b"\x00"
        length += 1
    total = int.from_bytes(data, "big") + initial
    # Fold the number in halves: 2**16 = 1 (mod 0xFFFF), so adding the upper
    # half of the 16-bit digits to the lower half preserves the sum mod 0xFFFF.
    bits = max(length * 8, 32)
    while bits > 32:
        half = ((bits // 16 + 1) // 2) * 16
        total = (total >> half) + (total & ((1 << half) - 1))
        bits = half + 1
    while total > 0xFFFF:
        total = (total >> 16) + (total & 0xFFFF)
    return total


def internet_checksum(data: _Buffer, initial: int = 0) -> int:
    """The Internet checksum of ``data``: the inverted one's-complement sum.

    ``initial`` is a partial sum to include (for example from
    :func:`pseudo_header_sum`).  Verifying a received header that carries its
    checksum gives 0.
    """
    return ~ones_complement_sum(data, initial) & 0xFFFF


def pseudo_header_sum(src: IPv4Address, dst: IPv4Address, protocol: int, length: int) -> int:
    """The uninverted sum of the IPv4 pseudo-header used by TCP and UDP
    (RFC 793 section 3.1, RFC 768), to pass as ``initial``."""
    total = (
        (int(src) >> 16)
        + (int(src) & 0xFFFF)
        + (int(dst) >> 16)
        + (int(dst) & 0xFFFF)
        + protocol
        + length
    )
    while total > 0xFFFF:
        total = (total >> 16) + (total & 0xFFFF)
    return total
