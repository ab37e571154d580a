"""A path MTU confirmed by one connection's probe is the path's (RFC 8899
5.1.4): the IPv4 layer's path-MTU entry (RFC 1191's, which an ICMP error
lowered; a black hole lowers only its own connection's MSS) rises with it, so new connections and the other open
ones to that destination send at the size found, and the raised entry still
ages out as RFC 1191 says."""

from __future__ import annotations

import asyncio
import random
import struct
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from looming.devices.stack import TcpFlow
from looming.net.arp import ArpLayer
from looming.net.ethernet import EthernetLayer
from looming.net.ipv4 import Ipv4Layer
from looming.net.netif.memory import MemorySwitch
from looming.net.tcp.config import SECOND, TcpStats
from looming.net.tcp.plpmtud import MtuSearch, SharedPath
from looming.unix.random import UnixRandom
from tests.net.hostile import icmp_error
from tests.net.test_plpmtud import A, B, BlackHole, eventually, pair, write_slowly

LINK = 1500
LIFETIME = 600 * SECOND
PEER = IPv4Address("10.0.0.9")


class FakeTime:
    """A Time device whose clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000 * SECOND

    def now_ns(self) -> int:
        return self.now


class PathMtuTable(RuleBasedStateMachine):
    """Ipv4Layer's path-MTU entry for one destination against a model: ICMP
    reports lower it (never below 552), confirmed probes raise it (never
    above what was learned lower, the entry's lifetime kept), time ages it."""

    def __init__(self) -> None:
        super().__init__()
        self.time = FakeTime()
        ethernet = EthernetLayer(MemorySwitch().port())
        arp = ArpLayer(ethernet, self.time)  # type: ignore[arg-type]
        self.layer = Ipv4Layer(
            ethernet,
            arp,
            self.time,  # type: ignore[arg-type]
            UnixRandom(1),
            interface=IPv4Interface("10.0.0.1/24"),
        )
        self.entry: tuple[int, int] | None = None  # (mtu, expiry)

    def learned(self) -> int:
        if self.entry is not None and self.entry[1] > self.time.now:
            return self.entry[0]
        self.entry = None
        return LINK

    @rule(mtu=st.integers(68, 1600))
    def icmp_report(self, mtu: int) -> None:
        new = max(mtu, 552)
        expected = new if new < self.learned() else None
        assert self.layer.lower_path_mtu(PEER, mtu, 1500) == expected
        if expected is not None:
            self.entry = (new, self.time.now + LIFETIME)

    @rule(mtu=st.integers(552, 1600))
    def probe_confirmed(self, mtu: int) -> None:
        learned = self.learned()
        got = self.layer.raise_path_mtu(PEER, mtu)
        if learned >= LINK or mtu <= learned:
            assert got is None
            return
        assert self.entry is not None
        assert got == min(mtu, LINK)
        self.entry = None if mtu >= LINK else (mtu, self.entry[1])

    @rule(seconds=st.sampled_from([1, 60, 299, 599, 600, 601]))
    def time_passes(self, seconds: int) -> None:
        self.time.now += seconds * SECOND

    @invariant()
    def the_mtu_is_the_models(self) -> None:
        assert self.layer.mtu(PEER) == self.learned() - 20
        assert self.layer.mtu(IPv4Address("10.0.0.8")) == LINK - 20


TestPathMtuTable = PathMtuTable.TestCase


class Conn:
    def __init__(self, path_mss: int, search: MtuSearch | None = None) -> None:
        self.path_mss, self.mtu_search = path_mss, search


def test_a_confirmed_size_reaches_every_connection_to_that_destination() -> None:
    """One connection's confirmed probe raises the table and the others to
    the same destination (their searches look above it), not the rest."""
    table: list[tuple[IPv4Address, int]] = []

    class Table:
        def raise_path_mtu(self, destination: IPv4Address, mtu: int) -> int | None:
            table.append((destination, mtu))
            return mtu

    search = MtuSearch(730, 1460, SECOND, 0, TcpStats())
    other_search = MtuSearch(730, 1460, SECOND, 0, TcpStats())
    prober, other, searching, elsewhere, larger = (
        Conn(730, search),
        Conn(730),
        Conn(730, other_search),
        Conn(730),
        Conn(1460),
    )
    others = IPv4Address("10.0.0.3")
    everyone = [(PEER, prober), (PEER, other), (PEER, searching), (others, elsewhere)]
    everyone.append((PEER, larger))
    search.on_confirmed = SharedPath(PEER, Table(), lambda: iter(everyone))
    search.sent(1200, 100, 100 + 1188, 100)
    assert search.acknowledged(1000, 730) == 730  # not yet covered: nothing learned
    assert table == []
    assert search.acknowledged(100 + 1188, 730) == 1200
    assert table == [(PEER, 1240)]
    assert (other.path_mss, searching.path_mss, elsewhere.path_mss) == (1200, 1200, 730)
    assert larger.path_mss == 1460
    assert other_search.low == 1200 and other_search.high == 1460


def test_new_and_open_connections_take_the_size_a_probe_confirms() -> None:
    """A black hole (frames over 1,000 bytes vanish) halves the MSS of the
    connection that hit it, and only its own (as Linux's tcp_mtu_probing):
    the path MTU stays and a connection opened then starts at 1,460. The
    search's confirmed sizes raise that connection; once the hole is gone
    and the full size is confirmed, it and a new connection send at 1,460."""
    data = random.Random(8).randbytes(3_000_000)

    async def main() -> None:
        server, client = await pair()
        client.tcp.config = replace(client.tcp.config, pmtu_raise_interval_ns=SECOND // 4)
        hole = BlackHole(client.network, 1000)
        received: list[int] = []

        async def sink(flow: TcpFlow) -> None:
            total = 0
            while chunk := await flow.read():
                total += len(chunk)
            received.append(total)

        await server.tcp.listen(80, sink)
        flow = await client.tcp.connect(A.ip, 80, timeout=1)
        conn = flow.connection  # type: ignore[attr-defined]
        writer = asyncio.create_task(write_slowly(flow, data))
        await eventually(lambda: conn.mtu_search is not None)
        assert conn.path_mss == 730  # halved: 1,460 / 2, this connection's
        assert client.ipv4.mtu(A.ip) == 1480  # the path's MTU stays the link's
        late = await client.tcp.connect(A.ip, 80, timeout=1)
        late_conn = late.connection  # type: ignore[attr-defined]
        assert late_conn.path_mss == 1460
        await eventually(lambda: conn.mtu_search.low > 730)
        assert conn.path_mss == conn.mtu_search.low
        assert client.ipv4.mtu(A.ip) == 1480
        hole.on = False
        await late.write(data[:200_000])
        await late.close()
        await eventually(lambda: conn.path_mss == 1460)
        assert client.ipv4.mtu(A.ip) == 1480
        fresh = await client.tcp.connect(A.ip, 80, timeout=1)
        assert fresh.connection.path_mss == 1460  # type: ignore[attr-defined]
        await fresh.close()
        await writer
        await flow.close()
        await eventually(lambda: sorted(received) == [0, 200_000, len(data)])
        counters = client.counters()
        assert counters.get("ipv4.pmtu_lowered", 0) == 0
        assert counters["tcp.black_hole_mss_lowered"] == 1
        await server.disconnect()
        await client.disconnect()

    asyncio.run(main())


async def icmp_lowered(limit: int | None) -> tuple[int, int, dict[str, int]]:
    """A connection writing to a path takes a "fragmentation needed" naming
    1,200 bytes about its data in flight, after which the path drops frames
    over ``limit`` bytes (None: none); the raise interval is 0.25 s. Its path MSS
    and the path MTU learned, after it ends, and the client's counters."""
    data = random.Random(10).randbytes(2_000_000)
    server, client = await pair()
    client.tcp.config = replace(client.tcp.config, pmtu_raise_interval_ns=SECOND // 4)

    async def sink(flow: TcpFlow) -> None:
        while await flow.read():
            pass

    await server.tcp.listen(80, sink)
    flow = await client.tcp.connect(A.ip, 80, timeout=1)
    conn = flow.connection  # type: ignore[attr-defined]
    writer = asyncio.create_task(write_slowly(flow, data))
    await eventually(lambda: conn.snd_una < conn.snd_max)
    first8 = struct.pack("!HHI", conn.local_port, 80, conn.snd_una & 0xFFFFFFFF)
    client.ipv4.input(
        icmp_error(str(A.ip), str(B.ip), 3, 4, str(B.ip), str(A.ip), 6, first8, mtu=1200)
    )
    assert conn.path_mss == 1160 and client.ipv4.mtu(A.ip) == 1180
    if limit is not None:
        BlackHole(client.network, limit)  # the path narrowed, as the error said
    assert conn.mtu_search is not None and conn.mtu_search.next_at > 0
    if limit is None:
        await eventually(lambda: conn.path_mss == 1460)
    await writer
    await flow.close()
    result = (conn.path_mss, client.ipv4.mtu(A.ip), client.counters())
    await server.disconnect()
    await client.disconnect()
    return result


def test_an_icmp_lowered_connection_probes_back_up() -> None:
    """RFC 1191's aging for an open connection: the path is whole again
    (the report was stale, or forged), so after the raise interval a probe
    at the full size is confirmed, the connection and the shared entry go
    back to 1,460 bytes of MSS."""
    mss, mtu, counters = asyncio.run(icmp_lowered(None))
    assert (mss, mtu) == (1460, 1480)
    assert counters["tcp.icmp_mss_lowered"] == 1
    assert counters["tcp.pmtu_probes_acked"] >= 1
    assert counters["ipv4.tx_above_path_mtu"] >= 1
    assert counters["ipv4.pmtu_raised"] == 1
    assert counters["tcp.timeouts"] == 0


def test_an_icmp_lowered_connection_stays_down_when_the_path_is_narrow() -> None:
    """The report was right (frames over 1,214 bytes, 1,200 of IP, vanish):
    the probes above it are lost without a timeout or a recovery, and the
    connection stays at the reported size."""
    mss, mtu, counters = asyncio.run(icmp_lowered(1200 + 14))
    assert (mss, mtu) == (1160, 1180)
    assert counters["tcp.pmtu_probes_lost"] >= 1
    assert counters["tcp.timeouts"] == 0
    assert counters["tcp.fast_retransmits"] == 0
