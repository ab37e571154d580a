"""Booting a built image under qemu: ``looming run`` for the vm target.

The serial console is streamed to standard output as the guest writes it;
/init's last line carries the unikernel's exit status, which becomes this
program's. Options for the machine start with ``--vm-`` (``--vm-tap NAME``,
``--vm-memory MB``, ``--vm-disk PATH``, ``--vm-timeout SECONDS``, ``--vm-trace``,
``--vm-machine pc|microvm|virt``, ``--vm-nic virtio|vmxnet3``),
besides ``--mac`` and ``--instance``; every other argument is a unikernel
key, passed on the kernel command line. A unikernel with storage on the
VM's disk gets the disk image of :mod:`looming.vm.disk`, made on first use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from looming.vm import disk
from looming.vm.arch import Arch, get_arch
from looming.vm.kernel import PACKED_FORMATS, KernelError, kernels_cache, unpacked_kernel

if TYPE_CHECKING:
    from looming.vm import ivshmem

EXIT_MARKER = "looming-vm: exit status"
POWER_DOWN = re.compile(r"^\[\s*\d+\.\d+\] reboot: Power down")
DEFAULT_MEMORY_MB = 256
DEFAULT_STOP_TIMEOUT = 10.0
# Under emulation every boot-time check costs real seconds. The guest runs
# one program that holds no secrets from itself, so speculative-execution
# mitigations, audit and AppArmor buy nothing; the crypto self-tests check
# algorithms nothing in the guest uses.
# IPv6 is off altogether: the kernel holds no address on the NIC (looming's
# stack drives it), and its IPv6 set-up is time at boot for nothing.
FAST_BOOT = ("cryptomgr.notests", "mitigations=off", "audit=0", "apparmor=0", "ipv6.disable=1")
NO_STATUS = 125  # qemu ended without the guest reporting a status
TIMED_OUT = 124


MACHINE_USAGE = """
machine options (for qemu, not the unikernel):
  --vm-tap NAME     attach a virtio NIC to the host's TAP device NAME
  --vm-memory MB    guest memory (default 256)
  --mac MAC         the virtio NIC's MAC (default: derived from the unikernel's
                    name and --instance, stable across boots)
  --instance N      which of several VMs of this unikernel (default 0)
  --vm-disk PATH    the disk image kv_rw, kv_store and block keep their data on
                    (made on first use; default: dist/NAME-disk.img beside the
                    image, NAME-N-disk.img for --instance N)
  --vm-disk-size MB the size of a disk image made now (default 256)
  --vm-timeout S    stop the VM after S seconds (exit status 124)
  --vm-stop-timeout S
                    after SIGTERM/SIGINT, give the guest S seconds to stop (default 10)
  --vm-machine NAME the machine qemu emulates: pc or microvm on x86_64 (virtio-mmio
                    devices, no PCI; the default when the image has virtio-mmio and
                    nothing needs PCI, else pc), virt on aarch64
  --vm-nic MODEL    the NIC qemu gives the guest: virtio (default) or vmxnet3
                    (a PCI machine; the image needs --nic-drivers with vmxnet3)
  --vm-trace        show the kernel's messages and /init's boot stages
