"""The architectures a VM image is built for, and what differs between them."""

from __future__ import annotations

import lzma
from dataclasses import dataclass

from looming.errors import UsageError

# Initramfs compressions, by the guest kernel's unpacking speed under emulation.
COMPRESSIONS = ("lz4", "zstd", "xz", "gzip")


@dataclass(frozen=True)
class Arch:
    """One guest architecture: its Debian names, its qemu and its console."""

    name: str  # as uname -m says it
    debian: str  # Debian's architecture name
    triplet: str  # multiarch directory of shared libraries
    kernel_package: str  # the metapackage naming the current cloud kernel
    qemu: str  # the system emulator
    qemu_user: str  # the user-mode emulator (for tests on the host)
    machine: str
    cpu: str
    console: str  # the serial console device inside the guest
    kernel_compressed: bool  # whether Debian ships the kernel compressed
    finit_module: int  # the finit_module system call's number
    kernel_arguments: tuple[str, ...] = ()
    virtio_transport: str = "virtio_mmio"  # the kernel module for the machine's virtio bus
    device_suffix: str = "device"  # qemu's virtio-net-<suffix> for that bus
    xz_branch_filter: int | None = None  # lzma's BCJ filter the guest kernel can undo
    # Whether qemu can boot the kernel's ELF vmlinux through its PVH entry
    # point, so an image can store that packed tighter than the bzImage.
    pvh_boot: bool = False
    # The initramfs compression unless --compress says otherwise.
    default_compression: str = "zstd"
    # Whether the guest gets a virtio-rng device. Without one, its kernel's
    # random pool must be seeded at boot some other way.
    entropy_device: bool = True
    # The firmware qemu starts with, when not its default, if qemu ships it.
    firmware: str | None = None


ARCHES: dict[str, Arch] = {
    "x86_64": Arch(
        name="x86_64",
        debian="amd64",
        triplet="x86_64-linux-gnu",
        kernel_package="linux-image-cloud-amd64",
        qemu="qemu-system-x86_64",
        qemu_user="qemu-x86_64-static",
        # pc rather than microvm: under a loaded host, TCG makes the PIT
        # calibration of the TSC fail, and microvm has no HPET or ACPI PM
        # timer to fall back on, so the kernel would wait without a clock.
        machine="pc",
        # The baseline x86-64 CPU, and RDRAND to seed the kernel's random
        # pool at once. qemu's "max" (AVX2, AVX-512, ...) made boot 0.17 s
        # slower under emulation: more of the kernel patched at start, a
        # larger register state saved on every switch, wider string routines
        # in libc that TCG emulates more slowly.
        cpu="qemu64,+rdrand",
        console="ttyS0",
        kernel_compressed=True,
        finit_module=313,
        # No BIOS disks to probe; the TSC is the clock (qemu's is steady).
        # One serial port to probe, not four. No local APIC timer: the
        # kernel would spend a tenth of a second of jiffies calibrating it
        # (two tenths under emulation); with one CPU, the HPET's timer
        # serves instead.
        kernel_arguments=(
            "edd=off",
            "tsc=reliable",
            "no_timer_check",
            "8250.nr_uarts=1",
            "noapictimer",
        ),
        virtio_transport="virtio_pci",
        device_suffix="pci",
        xz_branch_filter=lzma.FILTER_X86,  # Debian's kernel has CONFIG_XZ_DEC_X86
        pvh_boot=True,
        # qboot, the minimal firmware qemu ships for -M pc, reaches the
        # kernel a few hundredths of a second sooner than SeaBIOS under TCG.
        firmware="qboot.rom",
        # The kernel trusts the CPU's RDRAND (given to the CPU above) and its
        # random pool is ready a few hundredths of a second into boot; a
        # virtio-rng device would cost a tenth of a second more: another PCI
        # device whose interrupt link ACPI's interpreter sets up, slowly
        # under emulation.
        entropy_device=False,
        # The kernel unpacks LZ4 in half zstd's time (0.14 s less to /init
        # under emulation), for 2 MB more: within the 18 MB the xz-packed
        # vmlinux leaves room for.
        default_compression="lz4",
    ),
    "aarch64": Arch(
        name="aarch64",
        debian="arm64",
        triplet="aarch64-linux-gnu",
        kernel_package="linux-image-cloud-arm64",
        qemu="qemu-system-aarch64",
        qemu_user="qemu-aarch64-static",
        machine="virt",
        cpu="cortex-a57",
        console="ttyAMA0",
        # Debian's arm64 kernel isolates its page tables whenever KASLR is on,
        # mitigations=off or not; every system call and interrupt then switches
        # tables, which TCG pays for in flushed TLBs: 15% of the static site's
        # boot (qemu's CPU time 2.93 -> 2.48 s). The unikernel is the only
        # program above the kernel, as trusted as it.
        kernel_arguments=("kpti=0",),
        kernel_compressed=False,
        finit_module=273,
        # LZ4 here too: the guest unpacks static_website's initramfs in
        # 0.115 s against zstd's 0.193 s under emulation, for 1.8 MB more.
        default_compression="lz4",
    ),
}


def get_arch(name: str) -> Arch:
    """The architecture called ``name`` (``arm64`` and ``amd64`` are accepted too)."""
    aliases = {"amd64": "x86_64", "arm64": "aarch64"}
    arch = ARCHES.get(aliases.get(name, name))
    if arch is None:
        raise UsageError(
            f"unsupported VM architecture {name!r}; choose one of: {', '.join(ARCHES)}"
        )
    return arch
