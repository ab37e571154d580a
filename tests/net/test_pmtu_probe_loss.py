"""A lost path-MTU probe at the tail of the flight (RFC 8899 section 3 and
4.4): nothing sent after it is SACKed to show RACK the loss, so its own
timer (the tail loss probe's timeout after it left, not the RTO) deems it
lost; its bytes go again at the old size at once, and the congestion
window is untouched."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from looming.devices.stack import TcpFlow
from looming.net.stack import DirectStack
from looming.net.tcp.config import SECOND, TcpConfig, TcpStats
from looming.net.tcp.connection import TcpConnection
from looming.net.tcp.plpmtud import MtuSearch, expire_probe, probe_lost_at
from looming.net.tcp.rack import PTO_FLOOR_NS, probe_timeout
from looming.net.tcp.scoreboard import Scoreboard
from tests.net.test_plpmtud import A, BlackHole, eventually, pair

MS = 1_000_000


@dataclass
class Rtt:
    srtt: int | None = 4 * MS
    rto: int = 200 * MS


@dataclass
class Sender:
    """What the probe's timer reads of a connection."""

    mtu_search: MtuSearch | None
    rtt: Rtt = field(default_factory=Rtt)
    config: TcpConfig = field(default_factory=TcpConfig)
    board: Scoreboard = field(default_factory=Scoreboard)


def probing(sent_at: int) -> Sender:
    """A sender with data [0, 1000) out and a 1,448-byte probe [1000, 2448)
    after it, recorded as segments of 718, 718 and 12 bytes."""
    search = MtuSearch(730, 1460, 600 * SECOND, 0, TcpStats())
    sender = Sender(search)
    sender.board.sent(0, 1000, sent_at - MS)
    for start in (1000, 1718, 2436):
        sender.board.sent(start, min(start + 718, 2448), sent_at)
    search.sent(1460, 1000, 2448, 1000, sent_at)
    return sender


def test_the_probe_times_out_after_the_tail_loss_probe_time() -> None:
    sender = probing(sent_at=50 * MS)
    deadline = probe_lost_at(sender)
    assert deadline == 50 * MS + max(2 * 4 * MS, PTO_FLOOR_NS)
    assert not expire_probe(sender, deadline - 1)
    assert sender.mtu_search is not None and sender.mtu_search.probe_mss == 1460
    assert expire_probe(sender, deadline)
    lost = [(s.start, s.end) for s in sender.board.segments if s.lost]
    assert lost == [(1000, 1718), (1718, 2436), (2436, 2448)]  # not the data before it
    assert sender.board.has_lost_to_send
    search = sender.mtu_search
    assert (search.probe_mss, search.high, search.stats.pmtu_probes_lost) == (0, 1459, 1)
    assert probe_lost_at(sender) is None  # one verdict per probe
    assert not expire_probe(sender, deadline + SECOND)


def test_the_timer_comes_no_later_than_the_tail_loss_probe() -> None:
    """Whatever is in flight, the probe's timer is the tail loss probe's
    (which, resending the probe's last bytes first, would hide its loss)."""
    for acked in (0, 1000, 1718, 2436):
        sender = probing(sent_at=50 * MS)
        sender.board.acknowledge(acked)
        tlp = probe_timeout(4 * MS, len(sender.board), sender.config.delayed_ack_ns, 200 * MS)
        assert probe_lost_at(sender) == 50 * MS + tlp


def test_a_sacked_probe_is_not_lost() -> None:
    """Every byte of the probe SACKed: it arrived, and only a hole before it
    holds the cumulative ACK back; the timer stops, the ACK confirms it."""
    sender = probing(sent_at=0)
    for segment in sender.board.segments[1:]:
        segment.sacked = True
    assert not expire_probe(sender, SECOND)
    assert probe_lost_at(sender) is None
    assert not any(segment.lost for segment in sender.board.segments)
    search = sender.mtu_search
    assert search is not None
    assert search.acknowledged(2448, 730) == 1460


def test_no_timer_once_data_follows_the_probe() -> None:
    sender = probing(sent_at=0)
    sender.board.sent(2448, 3000, MS)
    assert probe_lost_at(sender) is None
    assert not expire_probe(sender, SECOND)
    assert not any(segment.lost for segment in sender.board.segments)


def test_no_timer_without_a_probe() -> None:
    assert probe_lost_at(Sender(None)) is None
    search = MtuSearch(730, 1460, 600 * SECOND, 0, TcpStats())
    assert probe_lost_at(Sender(search)) is None
    sender = probing(sent_at=0)
    assert sender.mtu_search is not None
    sender.mtu_search.acknowledged(2448, 730)
    assert probe_lost_at(sender) is None