"""


class LaunchError(Exception):
    """The machine could not be started as asked: exit code 2."""


@dataclass
class MachineOptions:
    tap: str | None = None
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout: float | None = None
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    mac: str | None = None
    instance: int = 0
    disk: str | None = None
    disk_size_mb: int | None = None
    accel: str = "tcg"
    trace: bool = False
    machine: str | None = None  # the architecture's default
    nic: str = "virtio"


MACHINE_OPTIONS = (
    "--vm-tap",
    "--vm-memory",
    "--vm-timeout",
    "--vm-stop-timeout",
    "--mac",
    "--instance",
    "--vm-disk",
    "--vm-disk-size",
    "--vm-machine",
    "--vm-nic",
)
MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def parse_mac(text: str) -> str:
    """``text`` as a MAC for a NIC: six octets, unicast."""
    if not MAC.match(text):
        raise LaunchError(f"--mac: {text!r} is not a MAC address like 02:00:00:00:00:01")
    if int(text[:2], 16) & 1:
        raise LaunchError(f"--mac: {text} is a multicast address; a NIC needs a unicast one")
    return text.lower()


def default_mac(unikernel: str, instance: int) -> str:
    """A locally administered unicast MAC from the unikernel's name and the
    instance number: the same at every boot, different for each instance."""
    digest = bytearray(hashlib.sha256(f"looming-vm/{unikernel}/{instance}".encode()).digest()[:6])
    digest[0] = (digest[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{b:02x}" for b in digest)


def check_mac_unused(tap: str, mac: str, sys_net: Path = Path("/sys/class/net")) -> None:
    """Refuse ``mac`` when the bridge ``tap`` is a port of has learnt it on
    another port: another VM uses it, and the two would share its traffic."""
    bridge_link = sys_net / tap / "master"
    port_file = sys_net / tap / "brport" / "port_no"
    if not bridge_link.exists() or not port_file.is_file():
        return
    bridge = bridge_link.resolve().name
    own_port = int(port_file.read_text().strip(), 0)
    try:
        table = (sys_net / bridge / "brforward").read_bytes()
    except OSError:
        return
    wanted = bytes.fromhex(mac.replace(":", ""))
    # struct __fdb_entry: mac[6], port_no u8, is_local u8, ageing u32, port_hi u8, pad, u16
    for offset in range(0, len(table) - 15, 16):
        entry = table[offset : offset + 16]
        port = entry[6] | (entry[12] << 8)
        if entry[:6] == wanted and port != own_port:
            raise LaunchError(
                f"the MAC {mac} is already used on bridge {bridge} (port {port}): "
                "give this VM another --instance or --mac"
            )


def _number(name: str, value: str, kind: type[int] | type[float]) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        raise LaunchError(f"{name}: {value!r} is not a number") from None
    if number < 0:
        raise LaunchError(f"{name}: {value!r} is negative")
    return number


def _set_option(options: MachineOptions, name: str, value: str) -> None:
    """One machine option (``--vm-tap``, ...) from its value on the command line."""
    if name == "--vm-tap":
        options.tap = value
    elif name == "--mac":
        options.mac = parse_mac(value)
    elif name == "--vm-disk":
        options.disk = value
    elif name == "--vm-machine":
        options.machine = value
    elif name == "--vm-nic":
        if value not in NIC_MODELS:
            raise LaunchError(
                f"--vm-nic: unknown NIC model {value!r}; choose from: {', '.join(NIC_MODELS)}"
            )
        options.nic = value
    elif name == "--instance":
        options.instance = int(_number(name, value, int))
    elif name == "--vm-disk-size":
        options.disk_size_mb = int(_number(name, value, int))
    elif name == "--vm-memory":
        options.memory_mb = int(_number(name, value, int))
    elif name == "--vm-timeout":
        options.timeout = _number(name, value, float)
    else:
        options.stop_timeout = _number(name, value, float)


def split_arguments(argv: Sequence[str]) -> tuple[MachineOptions, list[str]]:
    """Machine options (``--vm-*``, ``--mac``, ``--instance``) and the unikernel's keys."""
    options = MachineOptions(accel=os.environ.get("LOOMING_VM_ACCEL", "tcg"))
    keys: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if arg == "--vm-trace":
            options.trace = True
        elif name in MACHINE_OPTIONS:
            if not eq:
                if i + 1 == len(args):
                    raise LaunchError(f"{name} needs a value")
                i += 1
                value = args[i]
            _set_option(options, name, value)
        else:
            if any(c.isspace() for c in arg):
                raise LaunchError(f"{arg!r}: values on the kernel command line cannot hold spaces")
            keys.append(arg)
        i += 1
    return options, keys


@dataclass(frozen=True)
class Machine:
    """A machine qemu emulates for an architecture, and what differs on it."""

    name: str
    qemu: str  # the -M argument
    transport: str  # the kernel module of its virtio bus
    device_suffix: str  # qemu's virtio-net-<suffix> on that bus
    pci: bool  # whether PCI devices (vmxnet3, ivshmem) can be plugged in
    # Kernel arguments of the architecture's defaults it must not get.
    drop_arguments: tuple[str, ...] = ()
    uses_arch_firmware: bool = True
    # Whether the kernel is told the TSC's frequency (no PIT calibration).
    tsc_frequency: bool = False


