"""The ``vm`` target: a bootable image for x86_64 or aarch64, run under qemu.

``looming configure -t vm --arch x86_64|aarch64`` links the unikernel to
the host implementations of console, time, clock and random (inside the
guest they are the guest kernel's), kv_ro crunched into the image, and
looming's own TCP/IP stack on the virtio NIC through an AF_PACKET socket
(the guest kernel holds no address on it); kv_rw, kv_store and block are
the unix implementations on the VM's disk (:mod:`looming.vm.storage`), or in
the guest's memory with ``--storage memory``. ``looming build`` makes
``dist/NAME-vm.json`` beside a kernel and an initramfs (see
:mod:`looming.vm.image`); ``looming run`` boots it (:mod:`looming.vm.launch`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from looming.config.dsl import Device, device
from looming.config.plan import Arg, Dep, Impl, KeyDecl
from looming.config.targets import Target
from looming.config.targets.unix import block_impl as unix_block_impl
from looming.config.targets.unix import direct_stack_impl, host_device_impl
from looming.config.targets.unix import kv_rw_impl as unix_kv_rw_impl
from looming.errors import UsageError
from looming.vm.arch import ARCHES, COMPRESSIONS, get_arch
from looming.vm.kernelbuild import KERNELS
from looming.vm.nic import NIC_DRIVERS, parse_nic_drivers

if TYPE_CHECKING:
    from looming.config.build import BuildReport

_GUEST = {
    "console": "the serial console",
    "time": "the guest's monotonic clock",
    "clock": "the guest's wall clock",
    # RDRAND on x86_64, virtio-rng on aarch64
    "random": "the guest kernel's random source",
}


def _host_arch() -> str:
    machine = platform.machine()
    return machine if machine in ARCHES else "x86_64"


class VmTarget(Target):
    name = "vm"
    summary = "a bootable kernel and initramfs for x86_64 or aarch64, run under qemu"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--arch",
            default=_host_arch(),
            help=f"guest architecture: {' or '.join(ARCHES)} (default: this machine's)",
        )

        parser.add_argument(
            "--compress",
            choices=COMPRESSIONS,
            default=None,
            help="initramfs compression: lz4 (fastest to unpack, default on x86_64), zstd "
            "(a third smaller, default on aarch64 to keep its image within 14 MB), "
            "xz (smallest) or gzip",
        )
        parser.add_argument(
            "--storage",
            choices=("disk", "memory"),
            default=None,
            help="where kv_rw, kv_store and block keep their data: disk (default: a disk "
            "image 'looming run' creates on first use and attaches to the VM, see its "
            "--vm-disk and --vm-disk-size) or memory (the guest's RAM, lost at power-off)",
        )
        parser.add_argument(
            "--nic-drivers",
            metavar="LIST",
            default=None,
            help="the NIC drivers the image carries, comma-separated, from: "
            f"{','.join(NIC_DRIVERS)} (default: the machine's virtio, virtio-pci on x86_64 "
            "and virtio-mmio on aarch64); /init brings up whichever NIC the machine has",
        )
        parser.add_argument(
            "--firecracker",
            action="store_const",
            const="yes",
            default=None,
            help="also write dist/NAME-firecracker.json (a Firecracker --config-file) and "
            "dist/NAME-qemu.sh (a plain qemu command line), with the unpacked kernel "
            "beside the image; adds the virtio-mmio driver",
        )
        parser.add_argument(
            "--kernel",
            choices=KERNELS,
            default=None,
            help="the guest's kernel: debian (default: Debian's cloud kernel, drivers as "
            "modules) or minimal (x86_64: compiled once from Debian's kernel source with only "
            "what the guest uses, all built in, under half the booted size; needs make, gcc, "
            "flex, bison, bc and libelf-dev, and minutes for the first build)",
        )

    def default_options(self) -> dict[str, str]:
        # No compression here: without --compress, the architecture's default.
        return {"arch": _host_arch()}

    def implement(self, dev: Device, options: dict[str, str]) -> Impl:
        arch = get_arch(options.get("arch", _host_arch()))  # an unknown one fails at configure
        try:
            parse_nic_drivers(options.get("nic_drivers"), arch.virtio_transport)
        except ValueError as error:
            raise UsageError(str(error)) from None
        return super().implement(dev, options)

    def artifact(self, app_dir: Path, unikernel: str) -> Path:
        return app_dir / "dist" / f"{unikernel}-vm.json"

    def configured_options(self, app_dir: Path) -> dict[str, str]:
        """The options ``looming configure`` recorded for this application."""
        state_file = app_dir / "_build" / "looming.json"
        options: dict[str, str] = self.default_options()
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            if state.get("target") == self.name:
                options.update(state.get("options", {}))
        return options

    def build(
        self, app_dir: Path, unikernel: str, main_py: Path, crunch: list[tuple[str, str]]
    ) -> BuildReport:
        from looming.config.build import BuildReport
        from looming.vm.image import build_image

        def progress(message: str) -> None:
            print(f"  {message}", flush=True)

        options = self.configured_options(app_dir)
        report = build_image(app_dir, unikernel, main_py, crunch, options, progress)
        print(
            f"  image for {report.arch}: kernel {report.kernel_size / 2**20:.1f} MiB, "
            f"initramfs {report.initrd_size / 2**20:.1f} MiB "
            f"({report.initrd_unpacked / 2**20:.1f} MiB unpacked), "
            f"total {report.size / 2**20:.1f} MiB packed, "
            f"{report.booted_size / 2**20:.1f} MiB as booted (kernel unpacked + initramfs)",
            flush=True,
        )
        return BuildReport(
            report.manifest,
            report.size,
            report.app_modules,
            [],
            report.crunched_files,
            app_files=report.app_files,
        )

    def describe_artifact(self, artifact: Path) -> str:
        from looming.vm.image import describe_image

        return describe_image(artifact)

    def run_command(self, artifact: Path, argv: list[str]) -> list[str]:
        return [sys.executable, "-m", "looming.vm.launch", str(artifact), *argv]


def guest_device(dev: Device, options: dict[str, str]) -> Impl:
    """console, time, clock and random: the guest kernel's."""
    return host_device_impl(dev.kind, _GUEST)


