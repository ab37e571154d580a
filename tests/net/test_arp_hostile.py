"""ARP under a request flood from new sources (issue #16): the neighbours
in use stay bound, and the flood costs a few byte comparisons a frame."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

from looming.devices.net import MacAddress
from looming.net.arp import ArpCache, answer
from looming.net.wire import arp as wire
from looming.net.wire.arp import ArpOperation, ArpPacket
from tests.net.test_memory import A, B, pair, settle

OURS = IPv4Address("10.0.0.2")
MAC = MacAddress("02:00:00:00:00:02")


def request(i: int, target: IPv4Address = OURS) -> ArpPacket:
    mac = MacAddress(b"\x02\x99" + i.to_bytes(4, "big"))
    sender = IPv4Address(int(IPv4Address("10.1.0.0")) + i)
    return ArpPacket(ArpOperation.REQUEST, mac, sender, MacAddress(bytes(6)), target)


def test_requests_from_new_sources_never_evict_neighbours_in_use() -> None:
    """RFC 826 learns whoever asks for us; a flood of askers may replace
    only bindings learned that way and not used since, at most 128."""
    cache = ArpCache(max_entries=64, max_unsolicited=16)
    used = [IPv4Address(f"10.0.9.{i}") for i in range(1, 41)]
    for address in used:
        cache.learn(address, MAC, 0)
    for i in range(5_000):
        assert answer(cache, request(i), MAC, frozenset({OURS}), 1) is not None
    assert all(cache.lookup(address, 2) == MAC for address in used)
    assert len(cache) == 40 + 16
    # An asker we then send to is in use: no longer replaced.
    talker = request(4_999).sender_ip
    assert cache.lookup(talker, 3) is not None
    for i in range(10_000, 10_100):
        answer(cache, request(i), MAC, frozenset({OURS}), 4)
    assert cache.lookup(talker, 5) is not None
    # A full cache of neighbours in use learns no asker at all.
    full = ArpCache(max_entries=8)
    for i in range(8):
        full.learn(IPv4Address(f"10.0.8.{i + 1}"), MAC, 0)
    answer(full, request(1), MAC, frozenset({OURS}), 1)
    assert len(full) == 8 and request(1).sender_ip not in full
    assert full.counters["unsolicited_not_learned"] == 1


def test_requests_from_unknown_senders_beyond_the_burst_are_dropped_unparsed() -> None:
    async def main() -> None:
        _, a, b = await pair()
        try:
            await a.ping(B.ip, timeout=1)  # b knows a
            bucket = b.arp._request_bucket
            frames = [
                b"\xff" * 6 + bytes(6) + b"\x08\x06" + wire.emit(request(i, B.ip))
                for i in range(bucket.burst + 400)
            ]
            for frame in frames:
                b.ethernet.input(frame)
            counters = b.counters()
            assert 300 <= counters["arp.request_policed"] <= 400
            # A neighbour b knows is still answered in the flood.
            known = ArpPacket(
                ArpOperation.REQUEST, a.ethernet.mac, A.ip, MacAddress(bytes(6)), B.ip
            )
            replies = counters["arp.tx_reply"]
            b.ethernet.input(b"\xff" * 6 + bytes(6) + b"\x08\x06" + wire.emit(known))
            assert b.counters()["arp.tx_reply"] == replies + 1
            await settle()
        finally:
            await a.disconnect()
            await b.disconnect()

    asyncio.run(main())
