"""The disk image a VM keeps its storage on: made on first use, locked while used.

A unikernel whose ``kv_rw``, ``kv_store`` or ``block`` devices are on the
VM's disk (:mod:`looming.vm.storage`) boots with a raw disk image attached
as a virtio-blk device. ``looming run`` makes it the first time, holding one
ext4 file system (``mkfs.ext4`` here, on the host, so the guest needs no
tools); the guest's /init mounts it. The image is made under a temporary
name and linked into place, so a failed or interrupted ``mkfs`` leaves
nothing behind.

While a VM runs, its launcher holds an exclusive ``flock`` on the image:
a second ``looming run`` on the same image is refused, naming it. qemu
itself locks the images it opens (byte-range locks); a probe for those
refuses an image that a qemu started some other way has open.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

DEFAULT_SIZE_MB = 256
MINIMUM_SIZE_MB = 16  # room for ext4's journal and a little data
EXT4_MAGIC_OFFSET = 1024 + 0x38  # s_magic in the superblock
EXT4_MAGIC = b"\x53\xef"
MKFS = "mkfs.ext4"


class DiskError(Exception):
    """The disk image cannot be used as asked: exit code 2."""


def default_path(manifest: Path, unikernel: str, instance: int) -> Path:
    """``dist/NAME-disk.img`` beside the manifest; ``NAME-N-disk.img`` for instance N > 0,
    so several VMs of one unikernel each have their own."""
    suffix = "" if instance == 0 else f"-{instance}"
    return manifest.resolve().parent / f"{unikernel}{suffix}-disk.img"


def _mkfs() -> str:
    found = shutil.which(MKFS) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / MKFS).is_file()), None
    )
    if found is None:
        raise DiskError(
            f"{MKFS} is not installed; it makes the VM's disk (Debian package e2fsprogs)"
        )
    return found


def create(path: Path, size_mb: int) -> bool:
    """Make the image at ``path`` (``size_mb`` MiB, sparse, one ext4 file
    system) unless it exists; True when it was made here."""
    if size_mb < MINIMUM_SIZE_MB:
        raise DiskError(f"--vm-disk-size {size_mb}: a disk needs at least {MINIMUM_SIZE_MB} MB")
    if path.exists():
        return False
    if not path.parent.is_dir():
        raise DiskError(f"cannot make the disk image {path}: {path.parent} is not a folder")
    mkfs = _mkfs()
    partial = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        with partial.open("wb") as image:
            image.truncate(size_mb * 2**20)
        # Inode tables and journal written now, not by the guest kernel's
        # lazy-init thread at every early boot under emulation.
        made = subprocess.run(
            [mkfs, "-F", "-q", "-L", "looming", "-m", "0",
             "-E", "lazy_itable_init=0,lazy_journal_init=0", str(partial)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            raise DiskError(f"{MKFS} failed on {path}: {made.stderr.strip() or made.stdout}")
        try:
            os.link(partial, path)  # fails if another launcher made it meanwhile
        except FileExistsError:
            return False
        return True
    except OSError as error:
        raise DiskError(f"cannot make the disk image {path}: {error.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)


def check_image(path: Path) -> None:
    """Refuse what is not a disk image holding an ext4 file system."""
    if not path.is_file():
        raise DiskError(f"the disk image {path} is not a regular file")
    with path.open("rb") as image:
        image.seek(EXT4_MAGIC_OFFSET)
        if image.read(2) != EXT4_MAGIC:
            raise DiskError(
                f"the disk image {path} holds no ext4 file system; point --vm-disk at "
                "another path (looming run makes a new one there)"
            )


class DiskLock:
    """An exclusive hold on the image for one VM's life (see the module's doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._take()
        except BaseException:
            os.close(self.fd)
            raise

    def _take(self) -> None:
        in_use = (
            f"the disk image {self.path} is in use by another VM; stop it, or give this "
            "one its own disk (--vm-disk PATH, or another --instance)"
        )
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DiskError(in_use + " (another 'looming run' holds it)") from None
        try:  # qemu's own locks are byte-range (OFD) locks, which a POSIX lock meets
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DiskError(in_use + " (a qemu has it open)") from None
        fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self.fd)  # releases the flock


def prepare(path: Path, size_mb: int | None) -> tuple[DiskLock, str | None]:
    """The image at ``path``, made if missing, checked and locked; and a note
    for the user (made, or a size that no longer applies)."""
    made = create(path, size_mb or DEFAULT_SIZE_MB)
    check_image(path)
    lock = DiskLock(path)
    if made:
        return lock, f"made the disk image {path} ({size_mb or DEFAULT_SIZE_MB} MB, ext4)"
    size = path.stat().st_size // 2**20
    if size_mb is not None and size_mb != size:
        return (
            lock,
            f"the disk image {path} exists ({size} MB); --vm-disk-size applies only when it is made",
        )
    return lock, None
