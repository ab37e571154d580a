"""Empty files made ahead of time, so that a commit does not wait for inodes.

On a busy ext4 disk, creating a file (allocating its inode) costs up to a
millisecond, while renaming or linking an existing one costs tens of
microseconds. A commit needs two new files (a pack and its index), so a
thread keeps a few empty files ready in ``<git dir>/looming-spares/`` and
the writer fills one and renames it into place. The names carry the
process id, so a process only ever fills its own spares; git ignores the
folder. A spare gone missing (removed by ``gc`` as a leftover) only means
the file is created the slow way.

Spares are made only while the writer is idle: inode allocation contends
with the writer's own renames and unlinks in the kernel, so during a burst
of commits the thread stays out of the way. Sparse commits (a unikernel's
writes, a push now and then) then each cost a rename rather than an
allocation. During a burst the spares come from the files that folding
retires instead (:meth:`SparePool.recycle`): a pack nobody else has open is
moved into the spares folder and emptied rather than unlinked, so its inode
serves the next commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import signal
import threading
from collections.abc import Callable

SPARE_DIR = "looming-spares"

TakeSpare = Callable[[], str | None]

IDLE_SECONDS = 0.05  # no spare is taken for this long: the writer is idle
# Retired files kept as spares hold their old bytes until written over, so
# they are kept only up to this many bytes in all: the disk a busy writer
# uses stays within a bounded margin of what it has folded.
RECYCLE_BYTES = 512 << 10


def sync_dir(path: str, while_waiting: Callable[[], object] | None = None) -> None:
    """Make the names in folder ``path`` (files created, renamed or
    removed there) survive a power cut: fsync the folder itself
    (``while_waiting``: see :func:`fsync_together`)."""
    sync_together([], [path], while_waiting)


class _Syncer:
    """Threads that fsync on request, so that several files and folders
    are fsynced at once: the file system then commits them in one journal
    transaction and one cache flush, where one fsync after another waits
    for a commit each (three of them cost about twice one, not three
    times; more under a load of other writers)."""

    WORKERS = 3

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.workers = 0

    def start(self, count: int) -> None:
        with self.lock:
            while self.workers < min(count, self.WORKERS):
                self.workers += 1
                threading.Thread(target=self._work, name="looming-store-fsync", daemon=True).start()

    def _work(self) -> None:
        while True:
            descriptor, started, done = self.jobs.get()
            if started is not None:
                started.put(None)  # in the kernel from here on, without the GIL
            try:
                os.fsync(descriptor)
            except BaseException as error:  # handed to the waiting writer
                done.put(error)
            else:
                done.put(None)


# descriptor, where to say the fsync is starting (or None), where its
# outcome goes (None, or the error)
_Job = tuple[int, "queue.SimpleQueue[None] | None", "queue.SimpleQueue[BaseException | None]"]

_SYNCER: _Syncer | None = None


def fsync_together(
    descriptors: list[int], while_waiting: Callable[[], object] | None = None
) -> None:
    """fsync every descriptor, at once: returns when all are on the disk,
    raising the first error after all have finished.

    ``while_waiting``, if given, is called once every fsync is under way
    (all in threads, each past the point where it holds the interpreter
    lock): work for the processor while the disk writes. It is called
    even when there is nothing to fsync; whatever it raises is raised
    after every fsync has finished."""
    global _SYNCER
    if len(descriptors) < (1 if while_waiting is not None else 2):
        for descriptor in descriptors:
            os.fsync(descriptor)
        if while_waiting is not None:
            while_waiting()
        return
    syncer = _SYNCER
    if syncer is None or syncer.pid != os.getpid():  # none yet, or a forked child's
        syncer = _SYNCER = _Syncer()
    in_threads = descriptors if while_waiting is not None else descriptors[1:]
    syncer.start(len(in_threads))
    done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
    started: queue.SimpleQueue[None] | None = None
    if while_waiting is not None:
        started = queue.SimpleQueue()
    for descriptor in in_threads:
        syncer.jobs.put((descriptor, started, done))
    errors: list[BaseException] = []
    try:
        if while_waiting is None:
            os.fsync(descriptors[0])
        else:
            assert started is not None
            # Each worker takes the interpreter lock to start its fsync;
            # blocking here hands it over, so none waits for ours to end.
            for _descriptor in in_threads:
                started.get()
            while_waiting()
    finally:
        for _descriptor in in_threads:
            error = done.get()
            if error is not None:
                errors.append(error)
    if errors:
        raise errors[0]


def sync_together(
    descriptors: list[int],
    folders: list[str],
    while_waiting: Callable[[], object] | None = None,
) -> None:
    """fsync open files ``descriptors`` and the folders ``folders`` at once
    (``while_waiting``: see :func:`fsync_together`)."""
    opened: list[int] = []
    try:
        for folder in folders:
            opened.append(os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        fsync_together([*descriptors, *opened], while_waiting)
    finally:
        for descriptor in opened:
            os.close(descriptor)


def write_file_atomically(
    path: str,
    data: bytes | bytearray,
    take_spare: TakeSpare | None = None,
    tail: bytes = b"",
    *,
    sync: bool = False,
) -> None:
    """Make ``path`` hold ``data`` then ``tail``, appearing whole or not at
    all: a spare (or else ``path.tmp``) is filled, then renamed there. With
    ``sync``, the file's bytes reach the disk before it is renamed (its
    folder is the caller's to sync)."""
    write_files_atomically([(path, data, tail)], take_spare, sync=sync)


