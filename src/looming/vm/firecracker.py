"""Files that boot an image without ``looming run``: a Firecracker machine
configuration and a plain qemu command line, written beside the image.

``looming configure -t vm --firecracker`` and ``looming build`` write, in
``dist/``:

- ``NAME-vm-ARCH/vmlinux`` (x86_64, the ELF kernel with its PVH entry
  point) or ``NAME-vm-ARCH/Image`` (aarch64, the PE ``Image``): the kernel
  unpacked, as Firecracker and qemu's ``-kernel`` take it;
- ``NAME-firecracker.json``, for ``firecracker --no-api --config-file``:
  ``boot-source`` (kernel, initramfs and the kernel's arguments, /init's
  settings among them), ``machine-config`` (one vCPU, the image's memory),
  ``network-interfaces`` (a TAP and the MAC ``looming run`` would give
  instance 0) and ``drives`` (the disk image, for a unikernel with storage);
- ``NAME-qemu.sh``, the command ``looming run`` would run, as a shell
  script whose arguments are the unikernel's keys.

Every path in them is relative to ``dist/``: Firecracker resolves them from
its working folder (run it in ``dist/``), the script changes to its own.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from looming.vm.arch import Arch, get_arch
from looming.vm.launch import (
    DEFAULT_MEMORY_MB,
    LaunchError,
    Machine,
    MachineOptions,
    default_mac,
    device_arguments,
    kernel_command_line,
    load_manifest,
    machine_arguments,
    machine_for,
    minimum_memory_mb,
    nic_arguments,
)
from looming.vm.packages import PackageError

if TYPE_CHECKING:
    from looming.vm.image import ImageReport

KERNEL_NAMES = {"x86_64": "vmlinux", "aarch64": "Image"}
TAP = "tap0"  # the TAP device the configuration names; edit it to taste
FIRECRACKER_CONSOLE = "ttyS0"  # an 8250 UART on both architectures
# Firecracker's devices: virtio over MMIO, found through ACPI (x86_64,
# Firecracker 1.8 and later; Debian's kernel reads no virtio_mmio.device=
# arguments) or the device tree (aarch64). No PCI; no power-off: the guest
# ends the VM by rebooting, through the keyboard controller on x86_64.
FIRECRACKER = Machine(
    "firecracker", "", "virtio_mmio", "device", pci=False, drop_arguments=("noapictimer",)
)
FIRECRACKER_ARGUMENTS = {"x86_64": ("reboot=k", "pci=off"), "aarch64": ()}


def write_machine_files(
    report: ImageReport, unikernel: str, wanted: bool, progress: Callable[[str], None]
) -> None:
    """With ``wanted``, the unpacked kernel, ``NAME-firecracker.json`` and
    ``NAME-qemu.sh`` beside the image; without, remove stale ones."""
    dist = report.manifest.parent
    config_path = dist / f"{unikernel}-firecracker.json"
    script_path = dist / f"{unikernel}-qemu.sh"
    if not wanted:
        for stale in (config_path, script_path):
            stale.unlink(missing_ok=True)
        return
    manifest = load_manifest(report.manifest)
    arch = get_arch(str(manifest["arch"]))
    try:
        kernel = _kernel_beside_image(manifest, report.kernel.parent, arch)
    except LaunchError as error:
        raise PackageError(f"--firecracker: {error}") from None
    paths = {
        "kernel": kernel.relative_to(dist).as_posix(),
        "initrd": report.initrd.relative_to(dist).as_posix(),
        "disk": f"{unikernel}-disk.img",
    }
    _write_atomically(script_path, qemu_script(manifest, paths))
    script_path.chmod(0o755)
    if kernel.name != KERNEL_NAMES[arch.name]:
        # A bzImage without the PVH entry point: Firecracker boots ELF kernels only.
        config_path.unlink(missing_ok=True)
        progress(
            f"note: no {config_path.name}: this kernel has no PVH entry point (or the lz4 "
            f"command is missing), and Firecracker cannot boot its bzImage; {script_path.name}"
        )
        return
    _write_atomically(config_path, json.dumps(firecracker_config(manifest, paths), indent=2))
    progress(f"Firecracker configuration {config_path.name}, qemu command line {script_path.name}")


def _kernel_beside_image(manifest: dict[str, object], folder: Path, arch: Arch) -> Path:
    """The unpacked kernel in the image's folder, linked from looming run's
    cache (checked against its SHA-256 there) or copied."""
    from looming.vm.launch import bootable_kernel

    source = bootable_kernel(manifest)
    if source.parent == folder:  # a bzImage, stored as it boots
        return source
    target = folder / KERNEL_NAMES[arch.name]
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.new")
    partial.write_text(text if text.endswith("\n") else text + "\n")
    partial.replace(path)


def memory_mb(manifest: dict[str, object]) -> int:
    """The guest memory ``looming run`` gives by default, or the image's floor."""
    return max(DEFAULT_MEMORY_MB, minimum_memory_mb(manifest))


