"""A flood of forged Router Advertisements does not lock out a real router.

The router, prefix and address tables are bounded (8, 16, 16); full, they
refused every newcomer, so after a 5,000-RA flood with attacker prefixes
(audit: 16 SLAAC addresses assigned) a real router arriving afterwards got
neither its prefix nor a place as router until the forged lifetimes ran
out (up to days). Now an entry not heard from for slaac.STALE_ENTRY_NS
gives way to a newcomer, the least recently heard first, and no faster:
a sustained flood still cannot churn the tables more than once a minute.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.net import slaac
from looming.net.slaac import Autoconf, Remove, StartDad
from looming.net.wire import ndp
from tests.net.test_slaac import MAC, SECRET, advert, prefix_option

S = slaac.SECOND_NS
REAL_ROUTER = IPv6Address("fe80::1")
REAL_PREFIX = IPv6Network("2001:db8:1::/64")


def _flood(autoconf: Autoconf, count: int, start: int, spacing: int) -> int:
    """``count`` forged RAs, each from a new router with a new prefix,
    ``spacing`` ns apart from ``start``; the time of the last."""
    now = start
    for n in range(count):
        now = start + n * spacing
        prefix = IPv6Network((0x20010DB8F << 92 | n << 64, 64))
        router = IPv6Address(0xFE80 << 112 | (0x1000 + n))
        opt = prefix_option(prefix, valid=2_592_000, preferred=604_800)
        autoconf.on_advertisement(router, advert(opt, router_lifetime=9000), now)
    return now


@settings(max_examples=30, deadline=None)
@given(
    count=st.integers(slaac.MAX_ADDRESSES, 400),
    spacing_ms=st.integers(0, 200),
    quiet_s=st.integers(60, 3600),
)
def test_a_real_router_after_a_flood_is_used(count: int, spacing_ms: int, quiet_s: int) -> None:
    autoconf = Autoconf(SECRET, MAC)
    last = _flood(autoconf, count, 0, spacing_ms * 1_000_000)
    assert len(autoconf.addresses) == slaac.MAX_ADDRESSES
    now = last + quiet_s * S
    actions = autoconf.on_advertisement(REAL_ROUTER, advert(prefix_option(REAL_PREFIX)), now)
    started = [a.address for a in actions if isinstance(a, StartDad)]
    assert len(started) == 1 and started[0] in REAL_PREFIX
    assert sum(isinstance(a, Remove) for a in actions) == 1  # one forged address gave way
    assert REAL_ROUTER in autoconf.alive_routers(now)
    assert autoconf.is_on_link(REAL_PREFIX.network_address + 5, now)
    assert len(autoconf.addresses) == slaac.MAX_ADDRESSES
    assert len(autoconf.routers) <= slaac.MAX_ROUTERS
    assert len(autoconf.on_link) <= slaac.MAX_PREFIXES


def test_a_sustained_flood_churns_nothing_within_a_minute() -> None:
    """Entries heard lately never give way: a flood of 5,000 RAs in a
    minute evicts nothing, and every later newcomer is counted refused."""
    autoconf = Autoconf(SECRET, MAC)
    _flood(autoconf, 5000, 0, 10_000_000)  # 50 s
    counters = autoconf.counters
    assert counters["address_evicted"] == counters["router_evicted"] == 0
    assert counters["prefix_evicted"] == 0
    assert counters["address_table_full"] == 5000 - slaac.MAX_ADDRESSES
    # Its bookkeeping stays bounded too.
    assert len(autoconf._prefix_heard) <= slaac.MAX_PREFIXES + slaac.MAX_ADDRESSES + 1


def test_dns_servers_of_a_flood_give_way_to_a_later_router() -> None:
    """The same for RDNSS (8 servers): the real router's server is used."""
    autoconf = Autoconf(SECRET, MAC)
    for n in range(50):
        forged = ndp.RecursiveDnsServers(
            lifetime=9000, servers=(IPv6Address(f"2001:db8:f::{n + 1:x}"),)
        )
        autoconf.on_advertisement(IPv6Address(f"fe80::f:{n + 1:x}"), advert(forged), 0)
    assert len(autoconf.dns_servers) == slaac.MAX_DNS_SERVERS
    real = IPv6Address("2001:db8:1::53")
    rdnss = ndp.RecursiveDnsServers(lifetime=1800, servers=(real,))
    autoconf.on_advertisement(REAL_ROUTER, advert(rdnss), 10 * S)
    assert real not in autoconf.dns_servers  # heard lately: no churn
    autoconf.on_advertisement(REAL_ROUTER, advert(rdnss), 120 * S)
    assert real in autoconf.current_dns_servers(120 * S)
    assert len(autoconf.dns_servers) == slaac.MAX_DNS_SERVERS