FileContent = tuple[str, bytes | bytearray, bytes]  # path, data, tail


def write_files_atomically(
    files: list[FileContent],
    take_spare: TakeSpare | None = None,
    *,
    sync: bool = False,
    while_waiting: Callable[[], object] | None = None,
) -> None:
    """:func:`write_file_atomically` for several files: all are filled,
    fsynced at once (with ``sync``), then renamed into place in order, so
    each name appears only once every file's bytes are on the disk.
    ``while_waiting`` is called while the fsyncs run (or once the files
    are filled, without ``sync``); if it raises, no file is renamed."""
    filled: list[tuple[int, str]] = []
    try:
        for path, data, tail in files:
            filled.append(_fill(path, data, tail, take_spare))
        if sync:
            fsync_together([descriptor for descriptor, _spare in filled], while_waiting)
        elif while_waiting is not None:
            while_waiting()
    finally:
        for descriptor, _spare in filled:
            os.close(descriptor)
    for (path, data, tail), (_descriptor, spare) in zip(files, filled, strict=True):
        try:
            os.rename(spare, path)
        except OSError:
            if spare == path + ".tmp":
                raise
            # The spares folder is on another file system (a symlinked
            # objects folder): drop the spare, write the file beside its place.
            with contextlib.suppress(OSError):
                os.unlink(spare)
            write_files_atomically([(path, data, tail)], None, sync=sync)