def firecracker_boot_args(manifest: dict[str, object]) -> str:
    """The kernel's arguments under Firecracker, ending in ``--`` (the
    unikernel's keys go after it)."""
    arch = get_arch(str(manifest["arch"]))
    options = MachineOptions(tap=TAP if manifest.get("needs_network") else None, accel="kvm")
    arguments = kernel_command_line(
        manifest, options, FIRECRACKER, bool(manifest.get("needs_disk"))
    )
    arguments = [
        f"console={FIRECRACKER_CONSOLE}" if a.startswith("console=") else a for a in arguments
    ]
    return " ".join([*arguments, *FIRECRACKER_ARGUMENTS[arch.name], "LOOMING_EXIT=reboot", "--"])


def firecracker_config(manifest: dict[str, object], paths: dict[str, str]) -> dict[str, object]:
    """A Firecracker ``--config-file`` for the image, its paths ``paths``."""
    unikernel = str(manifest.get("unikernel", "looming"))
    config: dict[str, object] = {
        "boot-source": {
            "kernel_image_path": paths["kernel"],
            "initrd_path": paths["initrd"],
            "boot_args": firecracker_boot_args(manifest),
        },
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": memory_mb(manifest), "smt": False},
        "network-interfaces": [],
    }
    if manifest.get("needs_disk"):
        # Writeback: the guest's flushes reach the host's file, as under looming run.
        config["drives"] = [
            {
                "drive_id": "disk",
                "path_on_host": paths["disk"],
                "is_root_device": False,
                "is_read_only": False,
                "cache_type": "Writeback",
            }
        ]
    if get_arch(str(manifest["arch"])).entropy_device:
        config["entropy"] = {}  # virtio-rng, as looming run gives aarch64 guests
    if manifest.get("needs_network"):
        config["network-interfaces"] = [
            {"iface_id": "net0", "host_dev_name": TAP, "guest_mac": default_mac(unikernel, 0)}
        ]
    return config


SCRIPT_HEAD = """#!/bin/sh
# {unikernel} ({arch}) on plain qemu: the command `looming run` gives, with the
# paths relative to this folder. The arguments are the unikernel's keys:
#
#   ./{script} --ipv4 10.0.2.15/24 --ipv4-gateway 10.0.2.2 --port 8080
#
# The NIC is on qemu's user-mode network (the guest is 10.0.2.15, the host
# 10.0.2.2), the host's 127.0.0.1:$HOST_PORT (default 8080) forwarded to the
# guest's $GUEST_PORT (default 8080). QEMU_NETDEV replaces that network, e.g.
# QEMU_NETDEV=tap,id=net0,ifname=tap0,script=no,downscript=no. QEMU_ACCEL=kvm
# for hardware virtualisation (default tcg). The last console line gives the
# unikernel's exit status; qemu ends when the guest powers off.
cd "$(dirname "$0")" || exit 1
"""


def qemu_script(manifest: dict[str, object], paths: dict[str, str]) -> str:
    """A shell script running qemu on the image as ``looming run`` would."""
    arch = get_arch(str(manifest["arch"]))
    machine = machine_for(arch, None)
    unikernel = str(manifest.get("unikernel", "looming"))
    network = bool(manifest.get("needs_network"))
    options = MachineOptions(tap="net0" if network else None, accel="ACCEL")
    disk = Path(paths["disk"]) if manifest.get("needs_disk") else None
    cmdline = kernel_command_line(manifest, options, machine, disk is not None)
    qemu = shutil.which(arch.qemu) or arch.qemu
    words = [shlex.quote(arch.qemu)]
    words += [shlex.quote(w) for w in machine_arguments(arch, machine, options)]
    words[words.index("ACCEL")] = '"${QEMU_ACCEL:-tcg}"'
    words += ["-kernel", shlex.quote(paths["kernel"]), "-initrd", shlex.quote(paths["initrd"])]
    words += ["-append", shlex.quote(" ".join([*cmdline, "--"])) + '" $*"']
    words += [shlex.quote(w) for w in device_arguments(arch, machine, qemu, disk)]
    if network:
        netdev = "user,id=net0,hostfwd=tcp:127.0.0.1:${HOST_PORT:-8080}-:${GUEST_PORT:-8080}"
        words += ["-netdev", f'"${{QEMU_NETDEV:-{netdev}}}"']
        words += [
            shlex.quote(w) for w in nic_arguments(machine, "virtio", default_mac(unikernel, 0))
        ]
    head = SCRIPT_HEAD.format(unikernel=unikernel, arch=arch.name, script=f"{unikernel}-qemu.sh")
    return head + "exec " + " \\\n  ".join(_paired(words)) + "\n"


def _paired(words: list[str]) -> list[str]:
    """Each option with its value, one to a line."""
    lines: list[str] = []
    for word in words:
        if lines and lines[-1].startswith("-") and " " not in lines[-1] and word[0] != "-":
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines
