"""A bootable disk image of a built VM image: ``looming build --disk-image raw|qcow2``.

The disk has a GUID partition table with one partition, the EFI system
partition (FAT, made with ``mkfs.fat`` and filled with mtools: no root, no
loop device), holding the unified kernel image of :mod:`looming.vm.uki`
as ``\\EFI\\BOOT\\BOOTX64.EFI`` or ``BOOTAA64.EFI``: the path UEFI firmware
(OVMF, AAVMF, a cloud's) boots when no boot entry names another, so the
disk boots with no ``-kernel``. On x86_64 the same partition also boots
from a legacy BIOS: syslinux's installer (``syslinux -i``, through mtools)
puts its loader in the partition's boot sector, the protective MBR
carries syslinux's ``gptmbr.bin``, which starts the partition whose
*legacy BIOS bootable* attribute is set, and ``syslinux.cfg`` starts the
kernel (the bzImage, whose EFI stub the unified image holds too) with the
initramfs and the same command line.

The kernel on x86_64 is Debian's bzImage, not the xz-packed vmlinux the
``vm`` image boots through PVH: a firmware needs the kernel's EFI stub or
its real-mode set-up. The command line is the one ``looming run`` gives
(serial console, the fast-boot switches), the NIC on when the unikernel
drives one, plus the keys given with ``--disk-keys``: a disk boots with the
keys it was built with.

The same inputs give the same bytes: the partition's and the disk's GUIDs
are derived from the unikernel's name and the partition's contents, the
FAT's volume id from those too, and its dates are ``$SOURCE_DATE_EPOCH``
(1980-01-01 without it). qcow2 is ``qemu-img convert -c`` of the raw disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import struct
import subprocess
import tempfile
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from looming.errors import LoomingError, UsageError
from looming.vm import uki
from looming.vm.arch import Arch, get_arch
from looming.vm.kernelbuild import built_kernel_image
from looming.vm.launch import FAST_BOOT
from looming.vm.packages import AptArchive, PackageInfo, cache_root

Progress = Callable[[str], None]

FORMATS = ("raw", "qcow2")
SECTOR = 512
MIB = 2**20
PARTITION_START = 2048  # sectors: the first MiB, as partitioning tools align
ENTRIES = 128
ENTRY_SIZE = 128
ENTRY_SECTORS = ENTRIES * ENTRY_SIZE // SECTOR
ESP_TYPE = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
LEGACY_BIOS_BOOTABLE = 1 << 2  # GPT partition attribute bit 2
NAMESPACE = uuid.UUID("6c6f6f6d-696e-6700-8000-6469736b0000")  # this module's GUIDs
DEFAULT_EPOCH = 315532800  # 1980-01-01, FAT's first date
GPTMBR = Path("/usr/lib/syslinux/mbr/gptmbr.bin")  # Debian's syslinux-common
SYSLINUX_CONFIG = "syslinux.cfg"
FAT32_MIN_MIB = 34
# Boot arguments of `looming run` that hold only for qemu's machines.
MACHINE_SPECIFIC = frozenset({"noapictimer"})


# UEFI firmware for qemu, from Debian's ovmf and qemu-efi-aarch64.
FIRMWARE = {
    "x86_64": Path("/usr/share/ovmf/OVMF.fd"),
    "aarch64": Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"),
}


class DiskImageError(LoomingError):
    """The disk image could not be made from the built VM image."""


@dataclass(frozen=True)
class DiskImage:
    """What ``--disk-image`` made."""

    path: Path
    format: str
    size: int  # the file's size
    disk_size: int  # the disk's size as the VM sees it
    boot: tuple[str, ...]  # "uefi", and "bios" on x86_64


def _tools(fmt: str, arch: Arch) -> list[tuple[str, str]]:
    tools = [("mkfs.fat", "dosfstools"), ("mcopy", "mtools"), ("mmd", "mtools")]
    if fmt == "qcow2":
        tools.append(("qemu-img", "qemu-utils"))
    if arch.name == "x86_64":
        tools.append(("syslinux", "syslinux"))
    return tools


def check_disk_tools(fmt: str, arch_name: str) -> Arch:
    """Refuse, before anything is built, an unknown format or a missing tool."""
    if fmt not in FORMATS:
        raise UsageError(f"--disk-image: unknown format {fmt!r}; choose one of: raw, qcow2")
    arch = get_arch(arch_name)
    for tool, package in _tools(fmt, arch):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).is_file():
            raise UsageError(
                f"--disk-image {fmt} needs {tool} (Debian package {package}); install it"
            )
    if arch.name == "x86_64" and not GPTMBR.is_file():
        raise UsageError(f"--disk-image needs {GPTMBR} (Debian package syslinux-common)")
    return arch


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise DiskImageError(f"{' '.join(command)} failed: {detail}")


def _epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return max(int(value), DEFAULT_EPOCH) if value.isdigit() else DEFAULT_EPOCH


def kernel_command_line(manifest: dict[str, object], arch: Arch, keys: list[str]) -> str:
    """What the disk's kernel is started with: ``looming run``'s command line
    for a VM with a NIC when the unikernel drives one, and ``keys``."""
    nic = 1 if manifest.get("needs_network") else 0
    # qemu's pc machine has an HPET to take the local APIC timer's place;
    # a cloud's machine may not (a Nitro instance has none): keep the timer.
    kept = [a for a in arch.kernel_arguments if a not in MACHINE_SPECIFIC]
    words = [f"console={arch.console}", *FAST_BOOT, *kept, "loglevel=1"]
    words += ["panic=-1", f"LOOMING_NIC={nic}", "LOOMING_DISK=0"]
    words += [f"LOOMING_VCHAN_NAME={manifest.get('unikernel', 'looming')}", "--", *keys]
    return " ".join(words)


MAX_KEYS = 1024  # of the kernel's 2048-byte command line, the rest is looming's


def parse_keys(text: str) -> list[str]:
    """``--disk-keys``: unikernel keys, separated by spaces (none may hold
    one); UsageError for what the kernel's command line cannot carry."""
    if len(text) > MAX_KEYS:
        raise UsageError(
            f"--disk-keys: {len(text)} characters; the disk's keys take at most {MAX_KEYS}"
        )
    if any(not (c.isprintable() and c.isascii()) or c == '"' for c in text.replace(" ", "")):
        raise UsageError(
            "--disk-keys: the kernel's command line takes printable ASCII without double quotes"
        )
    return text.split()


