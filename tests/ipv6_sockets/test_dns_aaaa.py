"""AAAA lookups (RFC 3596) in looming's stub resolver: answers parsed from
the wire, and a real dnsmasq answering over the direct stack."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.net.dns import NameNotFound, NoSuchName, addresses_in, ipv6_addresses_in
from looming.net.wire import dns as wire
from looming.net.wire.dns import CLASS_IN, DnsMessage, DnsQuestion, DnsRecord, DnsType
from tests.net.dnsmasq_run import dnsmasq_command
from tests.net.kernel import KernelPeer, have_root, kernel_peer_namespace


def answer(*records: DnsRecord) -> DnsMessage:
    """A response holding ``records``, sent through emit and parse as a server's would be."""
    message = DnsMessage(
        id=7,
        flags=0x8180,
        questions=(DnsQuestion(name="a.lm", type=DnsType.AAAA),),
        answers=records,
    )
    return wire.parse(wire.emit(message))


def aaaa(name: str, address: IPv6Address | bytes) -> DnsRecord:
    data = address if isinstance(address, bytes) else address.packed
    return DnsRecord(name=name, type=DnsType.AAAA, klass=CLASS_IN, ttl=60, data=data)


def cname(name: str, target: str) -> DnsRecord:
    return DnsRecord(
        name=name, type=DnsType.CNAME, klass=CLASS_IN, ttl=60, data=wire.encode_name(target)
    )


@given(st.lists(st.ip_addresses(v=6), min_size=1, max_size=5), st.binary(max_size=20))
def test_aaaa_records_come_back_in_order_and_odd_sizes_are_ignored(
    found: list[IPv6Address], junk: bytes
) -> None:
    records = [aaaa("a.lm", address) for address in found]
    records.insert(1, aaaa("a.lm", junk))
    parsed = answer(*records)
    expected = found if len(junk) != 16 else [found[0], IPv6Address(junk), *found[1:]]
    assert ipv6_addresses_in(parsed, "A.lm.") == expected
    assert addresses_in(parsed, "a.lm") == []


def test_a_cname_chain_is_followed_and_a_loop_ends_empty() -> None:
    target = IPv6Address("fd00:77::124")
    chained = answer(cname("a.lm", "b.lm"), cname("b.lm", "c.lm"), aaaa("c.lm", target))
    assert ipv6_addresses_in(chained, "a.lm") == [target]
    looped = answer(cname("a.lm", "b.lm"), cname("b.lm", "a.lm"))
    assert ipv6_addresses_in(looped, "a.lm") == []


def dnsmasq(peer: KernelPeer, state: Path) -> list[str]:
    return dnsmasq_command(
        peer,
        state,
        "--log-queries",
        "--no-resolv",
        "--no-hosts",
        "--local=/lm/",
        "--host-record=dual.lm,10.77.0.124,fd00:77::124",
        "--host-record=v6.lm,fd00:77::6",
        "--host-record=v4.lm,10.77.0.4",
        "--cname=www.lm,dual.lm",
    )


@pytest.mark.root
def test_aaaa_and_a_lookups_answered_by_dnsmasq(tmp_path: Path) -> None:
    if not have_root():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root; CI runs as root)")
    log: list[str] = []

    async def drain(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            log.append(line.decode(errors="replace"))

    async def main(peer: KernelPeer) -> None:
        stack = await peer.connect_stack(dns_servers=[peer.peer_address])
        server = await peer.exec(*dnsmasq(peer, tmp_path))
        assert server.stderr is not None
        drainer = asyncio.ensure_future(drain(server.stderr))
        try:
            for _ in range(100):
                if any("started" in line for line in log):
                    break
                await asyncio.sleep(0.1)
            resolver = stack.resolver
            v6, v4 = IPv6Address("fd00:77::124"), IPv4Address("10.77.0.124")
            assert await resolver.resolve6("dual.lm") == [v6]
            assert await resolver.resolve6("WWW.lm.") == [v6]  # through the CNAME
            assert await resolver.resolve("dual.lm") == [v4]
            assert await resolver.resolve_any("dual.lm") == [v6, v4]
            assert await resolver.resolve_any("v6.lm") == [IPv6Address("fd00:77::6")]
            assert await resolver.resolve_any("v4.lm") == [IPv4Address("10.77.0.4")]
            with pytest.raises(NameNotFound, match="no IPv6 address"):
                await resolver.resolve6("v4.lm")
            with pytest.raises(NoSuchName):
                await resolver.resolve_any("missing.lm")
            assert await resolver.resolve_any("[::1]") == [IPv6Address("::1")]
            # dnsmasq saw AAAA questions from us.
            assert any("query[AAAA] dual.lm" in line for line in log), "".join(log)
            assert resolver.counters["malformed"] == 0
        finally:
            server.terminate()
            await server.wait()
            drainer.cancel()
            await stack.disconnect()

    with kernel_peer_namespace() as peer:
        asyncio.run(main(peer))
