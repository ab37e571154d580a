"""DHCPv6 without I/O: the wire format (parse(emit(m)) == m, arbitrary
bytes raise nothing but Malformed) and the client's state machine
(retransmission times, what it ignores, renew, rebind and loss)."""

from __future__ import annotations

import itertools
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.errors import Malformed
from looming.net.dhcp6 import SECOND_NS, Dhcp6Client, Dhcp6State
from looming.net.wire import dhcp6 as wire
from looming.net.wire.dhcp6 import Dhcp6Message, Dhcp6Type, IaAddress, IaNa, Status
from looming.unix.random import UnixRandom

addresses = st.integers(0, 2**128 - 1).map(IPv6Address)
u32 = st.integers(0, 0xFFFFFFFF)
statuses = st.builds(Status, st.integers(0, 0xFFFF), st.text(max_size=20))
ia_addresses = st.builds(IaAddress, addresses, u32, u32, st.none() | statuses)
ia_nas = st.builds(
    IaNa, u32, u32, u32, st.lists(ia_addresses, max_size=3).map(tuple), st.none() | statuses
)
unknown_codes = st.integers(0, 0xFFFF).filter(lambda c: c not in set(wire.OptionCode))
messages = st.builds(
    Dhcp6Message,
    st.integers(1, 11),
    st.integers(0, 0xFFFFFF),
    st.none() | st.binary(max_size=20),
    st.none() | st.binary(max_size=20),
    st.lists(ia_nas, max_size=2).map(tuple),
    st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=4).map(tuple),
    st.none() | st.integers(0, 255),
    st.none() | st.integers(0, 0xFFFF),
    st.none() | statuses,
    st.booleans(),
    st.lists(addresses, max_size=3).map(tuple),
    st.lists(st.tuples(unknown_codes, st.binary(max_size=10)), max_size=3).map(tuple),
)


@given(messages)
def test_round_trip(message: Dhcp6Message) -> None:
    assert wire.parse(wire.emit(message)) == message


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        wire.parse(data)
    except Malformed:
        pass


def test_lengths_are_checked_at_every_level() -> None:
    header = bytes((7, 0, 0, 1))
    with pytest.raises(Malformed, match="runs past"):
        wire.parse(header + b"\x00\x01\x00\x10" + b"x" * 4)
    with pytest.raises(Malformed, match="IA_NA option of 4 bytes"):
        wire.parse(header + b"\x00\x03\x00\x04" + b"\x00" * 4)
    inner = b"\x00\x05\x00\x30" + b"\x00" * 24  # an IA address claiming 48 bytes
    with pytest.raises(Malformed, match="runs past"):
        wire.parse(header + b"\x00\x03\x00\x28" + b"\x00" * 12 + inner)
    with pytest.raises(Malformed, match="more than 64"):
        wire.parse(header + b"\x00\x63\x00\x00" * 65)
    with pytest.raises(Malformed, match="relay"):
        wire.parse(bytes((12, 0, 0, 0)))


MAC = bytes.fromhex("020000000042")
SERVER_ID = b"\x00\x01server"
OFFERED = IPv6Address("2001:db8::1:100")


def answer(
    client: Dhcp6Client, sent: Dhcp6Message, kind: Dhcp6Type, **fields: object
) -> Dhcp6Message:
    ia = IaNa(client.iaid, 0, 0, (IaAddress(OFFERED, 100, 200),))
    defaults: dict[str, object] = {"client_id": client.duid, "server_id": SERVER_ID, "ia_na": (ia,)}
    defaults.update(fields)
    return Dhcp6Message(kind, sent.transaction_id, **defaults)  # type: ignore[arg-type]


def bound_client() -> tuple[Dhcp6Client, Dhcp6Message]:
    client = Dhcp6Client(MAC, UnixRandom(1))
    client.start(0)
    (solicit,) = client.on_timer(SECOND_NS)
    (request,) = client.input(answer(client, solicit, Dhcp6Type.ADVERTISE), SECOND_NS)
    assert client.input(answer(client, request, Dhcp6Type.REPLY), SECOND_NS) == []
    return client, request


def test_solicit_advertise_request_reply() -> None:
    client = Dhcp6Client(MAC, UnixRandom(1))
    client.start(0)
    assert 0 <= (client.next_deadline_ns() or 0) <= SECOND_NS
    (solicit,) = client.on_timer(SECOND_NS)
    assert solicit.type == Dhcp6Type.SOLICIT and solicit.client_id == wire.duid_ll(MAC)
    assert solicit.ia_na == (IaNa(client.iaid),) and solicit.elapsed_time == 0
    assert solicit.requested == (wire.OptionCode.DNS_SERVERS,)
    (request,) = client.input(answer(client, solicit, Dhcp6Type.ADVERTISE), SECOND_NS)
    assert request.type == Dhcp6Type.REQUEST and request.server_id == SERVER_ID
    assert request.transaction_id != solicit.transaction_id
    assert [a.address for a in request.ia_na[0].addresses] == [OFFERED]
    client.input(answer(client, request, Dhcp6Type.REPLY), 2 * SECOND_NS)
    assert client.state is Dhcp6State.BOUND and client.lease is not None
    assert (client.lease.t1, client.lease.t2) == (50, 80)  # 0 from the server: ours
    assert [lease.address for lease in client.events.bound] == [OFFERED]
    assert client.next_deadline_ns() == 2 * SECOND_NS + 50 * SECOND_NS


