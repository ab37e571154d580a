"""NIC drivers of other hypervisors in an image, and the machines and NICs
``looming run`` boots it on: virtio-pci on pc, virtio-mmio on microvm, vmxnet3.

Xen's netfront, AWS's ENA and Hyper-V's netvsc cannot be emulated here: for
them, the modules and what they depend on are checked to be in the image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.errors import UsageError
from looming.vm import elf, launch
from looming.vm.arch import get_arch
from looming.vm.image import _kernel_modules
from looming.vm.nic import NIC_DRIVERS, NicDriverError, driver_modules, parse_nic_drivers
from looming.vm.packages import cache_root
from tests.vm.conftest import EXAMPLES, TapNamespace, build, looming

ALL_DRIVERS = "virtio-pci,virtio-mmio,vmxnet3,xen-netfront,ena,netvsc"


@pytest.fixture(scope="module")
def website() -> Iterator[Path]:
    """static_website for x86_64 with every NIC driver and the Firecracker files."""
    with tempfile.TemporaryDirectory(prefix="looming-nics-") as root:
        yield build(
            EXAMPLES / "static_website",
            Path(root),
            "x86_64",
            ("--nic-drivers", ALL_DRIVERS, "--firecracker"),
        )


@given(st.lists(st.sampled_from(sorted(NIC_DRIVERS)), min_size=1, max_size=8))
def test_driver_lists_keep_their_order_without_repeats(names: list[str]) -> None:
    drivers = parse_nic_drivers(",".join(names), "virtio_pci")
    assert list(drivers) == list(dict.fromkeys(names))
    modules = driver_modules(drivers)
    assert len(modules) == len(set(modules))
    assert {m for d in drivers for m in NIC_DRIVERS[d]} == set(modules)


def test_the_default_driver_is_the_machines_virtio() -> None:
    assert parse_nic_drivers(None, "virtio_pci") == ("virtio-pci",)
    assert parse_nic_drivers("", "virtio_mmio") == ("virtio-mmio",)
    with pytest.raises(NicDriverError, match="unknown NIC driver 'e1000'; choose from: virtio"):
        parse_nic_drivers("virtio-pci,e1000", "virtio_pci")


def test_an_unknown_driver_is_refused_at_configure(tmp_path: Path) -> None:
    app = tmp_path / "hello"
    app.mkdir()
    for name in ("config.py", "unikernel.py"):
        (app / name).write_text((EXAMPLES / "hello" / name).read_text())
    done = looming(app, "configure", "-t", "vm", "--arch", "x86_64", "--nic-drivers", "e1000")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "looming: --nic-drivers: unknown NIC driver 'e1000'; choose from: "
        "virtio-pci, virtio-mmio, vmxnet3, xen-netfront, ena, netvsc"
    ]
    assert not (app / "_build").exists()


def _cpio_names(data: bytes) -> dict[str, bytes]:
    """The files of a newc cpio archive, by name."""
    files: dict[str, bytes] = {}
    offset = 0
    while True:
        assert data[offset : offset + 6] == b"070701"
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        size, name_size = fields[6], fields[11]
        name = data[offset + 110 : offset + 110 + name_size - 1].decode()
        start = (offset + 110 + name_size + 3) & ~3
        if name == "TRAILER!!!":
            return files
        files[name] = data[start : start + size]
        offset = (start + size + 3) & ~3


@pytest.mark.slow
def test_every_driver_and_its_dependencies_are_in_the_image(website: Path, tmp_path: Path) -> None:
    manifest = json.loads((website / "dist" / "website-vm.json").read_text())
    initrd = website / "dist" / manifest["initrd"]
    raw = subprocess.run(["lz4", "-d", "-c", str(initrd)], capture_output=True, check=True).stdout
    files = _cpio_names(raw)
    order = [Path(p).stem.replace("-", "_") for p in manifest["kernel_modules"]]
    wanted = {"virtio_pci", "virtio_mmio", "virtio_net", "vmxnet3", "xen_netfront", "ena"}
    assert wanted | {"hv_netvsc", "hv_vmbus"} <= set(order)
    builtin = set()
    for name in sorted(manifest["kernel_modules"]):
        module = files[f"lib/modules/{name}.ko"]
        (tmp_path / f"{name}.ko").write_bytes(module)
        # Every dependency is in the image (or built into the kernel), loaded before.
        for dependency in filter(
            None, elf.module_info(tmp_path / f"{name}.ko").get("depends", "").split(",")
        ):
            dependency = dependency.replace("-", "_")
            if dependency in order:
                assert order.index(dependency) < order.index(name.replace("-", "_")), name
            else:
                builtin.add(dependency)
    assert not builtin, f"dependencies neither in the image nor checked built in: {builtin}"


@pytest.mark.slow
def test_a_driver_the_kernel_lacks_is_refused(website: Path, tmp_path: Path) -> None:
    # The build of ``website`` fetched Debian's x86_64 kernel into the cache.
    trees = sorted((cache_root() / "amd64" / "trees").glob("linux-image-*"))
    real = next((trees[-1] / "lib" / "modules").iterdir())
    fake = tmp_path / "lib" / "modules" / real.name
    fake.mkdir(parents=True)
    (fake / "modules.builtin").symlink_to(real / "modules.builtin")
    for module in real.rglob("*.ko"):
        if module.name != "vmxnet3.ko":
            (fake / module.name).symlink_to(module)
    arch = get_arch("x86_64")
    with pytest.raises(UsageError, match=f"kernel {real.name} has no vmxnet3 driver"):
        _kernel_modules(tmp_path, arch, nic_drivers=("virtio-pci", "vmxnet3"))
    _version, modules = _kernel_modules(tmp_path, arch, nic_drivers=("ena",))
    assert "ena" in [m.stem for m in modules]


@pytest.mark.slow
def test_a_bad_driver_at_build_leaves_dist_as_it_was(website: Path) -> None:
    state_file = website / "_build" / "looming.json"
    state = state_file.read_text()
    before = sorted(str(p.relative_to(website)) for p in (website / "dist").rglob("*"))
    bad = json.loads(state)
    bad["options"]["nic_drivers"] = "virtio-pci,rtl8139"
    state_file.write_text(json.dumps(bad))
    try:
        done = looming(website, "build")
    finally:
        state_file.write_text(state)
    assert done.returncode == 2
    assert "unknown NIC driver 'rtl8139'" in done.stderr
    assert sorted(str(p.relative_to(website)) for p in (website / "dist").rglob("*")) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vm-machine", "q35"], "x86_64 images boot on pc, microvm, not 'q35'"),
        (["--vm-nic", "e1000"], "unknown NIC model 'e1000'; choose from: virtio, vmxnet3"),
        (["--vm-machine", "microvm"], "this image has no virtio-mmio driver"),
        (["--vm-nic", "vmxnet3"], "this image has no vmxnet3 driver"),
        (["--vm-machine", "microvm", "--vm-nic", "vmxnet3"], "has no PCI bus for it"),
        (["--vm-nic", "virtio"], "no virtio-pci driver; configure it with --nic-drivers"),
    ],
)
def test_a_machine_or_nic_the_image_cannot_use_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    image = tmp_path / "website-vm.json"
    modules = ["virtio_pci", "virtio_net"]
    if "--vm-nic" in argv and "microvm" in argv:
        modules += ["virtio_mmio", "vmxnet3"]
    if argv == ["--vm-nic", "virtio"]:
        modules = ["virtio_pci", "ena"]  # --nic-drivers ena
    image.write_text(
        json.dumps(
            {
                "arch": "x86_64",
                "kernel": "k",
                "initrd": "i",
                "needs_network": True,
                "kernel_modules": modules,
            }
        )
    )
    assert launch.main([str(image), "--vm-tap", "loomingnotap", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_a_machine_without_virtio_devices_needs_no_virtio_driver(tmp_path: Path) -> None:
    manifest: dict[str, object] = {
        "arch": "x86_64", "kernel": str(tmp_path / "k"), "initrd": "i",
        "kernel_modules": ["virtio_pci", "virtio_net"],
    }  # fmt: skip
    options, keys = launch.split_arguments(["--vm-machine", "microvm"])
    command = launch.qemu_command(manifest, options, keys)  # hello: no NIC, no disk
    assert command[command.index("-M") + 1] == "microvm"
    assert "-bios" not in command and "noapictimer" not in command[command.index("-append") + 1]


def test_run_help_lists_the_machine_and_nic_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "website-vm.json"
    image.write_text(json.dumps({"arch": "x86_64", "kernel": "k", "initrd": "i", "usage": "keys"}))
    assert launch.main([str(image), "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--vm-machine NAME" in shown and "pc or microvm on x86_64" in shown
    assert "--vm-nic MODEL" in shown and "virtio (default) or vmxnet3" in shown


def _serve(tap_namespace: TapNamespace, manifest: Path, *machine: str) -> tuple[float, str]:
    """Boot the image with ``machine`` options; the time to its first HTTP
    answer over the TAP, and its console."""
    command = [
        "ip", "netns", "exec", tap_namespace.namespace, sys.executable, "-m",
        "looming.vm.launch", str(manifest), "--vm-tap", tap_namespace.tap, *machine,
        "--vm-timeout", "120", "--ipv4", "10.0.0.2/24", "--port", "8080",
    ]  # fmt: skip
    started = time.monotonic()
    vm = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    answered = None
    try:
        while time.monotonic() < started + 100 and vm.poll() is None:
            answered = tap_namespace.run("curl", "-s", "-f", "-m", "2", "http://10.0.0.2:8080/")
            if answered.returncode == 0:
                break
            time.sleep(0.1)
        took = time.monotonic() - started
    finally:
        if vm.poll() is None:
            os.kill(vm.pid, signal.SIGTERM)
        console = vm.communicate(timeout=30)[0]
    expected = (EXAMPLES / "static_website" / "htdocs" / "index.html").read_text()
    assert answered is not None and answered.stdout == expected, console
    assert vm.returncode == 0, console
    return took, console


@pytest.mark.slow
@pytest.mark.root
def test_microvm_and_vmxnet3_boot_and_serve(website: Path, tap_namespace: TapNamespace) -> None:
    manifest = website / "dist" / "website-vm.json"
    times = {}
    for machine, driver in (  # (pc with virtio: every other boot test)
        (("--vm-machine", "microvm"), "virtio_net"),
        (("--vm-nic", "vmxnet3"), "vmxnet3"),
    ):
        took, console = _serve(tap_namespace, manifest, *machine)
        # /init names the NIC it found and its driver.
        assert f"looming-vm: network interface eth0 (driver {driver})" in console, console
        times[" ".join(machine)] = took
    print("to first answer:", ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))


# Firecracker's configuration and the plain qemu command line, beside the image.

FIRECRACKER_SECTIONS = {"boot-source", "drives", "machine-config", "network-interfaces"}


@pytest.mark.slow
def test_the_firecracker_configuration_is_relative_and_complete(website: Path) -> None:
    dist = website / "dist"
    config = json.loads((dist / "website-firecracker.json").read_text())
    assert set(config) == FIRECRACKER_SECTIONS
    boot = config["boot-source"]
    assert set(boot) == {"kernel_image_path", "initrd_path", "boot_args"}
    kernel, initrd = dist / boot["kernel_image_path"], dist / boot["initrd_path"]
    assert not Path(boot["kernel_image_path"]).is_absolute()
    assert kernel.name == "vmlinux" and kernel.read_bytes()[:4] == b"\x7fELF"
    assert any(name == "Xen" and kind == 18 for name, kind, _ in elf.notes(kernel.read_bytes()))
    assert initrd.is_file() and initrd.parent == kernel.parent
    args = boot["boot_args"].split()
    assert args[0] == "console=ttyS0" and args[-1] == "--"
    assert {"reboot=k", "pci=off", "LOOMING_NIC=1", "LOOMING_EXIT=reboot"} <= set(args)
    assert "noapictimer" not in args  # Firecracker's machine has no HPET
    manifest = json.loads((dist / "website-vm.json").read_text())
    machine = config["machine-config"]
    assert machine["vcpu_count"] == 1
    assert machine["mem_size_mib"] >= launch.minimum_memory_mb(manifest)
    assert config["network-interfaces"] == [
        {"iface_id": "net0", "host_dev_name": "tap0", "guest_mac": launch.default_mac("website", 0)}
    ]
    assert config["drives"] == []  # the static site keeps nothing on a disk


def test_a_unikernel_with_storage_gets_its_disk_as_a_drive() -> None:
    from looming.vm.firecracker import firecracker_config

    manifest: dict[str, object] = {
        "arch": "aarch64", "unikernel": "store", "needs_disk": True, "needs_network": False,
    }  # fmt: skip
    paths = {"kernel": "store-vm-aarch64/Image", "initrd": "i", "disk": "store-disk.img"}
    config = firecracker_config(manifest, paths)
    assert config["drives"] == [
        {"drive_id": "disk", "path_on_host": "store-disk.img", "is_root_device": False,
         "is_read_only": False, "cache_type": "Writeback"}
    ]  # fmt: skip
    assert config["network-interfaces"] == []
    assert config["entropy"] == {}  # aarch64 guests get virtio-rng
    boot = config["boot-source"]
    assert isinstance(boot, dict)
    assert "LOOMING_DISK=1" in boot["boot_args"] and "pci=off" not in boot["boot_args"]
    assert boot["boot_args"].startswith("console=ttyS0 ")  # Firecracker's UART, not the PL011


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answer_and_stop(qemu: subprocess.Popen[str], port: int) -> tuple[float, str]:
    """Wait for the site on 127.0.0.1:``port``, then ask the guest to stop as
    ``looming run`` does; qemu must end by itself. The time to the answer,
    and the console."""
    import urllib.request

    started = time.monotonic()
    page = None
    try:
        while page is None and time.monotonic() < started + 100 and qemu.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    page = answer.read().decode()
            except OSError:
                time.sleep(0.1)
        took = time.monotonic() - started
        assert qemu.stdin is not None
        qemu.stdin.write(launch.STOP_MESSAGE + "\n")
        qemu.stdin.flush()
        console = qemu.communicate(timeout=60)[0]
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.communicate()
    assert page == (EXAMPLES / "static_website" / "htdocs" / "index.html").read_text(), console
    assert f"{launch.EXIT_MARKER} 0" in console, console
    assert qemu.returncode == 0, console
    return took, console


@pytest.mark.slow
def test_the_firecracker_boot_serves_under_qemus_microvm(website: Path) -> None:
    """Firecracker's kernel, initramfs and boot_args on microvm, qemu's
    closest machine (virtio-mmio found through ACPI, as Firecracker 1.8+
    describes them); under TCG the kernel is also told the TSC's rate,
    which KVM's clock gives it under Firecracker."""
    dist = website / "dist"
    config = json.loads((dist / "website-firecracker.json").read_text())
    boot = config["boot-source"]
    nic = config["network-interfaces"][0]
    port = _free_port()
    keys = "--ipv4 10.0.2.15/24 --ipv4-gateway 10.0.2.2 --port 8080"
    extra = f"tsc_early_khz={launch.tsc_khz()}" if launch.tsc_khz() else ""
    boot_args = boot["boot_args"].removesuffix(" --") + f" {extra} -- {keys}"
    command = [
        "qemu-system-x86_64", "-M", "microvm", "-accel", "tcg", "-cpu", "qemu64,+rdrand",
        "-m", str(config["machine-config"]["mem_size_mib"]), "-smp", "1", "-nodefaults",
        "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", boot["kernel_image_path"], "-initrd", boot["initrd_path"],
        "-append", boot_args,
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:8080",
        "-device", f"virtio-net-device,netdev=net0,mac={nic['guest_mac']}",
    ]  # fmt: skip
    qemu = subprocess.Popen(
        command, cwd=dist, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    took, console = _answer_and_stop(qemu, port)
    # The guest ended the VM by rebooting (reboot=k), Firecracker's way out.
    assert "network interface eth0 (driver virtio_net)" in console
    print(f"Firecracker boot_args on microvm: first answer after {took:.2f} s")


@pytest.mark.slow
def test_the_plain_qemu_script_serves_from_anywhere(website: Path, tmp_path: Path) -> None:
    script = website / "dist" / "website-qemu.sh"
    text = script.read_text()
    assert str(website) not in text  # paths relative to dist/
    port = _free_port()
    qemu = subprocess.Popen(
        [os.path.relpath(script, tmp_path), "--ipv4", "10.0.2.15/24",
         "--ipv4-gateway", "10.0.2.2", "--port", "8080"],
        cwd=tmp_path, env={**os.environ, "HOST_PORT": str(port)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    took, _console = _answer_and_stop(qemu, port)
    print(f"plain qemu script: first answer after {took:.2f} s")


@pytest.fixture(scope="module")
def arm_website() -> Iterator[Path]:
    """static_website for aarch64 with vmxnet3 and the Firecracker files."""
    with tempfile.TemporaryDirectory(prefix="looming-nics-") as root:
        yield build(
            EXAMPLES / "static_website",
            Path(root),
            "aarch64",
            ("--nic-drivers", "virtio-mmio,vmxnet3", "--firecracker"),
        )


@pytest.mark.slow
@pytest.mark.root
def test_vmxnet3_serves_on_aarch64(arm_website: Path, tap_namespace: TapNamespace) -> None:
    manifest = arm_website / "dist" / "website-vm.json"
    _took, console = _serve(tap_namespace, manifest, "--vm-nic", "vmxnet3")
    assert "looming-vm: network interface eth0 (driver vmxnet3)" in console, console


@pytest.mark.slow
def test_the_aarch64_firecracker_kernel_is_the_pe_image(arm_website: Path) -> None:
    dist = arm_website / "dist"
    config = json.loads((dist / "website-firecracker.json").read_text())
    assert set(config) == FIRECRACKER_SECTIONS | {"entropy"}
    boot = config["boot-source"]
    kernel = dist / boot["kernel_image_path"]
    header = kernel.read_bytes()[:64]
    assert kernel.name == "Image" and header[:2] == b"MZ" and header[0x38:0x3C] == b"ARM\x64"
    assert (dist / boot["initrd_path"]).is_file()
    args = boot["boot_args"].split()
    assert args[0] == "console=ttyS0" and "pci=off" not in args and args[-1] == "--"
    manifest = json.loads((dist / "website-vm.json").read_text())
    assert "virtio_mmio" in manifest["kernel_modules"]
    # The qemu script boots aarch64's virt machine with its own console.
    script = (dist / "website-qemu.sh").read_text()
    assert "qemu-system-aarch64" in script and "console=ttyAMA0" in script
    assert "virtio-net-device" in script and str(dist) not in script


def test_the_stack_takes_the_nic_init_found_when_the_key_names_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from looming.vm.nic import ENVIRONMENT, guest_interface

    (tmp_path / "eth0").mkdir()
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    assert guest_interface("eth1", tmp_path) == "eth1"  # nothing found: the key's own
    monkeypatch.setenv(ENVIRONMENT, "ens5")
    assert guest_interface("eth0", tmp_path) == "eth0"  # the guest has it
    assert guest_interface("eth1", tmp_path) == "ens5"  # it has not: /init's NIC


@pytest.mark.slow
def test_a_disk_on_microvm_and_as_the_firecracker_drive(tmp_path: Path) -> None:
    """virtio-blk over MMIO: the counter's disk, made by ``looming run`` on
    microvm, then attached as the Firecracker configuration's drive says."""
    app = build(
        Path(__file__).parent / "apps" / "counter", tmp_path, "x86_64",
        ("--nic-drivers", "virtio-mmio", "--firecracker"),
    )  # fmt: skip
    dist = app / "dist"
    done = looming(app, "run", "--vm-machine", "microvm", "--vm-timeout", "150")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "counter: kv_rw boots=1 block boots=1" in done.stdout
    config = json.loads((dist / "counter-firecracker.json").read_text())
    assert config["network-interfaces"] == []
    (drive,) = config["drives"]
    assert (dist / drive["path_on_host"]).is_file()  # the disk looming run made
    boot = config["boot-source"]
    assert "LOOMING_DISK=1" in boot["boot_args"].split()
    extra = f"tsc_early_khz={launch.tsc_khz()}" if launch.tsc_khz() else ""
    command = [
        "qemu-system-x86_64", "-M", "microvm", "-accel", "tcg", "-cpu", "qemu64,+rdrand",
        "-m", str(config["machine-config"]["mem_size_mib"]), "-nodefaults",
        "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", boot["kernel_image_path"], "-initrd", boot["initrd_path"],
        "-append", boot["boot_args"].removesuffix(" --") + f" {extra} --",
        "-drive", f"file={drive['path_on_host']},format=raw,if=none,id=d0,cache=writeback",
        "-device", "virtio-blk-device,drive=d0",
    ]  # fmt: skip
    second = subprocess.run(
        command, cwd=dist, capture_output=True, text=True, timeout=150, check=False
    )
    # The guest counted its second boot on the same disk, then rebooted out.
    assert "counter: kv_rw boots=2 block boots=2" in second.stdout, second.stdout
    assert f"{launch.EXIT_MARKER} 0" in second.stdout and second.returncode == 0


def test_a_kernel_without_pvh_gets_the_qemu_script_but_no_firecracker_file(
    tmp_path: Path,
) -> None:
    from looming.vm.firecracker import write_machine_files
    from looming.vm.image import ImageReport

    folder = tmp_path / "x-vm-x86_64"
    folder.mkdir()
    (folder / "kernel").write_bytes(b"bzImage")
    (folder / "initrd.lz4").write_bytes(b"initrd")
    manifest = tmp_path / "x-vm.json"
    manifest.write_text(
        json.dumps(
            {
                "arch": "x86_64",
                "kernel": "x-vm-x86_64/kernel",
                "initrd": "x-vm-x86_64/initrd.lz4",
                "kernel_format": "bzImage",
                "unikernel": "x",
                "needs_network": True,
            }
        )
    )
    (tmp_path / "x-firecracker.json").write_text("{}")  # from an earlier build
    report = ImageReport("x86_64", manifest, folder / "kernel", folder / "initrd.lz4", 7, 6, 6)
    notes: list[str] = []
    write_machine_files(report, "x", True, notes.append)
    assert not (tmp_path / "x-firecracker.json").exists()
    assert "Firecracker cannot boot its bzImage" in notes[0]
    script = (tmp_path / "x-qemu.sh").read_text()
    assert "-kernel x-vm-x86_64/kernel " in script and str(tmp_path) not in script
    write_machine_files(report, "x", False, notes.append)  # built without --firecracker
    assert not (tmp_path / "x-qemu.sh").exists()


def test_the_host_tsc_rate_is_measured_steadily() -> None:
    import platform

    khz = launch._measure_tsc_khz()
    if platform.machine() != "x86_64":
        assert khz is None
        return
    assert khz is not None and 100_000 < khz < 10_000_000  # 0.1 to 10 GHz
    again = launch._measure_tsc_khz()
    assert again is not None and abs(again - khz) < khz / 100  # within 1 %
    assert launch.tsc_khz() == launch.tsc_khz()  # measured once per launcher
