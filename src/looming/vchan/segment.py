"""Shared segments: files in ``/dev/shm`` named ``looming-vchan-<pid>-<n>``.

The server creates a segment, maps it and hands the open descriptor to the
client during rendezvous; the name is removed as soon as the client has
mapped it, so a connected channel leaves nothing behind even if both
processes are killed. A segment whose creator died before that is found by
:func:`recover_segments` (the pid in its name is no longer alive) and
removed at the next start.
"""

from __future__ import annotations

import itertools
import mmap
import os
import re
from pathlib import Path

SHM_DIR = Path("/dev/shm")
SEGMENT_PREFIX = "looming-vchan-"
_SEGMENT_NAME = re.compile(r"^looming-vchan-(\d+)-(\d+)$")
_sequence = itertools.count()


def shm_dir() -> Path:
    """Where segments live: ``/dev/shm``, or the temp dir on hosts without it."""
    if SHM_DIR.is_dir():
        return SHM_DIR
    return Path(os.environ.get("TMPDIR", "/tmp"))


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Segment:
    """A mapped shared segment and, while it still has one, its name."""

    def __init__(self, fd: int, size: int, path: Path | None) -> None:
        self.fd = fd
        self.size = size
        self.path = path
        self.mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def create(cls, size: int, directory: Path | None = None) -> Segment:
        """A new zeroed segment of ``size`` bytes with a fresh name."""
        directory = directory or shm_dir()
        while True:
            path = directory / f"{SEGMENT_PREFIX}{os.getpid()}-{next(_sequence)}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue  # left by an earlier process with our pid: pick the next number
            break
        try:
            os.ftruncate(fd, size)
            return cls(fd, size, path)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise

    @classmethod
    def adopt(cls, fd: int) -> Segment:
        """Map a segment received as a descriptor (its size from fstat)."""
        size = os.fstat(fd).st_size
        return cls(fd, size, None)

    def view(self) -> memoryview:
        return memoryview(self.mapping)

    def unlink(self) -> None:
        """Remove the name; the mapping stays valid until closed."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def close(self) -> None:
        """Unmap, close the descriptor and remove the name if still there."""
        self.unlink()
        if not self.mapping.closed:
            self.mapping.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def recover_segments(directory: Path | None = None) -> list[Path]:
    """Remove segments whose creating process is gone; returns what was removed."""
    directory = directory or shm_dir()
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _SEGMENT_NAME.match(name)
        if match and not pid_alive(int(match.group(1))):
            path = directory / name
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
