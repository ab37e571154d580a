"""The peer's MSS bounds every segment looming sends, with and without
segmentation offload, over IPv4 and IPv6, and every IPv4 segment has DF.

The Linux kernel in a namespace connects with ``TCP_MAXSEG`` 536 (so its
SYN advertises MSS 536) and reads what looming sends, while a packet
socket on its side of the TAP records each frame with its virtio-net
header: a TSO frame's ``gso_size`` is what the kernel cuts it into."""

from __future__ import annotations

import sys

import pytest

from looming.devices.stack import TcpFlow
from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer
from tests.net.test_ipv6_kernel import without_dad

pytestmark = pytest.mark.root

PEER_MSS = 536
SIZE = 120_000

# argv: family (4 or 6), address, port, MSS, bytes, interface. Prints one
# line per data frame looming sent: "<payload+options per segment> <DF> <gso>",
# then "received <n>".
SMALL_MSS_CLIENT = r"""
import socket, struct, sys
family = socket.AF_INET if sys.argv[1] == "4" else socket.AF_INET6
address, port, mss, size, interface = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
sniff.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR: each frame's GSO size
sniff.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
sniff.bind((interface, 0))
c = socket.socket(family, socket.SOCK_STREAM)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
c.settimeout(10)
c.connect(socket.getaddrinfo(address, port, family)[0][4])
got = 0
while got < size and (data := c.recv(65536)):
    got += len(data)
c.close()
sniff.setblocking(False)
while True:
    try:
        frame, where = sniff.recvfrom(70000)
    except BlockingIOError:
        break
    if where[2] == 4:  # PACKET_OUTGOING: the kernel's own
        continue
    _, gso_type, _, gso_size, _, _ = struct.unpack("<BBHHHH", frame[:10])
    eth = frame[10:]
    kind = eth[12:14]
    if kind == b"\x08\x00" and eth[23] == 6:
        ihl = (eth[14] & 15) * 4
        df = eth[20] >> 6 & 1
        fragment = (int.from_bytes(eth[20:22], "big") & 0x3FFF) != 0
        tcp = eth[14 + ihl : 14 + int.from_bytes(eth[16:18], "big")]
    elif kind == b"\x86\xdd" and eth[20] in (6, 44):
        df = 1
        fragment = eth[20] == 44
        tcp = eth[54 : 54 + int.from_bytes(eth[18:20], "big")]
    else:
        continue
    if fragment:
        print("fragment 0 0", flush=True)
        continue
    options = (tcp[12] >> 4) * 4 - 20
    payload = len(tcp) - 20 - options
    if payload:
        print(f"{(gso_size if gso_type else payload) + options} {df} {gso_type}")
print("received", got, flush=True)
"""


@pytest.mark.parametrize("offload", [False, True], ids=["no-offload", "offload"])
@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_segments_respect_the_peers_mss(
    kernel_peer: KernelPeer, family: int, offload: bool
) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        async def send(flow: TcpFlow) -> None:
            await flow.write(bytes(i % 251 for i in range(SIZE)))
            await flow.close()

        await stack.tcp.listen(6536, send)
        if family == 4:
            target = str(kernel_peer.stack_address.ip)
        else:
            assert stack.ipv6 is not None
            target = f"{stack.ipv6.link_local}%{kernel_peer.tap_name}"
        out = await kernel_peer.exec_output(
            sys.executable, "-c", SMALL_MSS_CLIENT, str(family), target, "6536",
            str(PEER_MSS), str(SIZE), kernel_peer.tap_name,
        )  # fmt: skip
        lines = out.split("\n")[:-1]
        assert lines[-1] == f"received {SIZE}"
        frames = [line.split() for line in lines[:-1]]
        assert frames and all(kind != "fragment" for kind, _, _ in frames), out
        sizes = [int(size) for size, _, _ in frames]
        # Payload and TCP options within the MSS (RFC 9293 3.7.1, RFC 6691).
        assert max(sizes) <= PEER_MSS, sorted(set(sizes))
        assert max(sizes) >= PEER_MSS - 40  # (full segments, not tiny ones)
        assert all(df == "1" for _, df, _ in frames)  # DF on every segment
        if offload and family == 4:
            # Segmentation offload in use, cut by the kernel at the MSS.
            assert any(gso != "0" for _, _, gso in frames)

    kernel_peer.run(body, ipv6=True, offload=offload)
