"""Tree deltas: whatever the edit, applying the delta (dulwich's decoder, and
git's through fsck of merged packs elsewhere) gives back the target."""

from __future__ import annotations

import zlib

from dulwich._pack import apply_delta
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.store.delta import make_delta
from looming.store.growing import stored_delta_entry
from looming.store.pack import OFS_DELTA, _ofs_header, _parse_entry_header, stored_zlib


def _apply(source: bytes, delta: bytes) -> bytes:
    return b"".join(apply_delta(source, delta))


@settings(derandomize=True, max_examples=300)
@given(
    source=st.binary(max_size=3000),
    edits=st.lists(
        st.tuples(st.integers(0, 3000), st.integers(0, 200), st.binary(max_size=300)), max_size=4
    ),
)
def test_delta_rebuilds_the_target(source: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    target = bytearray(source)
    for at, removed, inserted in edits:
        at = min(at, len(target))
        target[at : at + removed] = inserted
    assert _apply(source, make_delta(source, bytes(target))) == bytes(target)


def test_one_edited_run_in_a_large_tree_is_a_small_delta() -> None:
    entries = [b"100644 k%05d\0" % i + bytes([i % 251]) * 20 for i in range(10_000)]
    source = b"".join(entries)
    entries[5000:5010] = [b"100644 k%05d\0" % i + b"\xee" * 20 for i in range(5000, 5010)]
    target = b"".join(entries)
    delta = make_delta(source, target)
    assert len(delta) < 400
    assert _apply(source, delta) == target
    # Copies longer than one instruction carries (64 KiB) are split.
    assert _apply(source, make_delta(source, source)) == source


def test_scattered_edits_fall_back_to_the_general_delta() -> None:
    source = bytes(range(256)) * 400
    target = bytearray(source)
    for at in range(0, len(target), 5000):
        target[at : at + 8] = b"XXXXXXXX"
    delta = make_delta(source, bytes(target))
    assert len(delta) < len(target) // 10
    assert _apply(source, delta) == bytes(target)


@settings(derandomize=True, max_examples=300)
@given(delta=st.binary(max_size=3000), distance=st.integers(1, 1 << 24))
def test_a_stored_delta_entry_parses_back(delta: bytes, distance: int) -> None:
    """The one-go entry of a small stored delta is what the header and
    stored-zlib helpers make, and reads back as an OFS_DELTA at its base."""
    entry = stored_delta_entry(delta, distance)
    assert entry == _ofs_header(len(delta), distance) + stored_zlib(delta)
    offset = distance + 5  # where the entry sits in a pack
    kind, size, base, start = _parse_entry_header(b"\0" * offset + entry, offset)
    assert (kind, size, base) == (OFS_DELTA, len(delta), offset - distance)
    assert zlib.decompress(entry[start - offset :]) == delta