def kv_ro_impl(dev: Device, options: dict[str, str]) -> Impl:
    dirname = dev.setting("dirname")
    return Impl(
        "looming.unix.kv:CrunchedKv.connect",
        args=[repr(dev.name_hint)],
        awaited=True,
        crunch=[(dev.name_hint, dirname)],
        summary=f"{dirname}/ crunched into the image",
    )


def network_impl(dev: Device, options: dict[str, str]) -> Impl:
    iface = dev.setting("iface")
    key = "interface" if iface is None else f"{dev.name_hint}_interface"
    return Impl(
        "looming.vm.nic:connect",
        args=[f"keys.{key}"],
        awaited=True,
        disconnect="disconnect",
        keys=[KeyDecl(key, "str", iface or "eth0", "the guest's NIC (virtio)")],
        summary="the virtio NIC through an AF_PACKET socket, with its own MAC",
    )


def stack_impl(dev: Device, options: dict[str, str]) -> Impl:
    """looming's TCP/IP stack on the virtio NIC, as on TAP."""
    return direct_stack_impl(dev)


def _stored(impl: Impl, factory: str, options: dict[str, str], what: str) -> Impl:
    """A storage device's unix implementation, kept on the VM's disk (through
    ``factory`` of :mod:`looming.vm.storage`), or with ``--storage memory`` in
    the guest's root file system (the initramfs, in RAM)."""
    if options.get("storage") == "memory":
        return replace(impl, summary=f"{what} in the guest's memory, lost at power-off")
    path, *others = impl.keys  # the first key names the folder or file
    keys = [replace(path, doc=f"{path.doc} (on the VM's disk)"), *others]
    return replace(impl, factory=factory, keys=keys, summary=f"{what} on the VM's disk")


def kv_rw_impl(dev: Device, options: dict[str, str]) -> Impl:
    impl = unix_kv_rw_impl(dev, options)
    return _stored(
        impl, "looming.vm.storage:connect_kv_rw", options, f"folder {dev.setting('dirname')}/"
    )


def block_impl(dev: Device, options: dict[str, str]) -> Impl:
    impl = unix_block_impl(dev, options)
    return _stored(
        impl, "looming.vm.storage:connect_block", options, f"file {dev.setting('filename')}"
    )


def kv_store_impl(dev: Device, options: dict[str, str]) -> Impl:
    from looming.config.devices import PORTABLE

    impl = PORTABLE["kv_store"](dev)
    return _stored(impl, "looming.vm.gitstore:connect_kv_store", options, impl.summary)


def vchan_impl(dev: Device, options: dict[str, str]) -> Impl:
    """A vchan to another VM: an ivshmem device's shared memory (:mod:`looming.vchan.pci`;
    ``looming run`` attaches the region, :mod:`looming.vm.ivshmem`)."""
    port, peer = dev.setting("port"), dev.setting("peer")
    kwargs: list[tuple[str, Arg]] = [
        ("read_size", repr(dev.setting("read_size"))),
        ("write_size", repr(dev.setting("write_size"))),
    ]
    if peer is not None:
        kwargs.append(("peer", repr(peer)))
    return Impl(
        "looming.vchan.pci:PciVchan.connect",
        args=[repr(port)],
        kwargs=[("time", Dep("time")), *kwargs],
        awaited=True,
        disconnect="disconnect",
        deps={"time": device("time", where=dev.where)},
        summary=f"vchan to {peer}/{port} over ivshmem"
        if peer
        else f"vchan serving port {port} over ivshmem",
    )


TARGET = VmTarget()
