"""Path-MTU search back up after a black hole (RFC 4821, RFC 8899): the
sans-I/O search against a model path, and two direct stacks on the
in-memory switch whose path drops large frames, then stops."""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import struct
from dataclasses import replace
from ipaddress import IPv4Interface
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from looming.devices.stack import TcpFlow
from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.net.tcp.config import SECOND, TcpStats
from looming.net.tcp.plpmtud import PROBE_THRESHOLD, MtuSearch
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.hostile import icmp_error

A = IPv4Interface("10.0.0.1/24")
B = IPv4Interface("10.0.0.2/24")
INTERVAL = 600 * SECOND


class Sizes:
    """A connection's sizes as the search sees them."""

    def __init__(self, path_mss: int, peer_mss: int = 1460, ts_ok: bool = True) -> None:
        self.path_mss, self.peer_mss, self.ts_ok = path_mss, peer_mss, ts_ok

    @property
    def send_mss(self) -> int:
        return min(self.path_mss, self.peer_mss) - (12 if self.ts_ok else 0)


def run_search(search: MtuSearch, sizes: Sizes, fits: int, start: int = 0) -> tuple[int, list[int]]:
    """Drive ``search`` against a path that carries a path MSS of ``fits``
    (larger probes are lost) until it rests; the time and the sizes tried."""
    now, seq, tried = max(start, search.next_at), 1000, []
    for _ in range(100):
        payload = search.take(now, seq, 1 << 20, 1 << 20, sizes)
        if not payload:
            if search.probe_mss == 0 and (now < search.next_at or not search.searching):
                return now, tried
            now = max(now, search.next_at)
            continue
        tried.append(search.probe_mss)
        if search.probe_mss <= fits:
            sizes.path_mss = search.acknowledged(seq + payload, sizes.path_mss)
        else:
            search.resent(seq, seq + sizes.send_mss)
        seq += payload
    raise AssertionError(f"the search never rested: tried {tried}")


@given(
    low=st.integers(512, 1024),
    ceiling=st.integers(1025, 8960),
    data=st.data(),
)
def test_the_search_finds_the_path_and_never_exceeds_it(
    low: int, ceiling: int, data: st.DataObject
) -> None:
    fits = data.draw(st.integers(low, ceiling), label="fits")
    stats = TcpStats()
    search = MtuSearch(low, ceiling, INTERVAL, INTERVAL, stats)
    sizes = Sizes(low, peer_mss=65495)
    assert search.take(INTERVAL - 1, 0, 1 << 20, 1 << 20, sizes) == 0  # not before the timer
    now, tried = run_search(search, sizes, fits)
    assert low <= sizes.path_mss <= fits
    assert fits - sizes.path_mss < PROBE_THRESHOLD
    assert len(tried) <= 2 + math.ceil(math.log2(ceiling - low + 1))
    assert stats.pmtu_probes == len(tried)
    assert stats.pmtu_probes_acked + stats.pmtu_probes_lost == len(tried)
    if fits == ceiling:
        assert tried == [ceiling]  # the ceiling first: one probe when the path is whole
    # Resting: nothing until the raise timer, then the search starts over
    # and finds a path that grew meanwhile.
    if search.searching:
        assert search.take(now, 0, 1 << 20, 1 << 20, sizes) == 0
        assert search.next_at >= now + INTERVAL - 1 or not tried
        run_search(search, sizes, ceiling, start=now)
        assert sizes.path_mss == ceiling


@given(st.integers(1, 2000), st.integers(1, 2000))
def test_no_probe_without_the_data_and_the_room_for_it(available: int, room: int) -> None:
    search = MtuSearch(536, 1460, INTERVAL, 0, TcpStats())
    payload = search.take(0, 5, available, room, Sizes(536))
    assert payload in (0, 1448)
    assert (payload == 1448) == (available >= 1448 and room >= 1448)
    assert (search.probe_mss == 1460) == bool(payload)


def test_the_peer_mss_ends_the_search() -> None:
    """Nothing above the peer's MSS is worth probing."""
    search = MtuSearch(536, 1460, INTERVAL, 0, TcpStats())
    assert search.take(0, 5, 1 << 20, 1 << 20, Sizes(536, peer_mss=536)) == 0
    assert not search.searching


def test_an_icmp_report_caps_the_search() -> None:
    search = MtuSearch(536, 1460, INTERVAL, 0, TcpStats())
    search.cap(1000)
    sizes = Sizes(536)
    run_search(search, sizes, 1460)
    assert sizes.path_mss == 1000


async def pair() -> tuple[DirectStack, DirectStack]:
    switch = MemorySwitch()
    common = {"time": UnixTime(), "clock": UnixClock()}
    server = await DirectStack.connect(switch.port(), random=UnixRandom(1), address=A, **common)
    client = await DirectStack.connect(switch.port(), random=UnixRandom(2), address=B, **common)
    return server, client


