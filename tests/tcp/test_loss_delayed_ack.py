"""How long a lone in-order segment waits for its ACK: no longer than two
of the path's shortest round trips (at least 1 ms, at most the configured
40 ms). A sender whose window loss has cut to a few segments sends one and
waits for that ACK; through the loss relay the Linux sender did so a few
times an echo, 40 ms each, and fired a tail loss probe at most of them."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from looming.net.tcp.config import MS
from looming.net.tcp.connection import DELACK_FLOOR_NS
from looming.net.tcp.seq import unwrap
from tests.tcp.script import ISS, PLAIN, Script, established, seg

A = ISS + 1
B = 5001  # IRS + 1 in tests/tcp/script.py
MSS = 1000
US = 1_000


def with_round_trip(rtt_us: int, *, sack: bool) -> Script:
    """A connection whose one data segment the peer ACKed ``rtt_us`` after it left."""
    s = established(replace(PLAIN, sack=sack, congestion_control="cubic"), sack_permitted=sack)
    s.call("send", b"q" * MSS)
    assert len(s.take()) == 1
    s.now += rtt_us * US
    s.recv(seg("A", B, A + MSS))
    assert s.take() == []  # a pure ACK of our data asks for nothing
    return s


def ack_time_of_a_lone_segment(s: Script) -> int:
    """Feed one full in-order segment; return when its ACK left (ns after)."""
    s.recv(seg("A", B, s.conn.snd_una), b"r" * MSS)
    assert s.take() == [], "one full segment is not ACKed at once"
    start = s.now
    for _ in range(100_000):
        s.advance(0.05)
        sent = s.take()
        if sent:
            ((header, payload),) = sent
            assert payload == b"" and unwrap(header.ack, B) == B + MSS
            return s.now - start
    raise AssertionError("the lone segment was never ACKed")


@given(rtt_us=st.integers(1, 100_000), sack=st.booleans())
def test_a_lone_segment_waits_at_most_two_round_trips(rtt_us: int, sack: bool) -> None:
    s = with_round_trip(rtt_us, sack=sack)
    expected = min(40 * MS, max(2 * rtt_us * US, DELACK_FLOOR_NS))
    waited = ack_time_of_a_lone_segment(s)
    assert expected <= waited < expected + 50 * US  # advance() steps by 50 us


def test_without_a_round_trip_measured_the_configured_time_holds() -> None:
    """A connection that has sent nothing knows no round trip: 40 ms."""
    s = established(replace(PLAIN, sack=True), sack_permitted=True)
    waited = ack_time_of_a_lone_segment(s)
    assert 40 * MS <= waited < 40 * MS + 50 * US


def test_on_a_lan_path_a_lone_segment_is_acked_after_a_millisecond() -> None:
    """The relay's path: 0.3 ms. The Linux sender waited 40 ms here before."""
    s = with_round_trip(300, sack=True)
    waited = ack_time_of_a_lone_segment(s)
    assert DELACK_FLOOR_NS == MS
    assert MS <= waited < 2 * MS
