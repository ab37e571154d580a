"""Boot from the disk image (UEFI, and BIOS on x86_64) against ``-kernel``.

For each architecture, the static website is built as a VM image and as a
qcow2 disk image (``looming build --disk-image qcow2``); then, interleaved
round by round, qemu boots it (a) the way ``looming run`` does, with
``-kernel`` and ``-initrd`` (qboot on x86_64), and (b) from the disk under
UEFI firmware (OVMF / AAVMF) with no ``-kernel``, and on x86_64 (c) from the
disk under SeaBIOS through syslinux. Each boot uses qemu's user-mode
network with the guest's port forwarded to a free loopback port; the time
from starting qemu to the first HTTP answer is measured. Prints the
medians, the ratio to ``-kernel``, the sizes and the versions. Software
emulation (TCG); no root needed:

    .venv/bin/python bench/disk_image.py [--rounds N] [--arch ARCH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from looming.vm.arch import get_arch  # noqa: E402
from looming.vm.diskimage import qemu_command  # noqa: E402
from looming.vm.launch import MachineOptions, load_manifest  # noqa: E402
from looming.vm.launch import qemu_command as kernel_command  # noqa: E402


def _looming(app: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "looming.cli", *args], cwd=app, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"looming {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answered(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return conn.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def _time_boot(command: list[str], port: int, limit: float = 120) -> float:
    started = time.monotonic()
    qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while time.monotonic() - started < limit:
            if _answered(port):
                return time.monotonic() - started
            if qemu.poll() is not None:
                raise SystemExit(f"qemu ended: {' '.join(command)}")
            time.sleep(0.05)
        raise SystemExit(f"no answer in {limit} s: {' '.join(command)}")
    finally:
        qemu.kill()
        qemu.wait()


def _user_net(port: int) -> str:
    return f"user,id=net0,net=10.0.0.0/24,host=10.0.0.1,hostfwd=tcp:127.0.0.1:{port}-10.0.0.2:8080"


def _with_user_net(command: list[str], port: int) -> list[str]:
    """``looming run``'s qemu command with the TAP back end swapped for user-mode networking."""
    at = command.index("-netdev") + 1
    return [*command[:at], _user_net(port), *command[at + 1 :]]


def _commands(app: Path, arch_name: str) -> dict[str, object]:
    manifest_path = app / "dist" / "website-vm.json"
    manifest = load_manifest(manifest_path)
    disk = app / "dist" / f"website-boot-{arch_name}.qcow2"
    arch = get_arch(arch_name)

    def kernel(port: int) -> list[str]:
        return _with_user_net(kernel_command(manifest, MachineOptions(tap="bench"), []), port)

    def uefi(port: int) -> list[str]:
        return qemu_command(arch, disk, "qcow2", _user_net(port))

    def bios(port: int) -> list[str]:
        return qemu_command(arch, disk, "qcow2", _user_net(port), uefi=False)

    cases = {"-kernel": kernel, "uefi disk": uefi}
    if arch_name == "x86_64":
        cases["bios disk"] = bios
    data = json.loads(manifest_path.read_text())
    raw = subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    print(
        f"{arch_name}: image {data['kernel_size'] + data['initrd_size']} bytes packed, "
        f"{data['booted_size']} as booted; qcow2 {disk.stat().st_size} bytes, "
        f"disk {json.loads(raw.stdout)['virtual-size']} bytes"
    )
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arch", choices=("x86_64", "aarch64"))
    args = parser.parse_args()
    arches = [args.arch] if args.arch else ["x86_64", "aarch64"]
    for tool in ("qemu-system-x86_64", "qemu-img"):
        print(
            subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.split("\n")[
                0
            ]
        )
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as work:
        for arch_name in arches:
            app = Path(work) / f"static_website-{arch_name}"
            shutil.copytree(REPO / "examples" / "static_website", app,
                            ignore=shutil.ignore_patterns("_build", "dist"))  # fmt: skip
            _looming(app, "configure", "-t", "vm", "--arch", arch_name)
            _looming(app, "build", "--disk-image", "qcow2")
            cases = _commands(app, arch_name)
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _round in range(args.rounds):  # interleaved: A B (C) A B (C) ...
                for name, command in cases.items():
                    port = _port()
                    times[name].append(_time_boot(command(port), port))  # type: ignore[operator]
            base = statistics.median(times["-kernel"])
            for name, values in times.items():
                median = statistics.median(values)
                shown = " ".join(f"{v:.2f}" for v in values)
                print(f"  {arch_name} {name:10} median {median:.2f} s "
                      f"(x{median / base:.2f} of -kernel)  [{shown}]")  # fmt: skip


if __name__ == "__main__":
    main()