def _kernel_file(manifest: dict[str, object], arch: Arch, archive: AptArchive) -> bytes:
    """The kernel as a firmware starts it (a PE with the kernel's EFI stub):
    Debian's own ``vmlinuz`` of the version the image was built from, or
    the minimal kernel's bzImage."""
    if manifest.get("kernel_build") == "minimal":  # looming.vm.kernelbuild's, from the cache
        image = built_kernel_image(arch, str(manifest.get("kernel_build_id", "")))
        if image is None:
            raise DiskImageError(
                "the image's minimal kernel is not in this machine's cache; build it again"
            )
        return image.read_bytes()
    packages = manifest.get("packages")
    if not isinstance(packages, dict):
        raise DiskImageError("the image's manifest lists no Debian packages; build it again")
    names = [n for n in packages if n.startswith("linux-image-") and n != arch.kernel_package]
    if len(names) != 1:
        raise DiskImageError(f"the image's manifest names no single kernel package: {names}")
    tree = archive.unpack(PackageInfo(names[0], str(packages[names[0]]), "", ""))
    kernel = tree / "boot" / f"vmlinuz-{names[0].removeprefix('linux-image-')}"
    if not kernel.is_file():
        raise DiskImageError(f"{names[0]} holds no boot/{kernel.name}")
    return kernel.read_bytes()


def _fat_files(folder: Path, files: dict[str, bytes], epoch: int) -> list[Path]:
    """The files written under ``folder`` with the fixed date, in path order."""
    written = []
    for name in sorted(files):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
        os.utime(path, (epoch, epoch))
        written.append(path)
    return written


