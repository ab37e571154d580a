"""Path-MTU discovery with the Linux kernel in a namespace as the peer: a
black hole (frames over 1,000 bytes from looming vanish) halves looming's
MSS, then a "fragmentation needed" naming 1,200 bytes, forged by a raw
socket in the namespace about data in flight, caps the search. When the
hole is gone the probes confirm 1,200 bytes: the path-MTU entry (which
the report, not the black hole, lowered) is that, a connection opened
then starts there, and no frame larger than the report leaves. And a probe lost at the tail of the flight
to Linux is resent at once (tests/net/test_pmtu_probe_loss.py)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from dataclasses import replace

import pytest

from looming.net.stack import DirectStack
from looming.net.tcp.config import SECOND
from tests.net.hostile import IP_RAW_SEND, TCP_SINK, icmp_error
from tests.net.kernel import KernelPeer
from tests.net.test_hostile import kernel_program
from tests.net.test_plpmtud import BlackHole, eventually, write_slowly
from tests.net.test_pmtu_probe_loss import (
    check_lost_probe_was_no_congestion,
    lone_probe_through_a_hole,
)

pytestmark = pytest.mark.root

REPORTED_MTU = 1200


class LargestFrame:
    """The largest frame written to ``network`` since ``reset``."""

    def __init__(self, network: object) -> None:
        self.largest = 0
        send = network.write  # type: ignore[attr-defined]

        async def path(frame: bytes) -> None:
            self.largest = max(self.largest, len(frame))
            await send(frame)

        network.write = path  # type: ignore[attr-defined]


async def sink_at(peer: KernelPeer, port: int) -> asyncio.subprocess.Process:
    sink = await kernel_program(peer, TCP_SINK, peer.peer_address, port)
    assert sink.stdout is not None
    assert (await asyncio.wait_for(sink.stdout.readline(), 10)).strip() == b"ready"
    return sink


async def forge_until_accepted(peer: KernelPeer, stack: DirectStack, conn: object) -> None:
    """Send "fragmentation needed" (MTU 1,200) quoting ``conn``'s oldest
    unacknowledged byte from the namespace until looming takes one (the
    ACKs in flight may pass the byte quoted before the error arrives)."""
    forger = await kernel_program(peer, IP_RAW_SEND)
    assert forger.stdin is not None and forger.stdout is not None
    ours, theirs = str(peer.stack_address.ip), str(peer.peer_address)
    try:
        for _ in range(50):
            first8 = struct.pack(
                "!HHI",
                conn.local_port,  # type: ignore[attr-defined]
                conn.remote_port,  # type: ignore[attr-defined]
                conn.snd_una & 0xFFFFFFFF,  # type: ignore[attr-defined]
            )
            packet = icmp_error(theirs, ours, 3, 4, ours, theirs, 6, first8, mtu=REPORTED_MTU)
            forger.stdin.write(packet.hex().encode() + b"\n")
            await forger.stdin.drain()
            assert (await asyncio.wait_for(forger.stdout.readline(), 10)).strip() == b"sent"
            await asyncio.sleep(0.05)
            if stack.tcp.icmp_counters["icmp_accepted"]:
                return
        raise AssertionError(f"no forged error was taken: {dict(stack.tcp.icmp_counters)}")
    finally:
        forger.stdin.close()
        await forger.wait()


def test_a_reported_mtu_confirmed_by_probes_is_the_paths(kernel_peer: KernelPeer) -> None:
    data = random.Random(9).randbytes(2_000_000)

    async def body(stack: DirectStack) -> None:
        stack.tcp.config = replace(stack.tcp.config, pmtu_raise_interval_ns=SECOND // 4)
        sink = await sink_at(kernel_peer, 9101)
        frames = LargestFrame(stack.network)
        hole = BlackHole(stack.network, 1000)
        flow = await stack.tcp.connect(kernel_peer.peer_address, 9101, timeout=5)
        conn = flow.connection  # type: ignore[attr-defined]
        writer = asyncio.create_task(write_slowly(flow, data))
        await eventually(lambda: conn.mtu_search is not None, 20)
        # The black hole halved this connection's MSS, not the path's MTU.
        assert conn.path_mss == 730 and stack.ipv4.mtu(kernel_peer.peer_address) == 1480
        await forge_until_accepted(kernel_peer, stack, conn)
        assert conn.mtu_search.ceiling == REPORTED_MTU - 40
        hole.on = False
        frames.largest = 0
        await eventually(lambda: conn.path_mss == REPORTED_MTU - 40, 20)
        # The confirmed size is the path's: the entry the report set.
        assert stack.ipv4.mtu(kernel_peer.peer_address) == REPORTED_MTU - 20
        second = await sink_at(kernel_peer, 9102)
        fresh = await stack.tcp.connect(kernel_peer.peer_address, 9102, timeout=5)
        assert fresh.connection.path_mss == REPORTED_MTU - 40  # type: ignore[attr-defined]
        await fresh.write(data[:300_000])
        await fresh.close()
        await writer
        await flow.close()
        for process, sent in ((sink, data), (second, data[:300_000])):
            assert process.stdout is not None
            total, digest = (await asyncio.wait_for(process.stdout.readline(), 20)).split()
            assert (int(total), digest.decode()) == (len(sent), hashlib.sha256(sent).hexdigest())
            assert await process.wait() == 0
        assert frames.largest <= REPORTED_MTU + 14  # nothing above the report left
        counters = stack.counters()
        assert counters["ipv4.pmtu_lowered"] == 1  # by the report alone
        assert counters["tcp.icmp_accepted"] >= 1

    kernel_peer.run(body)


def test_a_lost_tail_probe_to_linux_is_resent_at_once(kernel_peer: KernelPeer) -> None:
    """The same lone probe at the tail, lost on the way to Linux: its bytes
    go again at the old size on the probe's timer, not the RTO, without a
    window cut, and Linux receives every byte."""

    async def body(stack: DirectStack) -> None:
        sink = await sink_at(kernel_peer, 9103)
        flow = await stack.tcp.connect(kernel_peer.peer_address, 9103, timeout=5)
        elapsed, conn, before = await lone_probe_through_a_hole(stack, flow)
        check_lost_probe_was_no_congestion(elapsed, conn, before, stack.tcp.stats)
        await flow.close()
        assert sink.stdout is not None
        total, digest = (await asyncio.wait_for(sink.stdout.readline(), 20)).split()
        sent = b"w" * 2000 + b"p" * 1448
        assert (int(total), digest.decode()) == (len(sent), hashlib.sha256(sent).hexdigest())
        assert await sink.wait() == 0

    kernel_peer.run(body)


def test_a_forged_report_lowers_the_mss_until_a_probe_restores_it(
    kernel_peer: KernelPeer,
) -> None:
    """A "fragmentation needed" forged in the namespace about looming's data
    in flight to Linux lowers the connection to 1,160 bytes of MSS; the path
    was never narrower, so after the raise interval a probe at Linux's MSS
    is confirmed and the connection, and the path's entry, are whole again.
    Linux receives every byte."""
    data = random.Random(11).randbytes(2_000_000)

    async def body(stack: DirectStack) -> None:
        stack.tcp.config = replace(stack.tcp.config, pmtu_raise_interval_ns=SECOND // 4)
        sink = await sink_at(kernel_peer, 9104)
        flow = await stack.tcp.connect(kernel_peer.peer_address, 9104, timeout=5)
        conn = flow.connection  # type: ignore[attr-defined]
        writer = asyncio.create_task(write_slowly(flow, data))
        await forge_until_accepted(kernel_peer, stack, conn)
        assert stack.tcp.icmp_counters["icmp_mss_lowered"] == 1
        await eventually(lambda: conn.path_mss == 1460, 20)
        assert stack.ipv4.mtu(kernel_peer.peer_address) == 1480
        await writer
        await flow.close()
        assert sink.stdout is not None
        total, digest = (await asyncio.wait_for(sink.stdout.readline(), 20)).split()
        assert (int(total), digest.decode()) == (len(data), hashlib.sha256(data).hexdigest())
        assert await sink.wait() == 0
        counters = stack.counters()
        assert counters["tcp.pmtu_probes_acked"] >= 1
        assert counters["ipv4.pmtu_raised"] == 1
        assert counters["tcp.timeouts"] == 0

    kernel_peer.run(body)
