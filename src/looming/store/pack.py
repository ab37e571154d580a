"""Git pack files: written here without deltas (each commit's new objects
become one small pack, later folded into a growing pack with deltas, see
:mod:`looming.store.growing`, and merged whole by ``gc``); read with
dulwich, which resolves the deltas packs made by ``git`` carry."""

from __future__ import annotations

import array
import bisect
import contextlib
import hashlib
import io
import itertools
import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import itemgetter

from looming.store.errors import CorruptObject
from looming.store.objects import (
    KIND_OF_PACK_NUMBER,
    PACK_NUMBER_OF_KIND,
    PACK_OFS_DELTA,
    PACK_REF_DELTA,
    ObjectId,
    hash_object,
)
from looming.store.spares import TakeSpare, sync_dir, write_files_atomically

IndexEntry = tuple[ObjectId, int, int]
_ID_OF = itemgetter(0)
_OFFSET_OF = itemgetter(1)
_CRC_OF = itemgetter(2)
STORE_ABOVE = 16384  # id, offset in the pack, CRC-32 of the entry


def _object_header(type_number: int, size: int) -> bytes:
    if size < 0x10:
        return bytes(((type_number << 4) | size,))
    if size < 0x800:
        return bytes(((type_number << 4) | 0x80 | (size & 0x0F), size >> 4))
    first = (type_number << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(first | 0x80)
        first = size & 0x7F
        size >>= 7
    out.append(first)
    return bytes(out)


_STORED_BLOCK = 0xFFFF  # the most a stored deflate block holds
_ONE_STORED_BLOCK = struct.Struct("<BBBHH")  # zlib header, final block header
_ADLER = struct.Struct(">I")


def stored_zlib(data: bytes) -> bytes:
    """``data`` as a zlib stream of stored (not compressed) deflate blocks,
    what ``zlib.compress(data, 0)`` makes (byte for byte below zlib's own
    block size), without its cost: setting up a compressor clears its
    tables, some 12 us even when nothing is compressed, and a commit stores
    a dozen trees this way."""
    size = len(data)
    if size < _STORED_BLOCK:
        # deflate, 32 KiB window, level 0; one final block
        header = _ONE_STORED_BLOCK.pack(0x78, 0x01, 1, size, size ^ 0xFFFF)
        return b"".join((header, data, _ADLER.pack(zlib.adler32(data))))
    parts = [b"\x78\x01"]
    for start in range(0, size, _STORED_BLOCK):
        block = data[start : start + _STORED_BLOCK]
        final = start + _STORED_BLOCK >= size
        parts.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF))
        parts.append(block)
    parts.append(_ADLER.pack(zlib.adler32(data)))
    return b"".join(parts)


def deflate(data: bytes | bytearray, level: int = 1) -> bytes:
    """``data`` as a zlib stream, like ``zlib.compress(data, level)``, with
    a window and match tables sized to ``data``: zlib's defaults take some
    256 KiB of state, which the allocator maps and unmaps for every object
    (tens of microseconds each, ten times the compressing of a small
    object), while a window larger than the data finds no more matches."""
    bits = (len(data) + 262).bit_length()  # the window covers all of it
    if bits >= 15:
        return zlib.compress(data, level)
    bits = max(bits, 9)
    compressor = zlib.compressobj(level, zlib.DEFLATED, bits, max(1, min(6, bits - 6)))
    return compressor.compress(data) + compressor.flush()


# Below this many bytes deflate saves nothing worth its cost (a few bytes
# on short text, a compressor set up for each): stored.
STORE_BELOW = 64


# An entry of 16 to 2047 bytes stored whole: its two-byte object header,
# zlib's header and the final stored block's header, packed at once.
_SMALL_STORED_ENTRY = struct.Struct("<BBBBBHH")


def build_pack(
    objects: Iterable[tuple[ObjectId, str, bytes]], compression: int = 1
) -> tuple[bytes, list[IndexEntry], bytes]:
    """A version 2 pack of whole objects, its index entries and checksum."""
    items = objects if isinstance(objects, list) else list(objects)
    pairs = ((oid, (kind, body)) for oid, kind, body in items)
    return _build_pack(pairs, len(items), compression)


def build_pack_of(
    objects: Mapping[ObjectId, tuple[str, bytes]], compression: int = 1
) -> tuple[bytes, list[IndexEntry], bytes]:
    """:func:`build_pack` of objects held by id as ``(type, body)`` (a
    writer's pending objects), in their order, without copying them out."""
    return _build_pack(objects.items(), len(objects), compression)