MACHINES: dict[str, dict[str, Machine]] = {
    "x86_64": {
        "pc": Machine("pc", "pc", "virtio_pci", "pci", pci=True),
        # virtio-mmio devices, no PCI, no ACPI PM timer and no HPET: nothing
        # to calibrate the TSC against when TCG makes the PIT's calibration
        # fail, so the kernel is given the TSC's frequency; and no
        # noapictimer, as there is no HPET to tick instead of the APIC.
        "microvm": Machine(
            "microvm", "microvm", "virtio_mmio", "device", pci=False,
            drop_arguments=("noapictimer",), uses_arch_firmware=False, tsc_frequency=True,
        ),
    },
    "aarch64": {"virt": Machine("virt", "virt", "virtio_mmio", "device", pci=True)},
}  # fmt: skip
# qemu's NIC models, and the kernel module the guest needs for each.
NIC_MODELS = {"virtio": "virtio_net", "vmxnet3": "vmxnet3"}


def machine_for(arch: Arch, name: str | None) -> Machine:
    """The machine ``name`` of ``arch`` (None: the architecture's default)."""
    machines = MACHINES[arch.name]
    machine = machines.get(name or arch.machine)
    if machine is None:
        raise LaunchError(
            f"--vm-machine: {arch.name} images boot on {', '.join(machines)}, not {name!r}"
        )
    return machine


# The machine an image boots on without --vm-machine, when it can: x86_64's
# microvm reaches /init in half pc's time under emulation (no PCI bus to
# scan, no PCI interrupt links for ACPI's interpreter to set up, a far
# smaller ACPI table; 0.57 s against 1.10 s in one traced boot).
FASTER_MACHINE = {"x86_64": "microvm"}


def choose_machine(
    arch: Arch, manifest: dict[str, object], options: MachineOptions, disk: bool
) -> Machine:
    """``--vm-machine``'s machine; without it, the faster machine of
    :data:`FASTER_MACHINE` when the image and the run need nothing it lacks
    (the image carries its virtio driver; no vchan, whose ivshmem is a PCI
    device; no NIC but virtio; under TCG, the host's TSC rate is known, as
    the kernel has no timer to calibrate it against there), else the
    architecture's default."""
    if options.machine is not None or arch.name not in FASTER_MACHINE:
        return machine_for(arch, options.machine)
    faster = MACHINES[arch.name][FASTER_MACHINE[arch.name]]
    modules = manifest.get("kernel_modules")
    virtio = bool(options.tap) or disk or arch.entropy_device
    fits = (
        isinstance(modules, list)
        and (not virtio or faster.transport in {str(m).replace("-", "_") for m in modules})
        and not manifest.get("vchans")
        and not (options.tap and options.nic != "virtio")
        and (options.accel != "tcg" or tsc_khz() is not None)
    )
    return faster if fits else machine_for(arch, None)


def check_drivers(
    manifest: dict[str, object], machine: Machine, nic: str | None, virtio: bool
) -> None:
    """Refuse a machine or NIC the image has no driver for (its manifest
    lists the kernel modules it loads; an older manifest is not judged);
    ``virtio``: whether the machine gets virtio devices at all."""
    modules = manifest.get("kernel_modules")
    if not isinstance(modules, list):
        return
    loaded = {str(m).replace("-", "_") for m in modules}
    if virtio and machine.transport not in loaded:
        driver = machine.transport.replace("_", "-")
        raise LaunchError(
            f"--vm-machine {machine.name}: this image has no {driver} driver; configure "
            f"it with --nic-drivers including {driver} and build again"
        )
    if nic is None:
        return
    if nic != "virtio" and not machine.pci:
        raise LaunchError(f"--vm-nic {nic}: the {machine.name} machine has no PCI bus for it")
    if NIC_MODELS[nic] not in loaded:
        driver = nic if nic != "virtio" else machine.transport.replace("_", "-")
        raise LaunchError(
            f"--vm-nic {nic}: this image has no {driver} driver; configure it with "
            f"--nic-drivers including {driver} and build again"
        )