def make_fat(image: Path, files: dict[str, bytes], label: str, seed: bytes) -> None:
    """A FAT file system at ``image`` holding ``files`` (path -> data), sized
    to them; its volume id comes from ``seed``, its dates from :func:`_epoch`."""
    epoch = _epoch()
    content = sum(len(d) + 4096 for d in files.values())
    size_kib = (content + content // 20 + 2 * MIB) // 1024 // 1024 * 1024 + 1024
    # FAT32, as UEFI asks of a fixed disk's system partition: 512-byte
    # clusters, and at least the 65525 clusters that make a FAT 32-bit.
    size_kib = max(size_kib, FAT32_MIN_MIB * 1024)
    volume_id = hashlib.sha256(seed).hexdigest()[:8]
    # Hidden sectors: where the partition starts on the disk, for whoever reads the BPB.
    _run([_tool("mkfs.fat"), "-C", "--invariant", "-F", "32", "-s", "1", "-h",
          str(PARTITION_START), "-i", volume_id, "-n", label, str(image),
          str(size_kib)])  # fmt: skip
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "MTOOLS_SKIP_CHECK": "1"}
    staged = image.with_name(image.name + ".files")
    paths = _fat_files(staged, files, epoch)
    folders = sorted({str(Path(n).parent) for n in files} - {"."})
    made: set[str] = set()
    for folder in folders:
        parts = Path(folder).parts
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            if sub not in made:
                made.add(sub)
                _run([_tool("mmd"), "-i", str(image), f"::/{sub}"], env)
    for name, path in zip(sorted(files), paths, strict=True):
        _run([_tool("mcopy"), "-m", "-i", str(image), str(path), f"::/{name}"], env)
    shutil.rmtree(staged)


def _guid(*parts: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, "/".join(parts))


def _gpt(
    total: int, first: int, last: int, disk_guid: uuid.UUID, part_guid: uuid.UUID, bios: bool
) -> tuple[bytes, bytes, bytes]:
    """The partition entries, the primary and the backup header of a disk
    of ``total`` sectors with one EFI system partition (sectors ``first``
    to ``last``, inclusive)."""
    attributes = LEGACY_BIOS_BOOTABLE if bios else 0
    name = "EFI system partition".encode("utf-16-le")
    entry = struct.pack(
        "<16s16sQQQ72s", ESP_TYPE.bytes_le, part_guid.bytes_le, first, last, attributes, name
    )
    entries = entry + b"\0" * (ENTRIES * ENTRY_SIZE - len(entry))
    entries_crc = zlib.crc32(entries)

    def header(own: int, other: int, entries_at: int) -> bytes:
        fields = [b"EFI PART", 0x00010000, 92, 0, 0, own, other, 1 + 1 + ENTRY_SECTORS]
        fields += [total - 2 - ENTRY_SECTORS, disk_guid.bytes_le, entries_at, ENTRIES]
        fields += [ENTRY_SIZE, entries_crc]
        layout = "<8sIIIIQQQQ16sQIII"
        crc = zlib.crc32(struct.pack(layout, *fields))
        fields[3] = crc
        packed = struct.pack(layout, *fields)
        return packed + b"\0" * (SECTOR - len(packed))

    primary = header(1, total - 1, 2)
    backup = header(total - 1, 1, total - 1 - ENTRY_SECTORS)
    return entries, primary, backup


