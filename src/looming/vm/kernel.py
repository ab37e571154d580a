"""The x86_64 kernel as an image stores it, and as qemu is given it.

Debian's x86_64 cloud kernel is a bzImage: real-mode set-up code and a
self-decompressing LZ4 payload holding the kernel proper, an ELF
``vmlinux``. qemu's ``-kernel`` also boots such an ELF directly, through
the PVH entry point the kernel announces in a Xen ELF note
(``XEN_ELFNOTE_PHYS32_ENTRY``, there when it is built with
``CONFIG_PVH``). So an image stores the ``vmlinux`` packed with xz (the
x86 branch filter makes machine code pack tight): 6 MB less than the
bzImage, whose LZ4 favours a fast unpacking over size. ``looming run``
unpacks it on the host, once per kernel (kept under the cache folder, by
its SHA-256), and the guest skips decompressing itself under emulation.

A kernel without the PVH note stays a bzImage. The arm64 kernel is an
uncompressed ``Image``, stored packed with xz the same way.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from looming.errors import LoomingError
from looming.vm import elf
from looming.vm.packages import cache_root

Progress = Callable[[str], None]

BZIMAGE_MAGIC = b"HdrS"  # at 0x202 in the set-up header
XEN_NOTE_OWNER = "Xen"
XEN_ELFNOTE_PHYS32_ENTRY = 18
LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# How an image stores its kernel when looming run unpacks it on the host.
PVH_FORMAT = "vmlinux-pvh-xz"  # x86_64: the ELF kernel, booted through PVH
IMAGE_FORMAT = "Image-xz"  # arm64: the kernel's Image
PACKED_FORMATS = (PVH_FORMAT, IMAGE_FORMAT)
KERNEL_SUFFIX = "kernel"
# The set-up header's payload fields appeared with boot protocol 2.08.
PAYLOAD_PROTOCOL = 0x0208


class KernelError(LoomingError):
    """A kernel file is not what its image says it is."""


@dataclass(frozen=True)
class PackedKernel:
    """A kernel packed for an image, and what it unpacks to."""

    packed: Path
    unpacked_size: int
    unpacked_sha256: str


def kernels_cache() -> Path:
    """Where unpacked kernels are kept for ``looming run``, by their SHA-256."""
    return cache_root() / "kernels"


def bzimage_payload(data: bytes) -> bytes:
    """The compressed kernel inside a bzImage, without the 4-byte
    uncompressed size the kernel's build appends to it."""
    if data[0x202:0x206] != BZIMAGE_MAGIC:
        raise KernelError("not a bzImage (no HdrS set-up header)")
    protocol = struct.unpack_from("<H", data, 0x206)[0]
    if protocol < PAYLOAD_PROTOCOL:
        raise KernelError(f"boot protocol {protocol:#x} has no payload fields")
    setup_sectors = data[0x1F1] or 4  # 0 meant 4 in the oldest kernels
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sectors + 1) * 512 + payload_offset
    payload = data[start : start + payload_length]
    if len(payload) != payload_length or payload_length < 8:
        raise KernelError("the bzImage's payload runs past its end")
    return payload


def unpack_payload(payload: bytes) -> bytes:
    """The kernel a bzImage payload holds, whichever way it is compressed
    (LZ4 as Debian's, gzip, xz or zstd); its size is checked against the
    one the build appended."""
    expected = struct.unpack("<I", payload[-4:])[0]
    if payload.startswith(LZ4_LEGACY_MAGIC):
        unpacked = _command(["lz4", "-d", "-c"], payload[:-4], "lz4")
    elif payload.startswith(ZSTD_MAGIC):
        unpacked = _command(["zstd", "-d", "-c"], payload[:-4], "zstd")
    elif payload.startswith(GZIP_MAGIC):
        unpacked = zlib.decompressobj(wbits=31).decompress(payload)
    elif payload.startswith(XZ_MAGIC):
        unpacked = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    else:
        raise KernelError(f"unknown kernel compression (magic {payload[:4].hex()})")
    if len(unpacked) != expected:
        raise KernelError(f"the kernel unpacked to {len(unpacked)} bytes, not {expected}")
    return unpacked


