"""The on-disk backend: a Git repository (packs, loose objects, refs).

Kept apart from :mod:`looming.store.backend` (the interface and the
in-memory backend) because the disk format carries most of the care:
durability under kill -9, Git's lock protocol, pack tiers and deltas.
"""

from __future__ import annotations

import array
import collections
import contextlib
import fcntl
import hashlib
import os
import random
import threading
import weakref
import zlib
from collections.abc import Callable, Generator, Iterator

from looming.errors import Malformed
from looming.store.errors import (
    BadRef,
    CorruptObject,
    MissingObject,
    NotARepository,
    RefChanged,
    RefLocked,
    StoreError,
)
from looming.store.growing import SEAL_ABOVE, GrowingPack
from looming.store.objects import (
    KIND_OF_PACK_NUMBER,
    MODE_TREE,
    OBJECT_HEADER_PREFIX,
    PACK_COMMIT,
    Commit,
    ObjectId,
    hash_object,
    parse_loose,
    parse_tree,
    raw_id,
)
from looming.store.pack import IndexEntry, PackRecord, build_pack_of, install_pack
from looming.store.spares import SparePool, reclaim_dead, sync_dir, sync_together

# Small packs are folded once they amount to this fraction of the growing
# pack (or this many bytes): the disk holds at most that much beyond one
# compact pack, and folding costs a bounded multiple of what was written.
# The floor is what a busy writer keeps unfolded: per-commit packs hold
# whole trees, so a floor of a few MiB is reached every few commits of a
# wide repository, and each fold rewrites the whole growing pack.
FOLD_FRACTION = 0.25
FOLD_FLOOR = 8 << 20
# More packs than this (any writers', git's too) are merged by the next
# writer that is idle or closes; a pack more than KEEP_ABOVE times larger than
# all the smaller ones together is left as it is, so packs stay few while each
# byte is copied only a few times over the repository's life.
MANY_PACKS = 8
KEEP_ABOVE = 4
# A writer that has committed nothing for this long folds what is left, so a
# store at rest (idle, or closed) is one compact pack and nothing beside it;
# when idle, only once the small packs amount to 1/IDLE_FOLD_SHARE of the
# growing pack, so a writer committing now and then does not copy a large
# growing pack for every commit.
FOLD_WHEN_IDLE = 1.0
IDLE_FOLD_SHARE = 8
IDLE_FOLD_TRIES = 20


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
        make_dirs_durably(os.path.abspath(os.path.join(git_dir, sub)), True)
    # Written whole and fsynced before they appear under their names: a
    # crash just after init (a VM killed) must not leave an empty HEAD.
    _create_durably(os.path.join(git_dir, "HEAD"), f"ref: refs/heads/{branch}\n")
    _create_durably(
        os.path.join(git_dir, "config"),
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n"
        f"\tbare = {'true' if bare else 'false'}\n",
    )
    return git_dir


