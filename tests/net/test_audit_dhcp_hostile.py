"""A DHCP server (or whoever answers as one) that hands out an address no
interface can hold is counted (``bad_ack``) and ignored: the client keeps
no such lease and asks again."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from looming.net.dhcp import DhcpClient, DhcpState
from looming.net.wire.dhcp import DhcpMessageType, DhcpOption
from looming.unix.random import UnixRandom
from tests.net.test_cores import MAC_A, S, reply


@pytest.mark.parametrize(
    "address",
    ["224.0.0.5", "127.0.0.9", "255.255.255.255", "240.0.0.1", "10.0.0.0", "10.0.0.255"],
)
def test_an_ack_for_an_address_no_host_can_hold_is_refused(address: str) -> None:
    client = DhcpClient(MAC_A, UnixRandom(1))
    client.start(now_ns=0)
    client.input(reply(client, DhcpMessageType.OFFER), now_ns=S)
    assert client.state is DhcpState.REQUESTING
    bad = replace(reply(client, DhcpMessageType.ACK), your_address=IPv4Address(address))
    assert client.input(bad, now_ns=S) == []
    assert client.lease is None and client.state is DhcpState.REQUESTING
    assert client.counters["bad_ack"] == 1
    assert not client.events.bound


def test_a_point_to_point_lease_may_use_either_address() -> None:
    for address in ("10.0.0.50", "10.0.0.51"):
        client = DhcpClient(MAC_A, UnixRandom(1))
        client.start(now_ns=0)
        client.input(reply(client, DhcpMessageType.OFFER), now_ns=S)
        ack = reply(client, DhcpMessageType.ACK)
        mask = (DhcpOption.SUBNET_MASK, IPv4Address("255.255.255.254").packed)
        options = tuple(o if o[0] != DhcpOption.SUBNET_MASK else mask for o in ack.options)
        client.input(replace(ack, your_address=IPv4Address(address), options=options), S)
        assert client.lease is not None and str(client.lease.interface) == f"{address}/31"
