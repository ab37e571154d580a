"""The ACK for the segment that fills the last hole leaves at once, on its
own, even under the TCP layer, which otherwise answers a burst of arrivals
with one ACK (RFC 5681 4.2: an immediate ACK when a segment fills a gap).
The sender is then recovering, where Linux arms no tail loss probe: when
the same burst held the rest of its flight, one lost ACK for all of it left
the Linux sender waiting 200 ms for its retransmission timeout."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from looming.net.tcp.seq import unwrap
from tests.tcp.script import ISS, PLAIN, Script, established, seg

A = ISS + 1
B = 5001  # IRS + 1 in tests/tcp/script.py
MSS = 1000


def receiver() -> Script:
    config = replace(PLAIN, sack=True, coalesce_acks=True, congestion_control="cubic")
    s = established(config, sack_permitted=True, window=1 << 16)
    s.conn.defer_output = True  # as the TCP layer drives it: one ACK per burst
    return s


def burst(s: Script, indexes: list[int]) -> list[int]:
    """The peer's segments ``indexes`` arrive in one burst; the ACK numbers
    of what we sent for it, in order."""
    for index in indexes:
        s.recv(seg("A", B + index * MSS, A), bytes([index % 256]) * MSS)
    s.conn.flush_ack(s.now)
    s._collect()
    return [unwrap(header.ack, B) for header, _ in s.take()]


@given(
    flight=st.integers(2, 12),
    holes=st.sets(st.integers(0, 10), min_size=1),
    after=st.integers(0, 6),
    answer=st.booleans(),
)
def test_the_last_hole_filled_is_acked_apart_from_the_rest(
    flight: int, holes: set[int], after: int, answer: bool
) -> None:
    """The flight arrives with holes; then one burst brings the missing
    segments, in order, and ``after`` new ones behind them (and, with
    ``answer``, data of ours to carry the burst's ACK). The segment that
    fills the last hole is ACKed at once, up to the end of the flight; the
    burst's last ACK covers everything."""
    holes = {i for i in holes if i < flight - 1}
    if not holes:
        holes = {0}
    s = receiver()
    burst(s, [i for i in range(flight) if i not in holes])
    if answer:
        s.call("send", b"r" * MSS)  # goes at once: nothing is in flight
        s.take()
    acks = burst(s, sorted(holes) + list(range(flight, flight + after)))
    assert acks, "the burst is ACKed"
    assert acks[0] == B + flight * MSS  # the fill of the last hole, at once
    s.advance(50)  # a lone segment after it waits for the delayed-ACK timer
    acks += [unwrap(header.ack, B) for header, _ in s.take()]
    assert acks[-1] == B + (flight + after) * MSS
    if after:
        assert len(acks) >= 2


def test_a_filled_hole_alone_in_its_burst_gets_one_ack() -> None:
    """Nothing follows the fill in its burst: one ACK, as before."""
    s = receiver()
    burst(s, [1, 2, 3])
    assert burst(s, [0]) == [B + 4 * MSS]
