"""ICMPv6 errors both ways against the Linux kernel in a namespace: the
kernel sends hand-made packets through a raw socket and reads looming's
Parameter Problem and Time Exceeded on an ICMPv6 socket (whose checksum
the kernel verifies); looming's TCP and UDP take the kernel's Destination
Unreachable as errors."""

from __future__ import annotations

import asyncio
import sys
import time
from ipaddress import IPv6Address, IPv6Interface

import pytest

from looming.devices.stack import Datagram
from looming.errors import HostUnreachable
from looming.net.icmp import IcmpError, QuotedHeader
from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer
from tests.net.test_ipv6_kernel import kernel_link_local, without_dad

pytestmark = pytest.mark.root

# Sends the packets named on the command line to looming's link-local
# address from the kernel's, then prints "type code pointer" for every
# ICMPv6 error that comes back within the wait.
RAW_SENDER = r"""
import socket, struct, sys, time
target, interface, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
kinds = sys.argv[4:]
index = socket.if_nametoindex(interface)
source = None
with open("/proc/net/if_inet6") as table:
    for line in table:
        fields = line.split()
        if fields[5] == interface and fields[0].startswith("fe80"):
            source = bytes.fromhex(fields[0])
dest = socket.inet_pton(socket.AF_INET6, target)
sender = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
listener = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
listener.settimeout(0.2)

def packet(next_header, payload):
    head = struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
    return head + source + dest + payload

def make(kind, n):
    if kind == "next253":  # an upper-layer protocol nobody knows
        return packet(253, b"\x00" * 16)
    if kind in ("option80", "option40", "optionC0"):  # destination options, one option
        option = bytes((int(kind[6:], 16), 4)) + b"\x00" * 4
        return packet(60, bytes((59, 0)) + option + b"\x00" * 8)
    if kind == "first":  # a first fragment whose rest never comes
        frag = struct.pack("!BBHI", 17, 0, 1, 0x1000 + n)
        return packet(44, frag + b"\x00" * 64)
    if kind == "middle":  # a later fragment alone
        frag = struct.pack("!BBHI", 17, 0, (64 << 3) | 1, 0x2000 + n)
        return packet(44, frag + b"\x00" * 64)
    raise SystemExit(kind)

for n, kind in enumerate(kinds):
    sender.sendto(make(kind, n), (target, 0, 0, index))
deadline = time.monotonic() + wait
while time.monotonic() < deadline:
    try:
        data, sender_address = listener.recvfrom(2048)
    except socket.timeout:
        continue
    if data[0] < 128 and data[0] != 2:
        print(data[0], data[1], int.from_bytes(data[4:8], "big"), len(data), flush=True)
"""


def errors_seen(out: str) -> list[tuple[int, int, int]]:
    return [
        (int(t), int(c), int(p)) for t, c, p, _length in (line.split() for line in out.splitlines())
    ]


async def raw_exchange(
    peer: KernelPeer, stack: DirectStack, wait: float, *kinds: str
) -> list[tuple[int, int, int]]:
    assert stack.ipv6 is not None
    # The kernel must know looming's MAC first (its NS would race the raw packets).
    await stack.ping(kernel_link_local(peer), timeout=2)
    target = str(stack.ipv6.link_local)
    out = await peer.exec_output(
        sys.executable, "-c", RAW_SENDER, target, peer.tap_name, str(wait), *kinds
    )
    return errors_seen(out)


def test_parameter_problems_for_unknown_next_headers_and_options(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        kinds = ("next253", "option80", "option40", "optionC0")
        seen = await raw_exchange(kernel_peer, stack, 1.0, *kinds)
        # Code 1 at the fixed header's Next Header (offset 6); code 2 at the
        # option's type (40 + 2) for actions 10 and 11; action 01 is silent.
        assert sorted(seen) == [(4, 1, 6), (4, 2, 42), (4, 2, 42)], seen
        counters = stack.counters()
        assert counters["ipv6.unrecognised_option"] == 3
        assert counters["ipv6.unknown_protocol"] == 1
        assert counters["ipv6.tx_error_type_4"] == 3

    kernel_peer.run(body, ipv6=True)


def test_parameter_problems_are_rate_limited(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        stack.ipv6.error_burst = 3
        stack.ipv6.errors_per_second = 1  # the bucket holds at most the burst from now on
        seen = await raw_exchange(kernel_peer, stack, 0.8, *(["next253"] * 12))
        # A burst of three, plus at most one refilled while they arrive.
        assert 3 <= len(seen) <= 4, seen
        assert stack.counters()["ipv6.tx_error_rate_limited"] == 12 - len(seen)

    kernel_peer.run(body, ipv6=True)


def test_a_reassembly_timeout_sends_time_exceeded_for_a_first_fragment(
    kernel_peer: KernelPeer,
) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        stack.ipv6.reassembler.timeout_ns = 500_000_000
        started = time.monotonic()
        seen = await raw_exchange(kernel_peer, stack, 2.0, "first", "middle")
        # Only the packet whose first fragment came is reported (RFC 8200 4.5).
        assert seen == [(3, 1, 0)], seen
        assert time.monotonic() - started < 10
        counters = stack.counters()
        assert counters["reassembly6.timed_out"] == 2
        assert counters["ipv6.tx_error_type_3"] == 1

    kernel_peer.run(body, ipv6=True)


def test_udp_takes_the_kernels_port_unreachable(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        errors: asyncio.Queue[IcmpError] = asyncio.Queue()

        def ignore(datagram: Datagram) -> None:
            pass

        binding = await stack.udp.bind(5401, ignore, on_error=errors.put_nowait)
        theirs = kernel_link_local(kernel_peer)
        await stack.ping(theirs, timeout=2)
        await binding.send(theirs, 5999, b"anyone there?")
        error = await asyncio.wait_for(errors.get(), 3)
        assert error.hard and error.code == 3  # port unreachable, as for IPv4
        assert error.reporter == theirs and f"ICMP from {theirs}" in error.describe()
        assert isinstance(error.original, QuotedHeader)
        assert error.original.destination == theirs
        assert stack.ipv6 is not None and error.original.source == stack.ipv6.link_local
        assert stack.counters()["ipv6.rx_error_delivered"] == 1

    kernel_peer.run(body, ipv6=True)


def test_tcp_gives_up_at_once_on_administratively_prohibited(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)
    router = IPv6Address("fd77:0:0:1::1")

    async def body(stack: DirectStack) -> None:
        kernel_peer.sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        kernel_peer.sh("ip", "-6", "addr", "add", f"{router}/64", "dev", kernel_peer.tap_name)
        kernel_peer.sh("ip", "-6", "route", "add", "prohibit", "fd79::/64")
        assert stack.ipv6 is not None
        await stack.ipv6.wait_for_address(3)  # the static address, once probed
        started = time.monotonic()
        with pytest.raises(HostUnreachable, match="prohibited"):
            await stack.tcp.connect(IPv6Address("fd79::1"), 80, timeout=10)
        assert time.monotonic() - started < 3
        counters = stack.counters()
        assert counters["ipv6.rx_error_delivered"] == 1
        assert counters["tcp.icmp_hard_aborts"] == 1

    kernel_peer.run(
        body,
        ipv6=True,
        slaac=False,
        ipv6_address=IPv6Interface("fd77:0:0:1::2/64"),
        ipv6_gateway=router,
    )
