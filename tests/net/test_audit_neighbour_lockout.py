"""A host whose address recently failed to resolve is not locked out.

One spoofed SYN from an unused on-link address makes looming's ARP for it
fail (three unanswered requests); then a host really takes that address
and connects. Its kernel already knows looming's MAC, so it sends no ARP
request first: before, the negative cache refused every SYN-ACK for 20 s
(the connect took 19.5 s). Now traffic to a failed neighbour asks once
more, one request a second at most (RFC 1122 2.3.2.1), and the new host
answers at once. The same for IPv6 neighbour discovery is covered by
tests/net/test_ipv6_hostile_input.py (the cache is shared: failures.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.devices.net import MacAddress
from looming.net.arp import ArpCache, NeighbourLimits, NeighbourTable
from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer
from tests.net.test_hostile import echo, kernel_mac, kernel_program

S = 1_000_000_000
NEWCOMER = "10.77.0.61"

# One SYN from NEWCOMER to looming's port 7, from the kernel's own MAC.
ONE_SYN = r"""
import socket, sys
import dpkt
iface, mac, src_mac, src, dst = sys.argv[1:6]
syn = dpkt.tcp.TCP(sport=4444, dport=7, seq=1, flags=dpkt.tcp.TH_SYN, win=64240)
packet = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=6, ttl=64, data=syn)
frame = dpkt.ethernet.Ethernet(dst=bytes.fromhex(mac), src=bytes.fromhex(src_mac), type=0x0800,
                               data=packet)
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
raw.bind((iface, 0))
raw.send(bytes(frame))
"""

CONNECT_FROM = r"""
import socket, sys, time
source, host = sys.argv[1:3]
conn = socket.socket()
conn.bind((source, 0))
conn.settimeout(5)
started = time.monotonic()
try:
    conn.connect((host, 7))
    print(round(time.monotonic() - started, 3), flush=True)
except OSError as error:
    print("failed", error, round(time.monotonic() - started, 3), flush=True)
"""


@pytest.mark.root
def test_a_host_arriving_at_a_failed_address_connects_at_once(kernel_peer: KernelPeer) -> None:
    async def body(stack: DirectStack) -> None:
        # Fail sooner than the default 3 x 1 s; the lockout was the 20 s after.
        stack.arp.limits = NeighbourLimits(request_interval_ns=S // 5)
        await stack.tcp.listen(7, echo)
        peer_mac = await kernel_mac(kernel_peer)
        syn = await kernel_program(
            kernel_peer,
            ONE_SYN,
            kernel_peer.tap_name,
            stack.ethernet.mac.hex(),
            peer_mac.hex(),
            NEWCOMER,
            kernel_peer.stack_address.ip,
        )
        await asyncio.wait_for(syn.communicate(), 10)
        deadline = time.monotonic() + 5
        while not stack.arp.table.failed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert stack.counters()["arp.unresolved"] >= 1
        await kernel_peer.exec_output(
            "ip", "addr", "add", f"{NEWCOMER}/24", "dev", kernel_peer.tap_name
        )
        # Keeps the kernel's entry for looming fresh: the newcomer sends no ARP.
        await kernel_peer.exec_output("ping", "-c1", "-W1", str(kernel_peer.stack_address.ip))
        client = await kernel_program(
            kernel_peer, CONNECT_FROM, NEWCOMER, kernel_peer.stack_address.ip
        )
        out, err = await asyncio.wait_for(client.communicate(), 15)
        report = out.decode().strip()
        assert report and not report.startswith("failed"), (report, err.decode())
        assert float(report) < 0.5, f"connect took {report} s"
        assert stack.counters()["arp.failed_neighbour_retried"] >= 1

    kernel_peer.run(body)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["send", "tick", "answer"]), st.integers(0, 3 * S)),
        max_size=60,
    )
)
def test_a_failed_neighbour_is_asked_at_most_once_a_second_and_never_locked_out(
    steps: list[tuple[str, int]],
) -> None:
    """Whatever the order of datagrams, timers and answers: requests for one
    neighbour are at least a second apart, its queue stays bounded, and a
    datagram sent to it after it answers is delivered."""
    table = NeighbourTable(ArpCache(), NeighbourLimits())
    mac = MacAddress(bytes.fromhex("020000000061"))
    neighbour = IPv4Address(NEWCOMER)
    now = 0
    asked: list[int] = []
    datagram = ((0x0800, b"x", None),)
    for action, wait in steps:
        now += wait
        again, _ = table.on_timer(now)
        asked += [now for a in again if a == neighbour]
        if action == "send" and table.cache.lookup(neighbour, now) is None:
            idle = neighbour not in table.incomplete and neighbour not in table.cache
            if table.enqueue(neighbour, datagram, now):
                asked.append(now)
            else:
                assert not idle, "a datagram for a silent neighbour asked nothing"
        elif action == "answer":
            table.cache.learn(neighbour, mac, now)
            table.resolved(neighbour)
            assert not table.has_failed(neighbour, now)
            assert all(b - a >= S for a, b in itertools.pairwise(asked))
            asked.clear()
        assert table.queued <= table.limits.queue_per_neighbour
    assert all(b - a >= S for a, b in itertools.pairwise(asked))
