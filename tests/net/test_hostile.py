"""The direct stack under a hostile peer, with the Linux kernel in a namespace
measuring from its side (see tests/net/kernel.py and tests/net/hostile.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from asyncio.subprocess import Process
from ipaddress import IPv4Interface

import pytest

from looming.devices.stack import TcpFlow
from looming.net.stack import DirectStack
from tests.net.hostile import ECHO_PROBE, SYN_FLOOD
from tests.net.kernel import KernelPeer

pytestmark = pytest.mark.root

# A /16 on looming's side: the flood's sources 10.77.1.1 ... 10.77.20.250 are
# on-link neighbours to resolve, and none answers.
WIDE = IPv4Interface("10.77.0.2/16")


async def echo(flow: TcpFlow) -> None:
    while data := await flow.read():
        await flow.write(data)


async def kernel_program(peer: KernelPeer, code: str, *args: object) -> Process:
    """``python -c code args`` in the namespace, with stdin, stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        *peer.netns(sys.executable, "-c", code, *map(str, args)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def flood_while_probing(
    peer: KernelPeer, stack: DirectStack, *, syns: int, burst: int, duration: float
) -> tuple[dict[str, float], float]:
    """Run the echo probe from Linux while SYN_FLOOD sends ``syns`` SYNs;
    the probe's report and the seconds the flood took."""
    await stack.tcp.listen(7, echo)
    flood = await kernel_program(
        peer, SYN_FLOOD, peer.tap_name, stack.ethernet.mac.hex(), "10.77.0.2", "7", syns, burst
    )
    probe = await kernel_program(peer, ECHO_PROBE, "10.77.0.2", "7", duration)
    assert flood.stdout is not None and flood.stdin is not None
    assert probe.stdout is not None and probe.stdin is not None
    assert (await asyncio.wait_for(flood.stdout.readline(), 30)).strip() == b"ready"
    assert (await asyncio.wait_for(probe.stdout.readline(), 10)).strip() == b"connected"
    probe.stdin.write(b"go\n")
    await asyncio.sleep(0.3)  # some quiet rounds first
    flood.stdin.write(b"go\n")
    sent = (await asyncio.wait_for(flood.stdout.readline(), 30)).split()
    assert sent[0] == b"sent", sent
    report = json.loads(await asyncio.wait_for(probe.stdout.readline(), duration + 10))
    assert await flood.wait() == 0 and await probe.wait() == 0
    return report, float(sent[1])


def test_syn_flood_from_unresolvable_sources_does_not_stall_a_connection(
    kernel_peer: KernelPeer,
) -> None:
    async def body(stack: DirectStack) -> None:
        report, flood_s = await flood_while_probing(
            kernel_peer, stack, syns=5000, burst=50, duration=1.8
        )
        counters = stack.counters()
        # Every SYN reached TCP (listeners' backlog, then cookies) and every
        # answer went to a neighbour that never resolved.
        assert counters["tcp.segments_in"] >= 5000 + report["rounds"]
        assert counters["tcp.cookies_sent"] > 4000
        assert counters["arp.tx_request"] >= 5000
        assert counters["arp.incomplete_evicted"] > 0
        assert len(stack.arp.table.incomplete) <= stack.arp.limits.max_incomplete
        assert stack.arp.table.queued <= stack.arp.limits.queue_total
        assert flood_s < 1.5  # the flood did overlap the probe
        assert report["rounds"] > 200
        print("probe", report, "flood", flood_s)
        assert report["worst_ms"] < 50, report
        started = time.monotonic()
        await stack.disconnect()
        assert time.monotonic() - started < 1.0

    kernel_peer.run(body, address=WIDE)
