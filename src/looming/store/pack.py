"""Git pack files: written here without deltas; read with dulwich, which
resolves deltas (packs made by ``git`` are full of them)."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Iterable, Iterator

from looming.store.errors import CorruptObject
from looming.store.objects import ObjectId, hash_object

_TYPE_NUMBERS = {"commit": 1, "tree": 2, "blob": 3, "tag": 4}
_TYPE_NAMES = {number: name for name, number in _TYPE_NUMBERS.items()}


def _object_header(type_number: int, size: int) -> bytes:
    first = (type_number << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(first | 0x80)
        first = size & 0x7F
        size >>= 7
    out.append(first)
    return bytes(out)


def write_pack(objects: Iterable[tuple[ObjectId, str, bytes]]) -> bytes:
    """A version 2 pack holding ``(id, type, body)`` objects whole."""
    items = list(objects)
    out = io.BytesIO()
    out.write(b"PACK" + struct.pack(">II", 2, len(items)))
    for _oid, kind, body in items:
        out.write(_object_header(_TYPE_NUMBERS[kind], len(body)))
        out.write(zlib.compress(body, 1))
    data = out.getvalue()
    return data + hashlib.sha1(data).digest()


def read_pack(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Every object of a pack as ``(type, body)``, deltas resolved.

    A truncated or damaged pack raises :class:`CorruptObject`.
    """
    from dulwich.object_format import DEFAULT_OBJECT_FORMAT
    from dulwich.pack import PackData, UnpackedObjectIterator

    if len(data) < 32 or data[:4] != b"PACK":
        raise CorruptObject("pack", "not a pack file (no PACK header)")
    if hashlib.sha1(data[:-20]).digest() != data[-20:]:
        raise CorruptObject("pack", "checksum mismatch: the pack is truncated or damaged")
    try:
        pack_data = PackData.from_file(io.BytesIO(data), DEFAULT_OBJECT_FORMAT, size=len(data))
        walker = UnpackedObjectIterator.for_pack_data(pack_data)
        for unpacked in walker:
            assert unpacked.obj_type_num is not None and unpacked.obj_chunks is not None
            kind = _TYPE_NAMES[unpacked.obj_type_num]
            body = b"".join(unpacked.obj_chunks)
            hash_object(kind, body)
            yield kind, body
    except CorruptObject:
        raise
    except Exception as error:  # dulwich reports damage in many ways
        raise CorruptObject("pack", f"does not unpack: {error}") from None
