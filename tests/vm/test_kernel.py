"""The x86_64 kernel stored as an xz-packed vmlinux and unpacked by ``looming run``.

bzImages are assembled here around payloads that the lz4, gzip and xz
commands packed (as the kernel's build does with the same tools); the
PVH note is read from the real Debian kernel an image was built from and
checked against what binutils' readelf finds in it.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from looming.vm.kernel import (
    IMAGE_FORMAT,
    PVH_FORMAT,
    KernelError,
    bzimage_payload,
    kernels_cache,
    pack_for_pvh,
    pack_image,
    pvh_entry,
    unpack_payload,
    unpacked_kernel,
)
from tests.vm.conftest import Images, looming

KERNEL_LIKE = bytes(range(256)) * 700 + b"looming kernel body" * 1000


def _bzimage(payload: bytes, setup_sectors: int = 3) -> bytes:
    """A bzImage set-up header (boot protocol 2.15) followed by ``payload``
    at payload_offset within the protected-mode part, as the kernel lays it out."""
    setup = bytearray((setup_sectors + 1) * 512)
    setup[0x1F1] = setup_sectors
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    payload_offset = 0x3A0
    struct.pack_into("<II", setup, 0x248, payload_offset, len(payload))
    return bytes(setup) + b"\xcc" * payload_offset + payload + b"\0" * 64


def _packed_by(command: list[str], data: bytes) -> bytes:
    done = subprocess.run(command, input=data, capture_output=True, check=True)
    # The kernel's build appends the unpacked size, little-endian.
    return done.stdout + struct.pack("<I", len(data))


@pytest.mark.parametrize(
    "command",
    [["lz4", "-l", "-9", "-c"], ["gzip", "-9", "-c", "-n"], ["xz", "--check=crc32", "-c"]],
    ids=["lz4-legacy", "gzip", "xz"],
)
def test_the_payload_of_a_bzimage_is_found_and_unpacked(command: list[str]) -> None:
    image = _bzimage(_packed_by(command, KERNEL_LIKE))
    assert unpack_payload(bzimage_payload(image)) == KERNEL_LIKE


def test_a_payload_whose_size_does_not_match_the_recorded_one_is_refused() -> None:
    payload = _packed_by(["lz4", "-l", "-c"], KERNEL_LIKE)
    wrong = payload[:-4] + struct.pack("<I", len(KERNEL_LIKE) + 1)
    with pytest.raises(KernelError, match=f"not {len(KERNEL_LIKE) + 1}"):
        unpack_payload(bzimage_payload(_bzimage(wrong)))


def test_what_is_not_a_bzimage_is_refused() -> None:
    with pytest.raises(KernelError, match="not a bzImage"):
        bzimage_payload(b"\x7fELF" + bytes(4096))
    truncated = _bzimage(_packed_by(["lz4", "-l", "-c"], KERNEL_LIKE))[:3000]
    with pytest.raises(KernelError, match="runs past its end"):
        bzimage_payload(truncated)
    with pytest.raises(KernelError, match="unknown kernel compression"):
        unpack_payload(bzimage_payload(_bzimage(b"BZh9" + bytes(100))))


def _elf(tmp_path: Path, with_pvh_note: bool) -> bytes:
    """A small static ELF made by the GNU assembler and linker, with or
    without the Xen note announcing a PVH entry point (as a kernel's)."""
    note = (
        '.section .note.Xen, "a"\n.balign 4\n.long 4, 4, 18\n.asciz "Xen"\n'
        ".balign 4\n.long 0x1000850\n"
    )
    source = tmp_path / "kernel.s"
    source.write_text((note if with_pvh_note else "") + ".text\n.globl _start\n_start:\nhlt\n")
    subprocess.run(["gcc", "-c", str(source), "-o", str(tmp_path / "kernel.o")], check=True)
    elf_file = tmp_path / "kernel.elf"
    subprocess.run(["ld", "-o", str(elf_file), str(tmp_path / "kernel.o")], check=True)
    return elf_file.read_bytes()


def test_a_bzimage_whose_elf_has_the_pvh_note_is_packed_once(tmp_path: Path) -> None:
    vmlinux = _elf(tmp_path, with_pvh_note=True)
    assert pvh_entry(vmlinux) == 0x1000850
    vmlinuz = tmp_path / "boot" / "vmlinuz-test"
    vmlinuz.parent.mkdir()
    vmlinuz.write_bytes(_bzimage(_packed_by(["lz4", "-l", "-9", "-c"], vmlinux)))
    cache = tmp_path / "kernels"
    said: list[str] = []
    packed = pack_for_pvh(vmlinuz, cache, said.append)
    assert packed is not None
    assert lzma.decompress(packed.packed.read_bytes()) == vmlinux
    assert packed.unpacked_sha256 == hashlib.sha256(vmlinux).hexdigest()
    assert (cache / f"{packed.unpacked_sha256}.kernel").read_bytes() == vmlinux
    assert said == ["packing the kernel's vmlinux with xz (once per kernel version)"]
    # The next build takes what the first packed.
    assert pack_for_pvh(vmlinuz, cache, said.append) == packed
    assert len(said) == 1


def test_a_bzimage_whose_elf_has_no_pvh_note_stays_a_bzimage(tmp_path: Path) -> None:
    vmlinuz = tmp_path / "vmlinuz-test"
    vmlinuz.write_bytes(_bzimage(_packed_by(["lz4", "-l", "-c"], _elf(tmp_path, False))))
    said: list[str] = []
    assert pack_for_pvh(vmlinuz, tmp_path / "kernels", said.append) is None
    assert said == ["note: the kernel has no PVH entry point (CONFIG_PVH); it stays a bzImage"]
    vmlinuz.write_bytes(b"MZ" + bytes(8192))  # not a bzImage at all
    assert pack_for_pvh(vmlinuz, tmp_path / "kernels", said.append) is None
    assert said[-1] == "note: the kernel stays a bzImage: not a bzImage (no HdrS set-up header)"


def test_an_arm64_image_is_packed_as_it_is(tmp_path: Path) -> None:
    image = tmp_path / "vmlinuz-arm64"
    image.write_bytes(KERNEL_LIKE)
    packed = pack_image(image, tmp_path / "kernels", lambda message: None)
    assert lzma.decompress(packed.packed.read_bytes()) == KERNEL_LIKE
    assert packed.unpacked_size == len(KERNEL_LIKE)


def test_a_program_without_xen_notes_has_no_pvh_entry() -> None:
    assert pvh_entry(Path(sys.executable).resolve().read_bytes()) is None


def _cached(tmp_path: Path) -> tuple[Path, str, int]:
    packed = tmp_path / "kernel.xz"
    packed.write_bytes(lzma.compress(KERNEL_LIKE, format=lzma.FORMAT_XZ))
    return packed, hashlib.sha256(KERNEL_LIKE).hexdigest(), len(KERNEL_LIKE)


def test_a_packed_kernel_is_unpacked_once_then_taken_from_the_cache(tmp_path: Path) -> None:
    packed, sha256, size = _cached(tmp_path)
    cache = tmp_path / "kernels"
    first = unpacked_kernel(packed, sha256, size, cache)
    assert first.read_bytes() == KERNEL_LIKE
    stamp = first.stat().st_mtime_ns
    os.utime(first, ns=(stamp - 10**9, stamp - 10**9))
    again = unpacked_kernel(packed, sha256, size, cache)
    assert again == first and again.stat().st_mtime_ns == stamp - 10**9  # not rewritten
    # A cached file of the wrong size (an interrupted copy) is unpacked again.
    first.write_bytes(KERNEL_LIKE[:1000])
    assert unpacked_kernel(packed, sha256, size, cache).read_bytes() == KERNEL_LIKE
    assert [p.name for p in cache.iterdir()] == [f"{sha256}.kernel"]


def test_a_packed_kernel_that_is_not_the_one_named_is_refused(tmp_path: Path) -> None:
    packed, sha256, size = _cached(tmp_path)
    with pytest.raises(KernelError, match="does not hold the kernel its image names"):
        unpacked_kernel(packed, "0" * 64, size, tmp_path / "kernels")
    packed.write_bytes(b"not xz at all")
    with pytest.raises(KernelError, match="not an xz-packed kernel"):
        unpacked_kernel(packed, sha256, size, tmp_path / "kernels")
    assert not (tmp_path / "kernels").exists() or not list((tmp_path / "kernels").iterdir())


def test_run_refuses_an_image_whose_kernel_does_not_unpack(tmp_path: Path) -> None:
    kernel = tmp_path / "kernel.xz"
    kernel.write_bytes(b"truncated")
    manifest = tmp_path / "image.json"
    manifest.write_text(
        json.dumps(
            {
                "arch": "x86_64",
                "kernel": str(kernel),
                "initrd": str(tmp_path / "initrd.zst"),
                "kernel_format": PVH_FORMAT,
                "kernel_unpacked": 1234,
                "kernel_sha256": "1" * 64,
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "looming.vm.launch", str(manifest)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "LOOMING_VM_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot unpack the kernel" in done.stderr


@pytest.mark.slow
def test_the_x86_64_image_stores_the_debian_kernel_as_an_xz_packed_pvh_vmlinux(
    images: Images,
) -> None:
    app = images.app("hello", "x86_64")
    manifest = json.loads((app / "dist" / "hello-vm.json").read_text())
    assert manifest["kernel_format"] == PVH_FORMAT
    stored = app / "dist" / manifest["kernel"]
    assert stored.name == "kernel.xz" and stored.stat().st_size == manifest["kernel_size"]
    # LZ4 on x86_64 by default, in the legacy frame format the kernel's decoder takes.
    initrd = app / "dist" / manifest["initrd"]
    assert initrd.name == "initrd.lz4" and initrd.read_bytes()[:4] == b"\x02\x21\x4c\x18"
    vmlinux = lzma.decompress(stored.read_bytes())
    assert len(vmlinux) == manifest["kernel_unpacked"]
    assert hashlib.sha256(vmlinux).hexdigest() == manifest["kernel_sha256"]
    # The entry point binutils reads from the same note (type 0x12, PHYS32_ENTRY).
    cached = kernels_cache() / f"{manifest['kernel_sha256']}.kernel"
    assert cached.read_bytes() == vmlinux
    notes = subprocess.run(
        ["readelf", "-n", "-W", str(cached)], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(
        r"Xen\s+0x00000008\s+.*\(0x00000012\)\s+description data: ([0-9a-f ]+)", notes
    )
    assert match is not None, notes
    readelf_entry = int.from_bytes(bytes.fromhex(match.group(1).replace(" ", "")[:8]), "little")
    assert pvh_entry(vmlinux) == readelf_entry
    # The image is the packed kernel and the initramfs; describe says what it unpacks to.
    described = looming(app, "describe", "--image").stdout
    total = manifest["kernel_size"] + manifest["initrd_size"]
    assert f"x86_64 image, {total / 2**20:.1f} MiB ({total} bytes) packed" in described
    booted = manifest["kernel_unpacked"] + manifest["initrd_size"]
    assert manifest["booted_size"] == booted
    assert f"{booted / 2**20:.1f} MiB as booted (kernel unpacked + initramfs)" in described
    assert "booted through its PVH entry" in described
    assert f"{len(vmlinux) / 2**20:.1f} MiB once looming run unpacks it" in described


@pytest.mark.slow
def test_the_aarch64_image_stores_the_debian_kernel_image_packed_with_xz(images: Images) -> None:
    app = images.app("hello", "aarch64")
    manifest = json.loads((app / "dist" / "hello-vm.json").read_text())
    assert manifest["kernel_format"] == IMAGE_FORMAT
    stored = app / "dist" / manifest["kernel"]
    image = lzma.decompress(stored.read_bytes())
    assert hashlib.sha256(image).hexdigest() == manifest["kernel_sha256"]
    # An arm64 Linux Image header: "ARM\x64" at offset 56 (the boot protocol's magic).
    assert image[56:60] == b"ARM\x64"
    described = looming(app, "describe", "--image").stdout
    assert "Image packed with xz" in described
    assert f"{len(image) / 2**20:.1f} MiB once looming run unpacks it" in described
    # LZ4 on aarch64 by default too (unpacked sooner than zstd under emulation).
    assert Path(manifest["initrd"]).name == "initrd.lz4"
