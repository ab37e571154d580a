"""A cpio archive in the "newc" format, as the kernel unpacks an initramfs.

Entries are written in the order given (directories before what they
hold), with fixed owners and timestamps so the same inputs give the same
bytes.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    path: str  # without a leading slash: "usr/bin/python3"
    mode: int  # file type and permission bits, as in st_mode
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # major, minor for device nodes


def directory(path: str) -> Entry:
    return Entry(path, stat.S_IFDIR | 0o755)


def regular(path: str, data: bytes, executable: bool = False) -> Entry:
    return Entry(path, stat.S_IFREG | (0o755 if executable else 0o644), data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, mode: int = 0o666) -> Entry:
    return Entry(path, stat.S_IFCHR | mode, rdev=(major, minor))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(inode: int, entry: Entry, name: bytes) -> bytes:
    fields = (
        inode,
        entry.mode,
        0,  # uid
        0,  # gid
        2 if stat.S_ISDIR(entry.mode) else 1,
        0,  # mtime: fixed for reproducible images
        len(entry.data),
        0,  # device major
        0,  # device minor
        entry.rdev[0],
        entry.rdev[1],
        len(name) + 1,
        0,  # checksum (unused by newc)
    )
    return b"070701" + b"".join(b"%08X" % value for value in fields)


def archive(entries: list[Entry]) -> bytes:
    """The newc archive of ``entries``, ending with the trailer."""
    out = bytearray()
    for inode, entry in enumerate([*entries, Entry(TRAILER, 0)], start=1):
        name = entry.path.encode()
        head = _header(inode if entry.path != TRAILER else 0, entry, name) + name + b"\0"
        out += head + _pad(len(head))
        out += entry.data + _pad(len(entry.data))
    return bytes(out)