def _build_pack(
    pairs: Iterable[tuple[ObjectId, tuple[str, bytes]]], count: int, compression: int
) -> tuple[bytes, list[IndexEntry], bytes]:
    parts = [b"PACK" + struct.pack(">II", 2, count)]
    offset = 12
    entries: list[IndexEntry] = []
    crc32, adler32, types = zlib.crc32, zlib.adler32, PACK_NUMBER_OF_KIND
    small_stored, adler, join = _SMALL_STORED_ENTRY.pack, _ADLER.pack, b"".join
    for oid, (kind, body) in pairs:
        size = len(body)
        # Big objects (large directories) are stored, not deflated, in the
        # per-commit packs: deflating costs milliseconds, and a merge of packs
        # soon replaces most of them by small deltas (and deflates the rest).
        # Trees are stored too: merges store most of them as deltas.
        if STORE_BELOW <= size < STORE_ABOVE and kind != "tree" and compression:
            entry = _object_header(types[kind], size) + deflate(body, compression)
        elif 0x10 <= size < 0x800:
            # What _object_header and stored_zlib make, in one go.
            head = small_stored(
                types[kind] << 4 | 0x80 | size & 0x0F, size >> 4, 0x78, 0x01, 1, size, size ^ 0xFFFF
            )
            entry = join((head, body, adler(adler32(body))))
        else:
            entry = _object_header(types[kind], size) + stored_zlib(body)
        entries.append((oid, offset, crc32(entry)))
        parts.append(entry)
        offset += len(entry)
    data = b"".join(parts)
    checksum = hashlib.sha1(data).digest()
    return data + checksum, entries, checksum


def write_pack(objects: Iterable[tuple[ObjectId, str, bytes]]) -> bytes:
    """The bytes of a pack holding ``(id, type, body)`` objects whole."""
    return build_pack(objects)[0]


def encode_index(entries: list[IndexEntry], pack_checksum: bytes, presorted: bool = False) -> bytes:
    """A version 2 pack index (``.idx``) for ``entries`` (sorted by id when ``presorted``)."""
    # By id alone (ids are unique in a pack): one comparison per step, not
    # a tuple's two.
    ordered = entries if presorted else sorted(entries, key=_ID_OF)
    # Column by column with C-level loops: the growing pack's index is
    # rewritten on every fold.
    names = b"".join(map(_ID_OF, ordered))
    first_bytes = names[::20]
    fanout = array.array("I", map(bisect.bisect_right, itertools.repeat(first_bytes), range(256)))
    crcs = array.array("I", map(_CRC_OF, ordered))
    offsets = array.array("I")
    large = array.array("Q")
    try:
        offsets.extend(map(_OFFSET_OF, ordered))
        if offsets and max(offsets) >= 0x80000000:
            raise OverflowError
    except OverflowError:
        offsets = array.array("I")
        for _oid, offset, _crc in ordered:
            if offset < 0x80000000:
                offsets.append(offset)
            else:
                offsets.append(0x80000000 | len(large))
                large.append(offset)
    if sys.byteorder == "little":
        for column in (fanout, crcs, offsets, large):
            column.byteswap()
    body = b"".join(
        [
            b"\377tOc" + struct.pack(">I", 2),
            fanout.tobytes(),
            names,
            crcs.tobytes(),
            offsets.tobytes(),
            large.tobytes(),
            pack_checksum,
        ]
    )
    return body + hashlib.sha1(body).digest()


def install_pack(
    pack_dir: str,
    data: bytes | bytearray,
    entries: list[IndexEntry],
    checksum: bytes,
    take_spare: TakeSpare | None = None,
    presorted: bool = False,
    tail: bytes = b"",
    *,
    sync: bool = False,
    sync_folder: bool = True,
    while_waiting: Callable[[], object] | None = None,
) -> str:
    """Write ``pack-<checksum>.pack`` (``data`` then ``tail``, which may
    carry the checksum so a large ``data`` is not copied to append it) then
    its ``.idx``; the base name.

    Git and dulwich ignore a pack until its index exists, and the index is
    renamed into place last (each file is filled under another name, a
    spare from ``take_spare`` or ``<name>.tmp``), so a crash leaves either
    nothing visible or a whole pack. With ``sync``, both files' bytes are
    on the disk (fsynced at once) before either is renamed, and the
    folder's names when this returns (a power cut too leaves the whole
    pack); ``sync_folder=False`` leaves the folder to the caller, who
    fsyncs it before anything names the pack's objects. ``while_waiting``
    is work done while the files are fsynced (see
    :func:`~looming.store.spares.write_files_atomically`), called also when
    the pack exists already.
    """
    base = os.path.join(pack_dir, f"pack-{checksum.hex()}")
    if os.path.exists(base + ".idx"):
        if while_waiting is not None:
            while_waiting()
        return base
    index = encode_index(entries, checksum, presorted)
    write_files_atomically(
        [(base + ".pack", data, tail), (base + ".idx", index, b"")],
        take_spare,
        sync=sync,
        while_waiting=while_waiting,
    )
    if sync and sync_folder:
        sync_dir(pack_dir)
    return base