async def lone_probe_through_a_hole(
    stack: DirectStack, flow: TcpFlow
) -> tuple[float, TcpConnection, tuple[int, int]]:
    """Make ``flow``'s next segment a probe at its tail (the connection
    searching from 730 bytes, the path dropping frames over 1,000), write
    one probe's worth and wait until all is acknowledged; the seconds that
    took, the connection and its (cwnd, ssthresh) before."""
    conn: TcpConnection = flow.connection  # type: ignore[attr-defined]
    flow.set_nodelay(True)
    await flow.write(b"w" * 2000)
    await eventually(lambda: conn.snd_una == conn.snd_max)
    BlackHole(stack.network, 1000)
    conn.path_mss = 730
    conn.mtu_search = MtuSearch(730, 1460, 600 * SECOND, 0, stack.tcp.stats)
    before = (conn.cc.cwnd, conn.cc.ssthresh)
    payload = conn.peer_mss - 12  # the probe: a full segment at the peer's MSS
    started = time.perf_counter()
    await flow.write(b"p" * payload)
    await eventually(lambda: conn.snd_una == conn.snd_max, 5)
    return time.perf_counter() - started, conn, before


def check_lost_probe_was_no_congestion(
    elapsed: float, conn: TcpConnection, before: tuple[int, int], stats: TcpStats
) -> None:
    assert stats.pmtu_probes == 1 and stats.pmtu_probes_lost == 1
    assert stats.timeouts == 0 and stats.fast_retransmits == 0
    # Resent on the probe's timer (a few milliseconds here), long before
    # the RTO (200 ms at least).
    assert elapsed < 0.15, f"the probe's bytes took {elapsed * 1000:.0f} ms"
    assert (conn.cc.cwnd, conn.cc.ssthresh) == before
    assert conn.path_mss == 730 and conn.mtu_search is not None
    assert conn.mtu_search.high == 1459


def test_a_lost_tail_probe_is_resent_at_once_without_a_window_cut() -> None:
    async def main() -> None:
        server, client = await pair()
        received: list[int] = []

        async def sink(flow: TcpFlow) -> None:
            while chunk := await flow.read():
                received.append(len(chunk))

        await server.tcp.listen(80, sink)
        flow = await client.tcp.connect(A.ip, 80, timeout=1)
        elapsed, conn, before = await lone_probe_through_a_hole(client, flow)
        check_lost_probe_was_no_congestion(elapsed, conn, before, client.tcp.stats)
        await flow.close()
        await eventually(lambda: sum(received) == 2000 + 1448)
        await server.disconnect()
        await client.disconnect()

    asyncio.run(main())


@given(
    sizes=st.lists(st.integers(1, 1448), min_size=1, max_size=30),
    data=st.data(),
)
def test_the_timer_marks_exactly_the_probes_unsacked_segments(
    sizes: list[int], data: st.DataObject
) -> None:
    """Any scoreboard, any probe range on segment boundaries, any SACKs and
    losses already marked: a probe at the tail gets a deadline, at which
    every one of its segments not SACKed is lost, the rest is untouched,
    and the search counts one lost probe unless all of it was SACKed; a
    probe with data sent after it gets no timer."""
    sender = Sender(MtuSearch(730, 1460, 600 * SECOND, 0, TcpStats()))
    board, start = sender.board, 0
    for size in sizes:
        segment = board.sent(start, start + size, 0)
        segment.sacked = data.draw(st.booleans())
        if not segment.sacked and data.draw(st.booleans()):
            board.mark_lost(segment)  # deemed lost before, by RACK
        start += size
    first = data.draw(st.integers(0, len(sizes) - 1), label="first")
    last = data.draw(st.integers(first, len(sizes) - 1), label="last")
    probe = board.segments[first : last + 1]
    search = sender.mtu_search
    assert search is not None
    search.sent(1460, probe[0].start, probe[-1].end, probe[0].start, 0)
    before = [(s.lost, s.sacked) for s in board.segments]
    deadline = probe_lost_at(sender)
    if last < len(sizes) - 1:
        # Not the tail: RACK sees its loss through what was sent later.
        assert deadline is None and not expire_probe(sender, SECOND)
        assert [(s.lost, s.sacked) for s in board.segments] == before
        return
    assert deadline is not None
    resend = expire_probe(sender, deadline)
    inside = range(first, last + 1)
    for index, segment in enumerate(board.segments):
        if index in inside and not segment.sacked:
            assert segment.lost
        else:
            assert (segment.lost, segment.sacked) == before[index]
    assert resend == any(not s.sacked for s in probe)
    assert search.stats.pmtu_probes_lost == int(resend)
    assert (search.probe_mss == 0) == resend
    assert probe_lost_at(sender) is None
