"""A unified kernel image: the systemd EFI stub with the kernel, the
initramfs and the command line added as PE sections.

UEFI firmware boots ``\\EFI\\BOOT\\BOOTX64.EFI`` (``BOOTAA64.EFI`` on
aarch64) from a disk's EFI system partition without any boot entry. That
file is the stub from Debian's ``systemd-boot-efi`` (for the image's
architecture, fetched and kept like the image's other packages), to which
this module appends four sections the stub looks up by name when it runs:
``.osrel`` (an os-release text naming the unikernel), ``.cmdline``,
``.initrd`` and ``.linux`` (last, as the stub prefers). The stub hands the
kernel its command line and initramfs and starts it through the kernel's
own EFI stub.

Appending a section to a PE32+ file: a 40-byte entry after the last one
in the section table (the stub leaves room for several before its first
section's data), the data at the end of the file padded to the file
alignment, its address after the last section's padded to the section
alignment, and the header's section count, image size and checksum
updated. What followed the last section's data (a symbol table, a
signature) is dropped: it would describe the old file.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from looming.errors import LoomingError
from looming.vm.arch import Arch
from looming.vm.packages import AptArchive

STUB_PACKAGE = "systemd-boot-efi"
STUB_FOLDER = "usr/lib/systemd/boot/efi"
# The stub of each architecture, and the name the firmware's fallback path loads.
STUB_FILES = {"x86_64": "linuxx64.efi.stub", "aarch64": "linuxaa64.efi.stub"}
BOOT_FILES = {"x86_64": "BOOTX64.EFI", "aarch64": "BOOTAA64.EFI"}
MACHINES = {"x86_64": 0x8664, "aarch64": 0xAA64}
PE32_PLUS = 0x20B
SECTION_ENTRY = 40
# Initialised data, readable: what objcopy gives an added data section.
DATA_SECTION = 0x40000040
# Offsets in the PE32+ optional header.
OPT_SECTION_ALIGNMENT = 32
OPT_FILE_ALIGNMENT = 36
OPT_SIZE_OF_INITIALIZED_DATA = 8
OPT_SIZE_OF_IMAGE = 56
OPT_SIZE_OF_HEADERS = 60
OPT_CHECKSUM = 64
OPT_SECURITY_DIRECTORY = 112 + 4 * 8  # data directory 4: the certificate table


class PeError(LoomingError):
    """A file is not the PE32+ image it should be, or has no room for sections."""


@dataclass(frozen=True)
class Section:
    """One entry of a PE section table."""

    name: str
    virtual_size: int
    virtual_address: int
    raw_size: int
    raw_pointer: int
    characteristics: int


@dataclass(frozen=True)
class PeLayout:
    """Where a PE32+ file keeps what adding sections changes."""

    machine: int
    coff: int  # offset of the COFF header
    optional: int  # offset of the optional header
    table: int  # offset of the section table
    sections: list[Section]
    section_alignment: int
    file_alignment: int
    size_of_headers: int


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def parse(data: bytes) -> PeLayout:
    """The layout of the PE32+ image ``data``; PeError when it is not one."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        raise PeError("not a PE image (no MZ header)")
    coff = struct.unpack_from("<I", data, 0x3C)[0] + 4
    if data[coff - 4 : coff] != b"PE\0\0":
        raise PeError("not a PE image (no PE signature)")
    machine, count = struct.unpack_from("<HH", data, coff)
    optional_size = struct.unpack_from("<H", data, coff + 16)[0]
    optional = coff + 20
    if struct.unpack_from("<H", data, optional)[0] != PE32_PLUS:
        raise PeError("not a PE32+ image")
    table = optional + optional_size
    sections = []
    for index in range(count):
        raw_name, *fields = struct.unpack_from("<8sIIII12xI", data, table + SECTION_ENTRY * index)
        sections.append(Section(raw_name.rstrip(b"\0").decode("ascii", "replace"), *fields))
    section_alignment, file_alignment = struct.unpack_from("<II", data, optional + 32)
    size_of_headers = struct.unpack_from("<I", data, optional + OPT_SIZE_OF_HEADERS)[0]
    return PeLayout(
        machine, coff, optional, table, sections, section_alignment, file_alignment,
        size_of_headers,
    )  # fmt: skip