def _protective_mbr(total: int, boot_code: bytes) -> bytes:
    """Sector 0: ``boot_code`` (syslinux's gptmbr.bin, or nothing) and one
    partition of type 0xEE covering the disk, as the GPT's protective MBR."""
    size = min(total - 1, 0xFFFFFFFF)
    mbr = bytearray(SECTOR)
    mbr[: len(boot_code)] = boot_code[:440]
    # Boot indicator, CHS 0/0/2, type 0xEE, CHS end (all ones), first LBA 1, size.
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def write_disk(path: Path, esp: Path, seed: str, boot_code: bytes | None) -> int:
    """A raw disk at ``path``: protective MBR, GPT, the EFI system partition
    from the file ``esp`` at the first MiB, the backup GPT at the end. The
    gap is left unwritten (sparse). Returns the disk's size."""
    esp_size = esp.stat().st_size
    esp_sectors = -(-esp_size // MIB) * MIB // SECTOR
    total = PARTITION_START + esp_sectors + MIB // SECTOR
    digest = hashlib.sha256(esp.read_bytes()).hexdigest()
    entries, primary, backup = _gpt(
        total,
        PARTITION_START,
        PARTITION_START + esp_sectors - 1,
        _guid("disk", seed, digest),
        _guid("esp", seed, digest),
        boot_code is not None,
    )
    with path.open("wb") as out:
        out.write(_protective_mbr(total, boot_code or b"") + primary + entries)
        out.seek(PARTITION_START * SECTOR)
        with esp.open("rb") as source:
            shutil.copyfileobj(source, out, MIB)
        out.seek((total - 1 - ENTRY_SECTORS) * SECTOR)
        out.write(entries + backup)
    return total * SECTOR


def _syslinux_config(kernel: str, initrd: str, cmdline: str) -> bytes:
    """Start the kernel at once, with its console on the first serial port
    too. The initramfs is named in the command line, before its ``--``: an
    ``INITRD`` line would have syslinux append ``initrd=`` after the
    unikernel's keys, which would take it for one."""
    return (
        "SERIAL 0 115200\nDEFAULT looming\nPROMPT 0\nTIMEOUT 0\n"
        f"LABEL looming\n  LINUX /{kernel}\n  APPEND initrd=/{initrd} {cmdline}\n"
    ).encode()


def _esp_files(
    manifest: dict[str, object], initrd: bytes, kernel: bytes, stub: bytes, keys: list[str],
    arch: Arch,
) -> dict[str, bytes]:  # fmt: skip
    """The EFI system partition's files: the unified kernel image, and on
    x86_64 the kernel, initramfs and configuration syslinux boots from a BIOS."""
    unikernel = str(manifest.get("unikernel", "looming"))
    cmdline = kernel_command_line(manifest, arch, keys)
    packages = manifest.get("packages")
    python = packages.get("python3.11-minimal", "") if isinstance(packages, dict) else ""
    image = uki.unified_kernel(
        stub, kernel, initrd, cmdline, uki.os_release(unikernel, str(python)), arch
    )
    files = {f"EFI/BOOT/{uki.BOOT_FILES[arch.name]}": image}
    if arch.name == "x86_64":
        initrd_name = f"boot/{Path(str(manifest['initrd'])).name}"
        files["boot/vmlinuz"] = kernel
        files[initrd_name] = initrd
        files[f"syslinux/{SYSLINUX_CONFIG}"] = _syslinux_config(
            "boot/vmlinuz", initrd_name, cmdline
        )
    return files


def _copy_boot_sector(fat: Path) -> None:
    """FAT32 keeps a backup of its boot sector (at the sector its BPB names,
    6 as mkfs.fat makes it); syslinux's installer rewrites only the first."""
    with fat.open("r+b") as volume:
        boot = volume.read(SECTOR)
        backup = struct.unpack_from("<H", boot, 0x32)[0]
        if boot[0x52:0x5A] == b"FAT32   " and 0 < backup < 32:
            volume.seek(backup * SECTOR)
            volume.write(boot)


def _make_raw(
    manifest: dict[str, object], dist: Path, keys: list[str], work: Path, progress: Progress
) -> tuple[Path, int, Arch]:
    """The raw disk in ``work``; its disk size and architecture."""
    arch = get_arch(str(manifest["arch"]))
    if manifest.get("needs_disk"):
        raise UsageError(
            "--disk-image: this unikernel keeps its storage on the VM's disk, which a boot "
            "disk does not carry; configure with --storage memory"
        )
    if manifest.get("vchans"):
        raise UsageError(
            "--disk-image: this unikernel talks over vchan, through the shared memory "
            "devices 'looming run' attaches; boot it with 'looming run'"
        )
    archive = AptArchive(arch, cache_root(), progress)
    stub = uki.stub_path(arch, archive).read_bytes()
    kernel = _kernel_file(manifest, arch, archive)
    initrd = (dist / str(manifest["initrd"])).read_bytes()
    progress(f"writing the unified kernel image {uki.BOOT_FILES[arch.name]}")
    files = _esp_files(manifest, initrd, kernel, stub, keys, arch)
    esp = work / "esp.fat"
    seed = str(manifest.get("unikernel", "looming"))
    make_fat(esp, files, "LOOMING", hashlib.sha256(b"".join(files.values())).digest())
    boot_code = None
    if arch.name == "x86_64":
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(_epoch()), "MTOOLS_SKIP_CHECK": "1"}
        _run([_tool("syslinux"), "--install", "--directory", "/syslinux", str(esp)], env)
        _copy_boot_sector(esp)
        boot_code = GPTMBR.read_bytes()
    raw = work / "disk.raw"
    size = write_disk(raw, esp, seed, boot_code)
    esp.unlink()
    return raw, size, arch