def kernel_command_line(
    manifest: dict[str, object], options: MachineOptions, machine: Machine, disk: bool
) -> list[str]:
    """The kernel's arguments, /init's environment among them, without the keys."""
    arch = get_arch(str(manifest["arch"]))
    # handed to /init as its environment
    nic = f"LOOMING_NIC={1 if options.tap else 0} LOOMING_DISK={1 if disk else 0}"
    nic += f" LOOMING_VCHAN_NAME={manifest.get('unikernel', 'looming')}"  # a served vchan's name
    # The console is the unikernel's: the kernel speaks only to panic (stall
    # warnings on a loaded emulating host are not the unikernel's business).
    # --vm-trace shows the kernel's messages and /init's stages with their times.
    verbosity = ["LOOMING_TRACE=1"] if options.trace else ["loglevel=1"]
    machine_arguments = [a for a in arch.kernel_arguments if a not in machine.drop_arguments]
    if machine.tsc_frequency and options.accel == "tcg":
        khz = tsc_khz()
        if khz is not None:
            machine_arguments.append(f"tsc_early_khz={khz}")
    cmdline = [f"console={arch.console}", *FAST_BOOT, *machine_arguments, *verbosity]
    return [*cmdline, "panic=-1", nic]


def qemu_command(
    manifest: dict[str, object],
    options: MachineOptions,
    keys: list[str],
    disk_image: Path | None = None,
) -> list[str]:
    """The qemu command line booting the image described by ``manifest``,
    with ``disk_image`` as its virtio disk when given."""
    arch: Arch = get_arch(str(manifest["arch"]))
    machine = choose_machine(arch, manifest, options, disk_image is not None)
    if manifest.get("needs_network") and not options.tap:
        raise LaunchError(
            "this unikernel drives a network interface: give --vm-tap NAME, a TAP device "
            "on the host (qemu creates it when missing and run as root)"
        )
    nic = options.nic if options.tap else None
    virtio = nic == "virtio" or disk_image is not None or arch.entropy_device
    check_drivers(manifest, machine, nic, virtio)
    if manifest.get("vchans") and not machine.pci:
        raise LaunchError(f"--vm-machine {machine.name}: vchans need a PCI machine (ivshmem)")
    minimum = minimum_memory_mb(manifest)
    if options.memory_mb < minimum:
        raise LaunchError(
            f"--vm-memory {options.memory_mb} is too little for this image: its kernel "
            f"and initramfs need at least {minimum} MB; give --vm-memory {minimum} or more"
        )
    qemu = shutil.which(arch.qemu)
    if qemu is None:
        raise LaunchError(f"{arch.qemu} is not installed; it runs {arch.name} images")
    cmdline = kernel_command_line(manifest, options, machine, disk_image is not None)
    command = [
        qemu,
        *machine_arguments(arch, machine, options),
        "-kernel", str(bootable_kernel(manifest)),
        "-initrd", str(manifest["initrd"]),
        "-append", " ".join([*cmdline, "--", *keys]),
    ]  # fmt: skip
    command += device_arguments(arch, machine, qemu, disk_image)
    if options.tap:
        mac = options.mac or default_mac(
            str(manifest.get("unikernel", "looming")), options.instance
        )
        check_mac_unused(options.tap, mac)
        command += [
            "-netdev", f"tap,id=net0,ifname={options.tap},script=no,downscript=no",
            *nic_arguments(machine, options.nic, mac),
        ]  # fmt: skip
    return command


def machine_arguments(arch: Arch, machine: Machine, options: MachineOptions) -> list[str]:
    """qemu's arguments for the machine itself: no devices, the serial console."""
    return [
        "-M", machine.qemu,
        "-accel", options.accel,
        "-cpu", arch.cpu,
        "-m", str(options.memory_mb),
        "-smp", "1",
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-serial", "stdio",
        "-no-reboot",
    ]  # fmt: skip


def device_arguments(arch: Arch, machine: Machine, qemu: str, disk_image: Path | None) -> list[str]:
    """The entropy device, the disk and the firmware, where the machine has them."""
    arguments = []
    if arch.entropy_device:
        arguments += ["-device", f"virtio-rng-{machine.device_suffix}"]
    if disk_image is not None:
        arguments += _disk_arguments(disk_image, machine)
    firmware = _firmware(qemu, arch.firmware) if machine.uses_arch_firmware else None
    if firmware is not None:
        arguments += ["-bios", firmware]
    return arguments


