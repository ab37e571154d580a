"""The sans-I/O cores: ARP cache, fragment reassembly, DHCP client."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

from looming.devices.net import MacAddress
from looming.net.arp import ArpCache, answer
from looming.net.dhcp import DhcpClient, DhcpState
from looming.net.reassembly import Reassembler
from looming.net.wire.arp import ArpPacket
from looming.net.wire.dhcp import DhcpMessage, DhcpMessageType, DhcpOption
from looming.net.wire.ipv4 import Ipv4Header
from looming.unix.random import UnixRandom

S = 1_000_000_000
A = IPv4Address("10.0.0.1")
B = IPv4Address("10.0.0.2")
MAC_A = MacAddress("02:00:00:00:00:0a")
MAC_B = MacAddress("02:00:00:00:00:0b")


# -- ARP ---------------------------------------------------------------------


def test_arp_cache_entries_expire() -> None:
    cache = ArpCache(lifetime_ns=10 * S)
    cache.learn(A, MAC_A, now_ns=0)
    assert cache.lookup(A, 9 * S) == MAC_A
    assert cache.lookup(A, 10 * S) is None
    assert A not in cache


def test_arp_cache_is_bounded_and_evicts_the_oldest() -> None:
    cache = ArpCache(max_entries=3)
    for i in range(10):
        cache.learn(IPv4Address(i), MAC_A, now_ns=0)
    assert len(cache) == 3
    assert cache.lookup(IPv4Address(9), 0) == MAC_A
    assert cache.lookup(IPv4Address(0), 0) is None


def test_arp_answers_requests_for_our_address_and_learns_the_asker() -> None:
    cache = ArpCache()
    request = ArpPacket(1, MAC_A, A, MacAddress(bytes(6)), B)
    reply = answer(cache, request, MAC_B, frozenset({B}), now_ns=0)
    assert reply == ArpPacket(2, MAC_B, B, MAC_A, A)
    assert cache.lookup(A, 0) == MAC_A


def test_arp_ignores_requests_for_others_and_does_not_learn_strangers() -> None:
    cache = ArpCache()
    request = ArpPacket(1, MAC_A, A, MacAddress(bytes(6)), IPv4Address("10.0.0.9"))
    assert answer(cache, request, MAC_B, frozenset({B}), now_ns=0) is None
    assert len(cache) == 0


def test_arp_updates_known_bindings_from_any_packet() -> None:
    cache = ArpCache()
    cache.learn(A, MAC_A, 0)
    gratuitous = ArpPacket(1, MAC_B, A, MacAddress(bytes(6)), A)
    answer(cache, gratuitous, MAC_B, frozenset({B}), now_ns=1)
    assert cache.lookup(A, 1) == MAC_B


def test_a_fresh_binding_is_not_moved_by_a_second_answer() -> None:
    from collections import Counter

    counters: Counter[str] = Counter()
    cache = ArpCache(lock_ns=S)
    other = MacAddress("02:00:00:00:00:0c")
    first = ArpPacket(2, MAC_A, A, MAC_B, B)
    second = ArpPacket(2, other, A, MAC_B, B)  # a damaged duplicate, or a rival
    answer(cache, first, MAC_B, frozenset({B}), 0, waiting={A}, counters=counters)
    answer(cache, second, MAC_B, frozenset({B}), S // 2, counters=counters)
    assert cache.lookup(A, S // 2) == MAC_A and counters["locked"] == 1
    answer(cache, first, MAC_B, frozenset({B}), S // 2, counters=counters)  # same MAC: refresh
    assert counters["locked"] == 1
    # Once the lock time has passed, or when the host announces itself, it moves.
    answer(cache, second, MAC_B, frozenset({B}), 2 * S, counters=counters)
    assert cache.lookup(A, 2 * S) == other
    gratuitous = ArpPacket(1, MAC_A, A, MacAddress(bytes(6)), A)
    answer(cache, gratuitous, MAC_B, frozenset({B}), 2 * S + 1, counters=counters)
    assert cache.lookup(A, 2 * S + 1) == MAC_A and counters["locked"] == 1


# -- reassembly --------------------------------------------------------------


def fragments(payload: bytes, size: int, identification: int = 7) -> list[tuple[Ipv4Header, bytes]]:
    out = []
    for offset in range(0, len(payload), size):
        header = Ipv4Header(
            A,
            B,
            17,
            identification=identification,
            more_fragments=offset + size < len(payload),
            fragment_offset=offset,
        )
        out.append((header, payload[offset : offset + size]))
    return out


def test_reassembly_in_any_order_with_duplicates() -> None:
    payload = bytes(range(256)) * 20
    pieces = fragments(payload, 1480)
    order = [3, 0, 2, 0, 1]
    reassembler = Reassembler()
    results = [reassembler.add(*pieces[i], now_ns=0) for i in order]
    assert results[:-1] == [None] * 4
    assert results[-1] == payload
    assert len(reassembler) == 0 and reassembler.held_bytes == 0


def test_reassembly_times_out_and_frees_memory() -> None:
    reassembler = Reassembler(timeout_ns=30 * S)
    pieces = fragments(b"x" * 4000, 1480)
    reassembler.add(*pieces[0], now_ns=0)
    assert reassembler.held_bytes == 1480
    assert reassembler.add(*pieces[1], now_ns=31 * S) is None
    assert reassembler.counters["timed_out"] == 1
    assert reassembler.held_bytes == 1480  # only the new datagram's piece


def test_reassembly_memory_is_bounded_under_a_flood() -> None:
    reassembler = Reassembler(max_bytes=100_000, max_datagrams=16)
    for identification in range(1000):
        first = fragments(b"y" * 3000, 1480, identification)[0]
        reassembler.add(*first, now_ns=identification)
        assert reassembler.held_bytes <= 100_000
        assert len(reassembler) <= 16
    assert reassembler.counters["evicted"] > 0


def test_reassembly_rejects_datagrams_over_64k() -> None:
    reassembler = Reassembler()
    header = Ipv4Header(A, B, 17, identification=1, fragment_offset=65528)
    assert reassembler.add(header, b"z" * 100, now_ns=0) is None
    assert reassembler.counters["too_long"] == 1


# -- DHCP --------------------------------------------------------------------

SERVER = IPv4Address("10.0.0.1")
OFFERED = IPv4Address("10.0.0.50")


def reply(client: DhcpClient, kind: DhcpMessageType, **times: int) -> DhcpMessage:
    options = [
        (DhcpOption.MESSAGE_TYPE, bytes((kind,))),
        (DhcpOption.SERVER_IDENTIFIER, SERVER.packed),
        (DhcpOption.SUBNET_MASK, IPv4Address("255.255.255.0").packed),
        (DhcpOption.ROUTER, SERVER.packed),
        (DhcpOption.DNS_SERVERS, SERVER.packed),
        (DhcpOption.LEASE_TIME, times.get("lease", 100).to_bytes(4, "big")),
    ]
    return DhcpMessage(
        op=2,
        xid=client._xid,
        client_mac=client.mac,
        options=tuple(options),
        your_address=OFFERED,
    )


def test_dhcp_discover_offer_request_ack() -> None:
    client = DhcpClient(MAC_A, UnixRandom(1))
    [discover] = client.start(now_ns=0)
    assert discover.message.message_type == DhcpMessageType.DISCOVER
    assert discover.destination == IPv4Address("255.255.255.255")
    [request] = client.input(reply(client, DhcpMessageType.OFFER), now_ns=S)
    assert request.message.message_type == DhcpMessageType.REQUEST
    assert request.message.address_option(DhcpOption.REQUESTED_ADDRESS) == OFFERED
    assert request.message.server_identifier == SERVER
    assert client.input(reply(client, DhcpMessageType.ACK), now_ns=S) == []
    assert client.state is DhcpState.BOUND
    lease = client.lease
    assert lease is not None
    assert lease.interface == IPv4Interface("10.0.0.50/24")
    assert lease.gateway == SERVER and lease.dns_servers == (SERVER,)
    assert (lease.renew_s, lease.rebind_s) == (50, 87)
    assert client.next_deadline_ns() == S + 50 * S


def test_dhcp_retransmits_discover_with_backoff() -> None:
    client = DhcpClient(MAC_A, UnixRandom(1), initial_retransmit_s=4)
    client.start(0)
    first = client.next_deadline_ns()
    assert first is not None and 3 * S <= first <= 5 * S
    assert client.poll(first - 1) == []
    [again] = client.poll(first)
    assert again.message.message_type == DhcpMessageType.DISCOVER
    second = client.next_deadline_ns()
    assert second is not None and 7 * S <= second - first <= 9 * S


def test_dhcp_renews_unicast_then_rebinds_broadcast_then_expires() -> None:
    client = DhcpClient(MAC_A, UnixRandom(2))
    client.start(0)
    client.input(reply(client, DhcpMessageType.OFFER), 0)
    client.input(reply(client, DhcpMessageType.ACK, lease=1000), 0)
    [renew] = client.poll(500 * S)
    assert client.state is DhcpState.RENEWING
    assert renew.destination == SERVER
    assert renew.message.client_address == OFFERED
    assert renew.message.address_option(DhcpOption.REQUESTED_ADDRESS) is None
    [rebind] = client.poll(875 * S)
    assert client.state is DhcpState.REBINDING
    assert rebind.destination == IPv4Address("255.255.255.255")
    # A rebinding ACK restores the lease.
    client.input(reply(client, DhcpMessageType.ACK, lease=1000), 900 * S)
    assert client.state is DhcpState.BOUND
    # Without answers, the lease runs out and the client starts over.
    deadline = client.next_deadline_ns()
    assert deadline is not None
    client.poll(deadline)  # renewing
    sends = client.poll(900 * S + 1000 * S)
    assert client.state is DhcpState.SELECTING
    assert client.lease is None and client.events.lost == 1
    assert sends[0].message.message_type == DhcpMessageType.DISCOVER


def test_dhcp_nak_restarts_and_strangers_are_ignored() -> None:
    client = DhcpClient(MAC_A, UnixRandom(3))
    client.start(0)
    stranger = reply(client, DhcpMessageType.OFFER)
    other = DhcpMessage(
        op=2, xid=stranger.xid ^ 1, client_mac=MAC_A, options=stranger.options, your_address=OFFERED
    )
    assert client.input(other, 0) == []
    client.input(reply(client, DhcpMessageType.OFFER), 0)
    [discover] = client.input(reply(client, DhcpMessageType.NAK), 0)
    assert discover.message.message_type == DhcpMessageType.DISCOVER
    assert client.state is DhcpState.SELECTING