def read_index_entries(path: str) -> list[IndexEntry]:
    """The entries of a version 2 pack index (as ``git`` and this store write them)."""
    with open(path, "rb") as file:
        data = file.read()
    if data[:8] != b"\377tOc\0\0\0\2" or len(data) < 8 + 1024 + 40:
        raise CorruptObject(path, "not a version 2 pack index")
    count = struct.unpack_from(">I", data, 8 + 255 * 4)[0]
    names_at = 8 + 1024
    crcs_at = names_at + 20 * count
    offsets_at = crcs_at + 4 * count
    large_at = offsets_at + 4 * count
    if len(data) < large_at + 40:
        raise CorruptObject(path, "pack index truncated")
    crcs = struct.unpack_from(f">{count}I", data, crcs_at)
    offsets = struct.unpack_from(f">{count}I", data, offsets_at)
    entries: list[IndexEntry] = []
    for index in range(count):
        offset = offsets[index]
        if offset & 0x80000000:
            (offset,) = struct.unpack_from(">Q", data, large_at + 8 * (offset & 0x7FFFFFFF))
        name = data[names_at + 20 * index : names_at + 20 * index + 20]
        entries.append((name, offset, crcs[index]))
    return entries


PackRecord = tuple[str, list[IndexEntry]]  # base name and index entries of a pack we wrote

MAX_DELTA_DEPTH = 50
OFS_DELTA = PACK_OFS_DELTA


def _parse_entry_header(data: bytes, offset: int) -> tuple[int, int, int, int]:
    """Type, size, base offset (OFS_DELTA, else 0) and data start of a pack entry."""
    byte = data[offset]
    kind = (byte >> 4) & 7
    size = byte & 0x0F
    shift = 4
    position = offset + 1
    while byte & 0x80:
        byte = data[position]
        size |= (byte & 0x7F) << shift
        shift += 7
        position += 1
    base = 0
    if kind == OFS_DELTA:
        byte = data[position]
        position += 1
        distance = byte & 0x7F
        while byte & 0x80:
            byte = data[position]
            position += 1
            distance = ((distance + 1) << 7) | (byte & 0x7F)
        base = offset - distance
    elif kind == PACK_REF_DELTA:
        raise CorruptObject("pack", "REF_DELTA in a pack this store wrote")
    return kind, size, base, position


def _ofs_header(size: int, distance: int) -> bytes:
    if 0x10 <= size < 0x800 and distance < 0x4080:
        # The usual delta: a two-byte size, a distance of one or two bytes.
        if distance < 0x80:
            return bytes((0xE0 | size & 0x0F, size >> 4, distance))
        return bytes((0xE0 | size & 0x0F, size >> 4, 0x80 | (distance >> 7) - 1, distance & 0x7F))
    header = bytearray(_object_header(OFS_DELTA, size))
    encoded = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        encoded.append(0x80 | (distance & 0x7F))
        distance >>= 7
    header.extend(reversed(encoded))
    return bytes(header)