def nic_arguments(machine: Machine, nic: str, mac: str, netdev: str = "net0") -> list[str]:
    """The NIC of model ``nic`` on ``netdev``, with ``mac``."""
    model = f"virtio-net-{machine.device_suffix}" if nic == "virtio" else nic
    return ["-device", f"{model},netdev={netdev},mac={mac}"]


_TSC_KHZ: list[int | None] = []


def tsc_khz() -> int | None:
    """This x86_64 host's TSC frequency in kHz (TCG's guest TSC counts the
    host's), measured against the monotonic clock; None elsewhere."""
    if not _TSC_KHZ:
        _TSC_KHZ.append(_measure_tsc_khz())
    return _TSC_KHZ[0]


def _measure_tsc_khz() -> int | None:
    import ctypes
    import mmap
    import platform

    if platform.machine() != "x86_64":
        return None
    # rdtsc; shl rdx, 32; or rax, rdx; ret
    code = bytes.fromhex("0f3148c1e2204809d0c3")
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:  # a host refusing writable code: the guest calibrates itself
        return None
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(address)
    # Each reading of the TSC is bracketed by two of the clock; of several
    # samples, the one with the tightest brackets wins (a loaded host may
    # preempt the launcher between a reading and its clock).
    samples = []
    for _ in range(4):
        before, first, after = time.perf_counter_ns(), int(rdtsc()), time.perf_counter_ns()
        time.sleep(0.015)
        later, second, last = time.perf_counter_ns(), int(rdtsc()), time.perf_counter_ns()
        spread = (after - before) + (last - later)
        elapsed = (later + last) / 2 - (before + after) / 2
        samples.append((spread, int((second - first) * 1_000_000 / elapsed)))
    del rdtsc
    return min(samples)[1]


def _disk_arguments(image: Path, machine: Machine) -> list[str]:
    """The disk image as a virtio-blk device. ``cache=writeback``: the guest
    sees a volatile write cache, and each flush it sends (the file system's,
    on an fsync) becomes an fdatasync of the image on the host, so what the
    guest synced survives qemu's death and the host's."""
    escaped = str(image).replace(",", ",,")  # qemu's option syntax doubles commas
    return [
        "-drive", f"file={escaped},format=raw,if=none,id=disk0,cache=writeback,discard=unmap",
        "-device", f"virtio-blk-{machine.device_suffix},drive=disk0",
    ]  # fmt: skip


def _firmware(qemu: str, name: str | None) -> str | None:
    """``name`` if it is among the firmware files beside ``qemu`` (Debian's
    qemu-system-data), else None: qemu then starts with its default."""
    if name is None:
        return None
    data = Path(qemu).resolve().parent.parent / "share" / "qemu"
    return name if (data / name).is_file() else None


# Measured: hello on x86_64 (kernel 50.8 MiB unpacked, initramfs 5.6 MiB
# packed, 12.4 MiB unpacked) never boots in 88 MB and sometimes not in 96 MB
# (the kernel ran out of memory while unpacking); the kernel needs its
# image, the packed initramfs and its unpacked files in memory at once, plus
# memory of its own: 32 MB (104 MB for hello) booted in most tries, not all;
# 48 MB (120 MB for hello) leaves a margin over what was ever seen to fail.
KERNEL_OWN_MB = 48


def minimum_memory_mb(manifest: dict[str, object]) -> int:
    """The least guest memory, in MB rounded up to 8, the image boots in."""
    sizes = [manifest.get(k) for k in ("kernel_unpacked", "initrd_size", "initrd_unpacked")]
    if not all(isinstance(size, int) for size in sizes):
        return 0  # an older manifest: qemu will tell
    needed = sum(int(str(size)) for size in sizes) / 2**20 + KERNEL_OWN_MB
    return int(math.ceil(needed / 8) * 8)


