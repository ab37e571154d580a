"""Hostile input to IPv6 (and the reassembly it shares with IPv4): what a
peer sends may cost bounded time and memory and is counted, never lets it
take over what others rely on (issue #16)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from looming.net.ipv6 import Ipv6Layer
from looming.net.reassembly import Reassembler
from looming.net.stack import DirectStack
from tests.net.test_neighbours import fragment_frame, run

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


class _CountingReassembler(Reassembler):
    """Counts the membership tests made of it: the work per fragment."""

    lookups = 0

    def __contains__(self, key: object) -> bool:
        self.lookups += 1
        return super().__contains__(key)


def test_a_first_fragment_storm_costs_constant_work_per_fragment() -> None:
    """Each first fragment of a new packet is kept (for the Time Exceeded
    its timeout sends) bounded by the reassembler; once full, keeping one
    must not look at every key kept (a storm of 60,000 such fragments
    stalled an IPv6 connection for 0.7 s)."""

    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        reassembler = _CountingReassembler()
        b6.reassembler = reassembler
        count = 2_000
        for i in range(count):
            source = IPv6Address(f"fe80::f:{i:x}")
            b.ethernet.input(fragment_frame(b, source, 0, True, bytes(64)))
        assert len(reassembler) == reassembler.max_datagrams
        assert reassembler.counters["evicted"] == count - reassembler.max_datagrams
        assert reassembler.lookups <= 3 * count, reassembler.lookups
        kept = b6._first_fragments
        assert len(kept) <= 2 * reassembler.max_datagrams + 1
        # The newest are still there for their Time Exceeded.
        source = IPv6Address(f"fe80::f:{count - 1:x}")
        newest = (source.packed, b6.link_local.packed, 17, 77)
        assert newest in kept

    run(body)
