"""A minimal kernel for the ``vm`` target, compiled from Debian's own source.

Debian's cloud kernel carries drivers, file systems and debugging data a
unikernel never uses: its x86_64 ``vmlinux`` is 53 MB, which is most of
what qemu loads. ``looming configure -t vm --kernel minimal`` (x86_64) has
``looming build`` compile instead a kernel from the source package of the
same Debian kernel (``linux-source-6.1``, fetched through the image's
private apt, which checks it against the signed package lists),
configured from ``tinyconfig`` plus exactly what looming's guest uses, all
built in (no modules): the PVH entry point ``looming run`` boots, virtio
over PCI and MMIO, virtio-net, virtio-blk with ext4, virtio-rng, the
serial console, the EFI stub (for disk images), an initramfs in any of the
image's compressions, ELF programs and scripts, the system calls CPython
and asyncio make, unix and AF_PACKET sockets over IPv4, and the NIC
drivers ``--nic-drivers`` names.

The result is kept under the cache folder by (source version, the
configuration's hash, architecture), in the layout of Debian's kernel
package (``boot/vmlinuz-RELEASE``, ``lib/modules/RELEASE/modules.builtin``)
so the image builder treats it as it treats Debian's. The first build
takes minutes (``make -j`` with the machine's cores); later builds reuse it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from looming.errors import LoomingError, UsageError
from looming.vm.arch import Arch
from looming.vm.packages import AptArchive, PackageInfo, cache_root

Progress = Callable[[str], None]

KERNELS = ("debian", "minimal")
DEFAULT_KERNEL = "debian"
LOCALVERSION = "-looming"
# Bumped when the way the kernel is built changes (not its configuration,
# which is hashed): a new number builds afresh.
RECIPE = "1"
# How often the build says how far it got, in seconds.
PROGRESS_EVERY = 20.0

# What every guest uses, on every architecture.
COMMON_OPTIONS = (
    # the console, and what a kernel needs to say anything
    "PRINTK", "BUG", "TTY", "BASE_FULL",
    # the console's time stamps, which --vm-trace and bench/image.py read
    "PRINTK_TIME",
    # /init: an initramfs (every --compress choice), ELF programs and the
    # two-line script that starts Python
    "BLK_DEV_INITRD", "RD_GZIP", "RD_XZ", "RD_LZ4", "RD_ZSTD",
    "BINFMT_ELF", "BINFMT_SCRIPT",
    "PROC_FS", "SYSFS", "DEVTMPFS", "TMPFS",
    # CPython, its threads and asyncio
    "MULTIUSER", "FUTEX", "EPOLL", "EVENTFD", "TIMERFD", "SIGNALFD", "INOTIFY_USER",
    "SHMEM", "AIO", "ADVISE_SYSCALLS", "MEMBARRIER", "POSIX_TIMERS", "RSEQ",
    "FILE_LOCKING", "FHANDLE", "HIGH_RES_TIMERS",
    # sockets: unix (socketpair), IPv4 (lo, the host-side stack's tests),
    # AF_PACKET (looming's own TCP/IP stack drives the NIC through it)
    "NET", "UNIX", "INET", "PACKET",
    # virtio: both transports, the NIC, the disk (ext4), entropy
    "PCI", "PCI_MSI", "VIRTIO_MENU", "VIRTIO_PCI", "VIRTIO_MMIO",
    "VIRTIO_MMIO_CMDLINE_DEVICES", "NETDEVICES", "NET_CORE", "VIRTIO_NET",
    "BLOCK", "BLK_DEV", "VIRTIO_BLK", "EXT4_FS",
    "HW_RANDOM", "HW_RANDOM_VIRTIO",
    # a faster kernel rather than the smallest (tinyconfig's -Os and SLOB),
    # patched branches, and no timer ticks while the guest waits
    "CC_OPTIMIZE_FOR_PERFORMANCE", "SLUB", "JUMP_LABEL", "NO_HZ_IDLE",
)  # fmt: skip
# What the x86_64 machines (qemu's microvm and pc, KVM, Firecracker) need.
X86_64_OPTIONS = (
    "64BIT", "SMP", "X86_LOCAL_APIC", "X86_IO_APIC",
    # qemu boots the ELF vmlinux through its PVH entry point
    "HYPERVISOR_GUEST", "PARAVIRT", "PVH", "KVM_GUEST",
    # microvm lists its virtio-mmio devices in ACPI; power-off is ACPI's
    "ACPI", "X86_PM_TIMER", "HPET_TIMER",
    "SERIAL_8250", "SERIAL_8250_CONSOLE",
    # RDRAND seeds the random pool at once (no virtio-rng on x86_64): without
    # it the interpreter's first getrandom() waits for the pool
    "RANDOM_TRUST_CPU",
    # the bzImage's payload, as Debian's (looming unpacks it on the host)
    "KERNEL_LZ4",
    # the EFI stub a disk image's firmware starts (--disk-image, --oci)
    "EFI", "EFI_STUB", "EFI_HANDOVER_PROTOCOL",
)  # fmt: skip
# aarch64's Debian kernel already gives a booted image of about 31 MB.
ARCH_OPTIONS = {"x86_64": X86_64_OPTIONS}
# Options off: retpolines (the guest boots with mitigations=off), modules
# (everything is built in), and tinyconfig's choices the ones above replace.
OFF_OPTIONS = ("RETPOLINE", "MODULES", "CC_OPTIMIZE_FOR_SIZE", "SLOB", "KERNEL_XZ")
# Each --nic-drivers driver's options, and the drivers built in as the names
# of their modules (what modules.builtin lists, as Debian's kernels do).
NIC_OPTIONS: dict[str, tuple[str, ...]] = {
    "virtio-pci": ("VIRTIO_PCI",),
    "virtio-mmio": ("VIRTIO_MMIO",),
    "vmxnet3": ("VMXNET3",),
    "ena": ("ETHERNET", "NET_VENDOR_AMAZON", "ENA_ETHERNET"),
    "xen-netfront": ("XEN", "XEN_PVHVM_GUEST", "XEN_NETDEV_FRONTEND"),
    "netvsc": ("HYPERV", "HYPERV_NET"),
}
BUILTIN_DRIVERS = {
    "VIRTIO_PCI": "virtio_pci",
    "VIRTIO_MMIO": "virtio_mmio",
    "VIRTIO_NET": "virtio_net",
    "VIRTIO_BLK": "virtio_blk",
    "HW_RANDOM_VIRTIO": "virtio_rng",
    "EXT4_FS": "ext4",
    "VMXNET3": "vmxnet3",
    "ENA_ETHERNET": "ena",
    "XEN_NETDEV_FRONTEND": "xen_netfront",
    "HYPERV_NET": "hv_netvsc",
    "HYPERV": "hv_vmbus",
}
# The programs a kernel build runs, and their Debian packages.
BUILD_TOOLS = {"make": "make", "gcc": "gcc", "flex": "flex", "bison": "bison", "bc": "bc"}
BUILD_TOOLS |= {"lz4": "lz4", "tar": "tar", "xz": "xz-utils", "perl": "perl"}
BUILD_HEADERS = {"/usr/include/libelf.h": "libelf-dev"}
MAKE_ARCH = {"x86_64": "x86_64"}
TARGET = {"x86_64": ("bzImage", "arch/x86/boot/bzImage")}


class KernelBuildError(LoomingError):
    """The minimal kernel could not be configured or built."""


def parse_kernel(value: str | None) -> str:
    """The ``--kernel`` choice; UsageError (exit 2) for another value."""
    kernel = (value or DEFAULT_KERNEL).strip()
    if kernel not in KERNELS:
        raise UsageError(
            f"--kernel: {kernel!r} is no kernel choice; use 'debian' (Debian's cloud "
            "kernel) or 'minimal' (a small kernel compiled from Debian's source)"
        )
    return kernel


@dataclass(frozen=True)
class KernelSpec:
    """What the minimal kernel must hold besides the common options."""

    arch: Arch
    nic_drivers: tuple[str, ...] = ()

    def fragment(self) -> str:
        """The configuration lines added to tinyconfig's, in a fixed order."""
        wanted = [*COMMON_OPTIONS, *ARCH_OPTIONS[self.arch.name]]
        for driver in (d for d in NIC_OPTIONS if d in self.nic_drivers):  # one order
            wanted += [o for o in NIC_OPTIONS[driver] if o not in wanted]
        lines = [f"CONFIG_{name}=y" for name in wanted]
        lines += [f"# CONFIG_{name} is not set" for name in OFF_OPTIONS]
        lines.append(f'CONFIG_LOCALVERSION="{LOCALVERSION}"')
        lines.append("# CONFIG_LOCALVERSION_AUTO is not set")
        return "\n".join(lines) + "\n"

    def required(self) -> list[str]:
        """The options that must be on after ``olddefconfig``."""
        return re.findall(r"^CONFIG_(\w+)=y$", self.fragment(), re.MULTILINE)


