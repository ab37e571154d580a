"""``looming build --disk-image`` and ``--oci`` for the vm target: a GPT disk
whose EFI system partition boots the unikernel under OVMF (x86_64) and
AAVMF (aarch64) with no ``-kernel``, and from SeaBIOS through syslinux on
x86_64; its structure as sgdisk, fdisk, mtools, fsck.fat, objdump and
qemu-img see it; the qcow2 as a KubeVirt containerDisk that skopeo and
umoci accept."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.errors import UsageError
from looming.vm import uki
from looming.vm.arch import get_arch
from looming.vm.diskimage import (
    FIRMWARE,
    build_container_disk,
    build_disk_image,
    qemu_command,
    remove_stale_artifacts,
)
from looming.vm.packages import AptArchive, cache_root
from tests.vm.conftest import EXAMPLES, Images, looming

PARTITION_OFFSET = 2**20  # the EFI system partition starts at the first MiB


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _fetch(port: int) -> str | None:
    done = subprocess.run(
        ["curl", "-s", "-f", "-m", "3", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout if done.returncode == 0 else None


def _boot_and_fetch(command: list[str], port: int, log: Path, timeout: float) -> tuple[str, float]:
    """Start qemu, fetch / through the forwarded port; the page and the seconds it took."""
    started = time.monotonic()
    with log.open("wb") as console:
        qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console, stderr=console)
        try:
            while time.monotonic() - started < timeout:
                page = _fetch(port)
                if page is not None:
                    return page, time.monotonic() - started
                assert qemu.poll() is None, log.read_text(errors="replace")
                time.sleep(0.3)
        finally:
            qemu.kill()
            qemu.wait()
    raise AssertionError(f"no answer in {timeout} s:\n{log.read_text(errors='replace')}")


def _user_net(port: int, guest_port: int, guest: str = "10.0.0.2") -> str:
    # The unikernel's default address is 10.0.0.2/24: slirp's network is put
    # there; its DHCP server leases from 10.0.0.15.
    return (
        "user,id=net0,net=10.0.0.0/24,host=10.0.0.1,dhcpstart=10.0.0.15,"
        f"hostfwd=tcp:127.0.0.1:{port}-{guest}:{guest_port}"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch_name", "keys", "guest", "guest_port"),
    [
        ("x86_64", ["--port", "8081"], "10.0.0.2", 8081),
        ("aarch64", ["--dhcp"], "10.0.0.15", 8080),
    ],
    ids=["x86_64-port", "aarch64-dhcp"],
)
def test_the_disk_boots_the_website_under_uefi_without_a_kernel_option(
    images: Images, tmp_path: Path, arch_name: str, keys: list[str], guest: str, guest_port: int
) -> None:
    app = images.app("static_website", arch_name)
    manifest = app / "dist" / "website-vm.json"
    disk = tmp_path / "disk.qcow2"
    # The keys are built into the disk's command line.
    build_disk_image(manifest, "qcow2", keys, lambda _m: None, out=disk)
    arch = get_arch(arch_name)
    port = _free_port()
    command = qemu_command(arch, disk, "qcow2", _user_net(port, guest_port, guest))
    assert "-kernel" not in command and str(FIRMWARE[arch_name]) in command
    log = tmp_path / "console.log"
    page, _seconds = _boot_and_fetch(command, port, log, timeout=90)
    assert page == (app / "htdocs" / "index.html").read_text()
    console = log.read_text(errors="replace")
    # The firmware's fallback path started the unified image, whose stub
    # handed the kernel its initramfs; the unikernel's log reached serial.
    assert "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID" in console
    assert f"serving http://{guest}:{guest_port}" in console


@pytest.mark.slow
def test_the_x86_64_disk_boots_from_a_bios_through_syslinux(images: Images, tmp_path: Path) -> None:
    app = images.app("static_website", "x86_64")
    disk = tmp_path / "disk.raw"
    build_disk_image(app / "dist" / "website-vm.json", "raw", [], lambda _m: None, out=disk)
    port = _free_port()
    command = qemu_command(get_arch("x86_64"), disk, "raw", _user_net(port, 8080), uefi=False)
    assert "-bios" not in command  # qemu's own SeaBIOS
    log = tmp_path / "console.log"
    page, _seconds = _boot_and_fetch(command, port, log, timeout=90)
    assert page == (app / "htdocs" / "index.html").read_text()
    console = log.read_text(errors="replace")
    assert "SYSLINUX" in console and "serving http://10.0.0.2:8080" in console


def _tool(*command: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(command, capture_output=True, input=stdin, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("arch_name", ["x86_64", "aarch64"])
def test_outside_tools_accept_the_partition_table_and_the_file_system(
    images: Images, tmp_path: Path, arch_name: str
) -> None:
    app = images.app("static_website", arch_name)
    manifest = app / "dist" / "website-vm.json"
    disk = tmp_path / "disk.raw"
    build_disk_image(manifest, "raw", [], lambda _m: None, out=disk)
    verified = _tool("sgdisk", "-v", str(disk))
    assert "No problems found" in verified
    partition = _tool("sgdisk", "-i", "1", str(disk))
    assert "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" in partition  # EFI system partition
    assert "First sector: 2048" in partition
    # Bit 2, legacy BIOS bootable, where syslinux's gptmbr.bin looks.
    assert ("0000000000000004" in partition) == (arch_name == "x86_64")
    assert "EFI System" in _tool("fdisk", "-l", str(disk))
    boot_file = "BOOTX64.EFI" if arch_name == "x86_64" else "BOOTAA64.EFI"
    listing = _tool("mdir", "-b", "-i", f"{disk}@@{PARTITION_OFFSET}", "::/EFI/BOOT")
    assert f"::/EFI/BOOT/{boot_file}" in listing
    # fsck.fat reads the partition alone: sliced out by the GPT's numbers.
    data = disk.read_bytes()
    sectors = int(partition.split("Partition size: ")[1].split()[0])
    esp = tmp_path / "esp.fat"
    esp.write_bytes(data[PARTITION_OFFSET : PARTITION_OFFSET + sectors * 512])
    checked = _tool("fsck.fat", "-n", "-v", str(esp))
    assert "32 bit entries" in checked and f"{PARTITION_OFFSET // 512} hidden sectors" in checked
    assert "differences between boot sector and its backup" not in checked
    # The same inputs give the same bytes.
    again = tmp_path / "again.raw"
    build_disk_image(manifest, "raw", [], lambda _m: None, out=again)
    assert again.read_bytes() == data


@pytest.mark.slow
def test_objdump_reads_the_unified_kernel_images_sections(images: Images, tmp_path: Path) -> None:
    app = images.app("static_website", "x86_64")
    disk = tmp_path / "disk.raw"
    build_disk_image(app / "dist" / "website-vm.json", "raw", ["--port", "81"], print, out=disk)
    efi = tmp_path / "BOOTX64.EFI"
    _tool("mcopy", "-i", f"{disk}@@{PARTITION_OFFSET}", "::/EFI/BOOT/BOOTX64.EFI", str(efi))
    headers = _tool("objdump", "-h", str(efi))
    assert "pei-x86-64" in headers
    for section in (".osrel", ".cmdline", ".initrd", ".linux", ".text", ".sbat"):
        assert f" {section} " in headers, headers
    cmdline = tmp_path / "cmdline"
    _tool("objcopy", "-O", "binary", "--only-section=.cmdline", str(efi), str(cmdline))
    text = cmdline.read_text()
    assert text.startswith("console=ttyS0 ") and text.endswith(" -- --port 81")
    assert "noapictimer" not in text.split()  # for qemu's pc only
    initrd = tmp_path / "initrd"
    _tool("objcopy", "-O", "binary", "--only-section=.initrd", str(efi), str(initrd))
    built = json.loads((app / "dist" / "website-vm.json").read_text())
    assert initrd.read_bytes() == (app / "dist" / built["initrd"]).read_bytes()


@pytest.mark.slow
@pytest.mark.root
def test_build_writes_the_qcow2_and_the_container_disk(tmp_path: Path) -> None:
    app = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", app, ignore=shutil.ignore_patterns("_build", "dist"))
    assert looming(app, "configure", "-t", "vm", "--arch", "aarch64").returncode == 0
    built = looming(app, "build", "--disk-image", "qcow2", "--oci")
    assert built.returncode == 0, built.stdout + built.stderr
    dist = app / "dist"
    manifest = json.loads((dist / "hello-vm.json").read_text())
    assert manifest["disk_image"]["file"] == "hello-boot-aarch64.qcow2"  # relative to dist/
    assert manifest["container_disk"] == "hello-oci"
    described = looming(app, "describe", "--image").stdout
    assert "disk image: hello-boot-aarch64.qcow2 (qcow2," in described
    assert "KubeVirt containerDisk: hello-oci/" in described
    qcow2 = dist / "hello-boot-aarch64.qcow2"
    assert "No errors were found" in _tool("qemu-img", "check", str(qcow2))
    assert json.loads(_tool("qemu-img", "info", "--output=json", str(qcow2)))["format"] == "qcow2"
    inspected = json.loads(_tool("skopeo", "inspect", f"oci:{dist / 'hello-oci'}"))
    assert inspected["Architecture"] == "arm64" and len(inspected["Layers"]) == 1
    bundle = tmp_path / "bundle"
    _tool("umoci", "unpack", "--image", f"{dist / 'hello-oci'}:latest", str(bundle))
    inside = bundle / "rootfs" / "disk" / "hello.qcow2"
    facts = inside.stat()
    assert (facts.st_uid, facts.st_gid) == (107, 107)
    assert inside.read_bytes() == qcow2.read_bytes()
    assert not any(p.name.startswith(".") for p in dist.iterdir())  # no staging left
    # Made again from the same image (a fresh qcow2): the same digests.
    index = (dist / "hello-oci" / "index.json").read_bytes()
    build_container_disk(dist / "hello-vm.json", [], lambda _m: None)
    assert (dist / "hello-oci" / "index.json").read_bytes() == index
    # Built again without the options: nothing of the old unikernel stays.
    rebuilt = looming(app, "build")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert not qcow2.exists() and not (dist / "hello-oci").exists()
    assert "disk_image" not in json.loads((dist / "hello-vm.json").read_text())


def test_a_rebuild_removes_only_stale_disk_images(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    manifest = dist / "site-vm.json"
    manifest.write_text(json.dumps({"unikernel": "site", "arch": "x86_64"}))
    names = ["site-boot-x86_64.raw", "site-boot-x86_64.qcow2", "site-boot-aarch64.raw",
             "site-boot-notes.txt", "other-boot-x86_64.raw"]  # fmt: skip
    for name in names:
        (dist / name).write_bytes(b"old")
    (dist / "site-oci").mkdir()
    (dist / "site-oci" / "oci-layout").write_text("{}")
    remove_stale_artifacts(manifest, "qcow2", oci=True)
    left = sorted(p.name for p in dist.iterdir())
    assert left == ["other-boot-x86_64.raw", "site-boot-notes.txt", "site-boot-x86_64.qcow2",
                    "site-oci", "site-vm.json"]  # fmt: skip
    remove_stale_artifacts(manifest, None, oci=False)
    assert sorted(p.name for p in dist.iterdir()) == [
        "other-boot-x86_64.raw",
        "site-boot-notes.txt",
        "site-vm.json",
    ]


def _configured_hello(tmp_path: Path, target: str) -> Path:
    app = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", app, ignore=shutil.ignore_patterns("_build", "dist"))
    args = ("configure", "-t", target) + (("--arch", "x86_64") if target == "vm" else ())
    assert looming(app, *args).returncode == 0
    return app


@pytest.mark.parametrize(
    ("target", "args", "message"),
    [
        ("vm", ("--disk-image", "vhd"), "unknown format 'vhd'; choose one of: raw, qcow2"),
        ("unix", ("--disk-image", "raw"), "--disk-image makes a bootable disk of a vm-target"),
        ("vm", ("--disk-keys=--dhcp",), "--disk-keys sets the keys of a disk image"),
        ("vm", ("--disk-image", "raw", '--disk-keys=--name "x'), "without double quotes"),
        ("vm", ("--disk-image", "raw", "--disk-keys=--name \x01"), "printable ASCII"),
        ("vm", ("--disk-image", "raw", "--disk-keys=" + "x" * 1025), "at most 1024"),
    ],
)
def test_bad_disk_options_are_one_line_and_exit_2(
    tmp_path: Path, target: str, args: tuple[str, ...], message: str
) -> None:
    app = _configured_hello(tmp_path, target)
    done = looming(app, "build", *args)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr
    assert not (app / "dist").exists()


def test_a_missing_tool_is_named_before_anything_is_built(tmp_path: Path) -> None:
    app = _configured_hello(tmp_path, "vm")
    empty = tmp_path / "bin"
    empty.mkdir()
    done = looming(app, "build", "--disk-image", "qcow2", env={**os.environ, "PATH": str(empty)})
    assert done.returncode == 2
    assert "needs mcopy (Debian package mtools)" in done.stderr
    assert not (app / "dist").exists()


def test_build_help_lists_the_disk_options(tmp_path: Path) -> None:
    done = looming(tmp_path, "build", "--help")
    assert done.returncode == 0
    assert "--disk-image FORMAT" in done.stdout and "--disk-keys KEYS" in done.stdout
    assert "containerDisk" in done.stdout


def _archive(arch_name: str) -> AptArchive:
    return AptArchive(get_arch(arch_name), cache_root(), lambda _m: None)


@functools.cache
def _stub(arch_name: str) -> bytes:
    return uki.stub_path(get_arch(arch_name), _archive(arch_name)).read_bytes()


@pytest.mark.slow
def test_the_pe_checksum_is_the_one_debians_files_carry() -> None:
    # The stub's build and the kernel's each computed their header's checksum.
    archive = _archive("x86_64")
    kernel_package = archive.kernel()
    kernel_tree = archive.unpack(kernel_package)
    kernel = kernel_tree / "boot" / f"vmlinuz-{kernel_package.name.removeprefix('linux-image-')}"
    for data in (_stub("x86_64"), kernel.read_bytes()):
        field = uki.parse(data).optional + uki.OPT_CHECKSUM
        shipped = int.from_bytes(data[field : field + 4], "little")
        assert shipped != 0 and uki.checksum(data, field) == shipped


SECTION_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=7)


@pytest.mark.slow
@pytest.mark.parametrize("arch_name", ["x86_64", "aarch64"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    added=st.lists(
        st.tuples(SECTION_NAMES.map(lambda n: ".x" + n[:6]), st.binary(max_size=5000)),
        min_size=1,
        max_size=4,
    )
)
def test_added_sections_are_laid_out_as_a_pe_loader_needs(
    arch_name: str, added: list[tuple[str, bytes]]
) -> None:
    stub = _stub(arch_name)
    before = uki.parse(stub)
    image = uki.add_sections(stub, added)
    after = uki.parse(image)
    assert after.sections[: len(before.sections)] == before.sections
    new = after.sections[len(before.sections) :]
    assert [s.name for s in new] == [name for name, _ in added]
    end = max(s.virtual_address + s.virtual_size for s in before.sections)
    for section, (_name, data) in zip(new, added, strict=True):
        assert section.virtual_size == len(data)
        assert section.virtual_address % after.section_alignment == 0
        assert section.virtual_address >= end  # no overlap, in order
        end = section.virtual_address + section.virtual_size
        assert section.raw_pointer % after.file_alignment == 0
        assert section.raw_size % after.file_alignment == 0
        assert image[section.raw_pointer : section.raw_pointer + len(data)] == data
    optional = after.optional
    size_of_image = int.from_bytes(image[optional + 56 : optional + 60], "little")
    assert size_of_image >= end and size_of_image % after.section_alignment == 0
    field = optional + uki.OPT_CHECKSUM
    assert int.from_bytes(image[field : field + 4], "little") == uki.checksum(image, field)
    # The stub finds a section by its name (no stub section starts ".x").
    name, data = added[0]
    assert uki.section_data(image, name) == data


@pytest.mark.slow
def test_a_stub_without_room_or_a_long_name_is_refused() -> None:
    stub = _stub("x86_64")
    with pytest.raises(uki.PeError, match="no room"):
        uki.add_sections(stub, [(f".s{i}", b"x") for i in range(8)])
    with pytest.raises(uki.PeError, match="longer than 8 bytes"):
        uki.add_sections(stub, [(".toolongname", b"x")])
    with pytest.raises(uki.PeError, match="not a PE image"):
        uki.parse(b"\x7fELF" + bytes(100))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("facts", "message"),
    [
        ({"needs_disk": True}, "--storage memory"),
        ({"vchans": [{"port": "store"}]}, "talks over vchan"),
    ],
)
def test_a_unikernel_a_disk_cannot_carry_is_refused(
    images: Images, tmp_path: Path, facts: dict[str, object], message: str
) -> None:
    app = images.app("static_website", "x86_64")
    manifest = json.loads((app / "dist" / "website-vm.json").read_text())
    copy = tmp_path / "dist"
    shutil.copytree(app / "dist", copy)
    (copy / "website-vm.json").write_text(json.dumps({**manifest, **facts}))
    with pytest.raises(UsageError, match=message):
        build_disk_image(copy / "website-vm.json", "raw", [], lambda _m: None)
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        p.name for p in (app / "dist").iterdir()
    )


@pytest.mark.slow
def test_a_cached_stub_changed_since_it_was_unpacked_is_refused(tmp_path: Path) -> None:
    _stub("x86_64")  # fetched and unpacked into the real cache
    real = cache_root() / "amd64"
    copy = tmp_path / "amd64"
    (copy / "trees").mkdir(parents=True)
    for shared in ("apt", "debs"):
        (copy / shared).symlink_to(real / shared)
    tree = next((real / "trees").glob(f"{uki.STUB_PACKAGE}_*[!l]"))  # not *.partial
    shutil.copytree(tree, copy / "trees" / tree.name)
    stub = copy / "trees" / tree.name / uki.STUB_FOLDER / uki.STUB_FILES["x86_64"]
    data = bytearray(stub.read_bytes())
    data[0x500] ^= 0xFF
    stub.write_bytes(data)
    archive = AptArchive(get_arch("x86_64"), tmp_path, lambda _m: None)
    with pytest.raises(uki.PeError, match="does not match its package's checksum"):
        uki.stub_path(get_arch("x86_64"), archive)


@pytest.mark.slow
def test_the_file_dates_are_source_date_epoch(
    images: Images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = images.app("static_website", "aarch64")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    disk = tmp_path / "disk.raw"
    build_disk_image(app / "dist" / "website-vm.json", "raw", [], lambda _m: None, out=disk)
    listing = _tool("mdir", "-i", f"{disk}@@{PARTITION_OFFSET}", "::/EFI/BOOT")
    assert "BOOTAA64 EFI" in listing and "2023-11-14  22:13" in listing, listing