async def eventually(condition: object, seconds: float = 10.0) -> None:
    assert callable(condition)
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


def test_the_mss_comes_back_when_the_black_hole_goes() -> None:
    """Frames over 1,000 bytes vanish: three timeouts halve the MSS, probes
    find the largest size that passes (946 bytes of MSS: 1,000 less the
    Ethernet, IP and TCP headers). The path is then whole again: after
    the raise interval one probe brings the full MSS back. Every byte
    arrives, in order."""
    data = random.Random(5).randbytes(3_000_000)

    async def main() -> None:
        server, client = await pair()
        client.tcp.config = replace(client.tcp.config, pmtu_raise_interval_ns=SECOND // 4)
        hole = BlackHole(client.network, 1000)
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def sink(flow: TcpFlow) -> None:
            chunks = []
            while chunk := await flow.read():
                chunks.append(chunk)
            got.set_result(b"".join(chunks))

        await server.tcp.listen(80, sink)
        flow = await client.tcp.connect(A.ip, 80, timeout=1)
        conn = flow.connection  # type: ignore[attr-defined]
        writer = asyncio.create_task(write_slowly(flow, data))
        stats = client.tcp.stats
        await eventually(lambda: conn.mtu_search is not None)
        await eventually(lambda: stats.pmtu_probes > 0)
        recoveries, timeouts = stats.fast_retransmits, stats.timeouts
        await eventually(lambda: conn.path_mss > 946 - PROBE_THRESHOLD)
        assert conn.path_mss <= 946
        assert stats.pmtu_probes_lost >= 1  # the ceiling, at least
        # Each lost probe was resent without a fast recovery (no congestion).
        assert (stats.fast_retransmits, stats.timeouts) == (recoveries, timeouts)
        hole.on = False
        await eventually(lambda: conn.path_mss == 1460)
        await writer
        await flow.shutdown()
        assert hashlib.sha256(await asyncio.wait_for(got, 10)).digest() == (
            hashlib.sha256(data).digest()
        )
        counters = client.counters()
        assert counters["tcp.black_hole_mss_lowered"] == 1
        assert counters["tcp.pmtu_probes_acked"] >= 2  # some below 1000, the last at 1460
        assert conn.send_mss == 1448
        await flow.close()
        await server.disconnect()
        await client.disconnect()

    asyncio.run(main())


class BlackHole:
    """A path on which frames over ``limit`` bytes written to ``network``
    vanish while ``on`` (no ICMP says so), as through a PMTU black hole."""

    def __init__(self, network: Any, limit: int) -> None:
        self.on = True
        send = network.write

        async def path(frame: bytes) -> None:
            if len(frame) <= limit or not self.on:
                await send(frame)

        network.write = path


async def write_slowly(flow: TcpFlow, data: bytes) -> None:
    """Write ``data`` in pieces with pauses, so the search has time to run."""
    for offset in range(0, len(data), 20_000):
        await flow.write(data[offset : offset + 20_000])
        await asyncio.sleep(0.01)


def test_an_icmp_report_during_the_search_caps_it() -> None:
    """A "fragmentation needed" naming 1,200 bytes, about data in flight, on
    a connection searching after a black hole: when the drop stops, the
    MSS comes back to 1,160, not to the interface's 1,460."""
    data = random.Random(6).randbytes(3_000_000)

    async def main() -> None:
        server, client = await pair()
        client.tcp.config = replace(client.tcp.config, pmtu_raise_interval_ns=SECOND // 4)
        hole = BlackHole(client.network, 1000)

        async def sink(flow: TcpFlow) -> None:
            while await flow.read():
                pass

        await server.tcp.listen(80, sink)
        flow = await client.tcp.connect(A.ip, 80, timeout=1)
        conn = flow.connection  # type: ignore[attr-defined]
        writer = asyncio.create_task(write_slowly(flow, data))
        await eventually(lambda: conn.mtu_search is not None and conn.snd_una < conn.snd_max)
        first8 = struct.pack("!HHI", conn.local_port, 80, conn.snd_una & 0xFFFFFFFF)
        client.ipv4.input(
            icmp_error(str(A.ip), str(B.ip), 3, 4, str(B.ip), str(A.ip), 6, first8, mtu=1200)
        )
        assert client.tcp.icmp_counters["icmp_accepted"] == 1
        assert conn.mtu_search.ceiling == 1160
        hole.on = False
        await eventually(lambda: conn.path_mss == 1160)
        await writer
        assert conn.path_mss == 1160
        await flow.close()
        await server.disconnect()
        await client.disconnect()

    asyncio.run(main())