def load_manifest(path: Path) -> dict[str, object]:
    """The manifest at ``path``, its file names made absolute: they are
    relative to its folder, so ``dist/`` can be moved or copied anywhere."""
    try:
        manifest: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LaunchError(f"cannot read the image's manifest {path}: {error}") from None
    manifest.setdefault("unikernel", path.name.removesuffix("-vm.json"))
    for field in ("kernel", "initrd"):
        if field in manifest:
            manifest[field] = str(path.resolve().parent / str(manifest[field]))
    return manifest


def bootable_kernel(manifest: dict[str, object]) -> Path:
    """The file qemu's ``-kernel`` gets: the image's own, or for a kernel
    packed with xz, that kernel unpacked on the host (cached by its SHA-256)."""
    kernel = Path(str(manifest["kernel"]))
    if manifest.get("kernel_format") not in PACKED_FORMATS:
        return kernel
    size = manifest.get("kernel_unpacked")
    if not isinstance(size, int):
        raise LaunchError(f"the image's manifest gives no unpacked size for {kernel}")
    try:
        return unpacked_kernel(kernel, str(manifest["kernel_sha256"]), size, kernels_cache())
    except (OSError, KernelError) as error:
        raise LaunchError(f"cannot unpack the kernel: {error}") from None


STOP_MESSAGE = "looming-vm: stop"  # read by /init from the serial line; see init.py
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In qemu's child before exec: SIGKILL when the launcher dies, however it dies."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _Signals:
    """SIGTERM and SIGINT, recorded (never raised) and announced on a pipe the
    console loop watches: a signal arriving at any moment, even twice within
    microseconds, cannot interrupt the launcher with an exception."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        self.previous = {s: signal.signal(s, self._record) for s in (signal.SIGTERM, signal.SIGINT)}

    def _record(self, signum: int, _frame: object) -> None:
        self.received.append(signum)
        try:
            os.write(self.write_fd, b"s")
        except OSError:  # the pipe is full: the loop has enough to wake it
            pass

    def close(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        os.close(self.read_fd)
        os.close(self.write_fd)


class _Console:
    """Lines from qemu's serial console: shown, except the exit-status line."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.pending = b""
        self.status: int | None = None

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").replace("\r", "")
            if line.startswith(EXIT_MARKER):
                try:
                    self.status = int(line[len(EXIT_MARKER) :].strip())
                except ValueError:
                    self.status = NO_STATUS
            elif line != STOP_MESSAGE and not POWER_DOWN.match(line):
                self.out(line + "\n")  # (the guest's tty echoes the stop message)


def _ask_guest_to_stop(qemu: subprocess.Popen[bytes]) -> None:
    assert qemu.stdin is not None
    try:
        qemu.stdin.write(STOP_MESSAGE.encode() + b"\n")
        qemu.stdin.flush()
    except OSError:  # qemu already gone
        pass


def _supervise(
    qemu: subprocess.Popen[bytes],
    signals: _Signals,
    console: _Console,
    options: MachineOptions,
) -> int | None:
    """Stream the console until qemu ends; the status when it is not the guest's.

    The first SIGTERM or SIGINT asks the guest to stop (the unikernel closes
    its devices and /init powers off) and gives it ``options.stop_timeout``
    seconds; a second signal, or the time running out, kills qemu.
    """
    assert qemu.stdout is not None
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    handled = 0
    with selectors.DefaultSelector() as selector:
        selector.register(qemu.stdout, selectors.EVENT_READ, "console")
        selector.register(signals.read_fd, selectors.EVENT_READ, "signal")
        while True:
            if len(signals.received) > handled:
                if handled == 0:
                    handled = 1
                    _ask_guest_to_stop(qemu)
                    stop_at = time.monotonic() + options.stop_timeout
                    deadline = stop_at if deadline is None else min(deadline, stop_at)
                if len(signals.received) > 1:
                    console.out("looming: stopping the VM at once\n")
                    qemu.kill()
                    return 128 + signals.received[0]
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait == 0.0:
                if signals.received:
                    console.out("looming: the guest did not stop in time; killing it\n")
                    qemu.kill()
                    return 128 + signals.received[0]
                console.out(f"looming: the VM ran over {options.timeout} s; stopping it\n")
                return TIMED_OUT
            for key, _events in selector.select(wait):
                if key.data == "signal":
                    os.read(signals.read_fd, 512)
                    continue
                chunk = os.read(qemu.stdout.fileno(), 65536)
                if not chunk:
                    return None
                console.feed(chunk)


