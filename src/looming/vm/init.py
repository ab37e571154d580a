"""The guest's /init: the only program in a looming VM image besides the unikernel.

The kernel starts this file as process 1 with the image's Python (``-ISB``).
It mounts /proc and /sys, loads the virtio modules (``finit_module``, as
there is no modprobe), gives the loopback its address, brings the NIC's
link up with IPv6 off (the kernel must not speak on it: looming's own stack
drives it through an AF_PACKET socket), mounts the disk ``looming run``
attached when the unikernel keeps its storage there, runs the unikernel's
zipapp in this same interpreter with the keys from the kernel command line,
and powers the machine off (after writing out and unmounting the disk). The exit status goes out on the console as the last line, where
``looming run`` reads it.

At build time ``CONFIG`` is replaced by the image's settings. Only the
standard library is used here.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import marshal
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
import zipimport
from typing import Any

CONFIG: dict[str, Any] = {}

EXIT_MARKER = "looming-vm: exit status"
STOP_MESSAGE = b"looming-vm: stop"  # the launcher's request, on the serial line
RB_POWER_OFF = 0x4321FEDC
# Firecracker has no power-off: the guest ends it by rebooting (reboot=k).
RB_AUTOBOOT = 0x01234567
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
IFF_UP = 0x1
EEXIST = 17
# A driver for hardware the machine lacks (Xen's netfront outside Xen,
# Hyper-V's vmbus outside Hyper-V) refuses to load, and what depends on it
# with it: no such device, or unknown symbols.
ABSENT = (2, 6, 19)  # ENOENT, ENXIO, ENODEV
ARPHRD_ETHER = "1"
MS_NOATIME = 0x400

libc = ctypes.CDLL(None, use_errno=True)


TRACE = os.environ.get("LOOMING_TRACE") == "1"


def say(message: str) -> None:
    print(f"looming-vm: {message}", flush=True)


def trace(stage: str) -> None:
    """With --vm-trace: when each stage of boot was reached (seconds since boot)."""
    if TRACE:
        say(f"{time.monotonic():8.3f} {stage}")


def mount(source: str, target: str, kind: str) -> None:
    os.makedirs(target, exist_ok=True)
    if libc.mount(source.encode(), target.encode(), kind.encode(), 0, None) != 0:
        say(f"mount {kind} on {target}: {os.strerror(ctypes.get_errno())}")


def load_module(path: str, system_call: int) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        if libc.syscall(system_call, descriptor, b"", 0) != 0:
            error = ctypes.get_errno()
            if error in ABSENT:
                trace(f"{os.path.basename(path)}: {os.strerror(error)} (not this machine's)")
            elif error != EEXIST:
                raise OSError(error, f"loading {path}: {os.strerror(error)}")
    finally:
        os.close(descriptor)


def _ifreq(name: str, payload: bytes) -> bytes:
    return struct.pack("16s16s", name.encode(), payload)


def _sockaddr_in(address: str) -> bytes:
    return struct.pack("<H2x4s8x", socket.AF_INET, socket.inet_aton(address))


def link_up(control: socket.socket, name: str) -> None:
    flags_answer = fcntl.ioctl(control, SIOCGIFFLAGS, _ifreq(name, b""))
    flags = struct.unpack_from("<H", flags_answer, 16)[0]
    fcntl.ioctl(control, SIOCSIFFLAGS, _ifreq(name, struct.pack("<H14x", flags | IFF_UP)))


def configure_network(interface: str | None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        fcntl.ioctl(control, SIOCSIFADDR, _ifreq("lo", _sockaddr_in("127.0.0.1")))
        fcntl.ioctl(control, SIOCSIFNETMASK, _ifreq("lo", _sockaddr_in("255.0.0.0")))
        link_up(control, "lo")
        if interface is None:
            return
        # The NIC is the unikernel's alone: no IPv6 addresses, no kernel traffic.
        for setting in ("all", "default"):
            try:
                with open(f"/proc/sys/net/ipv6/conf/{setting}/disable_ipv6", "w") as knob:
                    knob.write("1")
            except OSError:
                pass
        found = find_nic(interface, time.monotonic() + 2.0)
        if found is None:
            say("no ethernet interface appeared; running without a network")
            return
        name, driver = found
        os.environ["LOOMING_VM_NIC"] = name  # for looming.vm.nic
        say(f"network interface {name} (driver {driver})")
        link_up(control, name)


def find_nic(preferred: str, deadline: float) -> tuple[str, str] | None:
    """The NIC whichever driver made it: ``preferred`` when there, else the
    first ethernet interface by name; with its driver's name."""
    while True:
        try:
            names = sorted(n for n in os.listdir("/sys/class/net") if n != "lo")
        except OSError:
            names = []
        ethernet = []
        for name in names:
            try:
                with open(f"/sys/class/net/{name}/type") as kind:
                    if kind.read().strip() == ARPHRD_ETHER:
                        ethernet.append(name)
            except OSError:
                pass
        if ethernet:
            name = preferred if preferred in ethernet else ethernet[0]
            try:
                driver = os.path.basename(os.readlink(f"/sys/class/net/{name}/device/driver"))
            except OSError:
                driver = "unknown"
            return name, driver
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def _disk_device(deadline: float) -> str | None:
    """The virtio disk's name in /sys/block (``vda``), waited for until ``deadline``."""
    while True:
        try:
            disks = sorted(name for name in os.listdir("/sys/block") if name.startswith("vd"))
        except OSError:
            disks = []
        if disks:
            return disks[0]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def mount_disk(mount_point: str | None) -> None:
    """Mount the VM's disk (ext4, made by ``looming run``) at ``mount_point``.

    There is no udev: the device node is made from the numbers in sysfs.
    Storage devices find the disk mounted or say that it is not.
    """
    if mount_point is None or os.environ.get("LOOMING_DISK") != "1":
        return
    name = _disk_device(time.monotonic() + 2.0)
    if name is None:
        say("no virtio disk appeared; storage devices will have no disk")
        return
    with open(f"/sys/block/{name}/dev") as numbers:
        major, minor = (int(n) for n in numbers.read().split(":"))
    node = f"/dev/{name}"
    if not os.path.exists(node):
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
    os.makedirs(mount_point, exist_ok=True)
    if libc.mount(node.encode(), mount_point.encode(), b"ext4", MS_NOATIME, None) != 0:
        say(f"mount {node} on {mount_point}: {os.strerror(ctypes.get_errno())}")
    else:
        trace(f"disk {node} mounted on {mount_point}")


