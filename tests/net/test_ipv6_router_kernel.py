"""looming behind a Linux router: the kernel peer's namespace forwards
between the TAP and a veth whose MTU is 1280, to a host in a second
namespace.  looming reaches the far host through its gateway, and the
router's Packet Too Big lowers the path MTU and TCP's MSS in the middle
of a transfer, which then completes with the same hash at the far end."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Interface

import pytest

from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer, cleanup, sh, unique_suffix
from tests.net.test_ipv6_kernel import without_dad

pytestmark = pytest.mark.root

ROUTER_NEAR = IPv6Address("fd77:0:0:1::1")
LOOMING = IPv6Interface("fd77:0:0:1::2/64")
ROUTER_FAR = IPv6Address("fd78:0:0:2::1")
FAR_HOST = IPv6Address("fd78:0:0:2::2")

SINK = r"""
import hashlib, socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind(("fd78:0:0:2::2", 6008))
s.listen()
print("ready", flush=True)
c, _ = s.accept()
digest, total = hashlib.sha256(), 0
while data := c.recv(65536):
    digest.update(data)
    total += len(data)
c.sendall(digest.hexdigest().encode())
c.close()
print(total, flush=True)
"""


@pytest.fixture
def far_side(kernel_peer: KernelPeer) -> Iterator[str]:
    """A second namespace behind the kernel peer over a veth pair whose
    router end has an MTU of 1280; its name."""
    suffix = unique_suffix()
    far, near_end, far_end = f"lmfar{suffix}", f"lmva{suffix}", f"lmvb{suffix}"
    sh("ip", "netns", "add", far)
    try:
        peer = kernel_peer.netns
        sh(*peer("ip", "link", "add", near_end, "type", "veth", "peer", "name", far_end))
        sh(*peer("ip", "link", "set", far_end, "netns", far))
        sh(*peer("ip", "link", "set", near_end, "mtu", "1280", "up"))
        sh(*peer("ip", "-6", "addr", "add", f"{ROUTER_FAR}/64", "dev", near_end, "nodad"))
        inside = ["ip", "netns", "exec", far]
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "link", "set", far_end, "up")
        sh(*inside, "ip", "-6", "addr", "add", f"{FAR_HOST}/64", "dev", far_end, "nodad")
        sh(*inside, "ip", "-6", "route", "add", "default", "via", str(ROUTER_FAR))
        yield far
    finally:
        cleanup(far)


def test_packet_too_big_from_a_router_mid_transfer(kernel_peer: KernelPeer, far_side: str) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        kernel_peer.sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        kernel_peer.sh(
            "ip", "-6", "addr", "add", f"{ROUTER_NEAR}/64", "dev", kernel_peer.tap_name, "nodad"
        )  # fmt: skip
        await stack.ipv6.wait_for_address(3)
        sink = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", far_side, sys.executable, "-c", SINK,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert sink.stdout is not None
        assert (await asyncio.wait_for(sink.stdout.readline(), 10)).strip() == b"ready"
        flow = await stack.tcp.connect(FAR_HOST, 6008, timeout=5)
        # The far host's MSS (1440) and looming's link say 1500: the
        # router's 1280-byte link is found only when a full segment hits it.
        assert stack.ipv6.next_hop(FAR_HOST) == ROUTER_NEAR
        assert flow.connection.path_mss == 1440
        data = bytes(i % 241 for i in range(1_500_000))
        await flow.write(data)
        await flow.shutdown()
        answer = b""
        while chunk := await flow.read():
            answer += chunk
        assert answer.decode() == hashlib.sha256(data).hexdigest()
        assert (await asyncio.wait_for(sink.stdout.readline(), 10)).strip() == b"1500000"
        await sink.wait()
        assert stack.ipv6.mtu(FAR_HOST) == 1280 - 40
        counters = stack.counters()
        assert counters["ipv6.pmtu_lowered"] == 1
        assert counters["tcp.icmp_mss_lowered"] >= 1
        assert flow.connection.path_mss <= 1280 - 40 - 20

    kernel_peer.run(
        body,
        ipv6=True,
        slaac=False,
        ipv6_address=LOOMING,
        ipv6_gateway=ROUTER_NEAR,
    )