def build_disk_image(
    manifest_path: Path, fmt: str, keys: list[str], progress: Progress, out: Path | None = None
) -> DiskImage:
    """``dist/NAME-boot-ARCH.raw`` or ``.qcow2`` from the built image whose
    manifest is ``manifest_path`` (or ``out``); all or nothing (made under a
    temporary name beside it), and recorded in the manifest."""
    manifest = json.loads(manifest_path.read_text())
    dist = manifest_path.parent
    arch = check_disk_tools(fmt, str(manifest["arch"]))
    target = out or dist / f"{manifest.get('unikernel', 'looming')}-boot-{arch.name}.{fmt}"
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as work:
        raw, disk_size, arch = _make_raw(manifest, dist, keys, Path(work), progress)
        made = raw
        if fmt == "qcow2":
            progress("converting the disk to qcow2")
            made = Path(work) / "disk.qcow2"
            _run([_tool("qemu-img"), "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw),
                  str(made)])  # fmt: skip
        made.chmod(0o644)
        made.rename(target)
    boot = ("uefi", "bios") if arch.name == "x86_64" else ("uefi",)
    image = DiskImage(target, fmt, target.stat().st_size, disk_size, boot)
    if out is None:
        facts = {"file": target.name, "format": fmt, "size": image.size}
        _record(manifest_path, "disk_image", {**facts, "disk_size": disk_size, "boot": list(boot)})
    return image


def _record(manifest_path: Path, key: str, value: object) -> None:
    """``key`` set to ``value`` in the manifest (file names relative to dist/)."""
    manifest = json.loads(manifest_path.read_text())
    manifest[key] = value
    partial = manifest_path.with_name(f".{manifest_path.name}.new")
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    partial.replace(manifest_path)


def build_container_disk(
    manifest_path: Path, keys: list[str], progress: Progress, qcow2: Path | None = None
) -> Path:
    """``dist/NAME-oci/``: the qcow2 disk image (``qcow2``, or one made now)
    as a KubeVirt containerDisk (:func:`looming.vm.oci.write_container_disk`)."""
    from looming.vm.oci import write_container_disk

    manifest = json.loads(manifest_path.read_text())
    unikernel = str(manifest.get("unikernel", "looming"))
    dist = manifest_path.parent
    target = dist / f"{unikernel}-oci"
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=dist) as work:
        if qcow2 is None:
            qcow2 = Path(work) / f"{unikernel}.qcow2"
            build_disk_image(manifest_path, "qcow2", keys, progress, out=qcow2)
        progress("writing the containerDisk's OCI image layout")
        write_container_disk(target, qcow2, f"{unikernel}.qcow2", str(manifest["arch"]))
    _record(manifest_path, "container_disk", target.name)
    return target


def check_build_options(
    target: str, options: dict[str, str], fmt: str | None, oci: bool, keys: str
) -> None:
    """``looming build``'s ``--disk-image``, ``--disk-keys`` and (for a vm)
    ``--oci``, checked before anything is built: UsageError, exit 2.
    ``options`` are the target's, as configured (``arch``)."""
    machine = platform.machine()
    arch = options.get("arch") or (machine if machine in ("x86_64", "aarch64") else "x86_64")
    if fmt is not None and target != "vm":
        raise UsageError(
            f"--disk-image makes a bootable disk of a vm-target unikernel; this one is "
            f"configured for {target}: run 'looming configure -t vm' first"
        )
    if keys and fmt is None and not (oci and target == "vm"):
        raise UsageError("--disk-keys sets the keys of a disk image: give --disk-image or --oci")
    parse_keys(keys)
    if fmt is not None:
        check_disk_tools(fmt, arch)
    if oci and target == "vm":
        check_disk_tools("qcow2", arch)


