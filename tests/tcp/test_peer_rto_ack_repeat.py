"""A pure ACK that was the last thing we sent goes once more when the peer
then stays silent (10 ms, or two of our smoothed round trips). Nothing
else resends a lost ACK but the peer's retransmission timeout: a Linux
sender arms no tail loss probe while it recovers, and for a lone segment
in flight its probe waits as long as the timeout. Through the loss relay
at 3% loss about a third of the Linux peer's 200 ms timeouts against
looming were such ACKs: the one for the retransmission that filled the
last hole, or the one for a lone segment while the peer's window to us
was shut, with no data of ours following to carry the ACK again."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.devices.net import Capabilities, FrameHandler, MacAddress, Network, NetworkStats
from looming.net.stack import DirectStack
from looming.net.tcp import TcpLayer
from looming.net.tcp.config import MS
from looming.net.tcp.seq import unwrap
from looming.net.tcp.tcb import ACK_REPEAT_FLOOR_NS
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.kernel import KernelPeer
from tests.tcp.script import ISS, PLAIN, Script, established, seg

A = ISS + 1
B = 5001  # IRS + 1 in tests/tcp/script.py
MSS = 1000
Sent = tuple[int, int, tuple[tuple[int, int], ...], int]  # when, ack, SACK blocks, payload


def connection(sack: bool) -> Script:
    return established(replace(PLAIN, sack=sack), sack_permitted=sack)


def quiet(s: Script, ms: int) -> list[Sent]:
    """Let ``ms`` milliseconds pass, a millisecond at a time, the peer
    silent; what we sent, with when."""
    sent: list[Sent] = []
    for _ in range(ms):
        s.advance(1)
        for header, payload in s.take():
            sent.append((s.now, unwrap(header.ack, B), header.sack_blocks, len(payload)))
    return sent


def without_dsack(ack: int, blocks: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """``blocks`` less a first block that reports a duplicate (RFC 2883):
    below the ACK, or within a larger block after it."""
    if not blocks:
        return blocks
    left, right = (unwrap(edge, B) for edge in blocks[0])
    if right <= ack:
        return blocks[1:]
    for other in blocks[1:]:
        other_left, other_right = (unwrap(edge, B) for edge in other)
        if other_left <= left and right <= other_right and other != blocks[0]:
            return blocks[1:]
    return blocks


@given(
    arrivals=st.lists(st.integers(0, 7), min_size=1, max_size=10),
    sack=st.booleans(),
)
def test_the_last_pure_ack_goes_once_more_after_a_silence(arrivals: list[int], sack: bool) -> None:
    """The peer's segments arrive in any order, repeated or not; it then
    falls silent. On a SACK connection the last ACK we sent leaves once
    more, 10 ms after it, the same; then nothing. Without SACK (where a
    duplicate ACK counts towards a fast retransmit) it does not."""
    s = connection(sack)
    sent: list[Sent] = []
    for index in arrivals:
        s.recv(seg("A", B + index * MSS, A), bytes([index]) * MSS)
        sent += [(s.now, unwrap(h.ack, B), h.sack_blocks, len(p)) for h, p in s.take()]
    sent += quiet(s, 1000)
    assert sent and all(size == 0 for *_, size in sent)
    if not sack:
        return
    *_, last, repeat = sent
    assert repeat[1] == last[1], "the same ACK"
    # The same ranges reported (perhaps more of them, in another order): a
    # D-SACK is reported once.
    assert set(without_dsack(last[1], last[2])) <= set(repeat[2])
    assert ACK_REPEAT_FLOOR_NS <= repeat[0] - last[0] < ACK_REPEAT_FLOOR_NS + MS
    assert s.conn.stats.acks_repeated == 1
    before_last = sent[:-1]
    assert all(when < last[0] + ACK_REPEAT_FLOOR_NS for when, *_ in before_last), (
        "an ACK followed by another within 10 ms is not repeated"
    )


@given(gap_ms=st.integers(0, 9), ours=st.booleans())
def test_nothing_is_repeated_once_the_peer_or_our_data_follows(gap_ms: int, ours: bool) -> None:
    """The ACK of the peer's data is followed within 10 ms by more of its
    data (ACKed in turn), or by data of ours, which carries the ACK: only
    the peer's new data earns its ACK a repeat; data of ours, none."""
    s = connection(sack=True)
    s.recv(seg("A", B + MSS, A), b"x" * MSS)  # out of order: ACKed at once, with a block
    assert len(s.take()) == 1
    assert quiet(s, gap_ms) == []
    if ours:
        s.call("send", b"y" * 100)
        assert [size for *_, size in quiet(s, 1)] == [100]
        # Our data is ACKed by the peer; then silence: no pure ACK of ours to repeat.
        s.recv(seg("A", B + 2 * MSS, A + 100), b"")
        assert [size for *_, size in quiet(s, 200)] == []
        return
    s.recv(seg("A", B, A), b"w" * MSS)  # the hole filled
    (filled,) = s.take()
    assert unwrap(filled[0].ack, B) == B + 2 * MSS
    repeats = quiet(s, 200)
    assert [(ack, blocks) for _, ack, blocks, _ in repeats] == [(B + 2 * MSS, ())]


