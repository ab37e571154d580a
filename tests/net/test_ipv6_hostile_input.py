"""Hostile input to IPv6 (and the reassembly it shares with IPv4): what a
peer sends may cost bounded time and memory and is counted, never lets it
take over what others rely on (issue #16)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from looming.net.reassembly import Reassembler

S = 1_000_000_000


def test_an_empty_middle_fragment_drops_its_datagram() -> None:
    """Linux discards a datagram one of whose pieces is empty: such a
    piece has no meaning but to probe how a reassembler differs."""
    for source in (IPv4Address("10.0.0.1"), IPv6Address("fe80::1")):
        reassembler = Reassembler()
        key = (source, source, 17, 5)
        assert reassembler.add_piece(key, 0, True, bytes(24), 0, 0xFFFF) is None
        assert reassembler.add_piece(key, 24, True, b"", 0, 0xFFFF) is None
        assert key not in reassembler
        assert reassembler.add_piece(key, 24, False, bytes(16), 0, 0xFFFF) is None
        assert reassembler.counters["bad_fragment"] == 1
        assert "reassembled" not in reassembler.counters