def _create_durably(path: str, text: str) -> None:
    """``path`` with ``text`` unless it exists: written under a temporary
    name, fsynced, renamed into place, and its folder fsynced."""
    if os.path.exists(path):
        return
    partial = f"{path}.{os.getpid()}.new"
    with open(partial, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    sync_dir(os.path.dirname(os.path.abspath(path)))


# How long a ref locked by another process is waited for (git's
# core.filesRefLockTimeout, which the repository's config may set; git's
# own default is 100 ms, looming waits longer as it commits more often).
DEFAULT_REF_LOCK_TIMEOUT_MS = 1000
DURABILITY = ("full", "none")


def _config_milliseconds(git_dir: str, key: str, default: int) -> int:
    """An integer ``core.<key>`` of the repository's config file (the
    plain ``key = N`` form git writes), or ``default``."""
    try:
        with open(os.path.join(git_dir, "config"), encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return default
    section = ""
    for line in lines:
        text = line.strip()
        if text.startswith("["):
            section = text.strip("[]").strip().lower()
        elif section == "core" and "=" in text:
            name, _, value = text.partition("=")
            if name.strip().lower() == key:
                with contextlib.suppress(ValueError):
                    return int(value.strip())
    return default


_FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long)


def _identity(descriptor: int) -> str:
    """Names one file for as long as it exists and never another: device,
    inode and the inode's generation (ext4, xfs and btrfs change it when
    the inode number is reused, which happens at once; "-" where the file
    system has none, then device and inode only)."""
    stat = os.fstat(descriptor)
    generation = array.array("l", [0])
    try:
        fcntl.ioctl(descriptor, _FS_IOC_GETVERSION, generation, True)
        version = str(generation[0])
    except OSError:
        version = "-"
    return f"{stat.st_dev}:{stat.st_ino} {version}"


def _read_small(path: str) -> bytes:
    """The bytes of a small file such as a ref: an open, a read or two and
    a close (Python's ``open`` adds five more calls into the kernel)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = [os.read(descriptor, 4096)]
        if len(parts[0]) == 4096:  # a large packed-refs, say: to its end
            while part := os.read(descriptor, 65536):
                parts.append(part)
    finally:
        os.close(descriptor)
    return b"".join(parts)


def make_dirs_durably(path: str, sync: bool) -> None:
    """``os.makedirs``, and with ``sync`` each new folder's parent fsynced
    (a new folder's name is only on the disk once its parent is)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    make_dirs_durably(parent, sync)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)
    if sync:
        sync_dir(parent)


class RefLockFile:
    """Git's lock on a ref (or on packed-refs): ``<path>.lock``, created
    exclusively. :meth:`commit` writes the new content into it, fsyncs it
    and renames it over the ref; leaving the block without committing
    removes it. A lock that exists is waited for (with backoff) up to the
    timeout, then reported; it is removed only when it is the one a dead
    looming writer recorded (see
    :meth:`GitBackend._remove_dead_writers_lock`)."""

    def __init__(self, backend: GitBackend, name: str, path: str) -> None:
        self.backend = backend
        self.name = name
        self.path = path
        self.lock_path = path + ".lock"
        self.descriptor = -1
        self.committed = False

    def __enter__(self) -> RefLockFile:
        backend = self.backend
        # The lock is made as a file of ours first (a spare: its inode is
        # already allocated), recorded, then linked to ``<path>.lock``,
        # which fails when the name exists, as git's O_EXCL create does. So
        # a lock that appears under the name is always recorded: one that a
        # writer killed at any point leaves is known to be looming's.
        source, self.descriptor = backend._spares.take_or_make()
        try:
            backend._note_lock(self.lock_path, self.descriptor)
            self._link(source)
        except BaseException:
            os.close(self.descriptor)
            self.descriptor = -1
            backend._forget_lock()
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(source)
        return self

    def _link(self, source: str) -> None:
        backend = self.backend
        waited, delay = 0.0, 0.001
        pause = threading.Event()
        while True:
            try:
                os.link(source, self.lock_path)
                return
            except FileNotFoundError:
                # git removes empty ref folders; make them again.
                make_dirs_durably(os.path.dirname(self.path), backend._sync)
                continue
            except NotADirectoryError:
                raise BadRef(
                    f"cannot create {self.name}: a ref named like one of its folders exists"
                ) from None
            except FileExistsError:
                pass  # held by another process: wait for it
            if waited >= backend._lock_timeout():
                raise RefLocked(
                    f"{self.name} is locked by another process ({self.lock_path} exists "
                    f"after waiting {waited:.1f} s); retry, or remove that file if no git "
                    "or looming process is running"
                )
            step = delay * random.uniform(0.5, 1.5)
            pause.wait(step)
            waited += step
            delay = min(delay * 2, 0.05)

    def commit(self, content: bytes) -> None:
        """Write ``content`` as the ref's new value, then rename it in place."""
        view = memoryview(content)
        while view:
            view = view[os.write(self.descriptor, view) :]
        if self.backend._sync:
            # The folders of the packs written for this update (their new
            # names) are fsynced with the lock file, at once: both are on
            # the disk before the rename below makes the ref name them.
            folders = sorted(self.backend._unsynced_dirs)
            sync_together([self.descriptor], folders, self.backend._chore_work())
            self.backend._unsynced_dirs.difference_update(folders)
        os.close(self.descriptor)
        self.descriptor = -1
        os.rename(self.lock_path, self.path)
        self.committed = True
        if self.backend._sync:
            sync_dir(os.path.dirname(self.path), self.backend._chore_work())

    def __exit__(self, *exc_info: object) -> None:
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1
        if not self.committed:
            # Ours: created exclusively above and not renamed away.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
        # The record goes with the lock: once it is renamed or removed, its
        # inode may soon be reused by a lock git takes, which must never
        # look like ours.
        self.backend._forget_lock()


def tree_delta_hints(
    backend: GitBackend, records: list[PackRecord], cached: dict[str, bytes]
) -> dict[ObjectId, ObjectId]:
    """For the commits in packs ``records``: each directory version that
    changed -> the same directory in the commit's first parent, the base
    its delta is made against when the packs are merged (so packs that
    other processes wrote, which carry no such hints, merge small too)."""
    hints: dict[ObjectId, ObjectId] = {}
    for base, entries in records:
        data = cached.get(base)
        if data is None:
            with open(base + ".pack", "rb") as file:
                data = file.read()
        for oid, offset, _crc in entries:
            if _entry_type(data, offset) != PACK_COMMIT:
                continue
            commit = Commit.parse(backend.read(oid)[1])
            if commit.parents:
                with contextlib.suppress(MissingObject, CorruptObject):
                    parent = Commit.parse(backend.read(commit.parents[0])[1])
                    _pair_trees(backend, commit.tree, parent.tree, hints)
    return hints


def _history_order(bases: list[str]) -> list[str]:
    """The largest pack first (it holds the oldest history: the bases of
    the deltas of what came later), then the others oldest first."""
    stats = {base: os.stat(base + ".pack") for base in bases}
    largest = max(bases, key=lambda base: stats[base].st_size)
    rest = sorted((b for b in bases if b != largest), key=lambda b: stats[b].st_mtime_ns)
    return [largest, *rest]


def _entry_type(data: bytes, offset: int) -> int:
    return (data[offset] >> 4) & 7


def _pair_trees(
    backend: GitBackend, new: ObjectId, old: ObjectId, hints: dict[ObjectId, ObjectId]
) -> None:
    """Hint ``new`` -> ``old`` and the same for each subdirectory that changed."""
    if new == old or new in hints:
        return
    hints[new] = old
    new_entries = parse_tree(backend.read(new)[1])
    old_entries = parse_tree(backend.read(old)[1])
    for name, (mode, oid) in new_entries.items():
        before = old_entries.get(name)
        if mode == MODE_TREE and before is not None and before[0] == MODE_TREE:
            _pair_trees(backend, oid, before[1], hints)


_BACKENDS: weakref.WeakSet[GitBackend] = weakref.WeakSet()
_sha1 = hashlib.sha1


def _after_fork_in_child() -> None:
    for backend in list(_BACKENDS):
        backend._forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)


# The growing pack absorbs a new small pack in this many steps, one in each
# fsync round of the commit that wrote it (the pack's files, then its folder
# with the ref's lock, then the ref's folder).
ABSORB_STEPS = 3


class _Absorb:
    """A small pack being absorbed: its bytes, entries and trees (to fold it
    from if absorbing fails), the steps left and where its appends began."""

    __slots__ = ("base", "data", "entries", "mark", "steps", "trees")

    def __init__(
        self, base: str, data: bytes, entries: list[IndexEntry], trees: dict[ObjectId, bytes]
    ) -> None:
        self.base = base
        self.data = data
        self.entries = entries
        self.trees = trees
        self.mark: list[int] = []
        self.steps: Generator[None, None, None] = (None for _ in ())


class _WriterLock:
    """:meth:`GitBackend.writer_lock` as a plain context manager: a commit
    takes it several times over (nested), so it costs no generator."""

    __slots__ = ("backend",)

    def __init__(self, backend: GitBackend) -> None:
        self.backend = backend

    def __enter__(self) -> None:
        self.backend._enter_writer_lock(blocking=True)

    def __exit__(self, *exc_info: object) -> None:
        self.backend._leave_writer_lock()


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
        durability: str = "full",
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be 'full' or 'none', not {durability!r}")
        # full: packs, refs and their folders are fsynced before a commit
        # returns, so it survives a power cut; none: kill -9 safe only.
        self._sync = durability == "full"
        self._ref_lock_timeout: float | None = None
        # Inside batch(): ref -> (value on disk when the batch first moved
        # it, value now); written to disk, with the objects, when it ends.
        self._batch: dict[str, tuple[ObjectId | None, ObjectId | None]] | None = None
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
        self._recent_trees: dict[ObjectId, bytes] = {}  # the trees in them, whole
        # Small packs being appended to the growing pack, a step per fsync round.
        self._chores: collections.deque[_Absorb] = collections.deque()
        self._thread_lock = threading.RLock()
        self._pack_store: object | None = None
        self._lock_depth = 0
        self._lock_file: int | None = None
        self._made_dirs: set[str] = set()
        # Folders holding new packs whose names are not fsynced yet: the
        # next ref update fsyncs them with its lock file.
        self._unsynced_dirs: set[str] = set()
        self._spares = SparePool(self.git_dir, sync=self._sync)
        self._watched_refs: dict[str, tuple[int, int]] = {}  # name -> (inode, descriptor)
        # The idle folder: a thread started at the first unfolded commit.
        self._idle_thread: threading.Thread | None = None
        self._idle_wake = threading.Event()
        self._closing = threading.Event()
        self._flushes = 0
        self._fold_when_idle = fold_when_idle
        self._held_writer_lock = _WriterLock(self)
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
        self._pack_store = None  # its files' read offsets are shared with the parent
        self._small_packs = []
        self._small_bytes = 0
        self._growing = GrowingPack()
        self._sealed = []
        self._recent_packs = {}
        self._recent_trees = {}
        self._chores = collections.deque()

    def _make_dir(self, path: str) -> None:
        if path not in self._made_dirs:
            make_dirs_durably(path, self._sync)
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
                if attempt == 0:
                    # Packs folded meanwhile (by another thread), or written
                    # or repacked by another process: look again.
                    self._rescan_packs(store)
                    continue
                raise MissingObject(hex_name) from None
            except Exception as error:  # dulwich raises many kinds on a damaged pack
                if attempt == 0:
                    self._rescan_packs(store)
                    continue
                raise CorruptObject(hex_name, f"pack read failed: {error}") from None
        kind = KIND_OF_PACK_NUMBER.get(type_number)
        if kind is None:
            raise CorruptObject(hex_name, f"unknown object type {type_number}")
        if hash_object(kind, body) != object_id:
            raise CorruptObject(hex_name, "its content does not hash to its name")
        return kind, body

    def _rescan_packs(self, seen: object) -> None:
        """Forget the packs ``seen`` listed (unless another thread already
        did): git may have repacked them away, or added new ones."""
        with self._thread_lock:
            if self._pack_store is seen:
                self._reopen_packs()

    def contains(self, object_id: ObjectId) -> bool:
        if object_id in self._known or object_id in self._pending:
            return True
        if os.path.exists(self._loose_path(object_id.hex())):
            return True
        hex_name = object_id.hex().encode()
        store = self._packs()
        if store.contains_packed(hex_name):  # type: ignore[attr-defined]
            return True
        self._rescan_packs(store)
        return bool(self._packs().contains_packed(hex_name))  # type: ignore[attr-defined]

    def write(self, kind: str, body: bytes) -> ObjectId:
        prefix = OBJECT_HEADER_PREFIX.get(kind)  # object_header's, inlined
        if prefix is None:
            raise ValueError(f"unknown object type {kind!r}")
        digest = _sha1(b"%s%d\0" % (prefix, len(body)))
        digest.update(body)
        object_id = digest.digest()
        if object_id not in self._known:
            lock = self._thread_lock
            lock.acquire()  # not a with block: a commit writes a few dozen objects
            try:
                self._pending[object_id] = (kind, body)
            finally:
                lock.release()
        return object_id

    def note_delta_base(self, object_id: ObjectId, base: ObjectId) -> None:
        self._delta_bases[object_id] = base

    def flush(self) -> None:
        """Write every pending object into one new pack."""
        try:
            self._flush()
        except OSError as error:
            raise StoreError(
                f"cannot write a pack into {self.pack_dir}: {error.strerror or error} "
                f"({error.filename}); check the disk's free space and permissions"
            ) from error

    def _flush(self) -> None:
        with self._thread_lock:
            if not self._pending:
                return
            pending = self._pending
            data, entries, checksum = build_pack_of(pending, self._compression)
            self._make_dir(self.pack_dir)
            growing = self._growing
            if growing.size() > SEAL_ABOVE and not growing.absorbed and not self._chores:
                self._seal()
            trees = {oid: body for oid, (kind, body) in pending.items() if kind == "tree"}
            base = os.path.join(self.pack_dir, f"pack-{checksum.hex()}")
            chore = self._queue_absorb(base, data, entries, trees)
            try:
                install_pack(
                    self.pack_dir,
                    data,
                    entries,
                    checksum,
                    self._spares.take,
                    sync=self._sync,
                    sync_folder=False,
                    # The fold's share of the work, done while the disk writes.
                    while_waiting=self._chore_work(),
                )
            except BaseException:
                if chore is not None:
                    self._cancel_absorb(chore)
                raise
            if self._sync:
                self._unsynced_dirs.add(self.pack_dir)  # with the ref's lock file
            else:
                self._finish_chores()  # no fsync rounds to do them in
            self._small_packs.append((base, entries))
            self._small_bytes += len(data)
            if chore is None:
                self._recent_packs[base] = data
                self._recent_trees.update(trees)
            self._known.update(pending)
            self._pending = {}
            self._maybe_fold()

    def _queue_absorb(
        self, base: str, data: bytes, entries: list[IndexEntry], trees: dict[ObjectId, bytes]
    ) -> _Absorb | None:
        """Queue the appending of a new small pack to the growing pack in
        memory (see :meth:`GrowingPack.absorb`) in :data:`ABSORB_STEPS`
        steps, one per fsync round of the commit (:meth:`_chore_step`);
        None when packs before it wait for the fold instead (it appends in
        the order versions were written)."""
        if self._recent_packs:
            return None
        chore = _Absorb(base, data, entries, trees)
        chore.steps = self._growing.absorb(
            base, data, entries, self._delta_bases, trees, ABSORB_STEPS, chore.mark
        )
        self._chores.append(chore)
        return chore

    def _chore_step(self) -> None:
        """One step of the oldest queued absorb: what the writer does while
        its fsyncs run. A failure gives the absorbs up: their packs are
        folded from their bytes instead."""
        with self._thread_lock:
            if not self._chores:
                return
            chore = self._chores[0]
            try:
                next(chore.steps)
            except StopIteration:
                self._chores.popleft()
                # The folded objects' bases are used: a compaction finds them
                # again from the commits (tree_delta_hints).
                forget = self._delta_bases.pop
                for object_id, _offset, _crc in chore.entries:
                    forget(object_id, None)
            except Exception:
                for waiting in self._chores:
                    waiting.steps.close()  # only the first had begun: it undoes itself
                    self._recent_packs[waiting.base] = waiting.data
                    self._recent_trees.update(waiting.trees)
                self._chores.clear()

    def _chore_work(self) -> Callable[[], object] | None:
        """Work for an fsync round, if any is queued."""
        return self._chore_step if self._chores else None

    def _finish_chores(self) -> None:
        while self._chores:
            self._chore_step()

    def _cancel_absorb(self, chore: _Absorb) -> None:
        """Undo the absorbing of the newest small pack (it was not installed)."""
        if chore in self._chores:
            self._chores.remove(chore)
            chore.steps.close()
        elif chore.base in self._growing.absorbed:
            self._growing.absorbed.remove(chore.base)
            self._growing.unabsorb(*chore.mark)

    def _seal(self) -> None:
        """Leave the growing pack as it is on disk and begin a new one."""
        record = self._growing.record
        if record is not None:
            self._sealed.append(record)
        self._growing = GrowingPack()

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
        self._finish_chores()
        if not self._small_packs:
            return
        if self._growing.size() > SEAL_ABOVE and not self._growing.absorbed:
            self._seal()
        absorbed = self._growing.absorbed
        small = [
            record
            for record in self._small_packs
            if record[0] in self._recent_packs or record[0] in absorbed
        ]
        # Our own readers let go of the packs first, so that the ones folded
        # away can become spares (see SparePool.retire).
        self._reopen_packs()
        self._growing.fold(
            self.pack_dir,
            small,
            self._delta_bases,
            self._recent_packs,
            self._spares.take,
            self._spares.retire,
            sync=self._sync,
            tree_bodies=self._recent_trees,
        )
        self._small_packs = []
        self._small_bytes = 0
        self._recent_packs.clear()
        self._recent_trees.clear()
        # The folded objects' bases are used: a compaction finds them again
        # from the commits (tree_delta_hints), so they are not kept for the
        # writer's lifetime.
        for _base, entries in small:
            for object_id, _offset, _crc in entries:
                self._delta_bases.pop(object_id, None)
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
            # The lock may be busy for a moment (a reader in this process
            # rescanning packs, another process committing): try again a
            # few times while still idle; after that, another process's
            # idle fold, or ours after our next commit, catches up.
            for _attempt in range(IDLE_FOLD_TRIES):
                if self._fold_if_free(flushes) or flushes != self._flushes:
                    break
                if self._closing.wait(self._fold_when_idle):
                    return

    def _fold_if_free(self, flushes: int) -> bool:
        """The idle fold, if the writer lock is free now; whether it was."""
        with self._try_writer_lock() as locked:
            if not locked:
                return False
            worth_it = self._small_bytes * IDLE_FOLD_SHARE >= self._growing.size()
            if flushes == self._flushes and worth_it:
                with contextlib.suppress(OSError, CorruptObject):
                    self._fold()  # on failure the small packs stay valid
            if flushes == self._flushes:
                with contextlib.suppress(OSError, StoreError):
                    self.compact()
            return True

    def gc(self, now: float | None = None) -> None:
        """Merge the repository's packs into one (``git gc`` for the
        store), each directory version stored as a delta against its
        version in the parent commit. If a pack cannot be merged (a REF_DELTA
        some tools write), only this process's packs are.

        With ``now`` (POSIX time), also remove what killed writers left:
        spares of dead processes, half-written files, and a pack without
        its index once an hour old (git may be writing one now).
        """
        try:
            with self.writer_lock():
                self._remove_leftovers(None if now is None else now - 3600)
                self.flush()
                self._merge_packs([base for base, _size in self._pack_files()], fallback=True)
        except OSError as error:
            raise StoreError(
                f"gc of {self.git_dir} failed: {error.strerror or error} ({error.filename}); "
                "the repository is as it was; check the disk and retry"
            ) from error

    def compact(self) -> bool:
        """Merge the small packs when there are more than
        :data:`MANY_PACKS` (any writer's: each short-lived writer leaves
        one), keeping only packs much larger than everything smaller, so
        packs stay few and each byte is copied a few times at most.
        Whether packs were merged. Writers call it when idle and on close."""
        with self._try_writer_lock() as locked:
            if not locked:
                return False  # another writer is at work; it will compact
            packs = self._pack_files()
            if len(packs) <= MANY_PACKS:
                return False
            self._remove_leftovers(None)
            chosen = sorted(packs, key=lambda pack: pack[1])
            while len(chosen) > 1 and chosen[-1][1] > KEEP_ABOVE * sum(p[1] for p in chosen[:-1]):
                chosen.pop()  # much larger than the rest together: left as it is
            if len(chosen) < 2:
                return False
            return self._merge_packs([base for base, _size in chosen], fallback=False)

    def _pack_files(self) -> list[tuple[str, int]]:
        """The complete packs (base path, bytes) not marked ``.keep``."""
        try:
            names = set(os.listdir(self.pack_dir))
        except FileNotFoundError:
            return []
        packs: list[tuple[str, int]] = []
        for name in sorted(names):
            if not (name.startswith("pack-") and name.endswith(".idx")):
                continue
            stem = name[: -len(".idx")]
            if stem + ".pack" in names and stem + ".keep" not in names:
                with contextlib.suppress(FileNotFoundError):
                    size = os.stat(os.path.join(self.pack_dir, stem + ".pack")).st_size
                    packs.append((os.path.join(self.pack_dir, stem), size))
        return packs

    def _merge_packs(self, bases: list[str], *, fallback: bool) -> bool:
        """Merge packs ``bases`` into one (writer lock held); whether done.
        A pack git removed meanwhile, or one that cannot be merged, leaves
        everything as it was."""
        from looming.store.pack import read_index_entries

        self._finish_chores()
        own = {record[0]: record[1] for record in self._own_packs()}
        try:
            records = [
                (base, own.get(base) or read_index_entries(base + ".idx"))
                for base in _history_order(bases)
            ]
        except OSError:
            return False
        if len(records) < 2:
            return False
        try:
            merged = self._concatenate_with_hints(records)
        except CorruptObject:
            mine = [record for record in records if record[0] in own]
            if not fallback or len(mine) < 2:
                return False
            merged = self._concatenate_with_hints(mine)
            records = mine
        except OSError:
            self._reopen_packs()
            return False
        gone = {base for base, _entries in records}
        self._sealed = [record for record in self._sealed if record[0] not in gone] + [merged]
        if self._growing.base_name in gone:
            self._growing = GrowingPack()
        self._small_packs = [record for record in self._small_packs if record[0] not in gone]
        self._small_bytes = 0
        for base in gone:
            self._recent_packs.pop(base, None)
        if not self._recent_packs:
            self._recent_trees.clear()
        self._reopen_packs()
        return True

    def _own_packs(self) -> list[PackRecord]:
        growing = self._growing.record
        return [*self._sealed, *([growing] if growing else []), *self._small_packs]

    def _concatenate_with_hints(self, records: list[PackRecord]) -> PackRecord:
        from looming.store.pack import concatenate_packs

        hints = tree_delta_hints(self, records, self._recent_packs)
        hints.update(self._delta_bases)
        self._reopen_packs()  # our readers let go of the packs leaving
        return concatenate_packs(
            self.pack_dir,
            records,
            hints,
            self._recent_packs,
            self._spares.take,
            sync=self._sync,
        )

    def _remove_leftovers(self, older_than: float | None) -> None:
        """Remove what killed writers left (writer lock held): the spares
        of dead processes, looming's half-written ``.tmp`` files, and,
        once older than ``older_than`` (POSIX time; git may be writing
        one now), a pack without its index."""
        reclaim_dead(self._spares.folder)
        try:
            names = set(os.listdir(self.pack_dir))
        except FileNotFoundError:
            return
        for name in names:
            full = os.path.join(self.pack_dir, name)
            # Ours only (pack-<id>.pack.tmp / .idx.tmp): we hold the writer
            # lock, so no looming writer is filling one now.
            ours = name.startswith("pack-") and name.endswith((".pack.tmp", ".idx.tmp"))
            orphan = name.endswith(".pack") and name[: -len(".pack")] + ".idx" not in names
            with contextlib.suppress(FileNotFoundError):
                if ours or (
                    orphan and older_than is not None and os.stat(full).st_mtime < older_than
                ):
                    os.unlink(full)

    def _reopen_packs(self) -> None:
        if self._pack_store is not None:
            store, self._pack_store = self._pack_store, None
            # A damaged pack's map may still be referenced by the error
            # being handled; it is then let go of by the collector.
            with contextlib.suppress(BufferError):
                store.close()  # type: ignore[attr-defined]

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

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Commits made inside are written to disk together when the block
        ends: one pack, one fsync'ed update per ref moved (compare-and-set
        against the value before the batch). Until then they are visible
        in this process only; if the block raises, or a ref moved on disk
        meanwhile (RefChanged), none of them is kept. The writer lock is
        held throughout, so other looming writers wait."""
        with self.writer_lock():
            if self._batch is not None:
                yield  # nested: part of the outer batch
                return
            self._batch = {}
            try:
                yield
            except BaseException:
                self._batch = None
                raise
            moved, self._batch = self._batch, None
            for name, (before, after) in moved.items():
                if before != after:
                    self.set_ref(name, before, after)

    def read_ref(self, name: str, depth: int = 0) -> ObjectId | None:
        if self._batch is not None and name in self._batch:
            return self._batch[name][1]
        # Refs are rewritten in place; a read racing that write could see a
        # mix of old and new bytes, so a bad read is tried again before it
        # is reported as a damaged ref.
        for attempt in range(3):
            try:
                text = _read_small(self._ref_path(name)).strip()
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
        if self._batch is not None and name in self._batch:
            return ("batch", self._batch[name][1])
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

    def set_head_target(self, ref: str) -> None:
        """Point HEAD at ``ref`` (a symbolic ref), under HEAD's lock."""
        path = os.path.join(self.git_dir, "HEAD")
        try:
            with self.writer_lock(), self._ref_lock("HEAD", path) as lock:
                lock.commit(f"ref: {ref}\n".encode())
        except OSError as error:
            raise StoreError(f"cannot update HEAD in {self.git_dir}: {error}") from error

    def set_ref(self, name: str, old: ObjectId | None, new: ObjectId | None) -> None:
        """Compare-and-set ref ``name`` the way git does: take ``name.lock``
        (created exclusively, so git and looming writers exclude each
        other), check the ref still holds ``old``, write the lock file,
        fsync it, rename it over the ref and fsync the folder. A lock held
        by another process is waited for up to the lock timeout, never
        removed; only one a dead looming writer left is taken over."""
        if self._batch is not None:
            with self.writer_lock():
                if self._batch is not None:
                    self._set_ref_in_batch(name, old, new)
                    return
        path = self._ref_path(name)
        try:
            with self.writer_lock():
                # Objects first (on the disk when durable), so the ref never
                # names anything that is not.
                self.flush()
                with self._ref_lock(name, path) as lock:
                    current = self._read_ref_locked(name, path)
                    if current != old:
                        raise RefChanged(
                            f"{name} moved while updating it (it is at "
                            f"{current.hex() if current else 'nothing'}); retry"
                        )
                    if new is None:
                        self._delete_ref_locked(name, path)
                    else:
                        lock.commit(new.hex().encode() + b"\n")
        except OSError as error:
            raise StoreError(
                f"cannot update {name} in {self.git_dir}: {error.strerror or error} "
                f"({error.filename}); check the disk and the repository's permissions"
            ) from error

    def _set_ref_in_batch(self, name: str, old: ObjectId | None, new: ObjectId | None) -> None:
        assert self._batch is not None
        if name in self._batch:
            before, current = self._batch[name]
        else:
            before = current = self.read_ref(name)
        if current != old:
            raise RefChanged(f"{name} moved while updating it; retry")
        self._batch[name] = (before, new)

    def _read_ref_locked(self, name: str, path: str) -> ObjectId | None:
        """The ref's value while we hold its lock: the loose file, or
        packed-refs when there is none (git's order)."""
        try:
            text = _read_small(path).strip()
        except (FileNotFoundError, NotADirectoryError):
            return self._packed_refs().get(name)
        except IsADirectoryError:
            raise BadRef(
                f"cannot update {name}: {path} is a folder (refs below it exist)"
            ) from None
        if text.startswith(b"ref: "):
            return self.read_ref(name)
        try:
            return raw_id(text.decode("ascii", "replace"))
        except Malformed:
            raise BadRef(f"ref {name} holds {text[:60]!r}, not an object id") from None

    def _delete_ref_locked(self, name: str, path: str) -> None:
        """Git's order: out of packed-refs first (under its own lock), then
        the loose file, so the old value never shows through."""
        if name in self._packed_refs():
            with self._ref_lock("packed-refs", os.path.join(self.git_dir, "packed-refs")) as lock:
                lock.commit(self._packed_refs_without(name))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if self._sync:
            sync_dir(os.path.dirname(path))

    def _packed_refs_without(self, name: str) -> bytes:
        try:
            with open(os.path.join(self.git_dir, "packed-refs"), "rb") as file:
                lines = file.read().splitlines(keepends=True)
        except FileNotFoundError:
            return b""
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
        return b"".join(kept)

    def _ref_lock(self, name: str, path: str) -> RefLockFile:
        return RefLockFile(self, name, path)

    def _note_lock(self, lock_path: str, descriptor: int) -> None:
        """Record, in our flock'ed looming.lock, which ``.lock`` file we
        hold: a writer that finds it after we died knows it is ours."""
        record = f"{_identity(descriptor)} {lock_path}\n".encode()
        if self._lock_file is not None:
            os.pwrite(self._lock_file, record, 0)
            os.ftruncate(self._lock_file, len(record))

    def _forget_lock(self) -> None:
        if self._lock_file is not None:
            os.ftruncate(self._lock_file, 0)

    def _remove_dead_writers_lock(self) -> None:
        """Just after taking the flock: a record left in looming.lock is
        a dead writer's (a live one clears it before it lets go of the
        flock), and the ``.lock`` it names, if that very file (same device,
        inode and inode generation; the record is made before the lock
        appears under its name) is still there, is that writer's: remove
        it, or it would block git and looming alike."""
        assert self._lock_file is not None
        record = os.pread(self._lock_file, 4200, 0).decode("utf-8", "replace").rstrip("\n")
        if not record or "\0" in record:  # none, or torn by a crash (its blocks zeroed)
            return
        parts = record.split(" ", 2)  # "device:inode generation path"
        identity, lock_path = " ".join(parts[:2]), parts[-1]
        with contextlib.suppress(FileNotFoundError):
            descriptor = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                same = _identity(descriptor) == identity
            finally:
                os.close(descriptor)
            if same:
                os.unlink(lock_path)
        self._forget_lock()

    def _lock_timeout(self) -> float:
        if self._ref_lock_timeout is None:
            self._ref_lock_timeout = _config_milliseconds(
                self.git_dir, "filesreflocktimeout", DEFAULT_REF_LOCK_TIMEOUT_MS
            )
        return self._ref_lock_timeout / 1000

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
        for name, (_before, after) in (self._batch or {}).items():
            if name.startswith(prefix):
                if after is None:
                    refs.pop(name, None)
                else:
                    refs[name] = after
        return refs

    def writer_lock(self) -> contextlib.AbstractContextManager[None]:
        """One writer at a time: a thread lock, then an flock across processes."""
        return self._held_writer_lock

    @contextlib.contextmanager
    def _try_writer_lock(self) -> Iterator[bool]:
        """The writer lock if it is free right now (yields whether taken)."""
        taken = self._enter_writer_lock(blocking=False)
        try:
            yield taken
        finally:
            if taken:
                self._leave_writer_lock()

    def _enter_writer_lock(self, *, blocking: bool) -> bool:
        """Take the writer lock (again, when this thread holds it); whether taken."""
        if not self._thread_lock.acquire(blocking=blocking):
            return False
        if self._lock_depth:
            self._lock_depth += 1
            return True
        try:
            if self._lock_file is None:
                # Kept open: opening it for every commit costs a syscall each.
                self._lock_file = os.open(
                    os.path.join(self.git_dir, "looming.lock"), os.O_RDWR | os.O_CREAT, 0o644
                )
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                self._thread_lock.release()
                return False
            try:
                self._remove_dead_writers_lock()
            except BaseException:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                raise
        except BaseException:
            self._thread_lock.release()
            raise
        self._lock_depth = 1
        return True

    def _leave_writer_lock(self) -> None:
        try:
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
                with contextlib.suppress(FileNotFoundError):  # git may remove it
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
                with contextlib.suppress(OSError, StoreError):
                    self.compact()  # others' small packs too (a CLI writes one each)
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