def test_retransmissions_double_within_ten_percent_up_to_the_maximum() -> None:
    client = Dhcp6Client(MAC, UnixRandom(2))
    client.start(0)
    now = client.next_deadline_ns() or 0
    gaps = []
    for _ in range(16):
        assert len(client.on_timer(now)) == 1
        following = client.next_deadline_ns()
        assert following is not None
        gaps.append((following - now) / SECOND_NS)
        now = following
    assert 0.9 <= gaps[0] <= 1.1
    for previous, gap in itertools.pairwise(gaps):
        assert gap <= 3960 and (gap >= 3240 or 1.8 * previous <= gap <= 2.2 * previous)
    assert gaps[-1] >= 3240  # SOL_MAX_RT reached


def test_what_the_client_ignores() -> None:
    client = Dhcp6Client(MAC, UnixRandom(3))
    client.start(0)
    (solicit,) = client.on_timer(SECOND_NS)
    wrong_xid = Dhcp6Message(Dhcp6Type.ADVERTISE, solicit.transaction_id ^ 1)
    other_client = answer(client, solicit, Dhcp6Type.ADVERTISE, client_id=b"someone")
    no_server = answer(client, solicit, Dhcp6Type.ADVERTISE, server_id=None)
    no_address = answer(client, solicit, Dhcp6Type.ADVERTISE, status=Status(2, "NoAddrsAvail"))
    reply_too_early = answer(client, solicit, Dhcp6Type.REPLY)
    for message in (wrong_xid, other_client, no_server, no_address, reply_too_early):
        assert client.input(message, SECOND_NS) == []
    assert client.state is Dhcp6State.SOLICITING
    counters = client.counters
    assert counters["rx_wrong_transaction"] == 1 and counters["rx_not_for_us"] == 2
    assert counters["rx_advertise_without_address"] == 1 and counters["rx_unexpected"] == 1


def test_renew_then_rebind_then_the_address_is_lost() -> None:
    client, _request = bound_client()
    lease = client.lease
    assert lease is not None
    t1 = SECOND_NS + lease.t1 * SECOND_NS
    (renew,) = client.on_timer(t1)
    assert renew.type == Dhcp6Type.RENEW and renew.server_id == SERVER_ID
    now = t1
    while client.state is Dhcp6State.RENEWING:  # no answer until T2
        now = client.next_deadline_ns() or 0
        sent = client.on_timer(now)
    assert now == SECOND_NS + lease.t2 * SECOND_NS
    assert client.state is Dhcp6State.REBINDING
    assert sent[0].type == Dhcp6Type.REBIND and sent[0].server_id is None
    while client.state is Dhcp6State.REBINDING:  # no answer until the lease ends
        now = client.next_deadline_ns() or 0
        sent = client.on_timer(now)
    assert now == SECOND_NS + lease.valid_lifetime * SECOND_NS
    assert client.events.lost == [OFFERED] and client.lease is None
    assert client.state is Dhcp6State.SOLICITING and sent[0].type == Dhcp6Type.SOLICIT


def test_a_reply_that_takes_the_address_back() -> None:
    client, _ = bound_client()
    (renew,) = client.renew(10 * SECOND_NS)
    gone = IaNa(client.iaid, 0, 0, (IaAddress(OFFERED, 0, 0),))
    (solicit,) = client.input(answer(client, renew, Dhcp6Type.REPLY, ia_na=(gone,)), 11 * SECOND_NS)
    assert solicit.type == Dhcp6Type.SOLICIT
    assert client.events.lost == [OFFERED] and client.lease is None


def test_a_declined_address_is_reported_to_its_server_then_solicited_anew() -> None:
    client, _ = bound_client()
    assert client.decline(IPv6Address("2001:db8::dead"), 5 * SECOND_NS) == []  # not ours
    (decline,) = client.decline(OFFERED, 5 * SECOND_NS)
    assert decline.type == Dhcp6Type.DECLINE and decline.server_id == SERVER_ID
    assert [a.address for a in decline.ia_na[0].addresses] == [OFFERED]
    assert client.lease is None and client.state is Dhcp6State.DECLINING
    (solicit,) = client.input(answer(client, decline, Dhcp6Type.REPLY), 6 * SECOND_NS)
    assert solicit.type == Dhcp6Type.SOLICIT
    # Unanswered, a decline is sent four times, then the client solicits.
    client, _ = bound_client()
    sent = client.decline(OFFERED, 5 * SECOND_NS)
    while client.state is Dhcp6State.DECLINING:
        sent += client.on_timer(client.next_deadline_ns() or 0)
    assert [m.type for m in sent] == [Dhcp6Type.DECLINE] * 4 + [Dhcp6Type.SOLICIT]
