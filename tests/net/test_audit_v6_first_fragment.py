"""A first fragment that does not hold the header chain through the
upper-layer header (RFC 8200 4.5, RFC 7112) is discarded and answered with
a Parameter Problem code 3, pointer 0; the kernel in a namespace sends the
fragments through a raw socket and reads what comes back."""

from __future__ import annotations

import sys

import pytest

from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer
from tests.net.test_ipv6_errors_kernel import errors_seen
from tests.net.test_ipv6_kernel import kernel_link_local, without_dad

pytestmark = pytest.mark.root

# Sends an echo request behind an 8-byte Destination Options header, in two
# fragments cut where argv[4:] say ("split": the first fragment holds only
# the options header; "whole": it holds the ICMPv6 header too), then prints
# "type code pointer length" for each ICMPv6 error and "reply ID" for each
# echo reply that comes back.
SENDER = r"""
import socket, struct, sys, time
target, interface, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
index = socket.if_nametoindex(interface)
with open("/proc/net/if_inet6") as table:
    for line in table:
        fields = line.split()
        if fields[5] == interface and fields[0].startswith("fe80"):
            source = bytes.fromhex(fields[0])
dest = socket.inet_pton(socket.AF_INET6, target)
sender = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
listener = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
listener.settimeout(0.2)

def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def echo(ident):
    body = struct.pack("!BBHHH", 128, 0, 0, ident, 1) + bytes(range(32))
    pseudo = source + dest + struct.pack("!I3xB", len(body), 58)
    return body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]

def fragment(offset, more, ident, data):
    head = struct.pack("!IHBB", 6 << 28, 8 + len(data), 44, 64)
    frag = struct.pack("!BBHI", 60, 0, (offset << 3) | more, ident)
    return head + source + dest + frag + data

options = bytes((58, 0, 1, 4, 0, 0, 0, 0))
for n, kind in enumerate(sys.argv[4:], 1):
    chain = options + echo(n)
    cut = 8 if kind == "split" else 24
    for piece in (fragment(0, 1, 0x7000 + n, chain[:cut]),
                  fragment(cut // 8, 0, 0x7000 + n, chain[cut:])):
        sender.sendto(piece, (target, 0, 0, index))
deadline = time.monotonic() + wait
while time.monotonic() < deadline:
    try:
        data, _ = listener.recvfrom(2048)
    except socket.timeout:
        continue
    if data[0] == 129:
        print("reply", int.from_bytes(data[4:6], "big"), flush=True)
    elif data[0] < 128 and data[0] != 2:
        print(data[0], data[1], int.from_bytes(data[4:8], "big"), len(data), flush=True)
"""


def test_a_first_fragment_without_the_upper_layer_header_is_refused(
    kernel_peer: KernelPeer,
) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        await stack.ping(kernel_link_local(kernel_peer), timeout=2)
        out = await kernel_peer.exec_output(
            sys.executable, "-c", SENDER, str(stack.ipv6.link_local), kernel_peer.tap_name,
            "1.0", "split", "whole",
        )  # fmt: skip
        lines = out.splitlines()
        # The packet cut after its options header is refused; the one whose
        # first fragment holds the ICMPv6 header is reassembled and answered.
        assert [line for line in lines if line.startswith("reply")] == ["reply 2"], out
        errors = errors_seen("\n".join(line for line in lines if not line.startswith("reply")))
        assert errors == [(4, 3, 0)], out
        counters = stack.counters()
        assert counters["ipv6.first_fragment_incomplete"] == 1
        assert counters["ipv6.tx_error_type_4"] == 1

    kernel_peer.run(body, ipv6=True)


def test_incomplete_first_fragments_are_answered_within_the_error_rate(
    kernel_peer: KernelPeer,
) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        stack.ipv6.error_burst = 2
        stack.ipv6.errors_per_second = 1
        await stack.ping(kernel_link_local(kernel_peer), timeout=2)
        out = await kernel_peer.exec_output(
            sys.executable, "-c", SENDER, str(stack.ipv6.link_local), kernel_peer.tap_name,
            "0.6", *(["split"] * 10),
        )  # fmt: skip
        assert "reply" not in out, out
        errors = errors_seen(out)
        assert 2 <= len(errors) <= 3 and set(errors) == {(4, 3, 0)}, out
        counters = stack.counters()
        assert counters["ipv6.first_fragment_incomplete"] == 10
        assert counters["ipv6.tx_error_rate_limited"] == 10 - len(errors)

    kernel_peer.run(body, ipv6=True)
