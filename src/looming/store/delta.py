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


def _copy_op(offset: int, size: int) -> bytes:
    """One copy instruction (``size`` at most 0x10000, offset below 2**32)."""
    op = 0x80
    args = []
    if offset & 0xFF:
        op |= 0x01
        args.append(offset & 0xFF)
    if offset & 0xFF00:
        op |= 0x02
        args.append(offset >> 8 & 0xFF)
    if offset & 0xFF0000:
        op |= 0x04
        args.append(offset >> 16 & 0xFF)
    if offset & 0xFF000000:
        op |= 0x08
        args.append(offset >> 24 & 0xFF)
    # A size of 0x10000 is written as no size bytes at all.
    if size != _COPY_CHUNK:
        if size & 0xFF:
            op |= 0x10
            args.append(size & 0xFF)
        if size & 0xFF00:
            op |= 0x20
            args.append(size >> 8)
    return bytes((op, *args))


def _copy(parts: list[bytes], offset: int, size: int) -> None:
    while size > _COPY_CHUNK:
        parts.append(_copy_op(offset, _COPY_CHUNK))
        offset += _COPY_CHUNK
        size -= _COPY_CHUNK
    parts.append(_copy_op(offset, size))


_LENGTH_BYTE = [bytes((length,)) for length in range(_INSERT_CHUNK + 1)]


def _insert(parts: list[bytes], data: bytes, start: int, end: int) -> None:
    """Insert instructions for ``data[start:end]``."""
    full_end = end - (end - start) % _INSERT_CHUNK
    for at in range(start, full_end, _INSERT_CHUNK):
        parts += (_LENGTH_BYTE[_INSERT_CHUNK], data[at : at + _INSERT_CHUNK])
    if full_end < end:
        parts += (_LENGTH_BYTE[end - full_end], data[full_end:end])


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
        added = len(target) - limit
        if limit >= 0x80 and len(target) < 0x4000 and 0 < added <= _INSERT_CHUNK:
            # One entry added (a new key in a folder): the sizes (two bytes
            # each), a copy of the source, one insert.
            size = len(target)
            sizes = bytes((limit & 0x7F | 0x80, limit >> 7, size & 0x7F | 0x80, size >> 7))
            return b"".join((sizes, _copy_op(0, limit), _LENGTH_BYTE[added], target[limit:]))
        prefix, suffix = limit, 0
    else:
        prefix = _common_prefix(source, target, limit)
        suffix = _common_suffix(source, target, limit - prefix)
    end = len(target) - suffix
    if end - prefix > 4096 and end - prefix > len(target) // 8:
        # Scattered edits in a big tree: the general algorithm finds the
        # copies between them.
        from dulwich.pack import create_delta

        return b"".join(create_delta(source, target))
    parts = [_size_header(len(source)), _size_header(len(target))]
    if prefix:
        if prefix <= _COPY_CHUNK:
            parts.append(_copy_op(0, prefix))
        else:
            _copy(parts, 0, prefix)
    _insert(parts, target, prefix, end)
    if suffix:
        if suffix <= _COPY_CHUNK:
            parts.append(_copy_op(len(source) - suffix, suffix))
        else:
            _copy(parts, len(source) - suffix, suffix)
    return b"".join(parts)
