"""A burst's run of data segments continued by their bytes alone (no header
parsed for a segment that continues the run: endpoint._continues) against
the same burst with every segment parsed and checked field by field: the
same bytes delivered, state, SACK blocks, ACK and counters, merges too."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.net.tcp import endpoint as endpoint_module
from looming.net.tcp.endpoint import Arrival
from tests.tcp.test_merge import _accepted, _burst, _replies, _segment

# What may differ in a segment's bytes beyond what _burst varies: a payload
# byte (a bad checksum, unless the interface vouched for it), the reserved
# bits beside the data offset, the urgent pointer (no URG), the CE mark, an
# address equal to the connection's but another object.
_twist = st.sampled_from(
    ["", "", "", "", "corrupt", "verified_corrupt", "reserved", "urgent", "ce", "address"]
)


def _twisted(arrivals: list[Arrival], twists: list[str]) -> list[Arrival]:
    out: list[Arrival] = []
    for (src, dst, segment, verified, ce), twist in zip(arrivals, twists, strict=False):
        raw = bytearray(segment)
        if twist in ("corrupt", "verified_corrupt") and len(raw) > 32:
            raw[-1] ^= 0x5A
            verified = twist == "verified_corrupt"
        elif twist == "reserved":
            raw[12] |= 0x01  # (the parser ignores it; the checksum then fails)
        elif twist == "urgent":
            raw[18:20] = b"\x00\x07"
        elif twist == "ce":
            ce = True
        elif twist == "address":
            src = IPv4Address(str(src))
        out.append((src, dst, bytes(raw), verified, ce))
    out.extend(arrivals[len(twists) :])
    return out


def _outcome(arrivals: list[Arrival]) -> tuple[object, ...]:
    endpoint, conn, _ = _accepted()
    now = 2_000_000
    endpoint.input_burst(arrivals, now)
    replies = [(h.ack, h.window, h.sack_blocks, h.flags) for h in _replies(endpoint, conn, now)]
    buffer = conn.receive_buffer
    return (
        conn.receive(now),
        buffer.rcv_nxt,
        buffer.sack_blocks(4),
        conn.state,
        conn.ts_recent,
        replies,
        endpoint.stats.as_dict(),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=24), st.lists(_twist, max_size=24))
def test_runs_continued_by_their_bytes_are_runs_parsed(
    spec: list[tuple[int, int, int, int, int]], twists: list[str]
) -> None:
    _, _, our_seq = _accepted()
    arrivals = _twisted(_burst(spec, our_seq), twists)
    by_bytes = _outcome(arrivals)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(endpoint_module, "_continues", lambda *_: False)
        parsed = _outcome(arrivals)
    assert by_bytes == parsed


def test_a_run_continued_by_its_bytes_is_merged() -> None:
    """The shortcut is taken: a run of in-order segments is one merge, and
    had no segment after the first parsed."""
    _, _, our_seq = _accepted()
    arrivals = _burst([(0, 1000, 0, 0, 0)] * 6, our_seq)
    parsed: list[bytes] = []
    original = endpoint_module.wire.parse

    def counting(segment: bytes) -> object:
        parsed.append(segment)
        return original(segment)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(endpoint_module.wire, "parse", counting)
        outcome = _outcome(arrivals)
    stats = outcome[-1]
    assert isinstance(stats, dict)
    assert stats["segments_merged"] == 5
    segments = {segment for _, _, segment, _, _ in arrivals}
    assert [segment for segment in parsed if segment in segments] == [arrivals[0][2]]
