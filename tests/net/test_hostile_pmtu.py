"""A path that silently drops large frames, then stops, between looming and
the Linux kernel in a namespace: looming's MSS falls after three timeouts
(RFC 2923's black hole) and comes back by probing (RFC 4821, RFC 8899).
The drop is a relay in looming's own transmit path: every frame over 1,000
bytes vanishes, and no ICMP error says so."""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import replace

import pytest

from looming.net.stack import DirectStack
from looming.net.tcp.config import SECOND
from looming.net.tcp.plpmtud import PROBE_THRESHOLD
from tests.net.hostile import TCP_SINK
from tests.net.kernel import KernelPeer
from tests.net.test_hostile import kernel_program
from tests.net.test_plpmtud import BlackHole, eventually, write_slowly

pytestmark = pytest.mark.root

# The largest path MSS through 1,000-byte frames: less Ethernet, IP and TCP headers.
NARROW_MSS = 1000 - 14 - 20 - 20


def test_linux_receives_every_byte_while_the_mss_falls_and_comes_back(
    kernel_peer: KernelPeer,
) -> None:
    data = random.Random(7).randbytes(2_000_000)

    async def body(stack: DirectStack) -> None:
        stack.tcp.config = replace(stack.tcp.config, pmtu_raise_interval_ns=SECOND // 4)
        sink = await kernel_program(kernel_peer, TCP_SINK, kernel_peer.peer_address, 9100)
        assert sink.stdout is not None
        assert (await asyncio.wait_for(sink.stdout.readline(), 10)).strip() == b"ready"
        hole = BlackHole(stack.network, 1000)
        flow = await stack.tcp.connect(kernel_peer.peer_address, 9100, timeout=5)
        conn = flow.connection  # type: ignore[attr-defined]
        writer = asyncio.create_task(write_slowly(flow, data))
        await eventually(lambda: conn.mtu_search is not None, 20)
        await eventually(lambda: conn.path_mss > NARROW_MSS - PROBE_THRESHOLD, 20)
        assert conn.path_mss <= NARROW_MSS  # no size that failed was kept
        hole.on = False
        await eventually(lambda: conn.path_mss == 1460, 20)
        assert conn.send_mss == 1448  # Linux's MSS, less the timestamps
        await writer
        await flow.close()
        total, digest = (await asyncio.wait_for(sink.stdout.readline(), 20)).split()
        assert int(total) == len(data)
        assert digest.decode() == hashlib.sha256(data).hexdigest()
        assert await sink.wait() == 0
        counters = stack.counters()
        assert counters["tcp.black_hole_mss_lowered"] == 1
        assert counters["tcp.pmtu_probes_lost"] >= 1
        assert counters["tcp.pmtu_probes_acked"] >= 2  # below 1,000 bytes, then at 1,500
        # The connection's MSS fell, not the host's path MTU (only ICMP lowers that).
        assert counters.get("ipv4.pmtu_lowered", 0) == 0

    kernel_peer.run(body)