def _command(command: list[str], data: bytes, package: str) -> bytes:
    if shutil.which(command[0]) is None:
        raise KernelError(f"{command[0]} is not installed (Debian package {package})")
    done = subprocess.run(command, input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise KernelError(f"{command[0]} could not unpack the kernel: {done.stderr.decode()}")
    return done.stdout


def pvh_entry(vmlinux: bytes) -> int | None:
    """The 32-bit PVH entry point an ELF kernel announces, if it has one."""
    for owner, note_type, description in elf.notes(vmlinux):
        if owner == XEN_NOTE_OWNER and note_type == XEN_ELFNOTE_PHYS32_ENTRY:
            return int.from_bytes(description[:4], "little")
    return None


def pack_for_pvh(vmlinuz: Path, cache: Path, progress: Progress) -> PackedKernel | None:
    """The bzImage's vmlinux packed with xz, or None when it cannot boot
    through PVH (or its payload cannot be unpacked here: then the image
    keeps the bzImage, and says why)."""

    def vmlinux() -> bytes | None:
        try:
            unpacked = unpack_payload(bzimage_payload(vmlinuz.read_bytes()))
            entry = pvh_entry(unpacked)
        except (KernelError, elf.ElfError, lzma.LZMAError, zlib.error) as error:
            progress(f"note: the kernel stays a bzImage: {error}")
            return None
        if entry is None:
            progress("note: the kernel has no PVH entry point (CONFIG_PVH); it stays a bzImage")
            return None
        return unpacked

    return _packed(vmlinuz, "vmlinux", vmlinux, [{"id": lzma.FILTER_X86}], cache, progress)


def pack_image(image: Path, cache: Path, progress: Progress) -> PackedKernel:
    """An arm64 kernel ``Image`` packed with xz (a fifth smaller than the
    tightest gzip qemu could unpack itself, and unpacked once rather than at
    every boot)."""
    packed = _packed(image, "Image", image.read_bytes, [], cache, progress)
    assert packed is not None  # the Image is always there to pack
    return packed


def _packed(
    source: Path,
    kind: str,
    unpacked: Callable[[], bytes | None],
    filters: list[dict[str, int]],
    cache: Path,
    progress: Progress,
) -> PackedKernel | None:
    """The kernel ``unpacked()`` gives, packed with xz and ``filters``
    first. Packing takes seconds, so the result is kept beside the unpacked
    package (``source``); the unpacked kernel goes into ``cache``, where
    ``looming run`` looks first."""
    packed = source.with_name(f"{source.name}.{kind}.xz")
    facts_file = source.with_name(f"{source.name}.{kind}.json")
    if not (packed.is_file() and facts_file.is_file()):
        kernel = unpacked()
        if kernel is None:
            return None
        progress(f"packing the kernel's {kind} with xz (once per kernel version)")
        preset = {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}
        # Each file appears whole or not at all: two builds may pack at once.
        _store(lzma.compress(kernel, format=lzma.FORMAT_XZ, filters=[*filters, preset]), packed)
        facts = {"size": len(kernel), "sha256": hashlib.sha256(kernel).hexdigest()}
        _store(json.dumps(facts).encode() + b"\n", facts_file)
        _store(kernel, cache / f"{facts['sha256']}.{KERNEL_SUFFIX}")
    facts = json.loads(facts_file.read_text())
    result = PackedKernel(packed, int(facts["size"]), str(facts["sha256"]))
    unpacked_kernel(result.packed, result.unpacked_sha256, result.unpacked_size, cache)
    return result


def _store(data: bytes, path: Path) -> None:
    """Write ``data`` at ``path`` atomically: a concurrent reader sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def unpacked_kernel(packed: Path, sha256: str, size: int, cache: Path) -> Path:
    """The kernel ``packed`` holds, as a file qemu can boot: from ``cache``
    when it is there with the right size, else unpacked (half a second)
    and checked against its SHA-256 first."""
    path = cache / f"{sha256}.{KERNEL_SUFFIX}"
    if path.is_file() and path.stat().st_size == size:
        return path
    try:
        kernel = lzma.decompress(packed.read_bytes(), format=lzma.FORMAT_XZ)
    except lzma.LZMAError as error:
        raise KernelError(f"{packed} is not an xz-packed kernel: {error}") from None
    if len(kernel) != size or hashlib.sha256(kernel).hexdigest() != sha256:
        raise KernelError(f"{packed} does not hold the kernel its image names")
    _store(kernel, path)
    return path