def unmount_disk(mount_point: str | None) -> None:
    """Write everything out and unmount, so the next boot needs no journal replay."""
    os.sync()
    if mount_point is None or not os.path.ismount(mount_point):
        return
    if libc.umount2(mount_point.encode(), 0) != 0:
        say(f"unmount {mount_point}: {os.strerror(ctypes.get_errno())} (written out)")


def _stop_before_the_runtime(signum: int, _frame: object) -> None:
    # SIGTERM before the unikernel's runtime set its own handler (process 1
    # ignores signals it has no handler for): stop as the runtime would.
    raise SystemExit(0)


def listen_for_stop() -> None:
    """On the launcher's stop message, SIGTERM to this process: the
    unikernel's runtime stops and closes its devices as on the unix target.

    The serial line's input is the launcher's channel; it carries nothing else.
    """
    signal.signal(signal.SIGTERM, _stop_before_the_runtime)

    def listen() -> None:
        line = b""
        while True:
            try:
                chunk = os.read(0, 256)
            except OSError:
                return
            if not chunk:
                return
            line += chunk
            if STOP_MESSAGE in line:
                os.kill(os.getpid(), signal.SIGTERM)
                line = b""
            line = line[-len(STOP_MESSAGE) :]

    threading.Thread(target=listen, name="looming-stop", daemon=True).start()


def use_boot_cache(path: str | None) -> None:
    """Answer ``@dataclass``'s generated functions and ``re``'s compiled
    patterns from the build's cache (:mod:`looming.vm.bootcache`) when their
    text is the one recorded; compile anything else as usual."""
    if path is None:
        return
    try:
        with open(path, "rb") as stream:
            cache = marshal.load(stream)
    except (OSError, EOFError, ValueError, TypeError):
        return
    if not isinstance(cache, dict) or cache.get("version") != CONFIG.get("boot_cache_version"):
        return
    import dataclasses
    import re

    functions: dict[str, Any] = cache["functions"]

    def cached_exec(source: Any, globals: Any = None, locals: Any = None, /) -> None:
        code = functions.get(source) if type(source) is str else None
        exec(source if code is None else code, globals, locals)

    dataclasses.exec = cached_exec  # type: ignore[attr-defined]  # its only exec
    compiler = sys.modules[re.__name__ + "._compiler"]
    if cache["re_magic"] == compiler.MAGIC:
        _cache_patterns(compiler, cache["patterns"])
    trace(f"boot cache: {len(functions)} functions, {len(cache['patterns'])} patterns")


