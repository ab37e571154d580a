"""The address memos of net/wire: a peer cycling through addresses costs
time, never memory, and every parse returns the address it was given."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import given
from hypothesis import strategies as st

from looming.devices.net import MacAddress
from looming.net.wire import _cache
from looming.net.wire import ipv6 as wire_ipv6


def test_cycling_sources_never_grow_the_memos_past_their_bound() -> None:
    bound = _cache._MAX_ENTRIES
    for n in range(bound + 500):
        raw4 = n.to_bytes(4, "big")
        assert _cache.ipv4_address(raw4) == IPv4Address(raw4)
        raw6 = n.to_bytes(6, "big")
        assert _cache.mac_address(raw6) == MacAddress(raw6)
        raw16 = n.to_bytes(16, "big")
        assert wire_ipv6.ipv6_address(raw16) == IPv6Address(raw16)
        assert len(_cache._ipv4) <= bound
        assert len(_cache._mac) <= bound
        assert len(wire_ipv6._ipv6) <= wire_ipv6._ipv6.bound


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=6, max_size=6))
def test_a_hit_is_the_same_address_object(raw4: bytes, raw6: bytes) -> None:
    first = _cache.ipv4_address(raw4)
    assert first == IPv4Address(raw4)
    assert _cache.ipv4_address(bytes(raw4)) is first
    mac = _cache.mac_address(raw6)
    assert mac == MacAddress(raw6)
    assert _cache.mac_address(bytes(raw6)) is mac