def checksum(data: bytes | bytearray, field_offset: int) -> int:
    """The PE checksum of ``data``: its 16-bit words summed with the carries
    folded back, the checksum field itself counted as zero, plus the length."""
    padded = bytes(data) + b"\0" * (len(data) % 2)
    words = memoryview(padded).cast("H")
    total = sum(words) - words[field_offset // 2] - words[field_offset // 2 + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (total + len(data)) & 0xFFFFFFFF


def add_sections(image: bytes, added: list[tuple[str, bytes]]) -> bytes:
    """``image`` (a PE32+ file) with the ``added`` (name, data) sections at its end."""
    layout = parse(image)
    if not layout.sections:
        raise PeError("the PE image has no sections to add to")
    table_end = layout.table + SECTION_ENTRY * (len(layout.sections) + len(added))
    first_data = min(s.raw_pointer for s in layout.sections if s.raw_size)
    if table_end > min(layout.size_of_headers, first_data):
        raise PeError(f"the PE image's headers have no room for {len(added)} more sections")
    out = bytearray(image[: max(s.raw_pointer + s.raw_size for s in layout.sections)])
    address = max(s.virtual_address + s.virtual_size for s in layout.sections)
    entry = layout.table + SECTION_ENTRY * len(layout.sections)
    for name, data in added:
        if len(name.encode()) > 8:
            raise PeError(f"section name {name!r} is longer than 8 bytes")
        address = _align(address, layout.section_alignment)
        out += b"\0" * (_align(len(out), layout.file_alignment) - len(out))
        raw_size = _align(len(data), layout.file_alignment)
        struct.pack_into(
            "<8sIIII12xI", out, entry, name.encode(), len(data), address, raw_size, len(out),
            DATA_SECTION,
        )  # fmt: skip
        out += data + b"\0" * (raw_size - len(data))
        entry += SECTION_ENTRY
        address += len(data)
    _update_headers(out, layout, len(added), address, sum(len(d) for _n, d in added))
    return bytes(out)


def _update_headers(
    out: bytearray, layout: PeLayout, added: int, image_end: int, added_bytes: int
) -> None:
    """Section count, image size, initialised-data size, no symbols, no
    signature, and the checksum, for ``out`` with ``added`` more sections."""
    struct.pack_into("<H", out, layout.coff + 2, len(layout.sections) + added)
    struct.pack_into("<II", out, layout.coff + 8, 0, 0)  # the symbol table was dropped
    opt = layout.optional
    initialized = struct.unpack_from("<I", out, opt + OPT_SIZE_OF_INITIALIZED_DATA)[0]
    struct.pack_into(
        "<I",
        out,
        opt + OPT_SIZE_OF_INITIALIZED_DATA,
        min(0xFFFFFFFF, initialized + _align(added_bytes, layout.file_alignment)),
    )
    struct.pack_into(
        "<I", out, opt + OPT_SIZE_OF_IMAGE, _align(image_end, layout.section_alignment)
    )
    struct.pack_into("<II", out, opt + OPT_SECURITY_DIRECTORY, 0, 0)
    struct.pack_into("<I", out, opt + OPT_CHECKSUM, 0)
    struct.pack_into("<I", out, opt + OPT_CHECKSUM, checksum(out, opt + OPT_CHECKSUM))


def section_data(image: bytes, name: str) -> bytes:
    """The bytes of section ``name`` as the stub reads them (its virtual size)."""
    for section in parse(image).sections:
        if section.name == name:
            start = section.raw_pointer
            return image[start : start + min(section.virtual_size, section.raw_size)]
    raise PeError(f"no section {name} in the PE image")


def os_release(unikernel: str, version: str) -> bytes:
    """The ``.osrel`` section: what a boot menu shows for the image."""
    return (
        f'NAME="looming"\nID=looming\nPRETTY_NAME="looming unikernel {unikernel}"\n'
        f'VERSION_ID="{version}"\nIMAGE_ID="{unikernel}"\n'
    ).encode()


def stub_path(arch: Arch, archive: AptArchive) -> Path:
    """The systemd EFI stub for ``arch``, from its Debian package: fetched
    through ``archive`` (apt checks the ``.deb`` against the signed package
    lists when it downloads it; it is kept, unpacked, in the cache), and at
    every use the unpacked file checked against the package's own list of
    checksums (``md5sums``), so a cached stub changed since is refused."""
    info, tree = archive.get(STUB_PACKAGE)
    relative = f"{STUB_FOLDER}/{STUB_FILES[arch.name]}"
    stub = tree / relative
    if not stub.is_file():
        raise PeError(f"{STUB_PACKAGE} for {arch.debian} holds no {STUB_FILES[arch.name]}")
    listed = subprocess.run(
        ["dpkg-deb", "--info", str(archive.fetch(info)), "md5sums"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    expected = {
        name: digest
        for digest, _, name in (line.partition("  ") for line in listed.stdout.splitlines())
    }.get(relative)
    if (
        expected is None
        or hashlib.md5(stub.read_bytes(), usedforsecurity=False).hexdigest() != expected
    ):
        raise PeError(
            f"{stub} does not match its package's checksum; remove "
            f"{tree} and build again to unpack it afresh"
        )
    return stub


def unified_kernel(
    stub: bytes, kernel: bytes, initrd: bytes, cmdline: str, osrel: bytes, arch: Arch
) -> bytes:
    """The stub with ``.osrel``, ``.cmdline``, ``.initrd`` and ``.linux``;
    the stub and the kernel must both be PE images for ``arch``."""
    for what, data in (("the EFI stub", stub), ("the kernel", kernel)):
        machine = parse(data).machine
        if machine != MACHINES[arch.name]:
            raise PeError(f"{what} is for PE machine {machine:#x}, not {arch.name}")
    return add_sections(
        stub,
        [
            (".osrel", osrel),
            (".cmdline", cmdline.encode()),
            (".initrd", initrd),
            (".linux", kernel),
        ],
    )