def check_build_tools(arch: Arch) -> None:
    """UsageError for an architecture without a minimal kernel, or naming
    the Debian packages to install; before anything is fetched."""
    if arch.name not in ARCH_OPTIONS or os.uname().machine != arch.name:
        raise UsageError(
            f"--kernel minimal is built for {', '.join(ARCH_OPTIONS)} on a machine of that "
            f"architecture, not for {arch.name} here; use --kernel debian"
        )
    missing = sorted({p for tool, p in BUILD_TOOLS.items() if shutil.which(tool) is None})
    missing += sorted({p for path, p in BUILD_HEADERS.items() if not Path(path).is_file()})
    if missing:
        raise UsageError(
            "--kernel minimal compiles a kernel, which needs the Debian packages "
            f"{', '.join(missing)}; install them (apt-get install {' '.join(missing)}) "
            "or build with --kernel debian"
        )


def source_package(archive: AptArchive, kernel: PackageInfo) -> PackageInfo:
    """Debian's source package of the kernel ``kernel`` (an image package):
    ``linux-source-MAJOR.MINOR``, its candidate version."""
    match = re.match(r"(\d+)\.(\d+)", kernel.version)
    if match is None:
        raise KernelBuildError(f"cannot read the kernel version of {kernel.name} {kernel.version}")
    return archive.info(f"linux-source-{match[1]}.{match[2]}")


