"""The on-disk backend: a Git repository (packs, loose objects, refs).

Kept apart from :mod:`looming.store.backend` (the interface and the
in-memory backend) because the disk format carries most of the care:
durability under kill -9, Git's lock protocol, pack tiers and deltas.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import weakref
import zlib
from collections.abc import Iterator

from looming.errors import Malformed
from looming.store.errors import BadRef, CorruptObject, MissingObject, NotARepository, RefChanged
from looming.store.growing import SEAL_ABOVE, GrowingPack
from looming.store.objects import OBJECT_TYPES, ObjectId, hash_object, parse_loose, raw_id
from looming.store.pack import PackRecord, build_pack, install_pack
from looming.store.spares import SparePool

_TYPE_NUMBERS = {1: "commit", 2: "tree", 3: "blob", 4: "tag"}

# Small packs are folded once they amount to this fraction of the growing
# pack (or this many bytes): the disk holds at most that much beyond one
# compact pack, and folding costs a bounded multiple of what was written.
FOLD_FRACTION = 0.25
FOLD_FLOOR = 2 << 20
# A writer that has committed nothing for this long folds what is left, so a
# store at rest (idle, or closed) is one compact pack and nothing beside it;
# when idle, only once the small packs amount to 1/IDLE_FOLD_SHARE of the
# growing pack, so a writer committing now and then does not copy a large
# growing pack for every commit.
FOLD_WHEN_IDLE = 1.0
IDLE_FOLD_SHARE = 8


def find_git_dir(path: str) -> str:
    """The Git directory of ``path``: ``path/.git`` or ``path`` when bare."""
    dot_git = os.path.join(path, ".git")
    if os.path.isdir(dot_git):
        return dot_git
    if os.path.isfile(os.path.join(path, "HEAD")) and os.path.isdir(os.path.join(path, "objects")):
        return path
    raise NotARepository(f"{path} is not a Git repository (no HEAD and objects/); run init first")


def init_git_dir(path: str, *, bare: bool = True, branch: str = "main") -> str:
    git_dir = path if bare else os.path.join(path, ".git")
    for sub in ("objects/pack", "objects/info", "refs/heads", "refs/tags", "info"):
        os.makedirs(os.path.join(git_dir, sub), exist_ok=True)
    head = os.path.join(git_dir, "HEAD")
    if not os.path.exists(head):
        with open(head, "w") as file:
            file.write(f"ref: refs/heads/{branch}\n")
    config = os.path.join(git_dir, "config")
    if not os.path.exists(config):
        with open(config, "w") as file:
            file.write(
                "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n"
                f"\tbare = {'true' if bare else 'false'}\n"
            )
    return git_dir


_BACKENDS: weakref.WeakSet[GitBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_BACKENDS):
        backend._forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)


class GitBackend:
    """A Git repository on disk: packs, loose objects, loose and packed refs.

    New objects wait in memory until the next ref update, then are written
    together as one pack (data first, index renamed into place last), so a
    commit costs two files, not one per object. The small packs are folded
    into one growing pack (see :mod:`looming.store.growing`) once they are
    ``merge_after`` many or amount to :data:`FOLD_FRACTION` of it, and also
    when the writer has been idle for ``fold_when_idle`` seconds and when it
    is closed. A writer killed at any point leaves a valid repository: a ref
    only ever names objects already in a complete pack. Every object read is
    hashed and checked against its name.
    """

    def __init__(
        self,
        path: str,
        *,
        merge_after: int = 32,
        compression: int = 1,
        fold_when_idle: float | None = FOLD_WHEN_IDLE,
    ) -> None:
        self.git_dir = find_git_dir(path)
        self.objects_dir = os.path.join(self.git_dir, "objects")
        self.pack_dir = os.path.join(self.objects_dir, "pack")
        self._compression = compression
        self._merge_after = merge_after
        self._pending: dict[ObjectId, tuple[str, bytes]] = {}
        self._known: set[ObjectId] = set()
        # Packs this process wrote: per-commit packs not folded yet, the
        # pack they are folded into, and growing packs grown past their limit.
        self._small_packs: list[PackRecord] = []
        self._small_bytes = 0
        self._growing = GrowingPack()
        self._sealed: list[PackRecord] = []
        self._delta_bases: dict[ObjectId, ObjectId] = {}
        # The bytes of the per-commit packs not merged yet, so merging them
        # does not read back what was just written.
        self._recent_packs: dict[str, bytes] = {}
        self._thread_lock = threading.RLock()
        self._pack_store: object | None = None
        self._lock_depth = 0
        self._lock_file: int | None = None
        self._made_dirs: set[str] = set()
        self._spares = SparePool(self.git_dir)
        self._watched_refs: dict[str, tuple[int, int]] = {}  # name -> (inode, descriptor)
        self._lock_source: str | None = None
        # The idle folder: a thread started at the first unfolded commit.
        self._idle_thread: threading.Thread | None = None
        self._idle_wake = threading.Event()
        self._closing = threading.Event()
        self._flushes = 0
        self._fold_when_idle = fold_when_idle
        _BACKENDS.add(self)

    def _forget_parent(self) -> None:
        """In a forked child: the parent's threads, locks and the packs it is
        folding are not the child's. Locks held by the parent's threads
        would never be released here, and its packs are its own to fold."""
        self._thread_lock = threading.RLock()
        self._idle_thread = None
        self._idle_wake = threading.Event()
        self._closing = threading.Event()
        self._lock_depth = 0
        if self._lock_file is not None:
            # Our copy only: the lock belongs to the parent's open file and
            # stays held while the parent holds it; the child opens its own.
            with contextlib.suppress(OSError):
                os.close(self._lock_file)
            self._lock_file = None
        self._lock_source = None
        self._pack_store = None  # its files' read offsets are shared with the parent
        self._small_packs = []
        self._small_bytes = 0
        self._growing = GrowingPack()
        self._sealed = []
        self._recent_packs = {}

    def _make_dir(self, path: str) -> None:
        if path not in self._made_dirs:
            os.makedirs(path, exist_ok=True)
            self._made_dirs.add(path)

    # -------------------------------------------------------------- objects

    def _loose_path(self, hex_name: str) -> str:
        return os.path.join(self.objects_dir, hex_name[:2], hex_name[2:])

    def _packs(self) -> object:
        if self._pack_store is None:
            from dulwich.object_store import DiskObjectStore

            self._pack_store = DiskObjectStore(self.objects_dir)
        return self._pack_store

    def read(self, object_id: ObjectId) -> tuple[str, bytes]:
        pending = self._pending.get(object_id)
        if pending is not None:
            return pending
        hex_name = object_id.hex()
        try:
            with open(self._loose_path(hex_name), "rb") as file:
                compressed = file.read()
        except (FileNotFoundError, NotADirectoryError):
            return self._read_packed(object_id)
        try:
            data = zlib.decompress(compressed)
            kind, body = parse_loose(data)
        except (zlib.error, Malformed) as error:
            raise CorruptObject(hex_name, f"loose object does not inflate: {error}") from None
        if hash_object(kind, body) != object_id:
            raise CorruptObject(hex_name, "its content does not hash to its name")
        return kind, body

    def _read_packed(self, object_id: ObjectId) -> tuple[str, bytes]:
        hex_name = object_id.hex()
        for attempt in range(2):
            store = self._packs()
            try:
                type_number, body = store.get_raw(hex_name.encode())  # type: ignore[attr-defined]
                break
            except KeyError:
                if attempt == 0 and store is not self._pack_store:
                    continue  # packs folded meanwhile (by another thread): look again
                raise MissingObject(hex_name) from None
            except Exception as error:  # dulwich raises many kinds on a damaged pack
                if attempt == 0 and store is not self._pack_store:
                    continue
                raise CorruptObject(hex_name, f"pack read failed: {error}") from None
        kind = _TYPE_NUMBERS.get(type_number)
        if kind is None:
            raise CorruptObject(hex_name, f"unknown object type {type_number}")
        if hash_object(kind, body) != object_id:
            raise CorruptObject(hex_name, "its content does not hash to its name")
        return kind, body

    def contains(self, object_id: ObjectId) -> bool:
        if object_id in self._known or object_id in self._pending:
            return True
        if os.path.exists(self._loose_path(object_id.hex())):
            return True
        store = self._packs()
        return bool(store.contains_packed(object_id.hex().encode()))  # type: ignore[attr-defined]

    def write(self, kind: str, body: bytes) -> ObjectId:
        if kind not in OBJECT_TYPES:
            raise ValueError(f"unknown object type {kind!r}")
        digest = hashlib.sha1(f"{kind} {len(body)}\0".encode())
        digest.update(body)
        object_id = digest.digest()
        if object_id not in self._known:
            with self._thread_lock:
                self._pending[object_id] = (kind, body)
        return object_id

    def note_delta_base(self, object_id: ObjectId, base: ObjectId) -> None:
        self._delta_bases[object_id] = base

    def flush(self) -> None:
        """Write every pending object into one new pack."""
        with self._thread_lock:
            if not self._pending:
                return
            pending = self._pending
            data, entries, checksum = build_pack(
                ((oid, kind, body) for oid, (kind, body) in pending.items()), self._compression
            )
            self._make_dir(self.pack_dir)
            base = install_pack(self.pack_dir, data, entries, checksum, self._spares.take)
            self._small_packs.append((base, entries))
            self._small_bytes += len(data)
            self._recent_packs[base] = data
            self._known.update(pending)
            self._pending = {}
            self._maybe_fold()

    def _maybe_fold(self) -> None:
        # Folding copies the growing pack, so it waits until the small packs
        # amount to a fraction of it (its cost stays proportional to what
        # was written), or are so many that reads would search too many.
        growing_size = self._growing.size()
        enough = max(int(growing_size * FOLD_FRACTION), FOLD_FLOOR)
        if len(self._small_packs) < self._merge_after and self._small_bytes < enough:
            self._fold_later()
            return
        self._fold()

    def _fold(self) -> None:
        """Fold the small packs into the growing pack (thread lock held)."""
        if not self._small_packs:
            return
        if self._growing.size() > SEAL_ABOVE:
            record = self._growing.record
            if record is not None:
                self._sealed.append(record)
            self._growing = GrowingPack()
        small = [record for record in self._small_packs if record[0] in self._recent_packs]
        # Our own readers let go of the packs first, so that the ones folded
        # away can become spares (see SparePool.recycle).
        self._reopen_packs()
        self._growing.fold(
            self.pack_dir,
            small,
            self._delta_bases,
            self._recent_packs,
            self._spares.take,
            self._spares.recycle,
        )
        self._small_packs = []
        self._small_bytes = 0
        self._recent_packs.clear()
        self._reopen_packs()

    def _fold_later(self) -> None:
        """Have the idle folder fold the small packs once no commit came for
        ``fold_when_idle`` seconds."""
        self._flushes += 1
        if self._fold_when_idle is None or self._closing.is_set():
            return
        if self._idle_thread is None:
            self._idle_thread = threading.Thread(
                target=self._idle_folder, name="looming-store-fold", daemon=True
            )
            self._idle_thread.start()
        self._idle_wake.set()

    def _idle_folder(self) -> None:
        while True:
            self._idle_wake.wait()
            self._idle_wake.clear()
            # Idle means no flush during a whole wait (a blocking wait with a
            # timeout, not a clock read).
            flushes = -1
            while flushes != self._flushes:
                flushes = self._flushes
                if self._closing.wait(self._fold_when_idle):
                    return
            with self._try_writer_lock() as locked:
                # Another process writing now: its next idle fold, or ours
                # after our next commit, catches up.
                worth_it = self._small_bytes * IDLE_FOLD_SHARE >= self._growing.size()
                if locked and flushes == self._flushes and worth_it:
                    with contextlib.suppress(OSError, CorruptObject):
                        self._fold()  # on failure the small packs stay valid

    def _concatenate(self, packs: list[PackRecord]) -> PackRecord:
        from looming.store.pack import concatenate_packs

        present = [record for record in packs if os.path.exists(record[0] + ".idx")]
        merged = concatenate_packs(
            self.pack_dir, present, self._delta_bases, self._recent_packs, self._spares.take
        )
        for base, _entries in packs:
            self._recent_packs.pop(base, None)
        return merged

    def gc(self, now: float | None = None) -> None:
        """Merge the repository's packs into one, with deltas between the
        versions of each directory this process wrote (``git gc`` for the
        store). Packs holding REF_DELTA entries (rare; some tools write them)
        are left as they are.

        With ``now`` (POSIX time), also remove what a killed writer left over
        (a pack without its index, a half-written index) once an hour old.
        """
        from looming.store.pack import read_index_entries

        with self.writer_lock():
            if now is not None:
                self._remove_leftovers(now - 3600)
            self.flush()
            growing = self._growing.record
            own = [*self._sealed, *([growing] if growing else []), *self._small_packs]
            known = {base for base, _entries in own}
            others: list[PackRecord] = []
            try:
                names = sorted(os.listdir(self.pack_dir))
            except FileNotFoundError:
                names = []
            for name in names:
                base = os.path.join(self.pack_dir, name[: -len(".idx")])
                if name.endswith(".idx") and base not in known and os.path.exists(base + ".pack"):
                    others.append((base, read_index_entries(base + ".idx")))
            packs = others + own
            if len(packs) > 1:
                merged: PackRecord | None
                try:
                    merged = self._concatenate(packs)
                except CorruptObject:
                    merged = self._concatenate(own) if len(own) > 1 else None
                if merged is not None:
                    self._sealed = [merged]
                    self._growing = GrowingPack()
                    self._small_packs = []
                    self._small_bytes = 0
                    self._recent_packs.clear()
                self._reopen_packs()

    def _remove_leftovers(self, older_than: float) -> None:
        spares = self._spares.folder
        with contextlib.suppress(FileNotFoundError):
            own = f"{os.getpid()}-"
            for name in os.listdir(spares):
                # Empty files of processes that died (or idled an hour: they
                # make new ones); they cost only an inode each.
                full = os.path.join(spares, name)
                with contextlib.suppress(FileNotFoundError):
                    if not name.startswith(own) and os.stat(full).st_mtime < older_than:
                        os.unlink(full)
        try:
            names = set(os.listdir(self.pack_dir))
        except FileNotFoundError:
            return
        for name in names:
            stray = name.endswith(".tmp") or (
                name.endswith(".pack") and name[: -len(".pack")] + ".idx" not in names
            )
            if not stray:
                continue
            full = os.path.join(self.pack_dir, name)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(full).st_mtime < older_than:
                    os.unlink(full)

    def _reopen_packs(self) -> None:
        if self._pack_store is not None:
            self._pack_store.close()  # type: ignore[attr-defined]
            self._pack_store = None

    def pack_loose(self) -> int:
        """Move every loose object (as ``git`` writes them) into one new pack."""
        with self.writer_lock():
            self.flush()
            store = self._packs()
            count = int(store.pack_loose_objects())  # type: ignore[attr-defined]
            self._reopen_packs()
            return count

    # -------------------------------------------------------------- refs

    def _ref_path(self, name: str) -> str:
        return os.path.join(self.git_dir, *name.split("/"))

    def _packed_refs(self) -> dict[str, ObjectId]:
        refs: dict[str, ObjectId] = {}
        try:
            with open(os.path.join(self.git_dir, "packed-refs"), "rb") as file:
                lines = file.read().splitlines()
        except FileNotFoundError:
            return refs
        for line in lines:
            if not line or line.startswith((b"#", b"^")):
                continue
            hex_name, _, name = line.partition(b" ")
            try:
                refs[name.decode()] = raw_id(hex_name.decode("ascii", "replace"))
            except Malformed:
                raise BadRef(f"packed-refs line {line[:100]!r} does not parse") from None
        return refs

    def read_ref(self, name: str, depth: int = 0) -> ObjectId | None:
        # Refs are rewritten in place; a read racing that write could see a
        # mix of old and new bytes, so a bad read is tried again before it
        # is reported as a damaged ref.
        for attempt in range(3):
            try:
                with open(self._ref_path(name), "rb") as file:
                    text = file.read().strip()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return self._packed_refs().get(name)
            if text.startswith(b"ref: "):
                if depth > 5:
                    raise BadRef(f"ref {name} is a loop of symbolic refs")
                return self.read_ref(text[5:].decode(), depth + 1)
            try:
                return raw_id(text.decode("ascii", "replace"))
            except Malformed:
                if attempt == 2:
                    raise BadRef(f"ref {name} holds {text[:60]!r}, not an object id") from None
        return None

    def ref_stamp(self, name: str) -> object:
        """A value that changes whenever ref ``name`` moves, cheaper to get
        than :meth:`read_ref` (a stat and a pread of a file kept open, not an
        open, read and close): what a cache of the ref's tree polls per use.
        A ref git replaced by a new file is a new inode, so it reopens."""
        path = self._ref_path(name)
        try:
            inode = os.stat(path).st_ino
        except OSError:
            return self.read_ref(name)  # packed, or missing
        with self._thread_lock:
            watched = self._watched_refs.get(name)
            if watched is None or watched[0] != inode:
                if watched is not None:
                    os.close(watched[1])
                    del self._watched_refs[name]
                try:
                    descriptor = os.open(path, os.O_RDONLY)
                except OSError:
                    return self.read_ref(name)
                watched = (os.fstat(descriptor).st_ino, descriptor)
                self._watched_refs[name] = watched
            content = os.pread(watched[1], 128, 0)
        if content.startswith(b"ref: "):
            return self.read_ref(name)
        return (inode, content)

    def head_target(self) -> str:
        try:
            with open(os.path.join(self.git_dir, "HEAD"), "rb") as file:
                text = file.read().strip().decode("utf-8", "replace")
        except FileNotFoundError:
            raise NotARepository(f"{self.git_dir} has no HEAD") from None
        return text[5:] if text.startswith("ref: ") else "HEAD"

    def set_ref(self, name: str, old: ObjectId | None, new: ObjectId | None) -> None:
        path = self._ref_path(name)
        lock_path = path + ".lock"
        with self.writer_lock():
            # Objects first, so the ref never names anything not on disk.
            self.flush()
            self._make_dir(os.path.dirname(path))
            self._take_ref_lock(lock_path)
            ref = -1
            try:
                try:
                    ref = os.open(path, os.O_RDWR)
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    ref = -1
                in_place = False
                current: ObjectId | None
                if ref >= 0:
                    content = os.pread(ref, 128, 0)
                    # Rewritten in place only when it is a plain 41-byte id:
                    # renaming over an existing file makes ext4 flush the new
                    # file first (auto_da_alloc), which costs milliseconds,
                    # while one 41-byte write is all-or-nothing for readers
                    # and for a killed writer; our lock file keeps git's
                    # writers out meanwhile.
                    in_place = len(content) == 41 and content.endswith(b"\n")
                    try:
                        current = raw_id(content[:40].decode("ascii")) if in_place else None
                    except (Malformed, UnicodeDecodeError):
                        in_place = False
                    if not in_place:
                        current = self.read_ref(name)
                else:
                    current = self._packed_refs().get(name)
                if current != old:
                    raise RefChanged(f"{name} moved while updating it; retry")
                if new is None:
                    os.unlink(lock_path)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    self._remove_packed_ref(name)
                    return
                line = new.hex().encode() + b"\n"
                if not (in_place and os.pwrite(ref, line, 0) == len(line)):
                    # A new ref, or one git wrote otherwise: a whole file
                    # renamed over it, while our lock keeps git out.
                    spare = self._spares.take_or_make()
                    descriptor = os.open(spare, os.O_WRONLY | os.O_TRUNC)
                    try:
                        os.write(descriptor, line)
                    finally:
                        os.close(descriptor)
                    os.rename(spare, path)
                os.unlink(lock_path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_path)
                raise
            finally:
                if ref >= 0:
                    os.close(ref)

    def _take_ref_lock(self, lock_path: str) -> None:
        """Git's lock on a ref: its ``.lock`` file, made as a hard link to a
        file of ours (linking allocates no inode; creating one can take a
        millisecond on a busy disk). Unlinking it later leaves our file."""
        for attempt in range(3):
            if self._lock_source is None:
                self._lock_source = self._spares.lock_file()
            try:
                os.link(self._lock_source, lock_path)
                return
            except FileNotFoundError:
                # git may prune empty ref folders behind our back, and gc
                # may remove an idle process's lock file.
                os.makedirs(os.path.dirname(lock_path), exist_ok=True)
                self._lock_source = None
            except FileExistsError:
                # We hold the store's writer lock, so a leftover lock file is
                # from a writer that died (or from git itself); take it over.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock_path)
            if attempt == 2:
                raise BadRef(f"cannot take the lock {lock_path}")

    def _remove_packed_ref(self, name: str) -> None:
        packed = os.path.join(self.git_dir, "packed-refs")
        try:
            with open(packed, "rb") as file:
                lines = file.read().splitlines(keepends=True)
        except FileNotFoundError:
            return
        kept: list[bytes] = []
        skip_peeled = False
        for line in lines:
            if line.startswith(b"^"):
                if not skip_peeled:
                    kept.append(line)
                continue
            skip_peeled = line.rstrip(b"\n").endswith(b" " + name.encode())
            if not skip_peeled:
                kept.append(line)
        if len(kept) != len(lines):
            temporary = packed + ".looming-tmp"
            with open(temporary, "wb") as file:
                file.writelines(kept)
            os.rename(temporary, packed)

    def list_refs(self, prefix: str) -> dict[str, ObjectId]:
        refs = {name: oid for name, oid in self._packed_refs().items() if name.startswith(prefix)}
        base = self._ref_path(prefix.rstrip("/")) if prefix else self.git_dir
        for directory, _dirs, files in os.walk(base):
            for file_name in files:
                if file_name.endswith(".lock"):
                    continue
                full = os.path.join(directory, file_name)
                name = os.path.relpath(full, self.git_dir).replace(os.sep, "/")
                if not name.startswith(prefix):
                    continue
                oid = self.read_ref(name)
                if oid is not None:
                    refs[name] = oid
        return refs

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """One writer at a time: a thread lock, then an flock across processes."""
        with self._writer_lock(blocking=True):
            yield

    @contextlib.contextmanager
    def _try_writer_lock(self) -> Iterator[bool]:
        """The writer lock if it is free right now (yields whether taken)."""
        with self._writer_lock(blocking=False) as taken:
            yield taken

    @contextlib.contextmanager
    def _writer_lock(self, *, blocking: bool) -> Iterator[bool]:
        if not self._thread_lock.acquire(blocking=blocking):
            yield False
            return
        try:
            if self._lock_depth == 0:
                if self._lock_file is None:
                    # Kept open: opening it for every commit costs a syscall each.
                    self._lock_file = os.open(
                        os.path.join(self.git_dir, "looming.lock"), os.O_RDWR | os.O_CREAT, 0o644
                    )
                try:
                    fcntl.flock(self._lock_file, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                except BlockingIOError:
                    yield False
                    return
            self._lock_depth += 1
            try:
                yield True
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_file is not None:
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def refs_version(self) -> object:
        """Stamps of the ref files: cheap to poll, changes with any ref move."""
        stamps: list[tuple[str, int, int]] = []
        for sub in ("refs/heads", "packed-refs"):
            full = os.path.join(self.git_dir, sub)
            if os.path.isfile(full):
                stat = os.stat(full)
                stamps.append((sub, stat.st_mtime_ns, stat.st_ino))
                continue
            for directory, _dirs, files in os.walk(full):
                for file_name in files:
                    with contextlib.suppress(FileNotFoundError):
                        stat = os.stat(os.path.join(directory, file_name))
                        stamps.append(
                            (os.path.join(directory, file_name), stat.st_mtime_ns, stat.st_ino)
                        )
        return tuple(sorted(stamps))

    def close(self) -> None:
        self._closing.set()
        self._idle_wake.set()
        if self._idle_thread is not None:
            self._idle_thread.join()
            self._idle_thread = None
        # What this process wrote is left as one compact pack, unless another
        # writer holds the lock now (then the small packs simply stay).
        with self._try_writer_lock() as locked:
            self.flush()
            if locked:
                self._fold()
        self._reopen_packs()
        self._spares.close()
        with self._thread_lock:
            for _inode, descriptor in self._watched_refs.values():
                os.close(descriptor)
            self._watched_refs.clear()
        with self._thread_lock:
            if self._lock_file is not None:
                os.close(self._lock_file)
                self._lock_file = None
