"""Router discovery and SLAAC without I/O (``net/slaac.py``): RFC 7217
identifiers, RFC 4862 lifetimes and the two-hour rule, duplicate address
detection's retries, and bounded tables under a flood of advertisements."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from looming.net import slaac
from looming.net.slaac import (
    IDGEN_RETRIES,
    SECOND_NS,
    AddressState,
    Assign,
    Autoconf,
    Remove,
    SolicitRouters,
    StartDad,
    stable_interface_id,
)
from looming.net.wire import ndp

SECRET = b"k" * 16
MAC = bytes.fromhex("020000000001")
ROUTER = IPv6Address("fe80::1")
PREFIX = IPv6Network("2001:db8:1::/64")


def advert(
    *options: ndp.NdOption, router_lifetime: int = 1800, hop_limit: int = 64
) -> ndp.RouterAdvertisement:
    return ndp.RouterAdvertisement(
        current_hop_limit=hop_limit, router_lifetime=router_lifetime, options=options
    )


def prefix_option(
    prefix: IPv6Network = PREFIX,
    valid: int = 86400,
    preferred: int = 14400,
    *,
    on_link: bool = True,
    autonomous: bool = True,
) -> ndp.PrefixInformation:
    return ndp.PrefixInformation(
        prefix.network_address, prefix.prefixlen, on_link, autonomous, valid, preferred
    )


def expected(counter: int, prefix: IPv6Network = PREFIX) -> IPv6Address:
    interface_id = stable_interface_id(prefix, MAC, b"", counter, SECRET)
    return IPv6Address(int(prefix.network_address) | interface_id)


def assigned(autoconf: Autoconf, now: int = 0) -> IPv6Address:
    actions = autoconf.on_advertisement(ROUTER, advert(prefix_option()), now)
    assert actions == [StartDad(expected(0))]
    assert autoconf.on_timer(now + SECOND_NS) == [Assign(expected(0))]
    return expected(0)


@given(
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=16, max_size=32),
    st.integers(0, 3),
)
def test_stable_identifiers_depend_on_every_input(
    network: bytes, secret: bytes, counter: int
) -> None:
    one = stable_interface_id(PREFIX, MAC, b"", counter, secret)
    assert one == stable_interface_id(PREFIX, MAC, b"", counter, secret)
    assert 0 <= one < 1 << 64
    others = {
        stable_interface_id(IPv6Network("2001:db8:2::/64"), MAC, b"", counter, secret),
        stable_interface_id(PREFIX, bytes(6), b"", counter, secret),
        stable_interface_id(PREFIX, MAC, network, counter, secret),
        stable_interface_id(PREFIX, MAC, b"", counter + 1, secret),
        stable_interface_id(PREFIX, MAC, b"", counter, secret + b"x"),
    }
    assert one not in others and len(others) == 5


def test_routers_are_solicited_three_times_four_seconds_apart_until_an_answer() -> None:
    autoconf = Autoconf(SECRET, MAC)
    assert autoconf.start(0, delay_ns=SECOND_NS // 2) == []
    assert autoconf.next_deadline_ns() == SECOND_NS // 2
    assert autoconf.on_timer(SECOND_NS // 2) == [SolicitRouters()]
    assert autoconf.next_deadline_ns() == SECOND_NS // 2 + 4 * SECOND_NS
    assert autoconf.on_timer(5 * SECOND_NS) == [SolicitRouters()]
    assert autoconf.on_timer(9 * SECOND_NS) == [SolicitRouters()]
    assert autoconf.next_deadline_ns() is None  # three and no more
    again = Autoconf(SECRET, MAC)
    again.start(0)
    assert again.on_timer(0) == [] and again.counters["tx_router_solicit"] == 1
    again.on_advertisement(ROUTER, advert(), SECOND_NS)
    assert again.next_deadline_ns() is None  # an answer stops the solicitations


def test_an_address_is_tentative_for_one_retransmit_timer_then_assigned() -> None:
    autoconf = Autoconf(SECRET, MAC)
    actions = autoconf.on_advertisement(ROUTER, advert(prefix_option()), 0)
    assert actions == [StartDad(expected(0))]
    assert autoconf.is_tentative(expected(0)) and autoconf.preferred() == []
    assert autoconf.on_timer(SECOND_NS - 1) == []
    assert autoconf.on_timer(SECOND_NS) == [Assign(expected(0))]
    assert autoconf.preferred() == [expected(0)]
    assert autoconf.default_router(SECOND_NS) == ROUTER
    assert autoconf.is_on_link(IPv6Address("2001:db8:1::99"), SECOND_NS)
    assert not autoconf.is_on_link(IPv6Address("2001:db8:2::99"), SECOND_NS)
    # The same advertisement again forms nothing new.
    assert autoconf.on_advertisement(ROUTER, advert(prefix_option()), 2 * SECOND_NS) == []


def test_a_duplicate_moves_to_the_next_dad_counter_and_gives_up_after_the_retries() -> None:
    autoconf = Autoconf(SECRET, MAC)
    autoconf.on_advertisement(ROUTER, advert(prefix_option()), 0)
    for counter in range(IDGEN_RETRIES):
        actions = autoconf.duplicate(expected(counter), SECOND_NS // 2)
        assert actions == [Remove(expected(counter)), StartDad(expected(counter + 1))]
    assert autoconf.duplicate(expected(IDGEN_RETRIES), SECOND_NS // 2) == [
        Remove(expected(IDGEN_RETRIES))
    ]
    assert autoconf.addresses == {}
    assert autoconf.counters["address_generation_failed"] == 1
    assert autoconf.duplicate(expected(0), SECOND_NS) == []  # not ours any more: nothing


def test_preferred_then_deprecated_then_removed() -> None:
    autoconf = Autoconf(SECRET, MAC)
    autoconf.on_advertisement(ROUTER, advert(prefix_option(valid=100, preferred=30)), 0)
    assert autoconf.on_timer(SECOND_NS) == [Assign(expected(0))]
    assert autoconf.next_deadline_ns() == 30 * SECOND_NS
    assert autoconf.on_timer(30 * SECOND_NS) == []
    assert autoconf.addresses[expected(0)].state is AddressState.DEPRECATED
    assert autoconf.deprecated() == [expected(0)] and autoconf.preferred() == []
    assert autoconf.next_deadline_ns() == 100 * SECOND_NS
    assert autoconf.on_timer(100 * SECOND_NS) == [Remove(expected(0))]
    assert autoconf.addresses == {}


def test_the_two_hour_rule_keeps_a_forged_short_valid_lifetime_out() -> None:
    autoconf = Autoconf(SECRET, MAC)
    address = assigned(autoconf)
    entry = autoconf.addresses[address]
    now = 10 * SECOND_NS
    autoconf.on_advertisement(ROUTER, advert(prefix_option(valid=60, preferred=0)), now)
    # Cut to two hours, not to 60 s; the preferred lifetime is taken as is.
    assert entry.valid_until_ns == now + 7200 * SECOND_NS
    autoconf.on_timer(now)
    assert entry.state is AddressState.DEPRECATED
    autoconf.on_advertisement(ROUTER, advert(prefix_option(valid=60, preferred=0)), now)
    assert entry.valid_until_ns == now + 7200 * SECOND_NS  # two hours left: unchanged
    autoconf.on_advertisement(ROUTER, advert(prefix_option(valid=3 * 3600, preferred=3600)), now)
    assert entry.valid_until_ns == now + 3 * 3600 * SECOND_NS  # longer: taken
    assert entry.state is AddressState.PREFERRED


def test_prefixes_that_form_no_address() -> None:
    autoconf = Autoconf(SECRET, MAC)
    options = (
        prefix_option(valid=10, preferred=20),  # preferred > valid: ignored
        prefix_option(IPv6Network("2001:db8:3::/48")),  # not /64: on-link only
        prefix_option(IPv6Network("fe80::/64")),  # link-local: ignored
        prefix_option(IPv6Network("2001:db8:4::/64"), autonomous=False),
        prefix_option(IPv6Network("2001:db8:5::/64"), valid=0, preferred=0),
    )
    assert autoconf.on_advertisement(ROUTER, advert(*options), 0) == []
    assert autoconf.addresses == {}
    assert set(autoconf.on_link) == {
        PREFIX,
        IPv6Network("2001:db8:3::/48"),
        IPv6Network("2001:db8:4::/64"),
    }
    assert autoconf.counters["prefix_lifetimes_inverted"] == 1
    assert autoconf.counters["prefix_length_not_64"] == 1
    assert autoconf.counters["prefix_ignored"] == 1


def test_router_lifetimes_mtu_hop_limit_and_dns_servers() -> None:
    autoconf = Autoconf(SECRET, MAC, link_mtu=1500)
    dns = ndp.RecursiveDnsServers(600, (IPv6Address("2001:db8::53"),))
    autoconf.on_advertisement(ROUTER, advert(ndp.Mtu(1400), dns, router_lifetime=30), 0)
    assert autoconf.mtu == 1400 and autoconf.hop_limit == 64
    assert autoconf.current_dns_servers(0) == [IPv6Address("2001:db8::53")]
    assert autoconf.current_dns_servers(600 * SECOND_NS) == []
    assert autoconf.default_router(29 * SECOND_NS) == ROUTER
    assert autoconf.default_router(30 * SECOND_NS) is None  # lifetime over
    autoconf.on_advertisement(ROUTER, advert(ndp.Mtu(9000), ndp.Mtu(1000)), 0)
    assert autoconf.mtu == 1400 and autoconf.counters["mtu_option_ignored"] == 2
    autoconf.on_advertisement(ROUTER, advert(router_lifetime=0, hop_limit=0), 0)
    assert autoconf.routers == {} and autoconf.hop_limit == 64  # 0: unspecified


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 0xFFFF),
            st.integers(0, 0xFFFF),
            st.integers(0, 3600),
            st.integers(0, 3600),
            st.integers(1, 300),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_a_flood_of_advertisements_stays_bounded(
    floods: list[tuple[int, int, int, int, int]],
) -> None:
    autoconf = Autoconf(SECRET, MAC)
    now = 0
    for router, prefix, valid, preferred, step in floods:
        now += step * SECOND_NS // 10
        option = prefix_option(IPv6Network((prefix << 64 | 0x20010DB8 << 96, 64)), valid, preferred)
        autoconf.on_advertisement(IPv6Address(0xFE80 << 112 | router), advert(option), now)
        autoconf.on_timer(now)
        assert len(autoconf.routers) <= slaac.MAX_ROUTERS
        assert len(autoconf.on_link) <= slaac.MAX_PREFIXES
        assert len(autoconf.addresses) <= slaac.MAX_ADDRESSES
        for entry in autoconf.addresses.values():
            assert entry.address in entry.prefix
            if entry.valid_until_ns is not None:
                assert entry.valid_until_ns > now  # the expired ones are gone


def test_a_leased_address_is_probed_kept_for_its_lease_and_never_regenerated() -> None:
    autoconf = Autoconf(SECRET, MAC)
    leased = IPv6Address("2001:db8:9::100")
    assert autoconf.lease(leased, 50, 100, 0) == [StartDad(leased)]
    assert autoconf.on_timer(SECOND_NS) == [Assign(leased)]
    assert autoconf.lease(leased, 50, 300, 10 * SECOND_NS) == []  # renewed: no two-hour rule
    assert autoconf.addresses[leased].valid_until_ns == 310 * SECOND_NS
    assert autoconf.release(leased) == [Remove(leased)] and autoconf.addresses == {}
    assert autoconf.release(leased) == []
    autoconf.lease(leased, 50, 100, 0)
    # A duplicate of a leased address is dropped, not replaced by another.
    assert autoconf.duplicate(leased, 0) == [Remove(leased)]
    assert autoconf.counters["dhcpv6_address_duplicate"] == 1


class AutoconfMachine(RuleBasedStateMachine):
    """Advertisements, duplicates and time in any order against what RFC
    4862 promises: an address is used only after its probe time, never
    after its valid lifetime, deprecated exactly when its preferred
    lifetime is over, never cut below two hours (or what was left) by an
    advertisement, and the tables stay bounded."""

    def __init__(self) -> None:
        super().__init__()
        self.autoconf = Autoconf(SECRET, MAC)
        self.now = 0
        self.tentative_since: dict[IPv6Address, int] = {}
        self.assigned: set[IPv6Address] = set()

    def _apply(self, actions: list[slaac.Action]) -> None:
        for action in actions:
            if isinstance(action, StartDad):
                self.tentative_since[action.address] = self.now
            elif isinstance(action, Assign):
                since = self.tentative_since[action.address]
                assert self.now - since >= SECOND_NS  # probed for a RetransTimer first
                self.assigned.add(action.address)
            elif isinstance(action, Remove):
                self.assigned.discard(action.address)
                self.tentative_since.pop(action.address, None)

    @rule(
        prefix=st.one_of(st.integers(0, 2), st.integers(3, 40)),
        valid=st.sampled_from([0, 30, 3600, 7200, 20000, slaac.INFINITY]),
        preferred=st.sampled_from([0, 10, 1800, 20000, slaac.INFINITY]),
        router=st.integers(1, 12),
        lifetime=st.sampled_from([0, 60, 1800]),
    )
    def advertise(
        self, prefix: int, valid: int, preferred: int, router: int, lifetime: int
    ) -> None:
        network = IPv6Network((0x20010DB8 << 96 | prefix << 64, 64))
        before = {
            a: entry.valid_until_ns
            for a, entry in self.autoconf.addresses.items()
            if entry.prefix == network and entry.state is not AddressState.TENTATIVE
        }
        option = prefix_option(network, valid, preferred)
        router_address = IPv6Address(0xFE80 << 112 | router)
        self._apply(
            self.autoconf.on_advertisement(
                router_address, advert(option, router_lifetime=lifetime), self.now
            )
        )
        if preferred > valid:
            return
        two_hours = self.now + slaac.TWO_HOURS_S * SECOND_NS
        for address, old in before.items():
            new = self.autoconf.addresses[address].valid_until_ns
            if old is None:  # infinite: only a longer (infinite) or 2 h cut
                assert new is None or new >= two_hours
            else:
                assert new is None or new >= min(old, two_hours)

    @rule(pick=st.integers(0, 1000))
    def duplicate(self, pick: int) -> None:
        tentative = [a for a in self.autoconf.addresses if self.autoconf.is_tentative(a)]
        if tentative:
            self._apply(self.autoconf.duplicate(tentative[pick % len(tentative)], self.now))

    @rule(seconds=st.sampled_from([0.5, 1, 5, 29, 600, 7200]))
    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND_NS)
        self._apply(self.autoconf.on_timer(self.now))

    @invariant()
    def promises_hold(self) -> None:
        table = self.autoconf.addresses
        assert len(table) <= slaac.MAX_ADDRESSES
        assert len(self.autoconf.routers) <= slaac.MAX_ROUTERS
        assert len(self.autoconf.on_link) <= slaac.MAX_PREFIXES
        assert self.assigned == {
            a for a, e in table.items() if e.state is not AddressState.TENTATIVE
        }
        for address, entry in table.items():
            assert address in entry.prefix and entry.dad_counter <= IDGEN_RETRIES
            if entry.valid_until_ns is not None:
                assert entry.valid_until_ns > self.now or entry.state is AddressState.TENTATIVE
            if entry.state is AddressState.DEPRECATED:
                assert entry.preferred_until_ns is not None
                assert entry.preferred_until_ns <= self.now


AutoconfMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_autoconf_model = AutoconfMachine.TestCase


def test_only_the_iana_reserved_identifiers_are_skipped() -> None:
    """RFC 5453's reserved interface identifiers are skipped to the next
    DAD counter, and only those: one in 128 identifiers lies above the
    subnet anycast block, and such an identifier is formed at counter 0."""
    reserved = (0, 0x0200_5EFF_FE00_0000, 0x0200_5EFF_FEFF_FFFF)
    reserved += (0xFDFF_FFFF_FFFF_FF80, 0xFDFF_FFFF_FFFF_FFFF)
    usable = (1, 0x0200_5EFF_FDFF_FFFF, 0x0200_5EFF_FF00_0000, 0xFDFF_FFFF_FFFF_FF7F)
    usable += (0xFE00_0000_0000_0000, (1 << 64) - 1)
    assert all(slaac._reserved(i) for i in reserved)
    assert not any(slaac._reserved(i) for i in usable)
    secret, mac = bytes(range(16)), bytes.fromhex("0234cf4d8d34")
    prefix = IPv6Network("fd77:0:0:1::/64")
    interface_id = stable_interface_id(prefix, mac, b"", 0, secret)
    assert interface_id >> 56 == 0xFF  # above the anycast block
    autoconf = Autoconf(secret, mac)
    actions = autoconf.on_advertisement(ROUTER, advert(prefix_option(prefix)), 0)
    first = IPv6Address(int(prefix.network_address) | interface_id)
    assert actions == [StartDad(first)] and autoconf.addresses[first].dad_counter == 0