def build_artifacts(
    manifest_path: Path, fmt: str | None, oci: bool, keys: str, progress: Progress
) -> list[str]:
    """The disk image and the containerDisk ``looming build`` was asked for,
    from the image just built; what to print about them."""
    lines: list[str] = []
    qcow2 = None
    remove_stale_artifacts(manifest_path, fmt, oci)
    if fmt is not None:
        image = build_disk_image(manifest_path, fmt, parse_keys(keys), progress)
        qcow2 = image.path if fmt == "qcow2" else None
        lines.append(
            f"disk image ({' and '.join(image.boot)} boot): {image.path.name}, "
            f"{image.size / MIB:.1f} MiB ({image.disk_size / MIB:.0f} MiB disk)"
        )
    if oci:
        layout = build_container_disk(manifest_path, parse_keys(keys), progress, qcow2)
        lines.append(f"KubeVirt containerDisk (OCI image layout): {layout.name}")
    return lines


def remove_stale_artifacts(manifest_path: Path, fmt: str | None, oci: bool) -> None:
    """Disk images and a containerDisk left in dist/ by an earlier build that
    this one does not remake: they hold the old unikernel, so they go."""
    manifest = json.loads(manifest_path.read_text())
    unikernel = str(manifest.get("unikernel", "looming"))
    dist = manifest_path.parent
    kept = {f"{unikernel}-boot-{manifest['arch']}.{fmt}"} if fmt is not None else set()
    for old in sorted(dist.glob(f"{unikernel}-boot-*")):
        if old.suffix in (".raw", ".qcow2") and old.is_file() and old.name not in kept:
            old.unlink()
    layout = dist / f"{unikernel}-oci"
    if not oci and layout.is_dir() and (layout / "oci-layout").is_file():
        shutil.rmtree(layout)


def qemu_command(arch: Arch, disk: Path, fmt: str, netdev: str, uefi: bool = True) -> list[str]:
    """A plain qemu command line booting ``disk`` (no ``-kernel``): UEFI
    firmware (or on x86_64 with ``uefi=False``, qemu's default BIOS), the
    disk and the NIC as virtio devices of the machine's bus, ``netdev`` the
    NIC's back end (``user,id=net0,...`` or ``tap,id=net0,...``), the
    serial console on standard output."""
    bus = arch.device_suffix
    command = [
        arch.qemu, "-M", arch.machine, "-cpu", arch.cpu, "-m", "256", "-nodefaults",
        "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-drive", f"file={disk},format={fmt},if=none,id=disk0,readonly=on",
        "-device", f"virtio-blk-{bus},drive=disk0,bootindex=0",
        "-netdev", netdev,
        # No option ROM: the firmware would otherwise offer to boot from the network.
        "-device", f"virtio-net-{bus},netdev=net0" + (",romfile=" if bus == "pci" else ""),
    ]  # fmt: skip
    if arch.entropy_device:
        command += ["-device", f"virtio-rng-{bus}"]
    if uefi:
        command += ["-bios", str(FIRMWARE[arch.name])]
    return command


def describe(manifest: dict[str, object]) -> list[str]:
    """``looming describe --image``'s lines for the disk image and containerDisk."""
    lines = []
    disk = manifest.get("disk_image")
    if isinstance(disk, dict):
        lines.append(
            f"disk image: {disk['file']} ({disk['format']}, {int(disk['size']) / MIB:.1f} MiB, "
            f"a {int(disk['disk_size']) / MIB:.0f} MiB disk booting from "
            f"{' and '.join(str(b).upper() for b in disk['boot'])})"
        )
    if manifest.get("container_disk"):
        lines.append(f"KubeVirt containerDisk: {manifest['container_disk']}/ (OCI image layout)")
    return lines
