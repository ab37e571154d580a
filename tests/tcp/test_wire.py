"""The TCP wire format: round trips, options, checksums, hostile bytes."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.errors import Malformed
from looming.net.wire import tcp
from looming.net.wire.tcp import TcpHeader

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def headers(draw: st.DrawFn) -> TcpHeader:
    timestamps = draw(st.none() | st.tuples(u32, u32))
    max_blocks = 3 if timestamps is not None else 4
    return TcpHeader(
        src_port=draw(u16),
        dst_port=draw(u16),
        seq=draw(u32),
        ack=draw(u32),
        flags=draw(st.integers(0, 0xFF)),
        window=draw(u16),
        urgent=draw(u16),
        mss=draw(st.none() | u16),
        window_scale=draw(st.none() | st.integers(0, 255)),
        sack_permitted=draw(st.booleans()),
        sack_blocks=tuple(draw(st.lists(st.tuples(u32, u32), max_size=max_blocks))),
        timestamps=timestamps,
    )


def _fits(header: TcpHeader) -> bool:
    try:
        tcp.emit(header)
    except ValueError:
        return False
    return True


@given(headers(), st.binary(max_size=64))
def test_parse_inverts_emit(header: TcpHeader, payload: bytes) -> None:
    if not _fits(header):
        # Only option combinations beyond 40 bytes are refused; check that.
        assert header.sack_blocks and (header.mss is not None or header.window_scale is not None)
        return
    parsed, rest = tcp.parse(tcp.emit(header, payload))
    assert parsed == header
    assert bytes(rest) == payload


@given(st.binary(max_size=80))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    try:
        _header, payload = tcp.parse(data)
    except Malformed:
        return
    assert len(payload) <= len(data) - 20


@given(headers(), st.binary(max_size=40), u32, u32)
def test_checksum_verifies_and_detects_a_flipped_bit(
    header: TcpHeader, payload: bytes, a: int, b: int
) -> None:
    if not _fits(header):
        return
    src, dst = IPv4Address(a), IPv4Address(b)
    segment = tcp.emit(header, payload, src=src, dst=dst)
    assert tcp.checksum_ok(segment, src, dst)
    damaged = bytearray(segment)
    damaged[4] ^= 0x10  # a bit of the sequence number
    assert not tcp.checksum_ok(damaged, src, dst)


def test_known_segment_from_linux() -> None:
    # A SYN as Linux sends it: MSS 1460, SACK-permitted, timestamps, wscale 7.
    raw = bytes.fromhex(
        "c35000500000000100000000a002faf000000000020405b40402080a000003e80000000001030307"
    )
    header, payload = tcp.parse(raw)
    assert header.syn and not header.has_ack
    assert header.mss == 1460
    assert header.sack_permitted
    assert header.timestamps == (1000, 0)
    assert header.window_scale == 7
    assert header.window == 0xFAF0
    assert bytes(payload) == b""
    assert tcp.emit(header) == raw


def test_unknown_options_are_skipped() -> None:
    # kind 30 (MPTCP) with 6 bytes, then MSS.
    options = bytes((30, 6, 1, 2, 3, 4, 2, 4, 0x05, 0xB4))
    options += bytes(12 - len(options))
    fixed = bytes.fromhex("0001000200000000000000008002ffff00000000")
    header, _ = tcp.parse(fixed + options)
    assert header.mss == 1460


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (bytes((2, 3, 0, 0)), "MSS with length 3"),
        (bytes((3, 4, 7, 0)), "window scale with length 4"),
        (bytes((8, 2, 0, 0)), "timestamps with length 2"),
        (bytes((5, 5, 0, 0)), "SACK with length 5"),
        (bytes((30, 9, 0, 0)), "option running past the header"),
        (bytes((1, 1, 1, 30)), "option with no length byte"),
        (bytes((30, 1, 0, 0)), "option with length 1"),
    ],
)
def test_bad_options_are_malformed(options: bytes, reason: str) -> None:
    fixed = bytes.fromhex("0001000200000000000000006002000000000000")
    with pytest.raises(Malformed):
        tcp.parse(fixed + options)


def test_data_offset_beyond_segment_is_malformed() -> None:
    fixed = bytearray(20)
    fixed[12] = 0xF0
    with pytest.raises(Malformed):
        tcp.parse(bytes(fixed))
    fixed[12] = 0x40
    with pytest.raises(Malformed):
        tcp.parse(bytes(fixed))


def test_too_many_sack_blocks_refused() -> None:
    header = TcpHeader(1, 2, 0, 0, 0x10, 0, sack_blocks=((1, 2),) * 4, timestamps=(1, 2))
    with pytest.raises(ValueError):
        tcp.emit(header)
