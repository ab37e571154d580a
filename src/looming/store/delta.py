"""Git delta instructions for one version of a directory against the previous.

A commit usually changes one run of a tree's entries (trees are sorted, and
an edit touches neighbouring names), so a delta that copies the common
prefix and suffix and inserts the middle is nearly as small as a general one
while costing two binary searches instead of indexing the whole source
(dulwich's ``create_delta`` spends hundreds of microseconds per small tree).
Edits scattered through a large tree fall back to the general delta.
"""

from __future__ import annotations

_COPY_CHUNK = 0x10000  # the largest copy git's own deltas use per instruction
_INSERT_CHUNK = 0x7F


def _size_header(size: int) -> bytes:
    if size < 0x80:
        return bytes((size,))
    if size < 0x4000:
        return bytes((size & 0x7F | 0x80, size >> 7))
    out = bytearray()
    while size >= 0x80:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out)


def _copy(out: bytearray, offset: int, size: int) -> None:
    while size > 0:
        chunk = min(size, _COPY_CHUNK)
        op = 0x80
        at = len(out)
        out.append(0)
        for index in range(4):
            byte = (offset >> (8 * index)) & 0xFF
            if byte:
                op |= 1 << index
                out.append(byte)
        # A size of 0x10000 is written as no size bytes at all.
        if chunk != _COPY_CHUNK:
            if chunk & 0xFF:
                op |= 0x10
                out.append(chunk & 0xFF)
            if chunk & 0xFF00:
                op |= 0x20
                out.append(chunk >> 8)
        out[at] = op
        offset += chunk
        size -= chunk


def _insert(out: bytearray, data: bytes) -> None:
    if len(data) <= _INSERT_CHUNK:
        if data:
            out.append(len(data))
            out += data
        return
    for start in range(0, len(data), _INSERT_CHUNK):
        piece = data[start : start + _INSERT_CHUNK]
        out.append(len(piece))
        out += piece


def _common_prefix(source: bytes, target: bytes, limit: int) -> int:
    low, high = 0, limit  # source[:low] == target[:low]
    while low < high:
        middle = (low + high + 1) // 2
        if source[low:middle] == target[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix(source: bytes, target: bytes, limit: int) -> int:
    low, high = 0, limit  # the last ``low`` bytes are equal
    source_end, target_end = len(source), len(target)
    while low < high:
        middle = (low + high + 1) // 2
        if (
            source[source_end - middle : source_end - low]
            == target[target_end - middle : target_end - low]
        ):
            low = middle
        else:
            high = middle - 1
    return low


def make_delta(source: bytes, target: bytes) -> bytes:
    """Delta instructions that rebuild ``target`` from ``source``."""
    limit = min(len(source), len(target))
    if target.startswith(source):  # entries added at the end: one comparison
        prefix, suffix = limit, 0
    else:
        prefix = _common_prefix(source, target, limit)
        suffix = _common_suffix(source, target, limit - prefix)
    middle = target[prefix : len(target) - suffix]
    if len(middle) > 4096 and len(middle) > len(target) // 8:
        # Scattered edits in a big tree: the general algorithm finds the
        # copies between them.
        from dulwich.pack import create_delta

        return b"".join(create_delta(source, target))
    out = bytearray(_size_header(len(source)))
    out += _size_header(len(target))
    if prefix:
        _copy(out, 0, prefix)
    _insert(out, middle)
    if suffix:
        _copy(out, len(source) - suffix, suffix)
    return bytes(out)