def _fill(
    path: str, data: bytes | bytearray, tail: bytes, take_spare: TakeSpare | None
) -> tuple[int, str]:
    """A spare (or ``path.tmp``) holding ``data`` then ``tail``: its open
    descriptor and its path."""
    spare = take_spare() if take_spare is not None else None
    if spare is not None:
        try:
            # Written over, then cut to length: a recycled spare keeps its
            # blocks, and writing into them costs no allocation.
            descriptor = os.open(spare, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            spare = None
    recycled = spare is not None
    if spare is None:
        spare = path + ".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        descriptor = os.open(spare, flags, 0o644)
    try:
        _write_all(descriptor, data)
        if tail:
            _write_all(descriptor, tail)
        if recycled:  # it may have held more
            os.ftruncate(descriptor, len(data) + len(tail))
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor, spare


def _write_all(descriptor: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


class SparePool:
    """Spare files of this process: up to ``keep`` empty ones refilled by a
    thread while the writer is idle, and files retired by folding."""

    def __init__(self, git_dir: str, keep: int = 24, *, sync: bool = False) -> None:
        self.folder = os.path.join(git_dir, SPARE_DIR)
        self.keep = keep
        # With sync, a recycled file's old name is gone from the disk (its
        # folder fsynced) before its inode is written over: else a power
        # cut could bring back the old name with the new bytes.
        self.sync = sync
        self._reset()

    def _reset(self) -> None:
        self._ready: list[str] = []
        self._stale: dict[str, int] = {}  # recycled spares not written yet -> bytes
        self._stale_bytes = 0
        self._unsynced_folders: set[str] = set()
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopped = threading.Event()
        self._waiting_for_takes = False
        self._takes = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Retired files moved out of the way, removed by their own thread.
        self._doomed: queue.Queue[str | None] = queue.Queue()
        self._remover: threading.Thread | None = None
        self._counter = 0
        self._pid = os.getpid()
        # This process's lease on its spares: a file it holds flock'ed while
        # it lives (see reclaim_dead); its name prefixes every spare's.
        self._token = f"{self._pid}.{os.urandom(4).hex()}"
        self._alive: int | None = None

    def take(self) -> str | None:
        """The path of an empty spare file, or None when none is ready."""
        if self._pid != os.getpid():
            # A forked child: the parent's spares, thread and lease are not
            # its own (closing the inherited descriptor keeps the parent's
            # flock: it belongs to the open file, which the parent holds).
            if self._alive is not None:
                with contextlib.suppress(OSError):
                    os.close(self._alive)
            self._reset()
        # Counted, not signalled: waking the thread on every commit would
        # hand it the interpreter lock mid-burst, and on a loaded machine
        # the writer then waits for it to be scheduled again.
        self._takes += 1
        if self._alive is None:
            with contextlib.suppress(OSError):  # read-only: no spares then
                self._take_lease()
        with self._lock:
            spare = self._ready.pop() if self._ready else None
            if spare is not None and self._stale:
                self._stale_bytes -= self._stale.pop(spare, 0)
            unsynced, self._unsynced_folders = self._unsynced_folders, set()
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(
                    target=self._refill, name="looming-store-spares", daemon=True
                )
                self._thread.start()
        if self._waiting_for_takes:
            self._waiting_for_takes = False
            self._wanted.set()
        for folder in unsynced:
            sync_dir(folder)
        return spare

    def take_or_make(self) -> tuple[str, int]:
        """A spare, made now when none is ready, and its descriptor, open
        for writing at its start, empty."""
        spare = self.take()
        if spare is not None:
            with contextlib.suppress(FileNotFoundError):
                return spare, os.open(spare, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        while True:
            name = self._next_name()  # its lease made the folder
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            try:
                return name, os.open(name, flags, 0o644)
            except FileExistsError:
                continue
            except FileNotFoundError:  # the folder was removed meanwhile
                os.makedirs(self.folder, exist_ok=True)

    def _next_name(self) -> str:
        with self._lock:
            self._counter += 1
            counter = self._counter
        if self._alive is None:
            self._take_lease()
        return os.path.join(self.folder, f"{self._token}-{counter}")

    def _take_lease(self) -> None:
        """Create and flock this process's ``<token>.alive`` file before
        its first spare: while it is locked, nobody reclaims the spares."""
        with self._lock:
            if self._alive is not None:
                return
            os.makedirs(self.folder, exist_ok=True)
            for _attempt in range(3):
                path = os.path.join(self.folder, f"{self._token}.alive")
                # Locked before it is visible under its name, so a lease
                # anyone can see is locked for as long as its process lives.
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
                descriptor = os.open(path + ".new", flags, 0o644)
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                try:
                    # Fails when a reclaimer took the unlocked ".new" for a
                    # dead process's (see _orphan): then a new token.
                    os.rename(path + ".new", path)
                except FileNotFoundError:
                    os.close(descriptor)
                    self._token = f"{self._pid}.{os.urandom(4).hex()}"
                    continue
                self._alive = descriptor
                return

    def _refill(self) -> None:
        with contextlib.suppress(OSError):
            os.makedirs(self.folder, exist_ok=True)
        while not self._stopping:
            self._waiting_for_takes = True
            if self.keep - len(self._ready) <= 0:
                self._wanted.wait()
                self._wanted.clear()
                continue
            self._waiting_for_takes = False
            # Wait for a pause in the writer's work: no spare taken for a
            # while (a blocking wait with a timeout, not a clock read).
            takes = self._takes
            if self._stopped.wait(IDLE_SECONDS):
                return
            while self._takes == takes and not self._stopping and len(self._ready) < self.keep:
                name = self._next_name()
                try:
                    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                except FileExistsError:
                    continue  # a spare of a dead process that had our pid
                except OSError:
                    # Read-only or full disk: the writer creates files itself
                    # (and reports what goes wrong there).
                    self._waiting_for_takes = True
                    self._wanted.wait()
                    self._wanted.clear()
                    break
                with self._lock:
                    self._ready.append(name)

    def recycle(self, path: str) -> bool:
        """Make ``path``, a file being retired, a spare of this
        process when no other process has it open; False (the caller unlinks
        it) when one has, or when it cannot be done here.

        "Nobody else has it open" is the kernel's condition for a write
        lease. While the lease is held an opener waits, so the file is
        renamed away with nobody able to see it (a spare is written over in
        place, so one still linked elsewhere is not kept); its break
        notice, should one come in that window, goes to nobody (owner 0,
        and a signal ignored by default until then) rather than SIGIO."""
        if self._pid != os.getpid() or self._stale_bytes >= RECYCLE_BYTES:
            return False
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        name = self._next_name()
        renamed = False
        try:
            size = os.fstat(descriptor).st_size
            if self._stale_bytes + size > RECYCLE_BYTES:
                return False
            fcntl.fcntl(descriptor, fcntl.F_SETSIG, signal.SIGURG)
            fcntl.fcntl(descriptor, fcntl.F_SETLEASE, fcntl.F_WRLCK)
            try:
                fcntl.fcntl(descriptor, fcntl.F_SETOWN, 0)
                os.rename(path, name)
                renamed = True
            finally:
                fcntl.fcntl(descriptor, fcntl.F_SETLEASE, fcntl.F_UNLCK)
            # A hard link made before the rename (``git clone`` of a local
            # path links packs) shares the inode: writing into it would
            # change the clone's pack, so it is only let go of.
            if os.fstat(descriptor).st_nlink != 1:
                os.unlink(name)
                return True
        except OSError:
            if not renamed:
                return False
            with contextlib.suppress(OSError):
                os.unlink(name)  # retired all the same
            return True
        finally:
            os.close(descriptor)
        with self._lock:
            self._ready.append(name)
            self._stale[name] = size
            self._stale_bytes += size
            if self.sync:
                self._unsynced_folders.add(os.path.dirname(path))
        return True

    def retire(self, path: str) -> bool:
        """Take ``path``, a file folding has replaced, off the caller's
        hands: kept as a spare (:meth:`recycle`), else moved aside and
        removed by a thread (:meth:`discard`); False when neither can be
        done here (the caller unlinks it)."""
        return self.recycle(path) or self.discard(path)

    def discard(self, path: str) -> bool:
        """Rename ``path`` into this process's spares folder (a rename,
        some tens of microseconds) and unlink it there from a thread: freeing
        a pack's blocks takes milliseconds on a busy disk, which a commit
        need not wait for. Its old name is gone when this returns, so a new
        file under that name is never the one removed. A process killed
        before the thread gets to it leaves a spare, which
        :func:`reclaim_dead` removes."""
        if self._pid != os.getpid() or self._stopping:
            return False
        try:
            name = self._next_name()
            os.rename(path, name)
        except OSError:
            return False
        self._doomed.put(name)
        with self._lock:
            if self._remover is None:
                self._remover = threading.Thread(
                    target=self._remove_doomed, name="looming-store-remove", daemon=True
                )
                self._remover.start()
        return True

    def _remove_doomed(self) -> None:
        while True:
            name = self._doomed.get()
            try:
                if name is None:
                    return
                with contextlib.suppress(OSError):
                    os.unlink(name)
            finally:
                self._doomed.task_done()

    def close(self) -> None:
        """Stop the threads and remove this process's unused spares."""
        if self._remover is not None and self._pid == os.getpid():
            self._doomed.put(None)
            self._doomed.join()
            self._remover = None
        with self._lock:
            self._stopping = True
        self._stopped.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            ready, self._ready = self._ready, []
            self._stale.clear()
            self._stale_bytes = 0
        for name in ready:
            with contextlib.suppress(OSError):
                os.unlink(name)
        if self._alive is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.folder, f"{self._token}.alive"))
            with contextlib.suppress(OSError):
                os.close(self._alive)
            self._alive = None


def reclaim_dead(folder: str) -> int:
    """Remove the spares of processes that are gone; how many files.

    A process's spares are named ``<token>-<n>`` beside its lease file
    ``<token>.alive``, which it holds flock'ed while it lives; the kernel
    drops the flock when it dies (kill -9 too). So a lease we can lock
    ourselves is a dead process's, and its spares are nobody's. A spare
    without any lease file (its owner died before making it) is nobody's.
    """
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    leases = {name[: -len(".alive")] for name in names if name.endswith(".alive")}
    removed = 0
    for token in leases:
        path = os.path.join(folder, f"{token}.alive")
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            for name in names:
                if name.startswith(token + "-"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, name))
                        removed += 1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
        finally:
            os.close(descriptor)
    for name in names:
        if _orphan(folder, name, leases):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                removed += 1
    return removed


def _orphan(folder: str, name: str, leases: set[str]) -> bool:
    """Whether ``name`` in the spares folder belongs to no live process."""
    if name.endswith(".alive.new"):
        # A lease being made: its process renames it once locked, and makes
        # a new one should it be gone by then; one we can lock is not held.
        try:
            descriptor = os.open(os.path.join(folder, name), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(descriptor)
        return True
    token, dash, _counter = name.rpartition("-")
    if not dash or name.endswith(".alive") or token in leases:
        return False
    if token.isdigit():
        # Named by an older looming: its process id alone.
        try:
            os.kill(int(token), 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    return not os.path.exists(os.path.join(folder, f"{token}.alive"))
