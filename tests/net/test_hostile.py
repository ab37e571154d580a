"""The direct stack under a hostile peer, with the Linux kernel in a namespace
measuring from its side (see tests/net/kernel.py and tests/net/hostile.py)."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import subprocess
import sys
import time
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable, Iterator
from ipaddress import IPv4Interface

import dpkt
import pytest

from looming.devices.stack import TcpFlow
from looming.net.ethernet import EthernetLayer
from looming.net.stack import DirectStack
from tests.net.hostile import (
    ECHO_PROBE,
    RAW_SEND,
    SYN_FLOOD,
    UDP_SINK,
    ethernet_frame,
    ipv4_packet,
    udp_fragments,
)
from tests.net.kernel import KernelPeer

pytestmark = pytest.mark.root

# A /16 on looming's side: the flood's sources 10.77.1.1 ... 10.77.20.250 are
# on-link neighbours to resolve, and none answers.
WIDE = IPv4Interface("10.77.0.2/16")


async def echo(flow: TcpFlow) -> None:
    while data := await flow.read():
        await flow.write(data)


# Garbage collections during the current test: (start, end), time.monotonic.
COLLECTIONS: list[tuple[float, float]] = []


@pytest.fixture(autouse=True)
def own_heap() -> Iterator[None]:
    """Measure the stack with a heap of its own size: what earlier tests left
    in this process is frozen (a unikernel's collector never walks a test
    run's heap), and each collection still made is recorded (Timeline)."""
    started: list[float] = []

    def collected(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.monotonic()]
        elif started:
            COLLECTIONS.append((started[0], time.monotonic()))

    COLLECTIONS.clear()
    gc.collect()
    gc.freeze()
    gc.callbacks.append(collected)
    try:
        yield
    finally:
        gc.callbacks.remove(collected)
        gc.unfreeze()


class Timeline:
    """When looming read each frame and echoed each message (time.monotonic,
    the probe's clock too), to tell where the worst round's time went."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Record every frame an EthernetLayer made from now on receives, and
        every garbage collection's pause."""
        self.frames: list[float] = []
        self.echoes: list[tuple[float, float]] = []
        self.collections = COLLECTIONS
        receive = EthernetLayer.input
        now = time.monotonic
        frames = self.frames

        def input(layer: EthernetLayer, frame: bytes, checksum_verified: bool = False) -> None:
            frames.append(now())
            receive(layer, frame, checksum_verified)

        monkeypatch.setattr(EthernetLayer, "input", input)

    async def echo(self, flow: TcpFlow) -> None:
        while data := await flow.read():
            read_at = time.monotonic()
            await flow.write(data)
            self.echoes.append((read_at, time.monotonic()))

    def explain(self, report: dict[str, float]) -> str:
        """Where looming was during the probe's worst round."""
        start = report["worst_at"]
        end = start + report["worst_ms"] / 1000
        reads = [t for t in self.frames if start <= t <= end]
        gaps = [b - a for a, b in zip([start, *reads], [*reads, end], strict=True)]
        echoed = [(r, w) for r, w in self.echoes if start <= r <= end]
        ms = [f"+{(r - start) * 1e3:.1f}/+{(w - start) * 1e3:.1f}" for r, w in echoed]
        paused = sum(
            min(b, end) - max(a, start) for a, b in self.collections if b > start and a < end
        )
        return (
            f"worst round {report['worst_ms']:.1f} ms (quiet {report['quiet_worst_ms']:.1f}): "
            f"looming read the message / echoed it at {ms or 'never'} ms; it read "
            f"{len(reads)} frames meanwhile, at most {max(gaps) * 1e3:.1f} ms apart; "
            f"garbage collection held it {paused * 1e3:.1f} ms"
        )


async def kernel_program(peer: KernelPeer, code: str, *args: object) -> Process:
    """``python -c code args`` in the namespace, with stdin, stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        *peer.netns(sys.executable, "-c", code, *map(str, args)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def flood_while_probing(
    peer: KernelPeer,
    stack: DirectStack,
    *,
    syns: int,
    burst: int,
    duration: float,
    handler: Callable[[TcpFlow], Awaitable[None]] = echo,
) -> tuple[dict[str, float], float]:
    """Run the echo probe from Linux while SYN_FLOOD sends ``syns`` SYNs;
    the probe's report and the seconds the flood took."""
    await stack.tcp.listen(7, handler)
    flood = await kernel_program(
        peer, SYN_FLOOD, peer.tap_name, stack.ethernet.mac.hex(), "10.77.0.2", "7", syns, burst
    )
    report, sent = await probe_through(peer, flood, duration)
    return report, float(sent[1])


async def probe_through(
    peer: KernelPeer, flood: Process, duration: float
) -> tuple[dict[str, float], list[bytes]]:
    """Run ECHO_PROBE from Linux against looming's echo on port 7: a quiet
    phase first, then ``duration`` seconds while ``flood`` (a kernel program
    that prints "ready", waits for a line and prints "sent ..." when done)
    sends. The probe's report and the flood's "sent" line, split."""
    # The quiet phase lasts as long as the flood's: this shared machine's own
    # scheduling noise shows in both.
    probe = await kernel_program(peer, ECHO_PROBE, "10.77.0.2", "7", duration, duration)
    assert flood.stdout is not None and flood.stdin is not None
    assert probe.stdout is not None and probe.stdin is not None
    assert (await asyncio.wait_for(flood.stdout.readline(), 30)).strip() == b"ready"
    assert (await asyncio.wait_for(probe.stdout.readline(), 10)).strip() == b"connected"
    probe.stdin.write(b"go\n")
    assert (await asyncio.wait_for(probe.stdout.readline(), 10)).strip() == b"quiet"
    flood.stdin.write(b"go\n")
    sent = (await asyncio.wait_for(flood.stdout.readline(), 30)).split()
    assert sent[0] == b"sent", sent
    report = json.loads(await asyncio.wait_for(probe.stdout.readline(), duration + 10))
    assert await flood.wait() == 0 and await probe.wait() == 0
    return report, sent


async def tap_dropped(peer: KernelPeer) -> int:
    """Frames the kernel dropped on the TAP on their way to looming: its
    queue overflowed because looming did not read fast enough."""
    out = await peer.exec_output("cat", f"/sys/class/net/{peer.tap_name}/statistics/tx_dropped")
    return int(out)


def check_syns_accounted(counters: dict[str, int], syns: int, rounds: float) -> None:
    """Every SYN reached TCP (listeners' backlog, then cookies) or was
    dropped by the policer, before any parsing."""
    policed = counters.get("ethernet.syn_policed", 0)
    assert counters["tcp.segments_in"] + policed >= syns + rounds


def test_syn_flood_from_unresolvable_sources_does_not_stall_a_connection(
    kernel_peer: KernelPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeline = Timeline(monkeypatch)

    async def body(stack: DirectStack) -> None:
        dropped_before = await tap_dropped(kernel_peer)
        report, flood_s = await flood_while_probing(
            kernel_peer, stack, syns=5000, burst=25, duration=2.0, handler=timeline.echo
        )
        # looming read every frame the kernel queued for it, in time.
        assert await tap_dropped(kernel_peer) == dropped_before
        counters = stack.counters()
        # SYNs beyond 2,000 a second were policed; the answers went to
        # neighbours that never resolve, and no more than the new-resolution
        # budget of them became ARP broadcasts (each resolution asks at most
        # three times).
        check_syns_accounted(counters, 5000, report["rounds"])
        assert counters["ethernet.syn_policed"] > 1000
        assert counters["tcp.cookies_sent"] > 1000
        assert counters["arp.resolution_limited"] > 500
        limits = stack.arp.limits
        started_at_most = limits.new_burst + limits.new_per_second * (flood_s + 1.0)
        assert counters["arp.tx_request"] <= limits.requests * started_at_most
        assert len(stack.arp.table.incomplete) <= stack.arp.limits.max_incomplete
        assert stack.arp.table.queued <= stack.arp.limits.queue_total
        assert flood_s < 2.0  # the flood did overlap the probe
        assert report["rounds"] > 200
        print("probe", report, "flood", flood_s)
        # A stall is what the flood adds to this machine's own noise (other
        # work on a shared machine delays the probe's rounds now and then).
        assert report["worst_ms"] < 50 + report["quiet_worst_ms"], timeline.explain(report)
        started = time.monotonic()
        await stack.disconnect()
        assert time.monotonic() - started < 1.0

    kernel_peer.run(body, address=WIDE)


def test_one_burst_of_syns_does_not_drop_a_connection_segment(
    kernel_peer: KernelPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5,000 SYNs sent as fast as a raw socket can: the kernel queues them
    (and the probe's segments among them) for looming, which reads and
    polices each one in a couple of microseconds. No frame is dropped, so
    the probe never waits for Linux's retransmission timeout (200 ms or
    more)."""
    timeline = Timeline(monkeypatch)

    async def body(stack: DirectStack) -> None:
        dropped_before = await tap_dropped(kernel_peer)
        report, flood_s = await flood_while_probing(
            kernel_peer, stack, syns=5000, burst=5000, duration=1.0, handler=timeline.echo
        )
        assert await tap_dropped(kernel_peer) == dropped_before
        counters = stack.counters()
        check_syns_accounted(counters, 5000, report["rounds"])
        assert counters["ethernet.syn_policed"] > 4000
        assert counters["tcp.segments_in"] >= stack.ethernet.syn_burst + report["rounds"]
        print("probe", report, "flood", flood_s)
        # The probe's segment may queue behind the whole burst: the time the
        # burst took to send is the least it can wait, beyond the quiet noise.
        bound = 50 + report["quiet_worst_ms"] + 1000 * flood_s
        assert report["worst_ms"] < bound, timeline.explain(report)

    kernel_peer.run(body, address=WIDE)


async def kernel_mac(peer: KernelPeer) -> bytes:
    out = await peer.exec_output("ip", "-o", "link", "show", peer.tap_name)
    match = re.search(r"link/ether ([0-9a-f:]{17})", out)
    assert match is not None, out
    return bytes.fromhex(match.group(1).replace(":", ""))


# (name, fragments as (payload, start, end) over the UDP datagram of 48 bytes)
FIRST = bytes(range(40))
SECOND = bytes(range(100, 140))
FRAGMENT_CASES = [
    ("in order", [(FIRST, 0, 16), (FIRST, 16, 48)]),
    ("reversed", [(FIRST, 24, 48), (FIRST, 0, 24)]),
    ("exact duplicate", [(FIRST, 0, 16), (FIRST, 0, 16), (FIRST, 16, 48)]),
    ("conflicting overlap", [(FIRST, 0, 24), (SECOND, 16, 48)]),
    ("conflicting overlap, later first", [(SECOND, 16, 48), (FIRST, 0, 24)]),
    ("same-bytes overlap", [(FIRST, 0, 24), (FIRST, 16, 48)]),
    ("covering fragment", [(FIRST, 8, 16), (FIRST, 0, 24), (FIRST, 24, 48)]),
]


def fragments_of(src: str, dst: str, ident: int, case: list[tuple[bytes, int, int]]) -> list[bytes]:
    """The case's fragments, its datagrams marked with ``ident`` in their first byte."""
    return [
        udp_fragments(src, dst, 9000, bytes([ident]) + data[1:], ident, [(a, b)])[0]
        for data, a, b in case
    ]


def test_overlapping_fragments_are_dropped_as_linux_drops_them(kernel_peer: KernelPeer) -> None:
    """The same fragment sequences go to looming and to Linux; both deliver
    exactly the same datagrams."""

    async def body(stack: DirectStack) -> None:
        peer_mac = await kernel_mac(kernel_peer)
        ours: asyncio.Queue[bytes] = asyncio.Queue()
        await stack.udp.bind(9000, lambda datagram: ours.put_nowait(datagram.data))
        sink = await kernel_program(kernel_peer, UDP_SINK, "10.77.0.1", 9000)
        assert sink.stdout is not None
        assert (await sink.stdout.readline()).strip() == b"ready"
        to_looming: list[str] = []
        for ident, (_, case) in enumerate(FRAGMENT_CASES, start=100):
            for packet in fragments_of("10.77.0.1", "10.77.0.2", ident, case):
                to_looming.append(ethernet_frame(stack.ethernet.mac, peer_mac, packet).hex())
            for packet in fragments_of("10.77.0.2", "10.77.0.1", ident, case):
                await stack.network.write(ethernet_frame(peer_mac, stack.ethernet.mac, packet))
        sender = await kernel_program(kernel_peer, RAW_SEND, kernel_peer.tap_name, *to_looming)
        assert await sender.wait() == 0
        linux = []
        while (line := (await asyncio.wait_for(sink.stdout.readline(), 5)).strip()) != b"done":
            linux.append(bytes.fromhex(line.decode()))
        assert await sink.wait() == 0
        looming = [ours.get_nowait() for _ in range(ours.qsize())]
        assert looming == linux
        # The cases without overlaps (a duplicate is no overlap), in order.
        assert looming == [bytes([ident]) + FIRST[1:] for ident in (100, 101, 102)]
        counters = stack.counters()
        assert counters["reassembly.overlap_dropped"] == 4
        assert counters["reassembly.duplicate"] == 1

    kernel_peer.run(body)


def test_source_routed_pings_are_not_answered(kernel_peer: KernelPeer) -> None:
    """Loose and strict source routes: looming drops them as Linux does."""

    async def body(stack: DirectStack) -> None:
        peer_mac = await kernel_mac(kernel_peer)
        frames = []
        for option in (0x83, 0x89, None):
            route = b"" if option is None else bytes([option, 7, 4]) + bytes([10, 77, 0, 9])
            echo = dpkt.icmp.ICMP(
                type=8, data=dpkt.icmp.ICMP.Echo(id=7, seq=option or 1, data=b"route")
            )
            to_looming = ipv4_packet("10.77.0.1", "10.77.0.2", 1, echo, ident=1, options=route)
            to_linux = ipv4_packet("10.77.0.2", "10.77.0.1", 1, echo, ident=1, options=route)
            frames.append(ethernet_frame(stack.ethernet.mac, peer_mac, to_looming).hex())
            await stack.network.write(ethernet_frame(peer_mac, stack.ethernet.mac, to_linux))
        sender = await kernel_program(kernel_peer, RAW_SEND, kernel_peer.tap_name, *frames)
        assert await sender.wait() == 0
        await asyncio.sleep(0.3)
        counters = stack.counters()
        assert counters["ipv4.source_route_dropped"] == 2
        assert counters["icmp.rx_echo_request"] == 1  # only the plain one
        assert counters["icmp.rx_echo_reply"] == 1  # Linux answered only the plain one too

    kernel_peer.run(body)
