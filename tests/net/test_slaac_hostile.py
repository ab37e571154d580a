"""Router discovery, SLAAC and duplicate address detection against a
hostile neighbour on the in-memory switch: forged advertisements from
off-link are dropped, floods stay bounded, a claim on a tentative address
makes looming pick another, and the tentative address is never used."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Interface, IPv6Address, IPv6Interface, IPv6Network

from looming.devices.net import MacAddress
from looming.net import slaac
from looming.net.netif.memory import MemoryPort, MemorySwitch
from looming.net.slaac import stable_interface_id
from looming.net.stack import DirectStack
from looming.net.wire import icmpv6, mld, ndp
from looming.net.wire import ipv6 as wire
from looming.net.wire.icmpv6 import Icmpv6Header, Icmpv6Type
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime

PREFIX = IPv6Network("2001:db8:7::/64")
SECRET = bytes(16)
ATTACKER_MAC = MacAddress(bytes.fromhex("02aa00000001"))
ROUTER = IPv6Address("fe80::aa")


def frame(destination_mac: bytes, packet: bytes) -> bytes:
    return bytes(destination_mac) + bytes(ATTACKER_MAC) + b"\x86\xdd" + packet


def nd_packet(
    message: ndp.NdMessage, source: IPv6Address, destination: IPv6Address, hop_limit: int = 255
) -> bytes:
    header = wire.Ipv6Header(source, destination, wire.NextHeader.ICMPV6, hop_limit)
    return wire.emit(header, ndp.emit(message, source, destination))


def advert(prefix: IPv6Network = PREFIX, lifetime: int = 1800) -> ndp.RouterAdvertisement:
    option = ndp.PrefixInformation(prefix.network_address, 64, True, True, 3600, 1800)
    return ndp.RouterAdvertisement(
        router_lifetime=lifetime, options=(option, ndp.SourceLinkLayerAddress(ATTACKER_MAC))
    )


def first_address(stack: DirectStack, counter: int) -> IPv6Address:
    interface_id = stable_interface_id(PREFIX, bytes(stack.ethernet.mac), b"", counter, SECRET)
    return IPv6Address(int(PREFIX.network_address) | interface_id)


def run(body: Callable[[DirectStack, MemoryPort, list[bytes]], Awaitable[None]]) -> None:
    async def main() -> None:
        switch = MemorySwitch()
        port = switch.port()
        attacker = switch.port(ATTACKER_MAC)
        heard: list[bytes] = []
        listening = asyncio.ensure_future(attacker.listen(heard.append))
        stack = await _connect(port)
        assert stack.ipv6 is not None and stack.ipv6.autoconf is not None
        stack.ipv6.autoconf.retransmit_ns = 100_000_000  # a quicker DAD for the test
        try:
            await body(stack, attacker, heard)
        finally:
            await stack.disconnect()
            await attacker.disconnect()
            await listening

    asyncio.run(main())


async def _connect(port: MemoryPort) -> DirectStack:
    return await DirectStack.connect(
        port,
        time=UnixTime(),
        clock=UnixClock(),
        random=UnixRandom(7),
        address=IPv4Interface("10.9.0.2/24"),
        ipv6=True,
        slaac_secret=SECRET,
    )


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


def test_advertisements_from_off_link_are_dropped() -> None:
    async def body(stack: DirectStack, attacker: MemoryPort, heard: list[bytes]) -> None:
        assert stack.ipv6 is not None and stack.ipv6.autoconf is not None
        all_nodes = wire.multicast_mac(wire.ALL_NODES)
        # Hop limit 254: routed from elsewhere (RFC 4861 6.1.2).
        await attacker.write(frame(all_nodes, nd_packet(advert(), ROUTER, wire.ALL_NODES, 254)))
        # A global source: not a router on this link.
        forged = IPv6Address("2001:db8::1")
        await attacker.write(frame(all_nodes, nd_packet(advert(), forged, wire.ALL_NODES)))
        await settle(0.1)
        autoconf = stack.ipv6.autoconf
        assert autoconf.routers == {} and autoconf.addresses == {} and autoconf.on_link == {}
        assert stack.counters()["ipv6.icmpv6_malformed"] == 2
        assert [a for a in stack.ipv6.addresses() if not a.is_link_local] == []

    run(body)


def test_a_flood_of_routers_and_prefixes_is_bounded() -> None:
    async def body(stack: DirectStack, attacker: MemoryPort, heard: list[bytes]) -> None:
        assert stack.ipv6 is not None and stack.ipv6.autoconf is not None
        all_nodes = wire.multicast_mac(wire.ALL_NODES)
        for n in range(60):
            prefix = IPv6Network((0x20010DB8 << 96 | (0x100 + n) << 64, 64))
            router = IPv6Address(0xFE80 << 112 | (0x1000 + n))
            await attacker.write(
                frame(all_nodes, nd_packet(advert(prefix), router, wire.ALL_NODES))
            )
        await settle(0.5)
        autoconf = stack.ipv6.autoconf
        assert len(autoconf.routers) == slaac.MAX_ROUTERS
        assert len(autoconf.on_link) == slaac.MAX_PREFIXES
        assert len(autoconf.addresses) == slaac.MAX_ADDRESSES
        counters = stack.counters()
        assert counters["slaac.router_table_full"] == 60 - slaac.MAX_ROUTERS
        assert counters["slaac.address_table_full"] == 60 - slaac.MAX_ADDRESSES
        assert len(stack.ipv6.addresses()) == 1 + slaac.MAX_ADDRESSES

    run(body)


def test_a_claim_on_the_tentative_address_moves_looming_to_the_next() -> None:
    async def body(stack: DirectStack, attacker: MemoryPort, heard: list[bytes]) -> None:
        assert stack.ipv6 is not None and stack.ipv6.autoconf is not None
        first, second = first_address(stack, 0), first_address(stack, 1)
        all_nodes = wire.multicast_mac(wire.ALL_NODES)
        heard.clear()
        await attacker.write(frame(all_nodes, nd_packet(advert(), ROUTER, wire.ALL_NODES)))
        await settle()
        assert stack.ipv6.autoconf.is_tentative(first)
        # While tentative: an NS for it from a real address is not answered,
        # and an echo request to it is not accepted (RFC 4862 5.4).
        attacker_ll = wire.link_local_from_mac(ATTACKER_MAC)
        solicit = ndp.NeighborSolicitation(first, (ndp.SourceLinkLayerAddress(ATTACKER_MAC),))
        group = wire.solicited_node(first)
        await attacker.write(
            frame(wire.multicast_mac(group), nd_packet(solicit, attacker_ll, group))
        )
        echo = icmpv6.emit(
            Icmpv6Header.echo(Icmpv6Type.ECHO_REQUEST, 1, 1), b"x", attacker_ll, first
        )
        ping = wire.emit(wire.Ipv6Header(attacker_ll, first, wire.NextHeader.ICMPV6), echo)
        await attacker.write(frame(stack.ethernet.mac, ping))
        # Then another node answers the probe: the address is taken.
        claim = ndp.NeighborAdvertisement(
            first, override=True, options=(ndp.TargetLinkLayerAddress(ATTACKER_MAC),)
        )
        await attacker.write(frame(all_nodes, nd_packet(claim, attacker_ll, wire.ALL_NODES)))
        address = await stack.ipv6.wait_for_address(3)
        assert address == second and first not in stack.ipv6.addresses()
        counters = stack.counters()
        assert counters["ipv6.solicit_for_tentative"] == 1
        assert counters["ipv6.not_for_us"] >= 1
        assert "ipv6.rx_echo_request" not in counters
        assert counters["slaac.dad_duplicate"] == 1
        # What looming sent: probes from :: for both addresses, MLDv2 reports
        # joining both groups, and never an advertisement for the first.
        sources = {wire.parse(f[14:])[0].source for f in heard if f[12:14] == b"\x86\xdd"}
        assert first not in sources
        probes = [
            wire.parse(f[14:])[0]
            for f in heard
            if f[12:14] == b"\x86\xdd" and wire.parse(f[14:])[0].source.is_unspecified
        ]
        link_local_group = wire.solicited_node(stack.ipv6.link_local)  # probed at start too
        assert {p.destination for p in probes} == {
            group,
            wire.solicited_node(second),
            link_local_group,
        }
        # The first address's group was left with a state-change report.
        leave = mld.emit(mld.leave([group]), stack.ipv6.link_local, wire.ALL_MLDV2_ROUTERS)
        assert any(f.endswith(leave) for f in heard)

    run(body)


def test_advertised_timers_are_taken_within_bounds_and_reports_are_repeated() -> None:
    async def body(stack: DirectStack, attacker: MemoryPort, heard: list[bytes]) -> None:
        assert stack.ipv6 is not None and stack.ipv6.autoconf is not None
        all_nodes = wire.multicast_mac(wire.ALL_NODES)
        heard.clear()
        timed = ndp.RouterAdvertisement(reachable_time=2000, retransmit_timer=1)
        await attacker.write(frame(all_nodes, nd_packet(timed, ROUTER, wire.ALL_NODES)))
        await settle()
        settings = stack.ipv6.neighbours.settings
        assert 1_000_000_000 <= settings.reachable_ns <= 3_000_000_000
        # 1 ms would flood the link with solicitations: clamped to 100 ms.
        assert settings.retransmit_ns == stack.ipv6.autoconf.retransmit_ns == 100_000_000
        await attacker.write(frame(all_nodes, nd_packet(advert(), ROUTER, wire.ALL_NODES)))
        await stack.ipv6.wait_for_address(2)
        group = wire.solicited_node(first_address(stack, 0))

        def reports() -> list[bytes]:
            mac = wire.multicast_mac(wire.ALL_MLDV2_ROUTERS)
            return [f for f in heard if f[:6] == mac and group.packed in f]

        # The join, and once more within a second (RFC 3810 6.1).
        for _ in range(24):
            if len(reports()) >= 2:
                break
            await settle(0.05)
        assert len(reports()) == 2

    run(body)


def test_a_reachable_router_is_preferred_and_unknown_ones_take_turns() -> None:
    async def body(stack: DirectStack, attacker: MemoryPort, heard: list[bytes]) -> None:
        assert stack.ipv6 is not None
        all_nodes = wire.multicast_mac(wire.ALL_NODES)
        silent, other = IPv6Address("fe80::51"), IPv6Address("fe80::52")
        bare = ndp.RouterAdvertisement(router_lifetime=600)  # no link-layer address
        for router in (silent, other):
            await attacker.write(frame(all_nodes, nd_packet(bare, router, wire.ALL_NODES)))
        await settle()
        beyond = IPv6Address("2001:db8:99::1")
        # Neither known reachable: in turn, not always the first.
        assert {stack.ipv6.next_hop(beyond) for _ in range(4)} == {silent, other}
        # The second one's advertisement now tells its MAC: it is preferred.
        await attacker.write(frame(all_nodes, nd_packet(advert(), other, wire.ALL_NODES)))
        await settle()
        assert {stack.ipv6.next_hop(beyond) for _ in range(4)} == {other}

    run(body)


def test_a_static_address_is_probed_and_not_used_when_taken() -> None:
    async def main() -> None:
        switch = MemorySwitch()
        port = switch.port()
        attacker = switch.port(ATTACKER_MAC)
        heard: list[bytes] = []
        listening = asyncio.ensure_future(attacker.listen(heard.append))
        static = IPv6Address("2001:db8:5::2")
        stack = await DirectStack.connect(
            port,
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(7),
            address=IPv4Interface("10.9.0.2/24"),
            ipv6=True,
            slaac=False,
            ipv6_address=IPv6Interface(f"{static}/64"),
        )
        try:
            assert stack.ipv6 is not None
            assert static not in stack.ipv6.addresses()  # tentative first
            assert stack.ipv6.next_hop(IPv6Address("2001:db8:5::9")) is not None  # prefix on-link
            claim = ndp.NeighborAdvertisement(
                static, override=True, options=(ndp.TargetLinkLayerAddress(ATTACKER_MAC),)
            )
            attacker_ll = wire.link_local_from_mac(ATTACKER_MAC)
            all_nodes = wire.multicast_mac(wire.ALL_NODES)
            await attacker.write(frame(all_nodes, nd_packet(claim, attacker_ll, wire.ALL_NODES)))
            await settle(0.1)
            # Gone from the table: no timer can assign it later.
            assert static not in stack.ipv6.addresses()
            assert static not in stack.ipv6.autoconf.addresses
            counters = stack.counters()
            assert counters["slaac.static_address_duplicate"] == 1
            assert "slaac.address_assigned" not in counters
            assert stack.ipv6.source_for(IPv6Address("2001:db8:5::9")).is_link_local
        finally:
            await stack.disconnect()
            await attacker.disconnect()
            await listening

    asyncio.run(main())
