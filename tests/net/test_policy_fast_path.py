"""The frame policy's shortcut for the common frame (a segment of a TCP
connection the layer holds, in a datagram without options) gives the
general verdict, and leaves the budgets as the general verdict does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from looming.net.ethernet import FramePolicy

ADDRESSES = st.sampled_from([bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes([192, 0, 2, 9])])
PORTS = st.sampled_from([b"\x00\x50", b"\x9c\x40", b"\x00\x35"])


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Mostly IPv4 frames carrying TCP or UDP near the common case, some
    cut short, fragmented, with options or with a VLAN tag."""
    words = draw(st.sampled_from([5, 5, 5, 6, 4]))
    fragment = draw(st.sampled_from([b"\x40\x00", b"\x00\x00", b"\x20\x00", b"\x00\x10"]))
    protocol = draw(st.sampled_from([6, 6, 17, 1]))
    header = (
        bytes([0x40 | words, 0])
        + b"\x00\x3c\x12\x34"
        + fragment
        + bytes([64, protocol])
        + b"\x00\x00"
        + draw(ADDRESSES)
        + draw(ADDRESSES)
        + bytes(max(words - 5, 0) * 4)
    )
    transport = (
        draw(PORTS)
        + draw(PORTS)
        + bytes(9)
        + bytes([draw(st.sampled_from([0x10, 0x02, 0x12, 0x18, 0x04]))])
    )
    transport += bytes(6)
    ethertype = draw(st.sampled_from([b"\x08\x00"] * 4 + [b"\x81\x00", b"\x86\xdd"]))
    tag = b"\x00\x01\x08\x00" if ethertype == b"\x81\x00" else b""
    frame = (
        b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02" + ethertype + tag + header + transport
    )
    return frame[: draw(st.integers(0, len(frame)))] if draw(st.integers(0, 3)) == 0 else frame


def _policy(pinned: list[bytes]) -> FramePolicy:
    policy = FramePolicy(0, syn_burst=2, stray_burst=2, fragment_burst=2)
    for key in pinned:
        policy.pin(key)
    return policy


@given(
    st.lists(st.tuples(ADDRESSES, ADDRESSES, PORTS, PORTS).map(b"".join), max_size=4),
    st.lists(st.tuples(frames(), st.booleans()), max_size=8),
)
def test_the_common_frames_verdict_is_the_general_verdict(
    pinned: list[bytes], received: list[tuple[bytes, bool]]
) -> None:
    """(A frame's flow is pinned too, when drawn so: as for a connection.)"""
    pinned += [frame[26:38] for frame, pin in received if pin and len(frame) >= 38]
    fast, general = _policy(pinned), _policy(pinned)
    for frame, _ in received:
        assert fast.verdict(frame, lambda: 0) == general._general_verdict(frame, lambda: 0)
    for bucket in ("syn", "stray", "fragments", "neighbour_syn"):
        assert _tokens(fast, bucket) == _tokens(general, bucket)
    assert fast.reassemblies == general.reassemblies
    assert fast.counters == general.counters


def _tokens(policy: FramePolicy, bucket: str) -> float:
    return float(getattr(policy, bucket)._tokens)