def minimal_kernel(
    archive: AptArchive, kernel: PackageInfo, spec: KernelSpec, progress: Progress
) -> tuple[PackageInfo, Path]:
    """The minimal kernel for ``spec``, built from the source of ``kernel``'s
    Debian version: (the source package, the tree holding the kernel in
    Debian's layout). Built once per (source version, configuration, arch)."""
    check_build_tools(spec.arch)
    source = source_package(archive, kernel)
    fragment = spec.fragment()
    digest = hashlib.sha256(f"{RECIPE}\n{fragment}".encode()).hexdigest()[:16]
    tree = kernels_root() / spec.arch.name / f"{source.version}-{digest}"
    if (tree / ".built").is_file():
        return source, tree
    started = time.monotonic()
    source_tree = archive.unpack(source)
    tarballs = sorted((source_tree / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise KernelBuildError(f"{source.name} {source.version} holds no source tarball")
    tree.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=tree.parent) as work:
        linux = _unpack_source(tarballs[-1], Path(work), progress)
        _configure(linux, spec, progress)
        image = _make(linux, spec.arch, progress)
        partial = Path(work) / "result"
        _install(linux, image, partial)
        (partial / ".built").write_text(f"{source.name} {source.version}\n")
        shutil.rmtree(tree, ignore_errors=True)
        try:
            partial.rename(tree)
        except OSError:
            if not (tree / ".built").is_file():  # else a build beside this one finished first
                raise
    progress(f"built the minimal kernel in {time.monotonic() - started:.0f} s: {tree}")
    return source, tree


def kernels_root() -> Path:
    """Where built minimal kernels are kept."""
    return cache_root() / "minimal-kernels"


def _unpack_source(tarball: Path, work: Path, progress: Progress) -> Path:
    progress(f"unpacking {tarball.name}")
    done = subprocess.run(
        ["tar", "-xf", str(tarball), "-C", str(work)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise KernelBuildError(f"tar could not unpack {tarball}: {done.stderr.strip()}")
    folders = [p for p in work.iterdir() if p.is_dir() and (p / "Makefile").is_file()]
    if len(folders) != 1:
        raise KernelBuildError(f"{tarball.name} does not hold one kernel source folder")
    return folders[0]


def _make_command(arch: Arch, *targets: str) -> list[str]:
    return ["make", f"ARCH={MAKE_ARCH[arch.name]}", f"-j{os.cpu_count() or 1}", *targets]


def _build_environment() -> dict[str, str]:
    """The same kernel from the same source on any machine: no user, host or date."""
    return {
        **os.environ,
        "KBUILD_BUILD_USER": "looming",
        "KBUILD_BUILD_HOST": "looming",
        "KBUILD_BUILD_TIMESTAMP": "1970-01-01",
        "LC_ALL": "C",
    }


def _run_make(linux: Path, command: list[str]) -> None:
    done = subprocess.run(
        command, cwd=linux, env=_build_environment(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise KernelBuildError(f"{' '.join(command)} failed:\n" + "\n".join(tail))


def _configure(linux: Path, spec: KernelSpec, progress: Progress) -> None:
    """tinyconfig, the spec's fragment merged in, ``olddefconfig``; every
    option the fragment turns on must have stayed on."""
    progress("configuring the minimal kernel (tinyconfig and what the guest uses)")
    _run_make(linux, _make_command(spec.arch, "tinyconfig"))
    config = linux / ".config"
    fragment = spec.fragment()
    names = set(re.findall(r"CONFIG_(\w+)[= ]", fragment))
    kept = [
        line
        for line in config.read_text().splitlines()
        if not (m := re.match(r"(?:# )?CONFIG_(\w+)[= ]", line)) or m[1] not in names
    ]
    config.write_text("\n".join(kept) + "\n" + fragment)
    _run_make(linux, _make_command(spec.arch, "olddefconfig"))
    final = config.read_text()
    lost = [o for o in spec.required() if f"\nCONFIG_{o}=y\n" not in f"\n{final}"]
    if lost:
        raise KernelBuildError(
            f"the kernel's configuration refused {', '.join(lost)} "
            f"(their dependencies are not met on {spec.arch.name})"
        )
    forced = [o for o in OFF_OPTIONS if f"\nCONFIG_{o}=y\n" in f"\n{final}"]
    if forced:
        raise KernelBuildError(f"the kernel's configuration turned on {', '.join(forced)}")


def _make(linux: Path, arch: Arch, progress: Progress) -> Path:
    """Compile the kernel, saying every little while how far it got."""
    target, image = TARGET[arch.name]
    command = _make_command(arch, target)
    progress(f"compiling the minimal kernel ({' '.join(command)}; minutes, once)")
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            command, cwd=linux, env=_build_environment(), stdout=subprocess.PIPE,
            stderr=errors, text=True,
        )  # fmt: skip
        assert process.stdout is not None
        compiled, said = 0, started
        for line in process.stdout:
            compiled += line.lstrip().startswith("CC ")
            if time.monotonic() - said >= PROGRESS_EVERY:
                said = time.monotonic()
                progress(f"  {compiled} files compiled, {said - started:.0f} s")
        if process.wait() != 0:
            errors.seek(0)
            tail = errors.read().strip().splitlines()[-8:]
            raise KernelBuildError(f"{' '.join(command)} failed:\n" + "\n".join(tail))
    progress(f"  {compiled} files compiled in {time.monotonic() - started:.0f} s")
    return linux / image


def _install(linux: Path, image: Path, result: Path) -> None:
    """The kernel in Debian's package layout: ``boot/vmlinuz-RELEASE``,
    ``boot/config-RELEASE`` and ``lib/modules/RELEASE/modules.builtin``."""
    release = (linux / "include" / "config" / "kernel.release").read_text().strip()
    (result / "boot").mkdir(parents=True)
    shutil.copyfile(image, result / "boot" / f"vmlinuz-{release}")
    config = (linux / ".config").read_text()
    (result / "boot" / f"config-{release}").write_text(config)
    modules = result / "lib" / "modules" / release
    modules.mkdir(parents=True)
    (modules / "modules.builtin").write_text(
        "".join(f"{name}.ko\n" for name in builtin_drivers_of(config))
    )


def built_kernel_image(arch: Arch, build_id: str) -> Path | None:
    """The bzImage (with its EFI stub) of the minimal kernel ``build_id``
    (a manifest's ``kernel_build_id``), if this machine's cache holds it."""
    tree = kernels_root() / arch.name / build_id
    if not build_id or "/" in build_id or not (tree / ".built").is_file():
        return None
    release = sorted((tree / "lib" / "modules").iterdir())[-1].name
    image = tree / "boot" / f"vmlinuz-{release}"
    return image if image.is_file() else None


def builtin_drivers_of(config: str) -> list[str]:
    """The drivers a configuration builds in, named as their modules."""
    return [name for option, name in BUILTIN_DRIVERS.items() if f"\nCONFIG_{option}=y" in config]


def builtin_drivers(kernel_tree: Path) -> list[str]:
    """The drivers a minimal kernel's tree says are built in ([] for a
    Debian kernel, whose drivers the image loads as modules)."""
    if not (kernel_tree / ".built").is_file():
        return []
    versions = sorted((kernel_tree / "lib" / "modules").iterdir())
    listed = (versions[-1] / "modules.builtin").read_text().split()
    return [Path(line).stem for line in listed]
