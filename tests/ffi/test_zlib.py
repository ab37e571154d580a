"""zlib through every backend, checked against Python's own zlib module."""

from __future__ import annotations

import zlib as stdlib_zlib
from typing import Any

from looming.ffi import LinkedLibrary, Memory, Ref
from looming.ffi.libs.zlib import Z_FINISH, Z_NO_FLUSH, ZReturn, z_stream

DATA = bytes(range(256)) * 40 + b"looming " * 500


def test_crc32_and_adler32_match_the_stdlib(z: LinkedLibrary) -> None:
    assert z.crc32(0, DATA, len(DATA)) == stdlib_zlib.crc32(DATA)
    assert z.adler32(1, DATA, len(DATA)) == stdlib_zlib.adler32(DATA)
    # Chained: the running value is the first argument.
    half = len(DATA) // 2
    running = z.crc32(0, DATA[:half], half)
    assert z.crc32(running, DATA[half:], len(DATA) - half) == stdlib_zlib.crc32(DATA)


def test_buffers_may_be_bytearray_or_memoryview(z: LinkedLibrary) -> None:
    expected = stdlib_zlib.crc32(DATA)
    assert z.crc32(0, bytearray(DATA), len(DATA)) == expected
    assert z.crc32(0, memoryview(DATA), len(DATA)) == expected
    assert z.crc32(0, memoryview(bytearray(DATA)), len(DATA)) == expected
    assert z.crc32(0, None, 0) == 0  # zlib: a NULL buffer gives the initial value


def test_compress2_output_is_read_by_the_stdlib_and_back(z: LinkedLibrary) -> None:
    bound = z.compressBound(len(DATA))
    dest = bytearray(bound)
    dest_len = Ref(bound)
    assert z.compress2(dest, dest_len, DATA, len(DATA), 9) == ZReturn.Z_OK
    compressed = bytes(dest[: dest_len.value])
    assert stdlib_zlib.decompress(compressed) == DATA

    out = bytearray(len(DATA))
    out_len = Ref(len(out))
    theirs = stdlib_zlib.compress(DATA, 6)
    assert z.uncompress(out, out_len, theirs, len(theirs)) == ZReturn.Z_OK
    assert out_len.value == len(DATA)
    assert bytes(out) == DATA


def test_compress_at_the_default_level_matches_the_stdlib(z: LinkedLibrary) -> None:
    dest = bytearray(z.compressBound(len(DATA)))
    dest_len = Ref(len(dest))
    assert z.compress(dest, dest_len, DATA, len(DATA)) == ZReturn.Z_OK
    # Same library algorithm, same level: byte for byte what Python's zlib makes.
    assert bytes(dest[: dest_len.value]) == stdlib_zlib.compress(DATA)
    too_small = Ref(10)
    assert z.compress(bytearray(10), too_small, DATA, len(DATA)) == ZReturn.Z_BUF_ERROR


def test_uncompress_of_garbage_is_a_data_error(z: LinkedLibrary) -> None:
    out = bytearray(100)
    result = z.uncompress(out, Ref(100), b"not zlib at all", 15)
    assert result == ZReturn.Z_DATA_ERROR
    assert isinstance(result, ZReturn.python)
    assert result.name == "Z_DATA_ERROR"


def test_z_stream_deflate_and_inflate_in_library_memory(z: LinkedLibrary) -> None:
    version = z.zlibVersion()
    assert version == stdlib_zlib.ZLIB_RUNTIME_VERSION.encode()
    size = z.sizeof(z_stream)
    assert size == 112

    stream: Memory = z.alloc(z_stream)
    source = z.alloc_bytes(DATA)
    chunk = 1000
    out = z.alloc_bytes(bytes(chunk))
    assert z.deflateInit_(stream, 6, version, size) == ZReturn.Z_OK
    stream.set(next_in=source, avail_in=len(DATA))
    pieces: list[bytes] = []
    while True:
        stream.set(next_out=out, avail_out=chunk)
        result = z.deflate(stream, Z_FINISH)
        state: dict[str, Any] = stream.get()
        pieces.append(out.read(0, chunk - state["avail_out"]))
        if result == ZReturn.Z_STREAM_END:
            break
        assert result == ZReturn.Z_OK
    assert state["total_in"] == len(DATA)
    assert state["adler"] == stdlib_zlib.adler32(DATA)
    assert z.deflateEnd(stream) == ZReturn.Z_OK
    compressed = b"".join(pieces)
    assert stdlib_zlib.decompress(compressed) == DATA

    # And back through inflate, one call into a big enough buffer.
    packed = z.alloc_bytes(compressed)
    plain = z.alloc_bytes(bytes(len(DATA)))
    stream = z.alloc(z_stream)
    assert z.inflateInit_(stream, version, size) == ZReturn.Z_OK
    stream.set(next_in=packed, avail_in=len(compressed), next_out=plain, avail_out=len(DATA))
    assert z.inflate(stream, Z_NO_FLUSH) == ZReturn.Z_STREAM_END
    assert plain.read() == DATA
    assert z.inflateEnd(stream) == ZReturn.Z_OK


def test_a_failing_stream_reports_its_message(z: LinkedLibrary) -> None:
    version = z.zlibVersion()
    stream = z.alloc(z_stream)
    junk = z.alloc_bytes(b"\x00\x01garbage!")
    out = z.alloc_bytes(bytes(64))
    assert z.inflateInit_(stream, version, z.sizeof(z_stream)) == ZReturn.Z_OK
    stream.set(next_in=junk, avail_in=10, next_out=out, avail_out=64)
    assert z.inflate(stream, Z_NO_FLUSH) == ZReturn.Z_DATA_ERROR
    message_address = stream.get()["msg"]
    assert z.string_at(message_address) == b"incorrect header check"
    assert z.inflateEnd(stream) == ZReturn.Z_OK
