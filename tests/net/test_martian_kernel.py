"""Martian sources against the stack on a TAP: frames crafted in the
kernel's namespace (a packet socket, so any source goes) reach looming,
which must answer none of them, while the kernel's own ping from its
real address is still answered (and Linux's own frames pass)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer
from tests.net.test_ipv6_kernel import without_dad

pytestmark = pytest.mark.root

# argv: interface, looming's MAC, looming's IPv4 address, looming's IPv6
# link-local address. Sends a SYN and an echo request from each martian
# source, then one echo request from the kernel's real address; prints
# what looming sent back (other than ARP and neighbour discovery).
PROBE = r"""
import socket, struct, sys, time
interface, mac, ours4, ours6 = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((interface, 0))
own = s.getsockname()[4]

def csum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def ipv4(src, dst, proto, body):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", csum(header)) + header[12:]
    return b"\x08\x00" + header + body

def ipv6(src, dst, proto, body):
    return b"\x86\xdd" + struct.pack("!IHBB16s16s", 6 << 28, len(body), proto, 64,
                                     socket.inet_pton(socket.AF_INET6, src),
                                     socket.inet_pton(socket.AF_INET6, dst)) + body

def pseudo(family, src, dst, proto, length):
    if family == 4:
        return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, length)
    a, b = (socket.inet_pton(socket.AF_INET6, x) for x in (src, dst))
    return a + b + struct.pack("!IxxxB", length, proto)

def syn(family, src, dst):
    seg = struct.pack("!HHIIBBHHH", 40123, 7, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
    c = csum(pseudo(family, src, dst, 6, len(seg)) + seg)
    seg = seg[:16] + struct.pack("!H", c) + seg[18:]
    return (ipv4 if family == 4 else ipv6)(src, dst, 6, seg)

def echo(family, src, dst):
    kind, proto = (8, 1) if family == 4 else (128, 58)
    msg = struct.pack("!BBHHH", kind, 0, 0, 77, 1) + b"martian"
    c = csum((b"" if family == 4 else pseudo(6, src, dst, 58, len(msg))) + msg)
    return (ipv4 if family == 4 else ipv6)(src, dst, proto, msg[:2] + struct.pack("!H", c) + msg[4:])

frames = []
for src in ("127.0.0.1", "0.0.0.0", "0.1.2.3", "10.77.0.255", "255.255.255.255", "240.0.0.1", "224.0.0.5"):
    frames += [(own, syn(4, src, ours4)), (own, echo(4, src, ours4))]
for src in ("::1", "::", "::ffff:10.77.0.1", "ff02::1"):
    frames += [(own, syn(6, src, ours6)), (own, echo(6, src, ours6))]
for group in (b"\xff" * 6, b"\x01\x00\x5e\x00\x00\x01"):  # a group Ethernet source
    frames += [(group, syn(4, "10.77.0.1", ours4)), (group, echo(4, "10.77.0.1", ours4))]
for source, frame in frames:
    s.send(mac + source + frame)
    time.sleep(0.01)
time.sleep(0.3)
s.send(mac + own + echo(4, "10.77.0.1", ours4))  # the control: answered
s.settimeout(1.0)
end = time.time() + 1.0
while time.time() < end:
    try:
        frame, where = s.recvfrom(2048)
    except socket.timeout:
        break
    if where[2] == 4 or frame[6:12] != mac:
        continue  # ours, or not from looming
    kind = frame[12:14]
    if kind == b"\x08\x06" or (kind == b"\x86\xdd" and frame[20] == 58 and frame[54] in (133, 135, 136, 143)):
        continue  # ARP, neighbour discovery, MLD
    if kind == b"\x08\x00":
        print("to", frame[0:6].hex(), socket.inet_ntoa(frame[30:34]), "protocol", frame[23], flush=True)
    else:
        print("to", frame[0:6].hex(), socket.inet_ntop(socket.AF_INET6, frame[38:54]), "next", frame[20], flush=True)
print("done", len(frames), flush=True)
"""


def test_martian_sources_get_no_answer(kernel_peer: KernelPeer) -> None:
    without_dad(kernel_peer)

    async def body(stack: DirectStack) -> None:
        assert stack.ipv6 is not None
        await stack.tcp.listen(7, lambda flow: flow.close())
        await asyncio.sleep(1.2)  # the link-local address past duplicate address detection
        out = await kernel_peer.exec_output(
            sys.executable, "-c", PROBE, kernel_peer.tap_name, str(stack.ethernet.mac),
            str(kernel_peer.stack_address.ip), str(stack.ipv6.link_local),
        )  # fmt: skip
        lines = out.split("\n")[:-1]
        theirs = kernel_peer.sh("cat", f"/sys/class/net/{kernel_peer.tap_name}/address")
        # Only the control ping from the kernel's real address is answered.
        control = f"to {theirs.strip().replace(':', '')} 10.77.0.1 protocol 1"
        assert lines == [control, "done 26"], out
        counters = stack.counters()
        assert counters["ipv4.martian_source"] == 7 * 2
        assert counters["ipv6.martian_source"] == 4 * 2
        assert counters["ipv4.martian_mac_source"] == 2 * 2

    kernel_peer.run(body, ipv6=True)
