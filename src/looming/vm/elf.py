"""Just enough ELF reading to assemble an image for any architecture.

The guest's binaries cannot be run on the host (``ldd`` would be wrong for
another architecture), so the shared libraries a program needs and a kernel
module's dependencies are read from the files themselves: ``DT_NEEDED``
entries of the dynamic section, the ``.interp`` section, and the
``depends=`` field of a module's ``.modinfo`` section. Only 64-bit
little-endian files (x86_64, aarch64) are handled.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from looming.errors import LoomingError

ELF_MAGIC = b"\x7fELF"
SHT_DYNAMIC = 6
DT_NULL = 0
DT_NEEDED = 1
_SECTION = struct.Struct("<IIQQQQIIQQ")
_DYN = struct.Struct("<qQ")


class ElfError(LoomingError):
    """A file that should be a 64-bit little-endian ELF object is not."""


@dataclass(frozen=True)
class Section:
    name: str
    kind: int
    offset: int
    size: int
    link: int


def _sections(data: bytes, where: Path) -> list[Section]:
    if data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
        raise ElfError(f"{where} is not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [
        _SECTION.unpack_from(data, shoff + i * shentsize)
        for i in range(shnum)
        if shoff + (i + 1) * shentsize <= len(data)
    ]
    if shstrndx >= len(raw):
        raise ElfError(f"{where} has no section name table")
    names_offset = raw[shstrndx][4]
    sections = []
    for name, kind, _flags, _addr, offset, size, link, _info, _align, _entsize in raw:
        end = data.index(b"\0", names_offset + name)
        sections.append(Section(data[names_offset + name : end].decode(), kind, offset, size, link))
    return sections


def _string(data: bytes, table: Section, offset: int) -> str:
    start = table.offset + offset
    return data[start : data.index(b"\0", start)].decode()


def needed_libraries(path: Path) -> list[str]:
    """The sonames ``path`` is linked against (its DT_NEEDED entries)."""
    data = path.read_bytes()
    sections = _sections(data, path)
    found: list[str] = []
    for section in sections:
        if section.kind != SHT_DYNAMIC:
            continue
        strings = sections[section.link]
        for offset in range(section.offset, section.offset + section.size, _DYN.size):
            tag, value = _DYN.unpack_from(data, offset)
            if tag == DT_NULL:
                break
            if tag == DT_NEEDED:
                found.append(_string(data, strings, value))
    return found


def interpreter(path: Path) -> str | None:
    """The program interpreter (the dynamic loader) ``path`` names, if any."""
    data = path.read_bytes()
    for section in _sections(data, path):
        if section.name == ".interp":
            return data[section.offset : section.offset + section.size].rstrip(b"\0").decode()
    return None


def module_info(path: Path) -> dict[str, str]:
    """The ``.modinfo`` fields of a kernel module (``depends``, ``name``, ...)."""
    data = path.read_bytes()
    for section in _sections(data, path):
        if section.name == ".modinfo":
            fields: dict[str, str] = {}
            blob = data[section.offset : section.offset + section.size]
            for item in blob.split(b"\0"):
                key, eq, value = item.partition(b"=")
                if eq:
                    fields.setdefault(key.decode(), value.decode(errors="replace"))
            return fields
    return {}


PT_NOTE = 4
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
_NOTE_HEADER = struct.Struct("<III")


def notes(data: bytes) -> list[tuple[str, int, bytes]]:
    """(owner, type, description) of each note in the PT_NOTE segments of
    the ELF file ``data`` (a kernel's ``vmlinux`` carries Xen's there)."""
    if data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
        raise ElfError("not a 64-bit little-endian ELF file")
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    found: list[tuple[str, int, bytes]] = []
    for i in range(phnum):
        start = phoff + i * phentsize
        if start + _PROGRAM_HEADER.size > len(data):
            break
        kind, _flags, offset, _vaddr, _paddr, size, _memsize, _align = _PROGRAM_HEADER.unpack_from(
            data, start
        )
        if kind != PT_NOTE:
            continue
        position, end = offset, min(offset + size, len(data))
        while position + _NOTE_HEADER.size <= end:
            name_size, description_size, note_type = _NOTE_HEADER.unpack_from(data, position)
            position += _NOTE_HEADER.size
            name = data[position : position + name_size].rstrip(b"\0").decode(errors="replace")
            position += (name_size + 3) & ~3
            description = data[position : position + description_size]
            position += (description_size + 3) & ~3
            found.append((name, note_type, description))
    return found
