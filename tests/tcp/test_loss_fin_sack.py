"""SACK blocks and the peer's FIN (RFC 2018 section 3): a block whose data
ends where the FIN sits covers the FIN's sequence number too. Linux marks a
sent segment SACKed only when a block covers all of it, FIN included; a
block that stopped one short told the Linux sender nothing, and through
the loss relay it waited for its retransmission timeout with the hole
below its last segment reported to it."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.devices.net import IpProtocol, ReceivedPacket
from looming.net.stack import DirectStack
from looming.net.tcp import TcpLayer
from looming.net.tcp.seq import unwrap
from looming.net.wire import tcp as wire
from tests.net.kernel import KernelPeer
from tests.tcp.script import ISS, PLAIN, Script, established, seg

A = ISS + 1
B = 5001  # IRS + 1 in tests/tcp/script.py
MSS = 1000


def sack_connection(timestamps: bool = False) -> Script:
    config = replace(PLAIN, sack=True, timestamps=timestamps, congestion_control="cubic")
    if timestamps:
        return established(config, sack_permitted=True, timestamps=(1, 0))
    return established(config, sack_permitted=True)


def blocks(s: Script) -> list[tuple[int, int]]:
    """The SACK blocks of the last segment sent, unwrapped."""
    sent = s.take()
    assert sent, "an ACK was due"
    header, _ = sent[-1]
    return [(unwrap(left, B), unwrap(right, B)) for left, right in header.sack_blocks]


@given(
    segments=st.integers(2, 12),
    missing=st.sets(st.integers(0, 10), min_size=1),
    fin_alone=st.booleans(),
)
def test_a_block_reaching_the_fin_covers_it(
    segments: int, missing: set[int], fin_alone: bool
) -> None:
    """The peer's segments arrive in order but for some lost ones; the last
    carries the FIN (or the FIN follows it at once, on the same burst).
    Every block ending at the FIN ends one past it; none ends elsewhere
    beyond the data."""
    missing = {i for i in missing if i < segments - 1}
    if not missing:
        missing = {0}
    s = sack_connection()
    fin = B + segments * MSS
    for index in range(segments):
        if index in missing:
            continue
        last = index == segments - 1
        flags = "FA" if last and not fin_alone else "A"
        s.recv(seg(flags, B + index * MSS, A), bytes([index]) * MSS)
    if fin_alone:
        s.recv(seg("FA", fin, A))
    for left, right in blocks(s):
        assert B < left < right
        if right > fin - MSS and not fin_alone:
            assert right == fin + 1  # the range that holds the last segment
        elif not fin_alone:
            assert right < fin
    # The holes filled: everything and the FIN acknowledged, no block left.
    for index in sorted(missing):
        s.recv(seg("A", B + index * MSS, A), bytes([index]) * MSS)
    sent = s.take()
    if not fin_alone:
        header, _ = sent[-1]
        assert unwrap(header.ack, B) == fin + 1
        assert header.sack_blocks == ()


def test_the_linux_shape_a_lost_segment_below_the_last() -> None:
    """What the relay showed: seven segments, the sixth lost, the seventh
    (216 bytes) with the FIN. The ACK reports the seventh and its FIN."""
    s = sack_connection(timestamps=True)
    at = B
    for index in range(6):
        if index != 5:
            s.recv(seg("A", at, A, timestamps=(2, 1)), b"d" * MSS)
        at += MSS
    s.take()
    s.recv(seg("FPA", at, A, timestamps=(3, 1)), b"t" * 216)
    assert blocks(s) == [(at, at + 217)]
    # The peer's tail loss probe sends the last segment again: the D-SACK
    # block covers it whole, FIN included, then the range.
    s.recv(seg("FPA", at, A, timestamps=(4, 1)), b"t" * 216)
    assert blocks(s) == [(at, at + 217), (at, at + 217)]


# A kernel server that sends SIZE seeded bytes corked, so that the last
# partial segment and the FIN leave as one segment, then closes; it prints
# its retransmission timeouts (TCP_INFO's tcpi_total_retrans is no help:
# /proc/net/netstat's TCPTimeouts of the namespace is read instead).
KERNEL_CORKED_SENDER = r"""
import random, socket, sys
size = int(sys.argv[1])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("10.77.0.1", 5011))
listener.listen(1)
print("listening", flush=True)
conn, _ = listener.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
conn.sendall(random.Random(3).randbytes(size))
conn.close()
print("sent", flush=True)
"""
TAIL = 216  # the last segment's data, sent with the FIN (as in the capture)


def _kernel_timeouts(netstat: str) -> int:
    lines = netstat.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            fields = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(fields["TCPTimeouts"])
    raise AssertionError("no TcpExt line in /proc/net/netstat")


@pytest.mark.root
def test_linux_resends_the_segment_below_its_fin_without_a_timeout(
    kernel_peer: KernelPeer,
) -> None:
    """Linux sends data and its FIN on the last segment; the segment before
    it is lost on the way to us. Our ACK's SACK block covers the last
    segment and its FIN, so Linux sees the hole below it and resends at
    once (RACK), rather than after a tail loss probe and its 200 ms
    retransmission timeout, as it did when the block stopped at the FIN."""
    size = 30 * 1448 + TAIL
    sent = random.Random(3).randbytes(size)

    async def body(stack: DirectStack) -> None:
        tcp = stack.tcp
        assert isinstance(tcp, TcpLayer)
        timeouts = _kernel_timeouts(await kernel_peer.exec_output("cat", "/proc/net/netstat"))
        server = await kernel_peer.python(KERNEL_CORKED_SENDER, str(size))
        assert server.stdout is not None
        assert (await server.stdout.readline()).strip() == b"listening"
        deliver = tcp.input
        isn: list[int] = []
        dropped: list[float] = []
        resent: list[float] = []

        def lose_the_one_below_the_fin(packet: ReceivedPacket[IPv4Address], raw: bytes) -> None:
            header, payload = wire.parse(raw)
            if header.syn:
                isn.append(header.seq)
            elif isn and payload:
                end = (header.seq - isn[0] - 1 + len(payload)) & 0xFFFFFFFF
                if end == size - TAIL:
                    if not dropped:
                        dropped.append(time.monotonic())
                        return
                    resent.append(time.monotonic())
            deliver(packet, raw)

        stack.ipv4.register(IpProtocol.TCP, lose_the_one_below_the_fin)
        flow = await tcp.connect(kernel_peer.peer_address, 5011, timeout=10)
        got = b""
        while chunk := await asyncio.wait_for(flow.read(), 10):
            got += chunk
        await flow.close()
        assert (await server.stdout.readline()).strip() == b"sent"
        await server.wait()
        assert got == sent
        assert dropped and resent, "the segment below the FIN was lost once and resent"
        assert resent[0] - dropped[0] < 0.1, f"resent after {resent[0] - dropped[0]:.3f} s"
        after = _kernel_timeouts(await kernel_peer.exec_output("cat", "/proc/net/netstat"))
        assert after == timeouts, "Linux needed its retransmission timeout"

    kernel_peer.run(body)
