"""The checksum's split sum (segments of 513 bytes to 4 KB: every full
segment a pass receives or sends) against the word-by-word definition."""

from __future__ import annotations

import random

from looming.net.wire.checksum import internet_checksum, ones_complement_sum


def word_by_word_sum(data: bytes, initial: int) -> int:
    """RFC 1071's sum, one 16-bit word at a time, end-around carry."""
    if len(data) % 2:
        data += b"\x00"
    total = initial
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
    while total > 0xFFFF:
        total = (total >> 16) + (total & 0xFFFF)
    return total


def test_every_length_around_a_segment_sums_as_word_by_word() -> None:
    generator = random.Random(1071)
    for length in range(0, 1601):
        data = generator.randbytes(length)
        initial = generator.choice((0, 1, 0xFFFF, generator.randrange(0x40000)))
        expected = word_by_word_sum(data, initial)
        # (A non-zero sum is never 0 in one's complement: 0xFFFF instead.)
        assert ones_complement_sum(data, initial) == expected, length
        assert internet_checksum(data, initial) == ~expected & 0xFFFF, length


def test_buffers_of_every_kind_and_extreme_words_sum_alike() -> None:
    generator = random.Random(9293)
    lengths = [*range(500, 1601, 7), 2047, 2048, 2049, 3000, 4095, 4096]
    for length in lengths:
        for data in (b"\xff" * length, bytes(length), generator.randbytes(length)):
            expected = word_by_word_sum(data, 0xFFFF)
            for buffer in (data, bytearray(data), memoryview(data)):
                assert ones_complement_sum(buffer, 0xFFFF) == expected, length
            # A view into a larger buffer, as a segment's payload is.
            framed = memoryview(b"\x01\x02" + data + b"\x03")[2 : 2 + length]
            assert ones_complement_sum(framed, 0xFFFF) == expected, length