class _PackMerger:
    """The merged pack as :func:`concatenate_packs` builds it: entries
    placed so far (offset and delta depth), the bodies of the trees later
    versions will be deltas against, and the output."""

    def __init__(self, hints: dict[ObjectId, ObjectId]) -> None:
        self.hints = hints
        self.wanted_bodies = set(hints.values())
        self.placed: dict[ObjectId, tuple[int, int]] = {}  # id -> (offset in output, delta depth)
        self.bodies: dict[ObjectId, bytes] = {}
        self.out = io.BytesIO()
        self.out.write(b"PACK\0\0\0\2\0\0\0\0")
        self.entries: list[IndexEntry] = []

    def emit(self, oid: ObjectId, entry: bytes, depth: int) -> None:
        offset = self.out.tell()
        self.placed[oid] = (offset, depth)
        self.entries.append((oid, offset, zlib.crc32(entry)))
        self.out.write(entry)

    def add_pack(self, data: bytes, source_entries: list[IndexEntry]) -> None:
        ordered = sorted(source_entries, key=_OFFSET_OF)
        at_offset = {offset: oid for oid, offset, _crc in ordered}
        ends = [entry[1] for entry in ordered[1:]] + [len(data) - 20]
        for (oid, offset, _crc), end in zip(ordered, ends, strict=True):
            if oid in self.placed:
                continue
            kind, size, base_offset, start = _parse_entry_header(data, offset)
            compressed = data[start:end]
            if kind == OFS_DELTA:
                self._copy_delta(oid, size, at_offset[base_offset], compressed)
            elif kind == 2 and (oid in self.hints or oid in self.wanted_bodies):
                self._add_tree(oid, size, compressed, data[offset:end])
            else:
                self._copy_whole(oid, kind, size, compressed, data[offset:end])

    def _copy_delta(self, oid: ObjectId, size: int, base_id: ObjectId, compressed: bytes) -> None:
        """An OFS_DELTA copied as it is, pointed at its base's new place."""
        from dulwich.pack import apply_delta

        base_at, base_depth = self.placed[base_id]
        new_offset = self.out.tell()
        self.emit(oid, _ofs_header(size, new_offset - base_at) + compressed, base_depth + 1)
        if oid in self.wanted_bodies and base_id in self.bodies:
            delta = zlib.decompress(compressed)
            self.bodies[oid] = b"".join(apply_delta(self.bodies[base_id], delta))

    def _add_tree(self, oid: ObjectId, size: int, compressed: bytes, entry: bytes) -> None:
        """A tree as a delta against its hinted previous version when that
        is placed, not too deep, and the delta small; else whole."""
        from looming.store.delta import make_delta

        body = zlib.decompress(compressed)
        hint = self.hints.get(oid)
        if hint is not None and hint in self.bodies and self.placed[hint][1] < MAX_DELTA_DEPTH:
            delta = make_delta(self.bodies.pop(hint), body)
            if len(delta) < len(body) // 2:
                base_at, base_depth = self.placed[hint]
                header = _ofs_header(len(delta), self.out.tell() - base_at)
                self.emit(oid, header + deflate(delta), base_depth + 1)
                if oid in self.wanted_bodies:
                    self.bodies[oid] = body
                return
        if oid in self.wanted_bodies:
            self.bodies[oid] = body
        self._copy_whole(oid, 2, size, compressed, entry)

    def _copy_whole(
        self, oid: ObjectId, kind: int, size: int, compressed: bytes, entry: bytes
    ) -> None:
        """A whole object: copied (``entry``), or deflated now when the
        per-commit pack stored it whole."""
        if len(compressed) >= size and (size >= STORE_ABOVE or kind == 2):
            deflated = deflate(zlib.decompress(compressed))
            self.emit(oid, _object_header(kind, size) + deflated, 0)
        else:
            self.emit(oid, entry, 0)

    def finish(self) -> tuple[bytes, bytes]:
        """The pack's bytes (with its checksum) and its checksum."""
        packed = bytearray(self.out.getvalue())
        packed[8:12] = struct.pack(">I", len(self.entries))
        checksum = hashlib.sha1(packed).digest()
        return bytes(packed) + checksum, checksum


def concatenate_packs(
    pack_dir: str,
    packs: list[PackRecord],
    delta_bases: dict[ObjectId, ObjectId] | None = None,
    cached: dict[str, bytes] | None = None,
    take_spare: TakeSpare | None = None,
    *,
    sync: bool = False,
) -> PackRecord:
    """Merge packs this store wrote into one, then remove them.

    Entries are copied without recompressing (``cached`` holds the bytes of
    packs still in memory); a tree whose previous version
    (``delta_bases``) is in the merged pack is stored as a delta against it
    (an OFS_DELTA, chains bounded by :data:`MAX_DELTA_DEPTH`), which is what
    keeps a long history of large directories small.
    """
    merger = _PackMerger(delta_bases or {})
    for base_name, source_entries in packs:
        data = (cached or {}).get(base_name) or b""
        if not data:
            with open(base_name + ".pack", "rb") as file:
                data = file.read()
        merger.add_pack(data, source_entries)
    packed, checksum = merger.finish()
    new_base = install_pack(pack_dir, packed, merger.entries, checksum, take_spare, sync=sync)
    for base_name, _entries in packs:
        if base_name == new_base:
            continue
        # The index goes first so nobody opens a pack whose data is leaving.
        for suffix in (".idx", ".pack"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base_name + suffix)
    return new_base, merger.entries


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
            kind = KIND_OF_PACK_NUMBER[unpacked.obj_type_num]
            body = b"".join(unpacked.obj_chunks)
            hash_object(kind, body)
            yield kind, body
    except CorruptObject:
        raise
    except Exception as error:  # dulwich reports damage in many ways
        raise CorruptObject("pack", f"does not unpack: {error}") from None