def _cache_patterns(compiler: Any, patterns: dict[tuple[Any, int], tuple[Any, ...]]) -> None:
    compile_pattern = compiler.compile
    make = compiler._sre.compile

    def cached_compile(pattern: Any, flags: int = 0) -> Any:
        found = patterns.get((pattern, int(flags))) if type(pattern) in (str, bytes) else None
        return compile_pattern(pattern, flags) if found is None else make(pattern, *found)

    compiler.compile = cached_compile


def collect_garbage_after_imports(poll: float = 0.5, limit: float = 30.0) -> None:
    """No garbage collection (:func:`main` turned it off) while the
    unikernel imports its modules.

    Importing makes objects that live as long as the program, and the
    collector traversing them again and again took a tenth of the boot
    under emulation. It is turned back on once a whole ``poll`` interval
    passed with no module imported (the unikernel is then serving, or
    waiting), or after ``limit`` seconds.
    """

    def watch() -> None:
        deadline = time.monotonic() + limit
        seen = -1
        while len(sys.modules) != seen and time.monotonic() < deadline:
            seen = len(sys.modules)
            time.sleep(poll)
        gc.enable()
        trace("garbage collection on")

    threading.Thread(target=watch, name="looming-gc", daemon=True).start()


def run_unikernel(archive: str, argv: list[str]) -> int:
    sys.argv = [archive, *argv]
    sys.path.insert(0, archive)
    if CONFIG.get("app_tree"):  # the app's modules beside the files they read, as files
        sys.path.insert(0, str(CONFIG["app_tree"]))
        os.chdir(str(CONFIG["app_tree"]))  # StaticFiles(directory="static") finds it there
    if CONFIG.get("site_packages"):  # the wheels of packages with compiled code
        sys.path.append(str(CONFIG["site_packages"]))
    try:
        # What runpy.run_path does for a zipapp (the archive's __main__ runs
        # as the __main__ module), without importing runpy, pkgutil and
        # importlib.util: tens of milliseconds at boot under emulation.
        # zipimport is frozen into the interpreter and already loaded.
        importer = zipimport.zipimporter(archive)
        main_code = importer.get_code("__main__")
        main_module = type(sys)("__main__")
        main_module.__file__ = importer.get_filename("__main__")
        main_module.__loader__ = importer
        main_module.__spec__ = importer.find_spec("__main__")
        main_module.__package__ = ""
        sys.modules["__main__"] = main_module
        exec(main_code, main_module.__dict__)
    except SystemExit as stop:
        code = stop.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr, flush=True)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def power_off(status: int) -> None:
    sys.stderr.flush()
    unmount_disk(CONFIG.get("disk"))
    print(f"{EXIT_MARKER} {status}", flush=True)
    libc.reboot(RB_AUTOBOOT if os.environ.get("LOOMING_EXIT") == "reboot" else RB_POWER_OFF)
    while True:  # process 1 must never return
        time.sleep(3600)


def main() -> None:
    status = 1
    trace("/init started")
    gc.disable()  # until the unikernel's imports are done
    try:
        mount("proc", "/proc", "proc")
        mount("sysfs", "/sys", "sysfs")
        for path in CONFIG.get("modules", []):
            load_module(path, int(CONFIG["finit_module"]))
        trace("modules loaded")
        # The launcher says on the kernel command line whether there is a NIC.
        nic = CONFIG.get("interface") if os.environ.get("LOOMING_NIC") == "1" else None
        configure_network(nic)
        mount_disk(CONFIG.get("disk"))
        listen_for_stop()
        trace("network configured; starting the unikernel")
        use_boot_cache(CONFIG.get("boot_cache"))
        collect_garbage_after_imports()
        status = run_unikernel(str(CONFIG["archive"]), sys.argv[1:])
    except BaseException:
        traceback.print_exc()
    power_off(status)


if __name__ == "__main__":
    main()
