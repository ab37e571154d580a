"""SACK blocks and the peer's FIN (RFC 2018 section 3): a block whose data
ends where the FIN sits covers the FIN's sequence number too. Linux marks a
sent segment SACKed only when a block covers all of it, FIN included; a
block that stopped one short told the Linux sender nothing, and through
the loss relay it waited for its retransmission timeout with the hole
below its last segment reported to it."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from looming.net.tcp.seq import unwrap
from tests.tcp.script import ISS, PLAIN, Script, established, seg

A = ISS + 1
B = 5001  # IRS + 1 in tests/tcp/script.py
MSS = 1000


def sack_connection(timestamps: bool = False) -> Script:
    config = replace(PLAIN, sack=True, timestamps=timestamps, congestion_control="cubic")
    options: dict[str, object] = {"sack_permitted": True}
    if timestamps:
        options["timestamps"] = (1, 0)
    return established(config, **options)


def blocks(s: Script) -> list[tuple[int, int]]:
    """The SACK blocks of the last segment sent, unwrapped."""
    sent = s.take()
    assert sent, "an ACK was due"
    header, _ = sent[-1]
    return [(unwrap(left, B), unwrap(right, B)) for left, right in header.sack_blocks]


@given(
    segments=st.integers(2, 12),
    missing=st.sets(st.integers(0, 10), min_size=1),
    fin_alone=st.booleans(),
)
def test_a_block_reaching_the_fin_covers_it(
    segments: int, missing: set[int], fin_alone: bool
) -> None:
    """The peer's segments arrive in order but for some lost ones; the last
    carries the FIN (or the FIN follows it at once, on the same burst).
    Every block ending at the FIN ends one past it; none ends elsewhere
    beyond the data."""
    missing = {i for i in missing if i < segments - 1}
    if not missing:
        missing = {0}
    s = sack_connection()
    fin = B + segments * MSS
    for index in range(segments):
        if index in missing:
            continue
        last = index == segments - 1
        flags = "FA" if last and not fin_alone else "A"
        s.recv(seg(flags, B + index * MSS, A), bytes([index]) * MSS)
    if fin_alone:
        s.recv(seg("FA", fin, A))
    for left, right in blocks(s):
        assert B < left < right
        if right > fin - MSS and not fin_alone:
            assert right == fin + 1  # the range that holds the last segment
        elif not fin_alone:
            assert right < fin
    # The holes filled: everything and the FIN acknowledged, no block left.
    for index in sorted(missing):
        s.recv(seg("A", B + index * MSS, A), bytes([index]) * MSS)
    sent = s.take()
    if not fin_alone:
        header, _ = sent[-1]
        assert unwrap(header.ack, B) == fin + 1
        assert header.sack_blocks == ()


def test_the_linux_shape_a_lost_segment_below_the_last() -> None:
    """What the relay showed: seven segments, the sixth lost, the seventh
    (216 bytes) with the FIN. The ACK reports the seventh and its FIN."""
    s = sack_connection(timestamps=True)
    at = B
    for index in range(6):
        if index != 5:
            s.recv(seg("A", at, A, timestamps=(2, 1)), b"d" * MSS)
        at += MSS
    s.take()
    s.recv(seg("FPA", at, A, timestamps=(3, 1)), b"t" * 216)
    assert blocks(s) == [(at, at + 217)]
    # The peer's tail loss probe sends the last segment again: the D-SACK
    # block covers it whole, FIN included, then the range.
    s.recv(seg("FPA", at, A, timestamps=(4, 1)), b"t" * 216)
    assert blocks(s) == [(at, at + 217), (at, at + 217)]