def test_a_window_update_alone_is_not_repeated() -> None:
    """An ACK that tells the peer nothing new (no data acknowledged, no
    blocks) is not what a silent peer waits for."""
    s = connection(sack=True)
    s.recv(seg("A", B, A), b"z" * MSS)
    s.recv(seg("A", B + MSS, A), b"z" * MSS)
    assert len(s.take()) == 1  # every second segment
    assert len(quiet(s, 20)) == 1  # (that one, repeated)
    s.conn.receive(s.now)  # the application reads: the window opens...
    s._collect()
    assert quiet(s, 200) == []  # ...and no update is owed twice


# ---------------------------------------------------------------- the Linux kernel

# A kernel server that sends one small segment a while after the
# connection opens and then waits for the peer to close.
KERNEL_LONE_SEGMENT = r"""
import socket, time
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("10.77.0.1", 5012))
listener.listen(1)
print("listening", flush=True)
conn, _ = listener.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
time.sleep(0.2)
conn.sendall(b"q" * 100)
while conn.recv(1000):
    pass
conn.close()
print("done", flush=True)
"""


class AckDropper:
    """The TAP, but the first pure ACK written after :attr:`armed` is set
    is lost on the way."""

    def __init__(self, inner: Network) -> None:
        self.inner = inner
        self.armed = False
        self.dropped = 0

    @property
    def mac(self) -> MacAddress:
        return self.inner.mac

    @property
    def mtu(self) -> int:
        return self.inner.mtu

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def stats(self) -> NetworkStats:
        return self.inner.stats()

    async def write(self, frame: bytes) -> None:
        if self.armed and _is_pure_ack(frame):
            self.armed = False
            self.dropped += 1
            return
        await self.inner.write(frame)

    async def listen(self, handler: FrameHandler) -> None:
        await self.inner.listen(handler)

    async def disconnect(self) -> None:
        await self.inner.disconnect()


def _is_pure_ack(frame: bytes) -> bool:
    if frame[12:14] != b"\x08\x00" or frame[23] != 6:  # IPv4, TCP
        return False
    ip_length = (frame[14] & 0x0F) * 4
    total = int.from_bytes(frame[16:18], "big")
    tcp = 14 + ip_length
    header_length = (frame[tcp + 12] >> 4) * 4
    return frame[tcp + 13] == 0x10 and total == ip_length + header_length


def _retransmitted_segments(snmp: str) -> int:
    lines = snmp.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("Tcp:"):
            fields = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(fields["RetransSegs"])
    raise AssertionError("no Tcp line in /proc/net/snmp")


@pytest.mark.root
def test_linux_does_not_resend_a_lone_segment_whose_ack_was_lost(
    kernel_peer: KernelPeer,
) -> None:
    """Linux sends one small segment and nothing after it; our ACK for it
    is lost. The ACK goes again 10 ms later, so Linux never resends the
    segment (without it, Linux waited for its 200 ms timeout)."""

    async def main() -> dict[str, Any]:
        dropper = AckDropper(await kernel_peer.open_tap())
        stack = await DirectStack.connect(
            dropper,
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(5),
            address=kernel_peer.stack_address,
            gateway=kernel_peer.peer_address,
        )
        try:
            tcp = stack.tcp
            assert isinstance(tcp, TcpLayer)
            snmp = await kernel_peer.exec_output("cat", "/proc/net/snmp")
            server = await kernel_peer.python(KERNEL_LONE_SEGMENT)
            assert server.stdout is not None
            assert (await server.stdout.readline()).strip() == b"listening"
            flow = await tcp.connect(kernel_peer.peer_address, 5012, timeout=10)
            dropper.armed = True  # (the handshake's ACK has left)
            assert await asyncio.wait_for(flow.read(), 10) == b"q" * 100
            await asyncio.sleep(0.6)  # past Linux's timeout, had it needed one
            after = await kernel_peer.exec_output("cat", "/proc/net/snmp")
            await flow.close()
            assert (await server.stdout.readline()).strip() == b"done"
            await server.wait()
            return {
                "dropped": dropper.dropped,
                "resent": _retransmitted_segments(after) - _retransmitted_segments(snmp),
                "repeated": tcp.counters["acks_repeated"],
            }
        finally:
            await stack.disconnect()

    outcome = asyncio.run(main())
    assert outcome["dropped"] == 1, "the ACK of the lone segment was lost"
    assert outcome["resent"] == 0, "Linux resent its segment: it never had our ACK"
    assert outcome["repeated"] >= 1
