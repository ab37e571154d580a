"""The pack a writer folds its per-commit packs into.

Every commit becomes a small pack of whole objects (two new files, made
visible by renaming its index into place). Every so often the small packs
are folded into one growing pack: the growing pack's bytes are copied as
one block (its entries keep their offsets, so its deltas stay valid) and
the small packs' objects are appended, each directory version stored as a
delta against its previous version, wherever that version lives in the
growing pack. So the history holds one whole copy of each directory and
each of its changes about twice (see :class:`GrowingPack`), rather than a
whole copy per merged pack, and each object is processed once, not once
per tier.

Folding copies the growing pack (a memory copy, a SHA-1 and a write, all
outside Python's loop), so it is started when the small packs amount to a
fraction of the growing pack, or are many: its cost stays proportional to
what was written. A growing pack past :data:`SEAL_ABOVE` bytes is left as
it is and a new one begun, so no fold copies more than that.

A crash at any point leaves a valid repository: the folded pack is renamed
into place whole (index last), and only then are the packs it replaces
removed (index first); until then their objects are simply in two packs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Generator
from operator import itemgetter

from looming.store.delta import make_delta
from looming.store.objects import PACK_TREE, ObjectId
from looming.store.pack import (
    MAX_DELTA_DEPTH,
    STORE_ABOVE,
    IndexEntry,
    PackRecord,
    _object_header,
    _ofs_header,
    _parse_entry_header,
    deflate,
    install_pack,
    stored_zlib,
)
from looming.store.spares import TakeSpare

SEAL_ABOVE = 32 << 20
# A delta this small is mostly the ids of the entries it inserts, which
# deflate hardly shrinks (the packs of 300 ten-key commits grow by 1%),
# while starting a compressor takes longer than making the delta: stored.
STORE_DELTAS_BELOW = 128
_ID = itemgetter(0)
_OFFSET = itemgetter(1)
# The start of a small delta's entry, stored: OFS_DELTA header with a
# two-byte size, the base's distance (one byte, or two), zlib's header and
# the one stored block's header; then the delta and its Adler-32.
_NEAR_STORED_DELTA = struct.Struct("<BBBBBBHH")
_FAR_STORED_DELTA = struct.Struct("<BBBBBBBHH")
_ADLER = struct.Struct(">I")
_PACK_HEADER = b"PACK\0\0\0\2"


def stored_delta_entry(delta: bytes, distance: int) -> bytes:
    """The pack entry of ``delta`` stored (not deflated) as an OFS_DELTA
    ``distance`` bytes after its base: ``_ofs_header`` and ``stored_zlib``,
    made in one go for the usual small delta (a size of two bytes, a
    distance of one or two)."""
    size = len(delta)
    if not (0x10 <= size < 0x800 and distance < 0x4080):
        return _ofs_header(size, distance) + stored_zlib(delta)
    if distance < 0x80:
        head = _NEAR_STORED_DELTA.pack(
            0xE0 | size & 0x0F, size >> 4, distance, 0x78, 0x01, 1, size, size ^ 0xFFFF
        )
    else:
        far = (0x80 | (distance >> 7) - 1, distance & 0x7F)
        head = _FAR_STORED_DELTA.pack(
            0xE0 | size & 0x0F, size >> 4, *far, 0x78, 0x01, 1, size, size ^ 0xFFFF
        )
    return b"".join((head, delta, _ADLER.pack(zlib.adler32(delta))))


class GrowingPack:
    """A pack of this process, kept in memory as well as on disk, with what
    folding more objects into it needs: its entries, where each tree is and
    how deep its delta chain, and the bodies of the newest directory
    versions (the bases of the next versions' deltas)."""

    def __init__(self) -> None:
        self.base_name: str | None = None
        self.body = bytearray(_PACK_HEADER + b"\0\0\0\0")  # without the trailing checksum
        self.entries: list[IndexEntry] = []  # sorted by id
        self.ids: set[ObjectId] = set()
        self.trees: dict[ObjectId, tuple[int, int]] = {}  # id -> (offset, delta depth)
        self.bodies: dict[ObjectId, bytes] = {}
        # A directory's versions form segments: a whole copy, deltas each
        # against the previous version up to MAX_DELTA_DEPTH, then a new
        # segment whose first version is a delta against the first version
        # of the segment before (its "anchor"), one level deeper, and so on.
        # A segment's first delta spans only that segment's changes, so each
        # change is stored about twice in all, and a whole copy is made only
        # once the anchors themselves reach the depth limit (after some
        # MAX_DELTA_DEPTH**2 / 2 versions) or a delta is no longer small.
        self.anchors: dict[ObjectId, ObjectId] = {}  # newest version -> its segment's first
        self.anchor_bodies: dict[ObjectId, bytes] = {}
        # Small packs appended in memory ahead of the fold (see absorb), and
        # the entries they added: the file on disk ends at ``installed``.
        self.absorbed: list[str] = []
        self.pending: list[IndexEntry] = []
        self.installed = len(self.body)

    def _tree_entry(
        self,
        oid: ObjectId,
        tree_body: bytes,
        previous: ObjectId | None,
        at: int,
        make_delta: Callable[[bytes, bytes], bytes],
    ) -> bytes:
        """The pack entry of a tree as a delta (placed in ``trees``), or b""
        for a whole copy (which the caller places)."""
        if previous is None:
            return b""
        previous_body = self.bodies.pop(previous, None)  # superseded from now on
        anchor = self.anchors.pop(previous, None)
        if previous_body is None:
            return b""
        trees = self.trees
        base_body = previous_body
        base_at, base_depth = trees[previous]
        starts_segment = base_depth >= MAX_DELTA_DEPTH
        if starts_segment:
            if anchor is None:
                return b""
            base_at, base_depth = trees[anchor]
            if base_depth + 1 >= MAX_DELTA_DEPTH:
                return b""
            base_body = self.anchor_bodies[anchor]
        delta = make_delta(base_body, tree_body)
        size = len(delta)
        if size >= len(tree_body) // 2:
            return b""
        trees[oid] = (at, base_depth + 1)
        if starts_segment:
            anchor = oid
            self.anchor_bodies[oid] = tree_body
        if anchor is not None:
            self.anchors[oid] = anchor
        distance = at - base_at
        if size >= STORE_DELTAS_BELOW:
            return _ofs_header(size, distance) + deflate(delta)
        return stored_delta_entry(delta, distance)

    @property
    def record(self) -> PackRecord | None:
        return None if self.base_name is None else (self.base_name, self.entries)

    def size(self) -> int:
        """The bytes of the pack on disk (without what is absorbed only)."""
        return self.installed

    def absorb(
        self,
        base_name: str,
        data: bytes,
        entries: list[IndexEntry],
        delta_bases: dict[ObjectId, ObjectId],
        tree_bodies: dict[ObjectId, bytes],
        parts: int = 1,
        mark: list[int] | None = None,
    ) -> Generator[None, None, None]:
        """Append the objects of small pack ``base_name`` (``data``) in
        memory, so the fold that installs them has only the pack to write: a
        writer does it while its own fsyncs are under way (see
        :func:`looming.store.spares.fsync_together`), when the processor
        would otherwise wait for the disk. A generator doing it in ``parts``
        steps (one per fsync round); ``mark`` receives where the pack's
        appends begin (for :meth:`unabsorb`). Closed before its end, it
        undoes what it appended."""
        grown_from, count = len(self.body), len(self.pending)
        if mark is not None:
            mark[:] = [grown_from, count]
        ordered = sorted(entries, key=_OFFSET)
        ends = [entry[1] for entry in ordered[1:]] + [len(data) - 20]
        step = -(-len(ordered) // max(parts, 1)) or 1
        try:
            for start in range(0, len(ordered), step):
                if start:
                    yield
                self._append_spans(
                    data,
                    ordered[start : start + step],
                    ends[start : start + step],
                    delta_bases,
                    tree_bodies,
                )
        except BaseException:
            self.unabsorb(grown_from, count)
            raise
        self.absorbed.append(base_name)

    def unabsorb(self, grown_from: int, count: int) -> None:
        """Undo appends made since the body was ``grown_from`` bytes and
        ``count`` entries were pending (their pack was not installed)."""
        self._undo(grown_from, self.pending[count:])
        del self.pending[count:]

    def fold(
        self,
        pack_dir: str,
        small_packs: list[PackRecord],
        delta_bases: dict[ObjectId, ObjectId],
        cached: dict[str, bytes],
        take_spare: TakeSpare | None = None,
        retire: Callable[[str], bool] | None = None,
        *,
        sync: bool = False,
        tree_bodies: dict[ObjectId, bytes] | None = None,
    ) -> None:
        """Append the objects of ``small_packs`` (whole objects, as
        :func:`looming.store.pack.build_pack` writes them; ``tree_bodies``
        may hold their trees' bodies, so they are not inflated again),
        install the result as a new pack (on the disk first, with ``sync``),
        then remove the packs it replaces (each file handed to ``retire``
        first, which may keep it as a spare)."""
        grown_from, count = len(self.body), len(self.pending)
        new_entries = self.pending
        try:
            for base_name, source_entries in small_packs:
                if base_name in self.absorbed:
                    continue
                data = cached.get(base_name)
                if data is None:
                    with open(base_name + ".pack", "rb") as file:
                        data = file.read()
                self._append(data, source_entries, delta_bases, tree_bodies or {}, new_entries)
            new_base, entries = self._install(pack_dir, list(new_entries), take_spare, sync)
        except BaseException:
            self.unabsorb(grown_from, count)
            raise
        live_anchors = set(self.anchors.values())
        for anchor in [oid for oid in self.anchor_bodies if oid not in live_anchors]:
            del self.anchor_bodies[anchor]
        replaced = list(dict.fromkeys([*self.absorbed, *(record[0] for record in small_packs)]))
        if self.base_name is not None:
            replaced.append(self.base_name)
        self.base_name = new_base
        self.entries = entries
        self.installed = len(self.body)
        self.absorbed = []
        self.pending = []
        _remove_packs(replaced, new_base, cached, retire)

    def _append(
        self,
        data: bytes,
        source_entries: list[IndexEntry],
        delta_bases: dict[ObjectId, ObjectId],
        tree_bodies: dict[ObjectId, bytes],
        new_entries: list[IndexEntry],
    ) -> None:
        """Append the objects of one small pack (``data``) not in this pack
        yet, each tree as a delta against its previous version if it can."""
        ordered = sorted(source_entries, key=_OFFSET)
        ends = [entry[1] for entry in ordered[1:]] + [len(data) - 20]
        self._append_spans(data, ordered, ends, delta_bases, tree_bodies, new_entries)

    def _append_spans(
        self,
        data: bytes,
        spans: list[IndexEntry],
        ends: list[int],
        delta_bases: dict[ObjectId, ObjectId],
        tree_bodies: dict[ObjectId, bytes],
        new_entries: list[IndexEntry] | None = None,
    ) -> None:
        """Append the entries ``spans`` (id, offset, CRC; each ending where
        ``ends`` says) of pack ``data`` to this pack (their index entries to
        ``new_entries``, by default the pending ones)."""
        if new_entries is None:
            new_entries = self.pending
        body, ids, trees, bodies = self.body, self.ids, self.trees, self.bodies
        crc32 = zlib.crc32
        view = memoryview(data)
        for (oid, offset, crc), end in zip(spans, ends, strict=True):
            if oid in ids:
                continue
            at = len(body)
            tree_body = tree_bodies.get(oid)
            if tree_body is None:
                if end - offset < STORE_ABOVE:
                    kind = (data[offset] >> 4) & 7
                    if kind != PACK_TREE:
                        # A small blob or commit: copied as it is, its CRC too.
                        body += view[offset:end]
                        new_entries.append((oid, at, crc))
                        ids.add(oid)
                        continue
                kind, size, _base, start = _parse_entry_header(data, offset)
                if kind != PACK_TREE:
                    entry = data[offset:end]
                    if end - start >= size:
                        # Stored whole by the per-commit pack: deflate it now.
                        deflated = deflate(zlib.decompress(data[start:end]))
                        entry = _object_header(kind, size) + deflated
                    body += entry
                    new_entries.append((oid, at, crc32(entry)))
                    ids.add(oid)
                    continue
                tree_body = zlib.decompress(data[start:end])
            entry = self._tree_entry(oid, tree_body, delta_bases.get(oid), at, make_delta)
            if not entry:
                entry = _object_header(PACK_TREE, len(tree_body)) + deflate(tree_body)
                trees[oid] = (at, 0)
                self.anchors[oid] = oid  # the first segment's anchor
                self.anchor_bodies[oid] = tree_body
            bodies[oid] = tree_body
            body += entry
            new_entries.append((oid, at, crc32(entry)))
            ids.add(oid)

    def _install(
        self,
        pack_dir: str,
        new_entries: list[IndexEntry],
        take_spare: TakeSpare | None,
        sync: bool,
    ) -> tuple[str, list[IndexEntry]]:
        """Write the grown pack and its index; its base name and entries."""
        body = self.body
        struct.pack_into(">I", body, 8, len(self.entries) + len(new_entries))
        checksum = hashlib.sha1(body).digest()
        # By id alone (unique here): two sorted runs, a linear merge.
        new_entries.sort(key=_ID)
        entries = sorted(self.entries + new_entries, key=_ID)
        new_base = install_pack(
            pack_dir, body, entries, checksum, take_spare, presorted=True, tail=checksum, sync=sync
        )
        return new_base, entries

    def _undo(self, grown_from: int, new_entries: list[IndexEntry]) -> None:
        """Undo the in-memory growth, so the pack still matches its file."""
        del self.body[grown_from:]
        struct.pack_into(">I", self.body, 8, len(self.entries))
        for oid, _offset, _crc in new_entries:
            self.ids.discard(oid)
            self.trees.pop(oid, None)
        # Forget the delta bases (the next versions are stored whole).
        self.bodies.clear()
        self.anchors.clear()
        self.anchor_bodies.clear()


def _remove_packs(
    replaced: list[str],
    new_base: str,
    cached: dict[str, bytes],
    retire: Callable[[str], bool] | None,
) -> None:
    for base_name in replaced:
        cached.pop(base_name, None)
        if base_name == new_base:
            continue
        # The index goes first so nobody opens a pack whose data is leaving.
        for suffix in (".idx", ".pack"):
            if retire is not None and retire(base_name + suffix):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base_name + suffix)