def boot(
    manifest_path: Path,
    argv: Sequence[str],
    write: Callable[[str], None] | None = None,
) -> int:
    """Boot the image, stream its console, and return the unikernel's status.

    The status is the one /init reports (also after SIGTERM or SIGINT, which
    the unikernel handles as on the unix target); 128 + N when signal N had
    qemu killed (a second signal, or the guest not stopping in time); 124
    when ``--vm-timeout`` ran out; 125 when qemu ended without a status (the
    guest did not get as far as /init).
    """
    options, keys = split_arguments(argv)
    manifest = load_manifest(manifest_path)
    out = write or _write_stdout
    if ("--help" in keys or "-h" in keys) and isinstance(manifest.get("usage"), str):
        # The keys were read from the generated main.py at build time:
        # listing them needs no VM.
        out(str(manifest["usage"]) + "\n" + MACHINE_USAGE)
        return 0
    image = _disk_path(manifest_path, manifest, options)
    command = qemu_command(manifest, options, keys, image)
    vchans = _attach_vchans(manifest)
    lock = None
    try:
        lock = None if image is None else _attach_disk(image, options, out)
        return _run_qemu(command + vchans.arguments, options, out)
    finally:
        if lock is not None:
            lock.close()
        vchans.close()


class _NoVchans:
    """What a VM without vchans attaches: nothing."""

    def __init__(self) -> None:
        self.arguments: list[str] = []

    def close(self) -> None:
        pass


def _attach_vchans(manifest: dict[str, object]) -> ivshmem.Attached | _NoVchans:
    """The ivshmem regions of the image's vchans (:mod:`looming.vm.ivshmem`,
    imported only then: it brings asyncio, a tenth of the launcher's start)."""
    specs = manifest.get("vchans")
    if not specs:
        return _NoVchans()
    from looming.vm import ivshmem

    try:
        return ivshmem.attach(
            str(manifest.get("unikernel", "looming")), specs if isinstance(specs, list) else []
        )
    except ivshmem.IvshmemError as error:
        raise LaunchError(str(error)) from None


def _disk_path(
    manifest_path: Path, manifest: dict[str, object], options: MachineOptions
) -> Path | None:
    """The VM's disk image: ``--vm-disk``, or the default for the unikernel
    and instance; None when the unikernel keeps nothing on a disk."""
    if not manifest.get("needs_disk"):
        return None
    if options.disk:
        return Path(options.disk).resolve()
    unikernel = str(manifest.get("unikernel", "looming"))
    return disk.default_path(manifest_path, unikernel, options.instance)


def _attach_disk(image: Path, options: MachineOptions, out: Callable[[str], None]) -> disk.DiskLock:
    """The disk image, made when missing, checked and locked."""
    try:
        lock, note = disk.prepare(image, options.disk_size_mb)
    except disk.DiskError as error:
        raise LaunchError(str(error)) from None
    if note is not None:
        out(f"looming: {note}\n")
    return lock


def _run_qemu(command: list[str], options: MachineOptions, out: Callable[[str], None]) -> int:
    """Run qemu, stream its console and return the status (see :func:`boot`)."""
    signals = _Signals()
    console = _Console(out)
    status: int | None = None
    try:
        qemu = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the launcher decides when qemu stops
            preexec_fn=_die_with_parent,
        )
        try:
            status = _supervise(qemu, signals, console, options)
        finally:
            if qemu.poll() is None:
                qemu.kill()
            code = qemu.wait()
            for stream in (qemu.stdin, qemu.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
    finally:
        signals.close()
    if status is not None:
        return status
    if console.status is not None:
        return console.status
    if signals.received:
        return 128 + signals.received[0]
    out(f"looming: qemu ended (status {code}) without the unikernel's exit status\n")
    return NO_STATUS


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m looming.vm.launch IMAGE.json [--vm-tap NAME] [KEYS...]")
        return 2
    try:
        return boot(Path(args[0]), args[1:])
    except LaunchError as error:
        print(f"looming: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
