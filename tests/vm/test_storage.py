"""The VM's disk: made on first use, ext4 (checked with e2fsprogs), locked
while a VM uses it, attached with flushes honoured; kv_rw and block on it
keep what they wrote across boots."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.errors import DeviceError, UsageError
from looming.vm import disk, launch
from looming.vm.storage import on_disk
from tests.vm.conftest import Images


def test_a_disk_is_made_once_as_an_ext4_file_system(tmp_path: Path) -> None:
    image = tmp_path / "app-disk.img"
    lock, note = disk.prepare(image, 32)
    lock.close()
    assert note == f"made the disk image {image} (32 MB, ext4)"
    assert image.stat().st_size == 32 * 2**20
    assert image.stat().st_blocks * 512 < 8 * 2**20  # sparse
    # e2fsprogs finds a clean ext4 file system with a journal.
    checked = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    features = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True)
    assert "has_journal" in features.stdout
    (image.parent / "marker").write_text("kept")
    # Used as it is the next time; a size given then no longer applies.
    lock, note = disk.prepare(image, 64)
    lock.close()
    assert note is not None and "exists (32 MB)" in note
    assert image.stat().st_size == 32 * 2**20
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("setup", "size", "message"),
    [
        ("none", 8, "--vm-disk-size 8: a disk needs at least 16 MB"),
        ("zeros", None, "holds no ext4 file system"),
        ("folder", None, "is not a regular file"),
        ("no-parent", None, "is not a folder"),
    ],
)
def test_unusable_disks_are_refused_naming_them(
    tmp_path: Path, setup: str, size: int | None, message: str
) -> None:
    image = tmp_path / "disk.img"
    if setup == "zeros":
        image.write_bytes(bytes(2**20))
    elif setup == "folder":
        image.mkdir()
    elif setup == "no-parent":
        image = tmp_path / "missing" / "disk.img"
    with pytest.raises(disk.DiskError, match=message):
        disk.prepare(image, size)
    assert not (setup == "no-parent" and image.parent.exists())


@pytest.fixture
def made_disk(tmp_path: Path) -> Iterator[Path]:
    image = tmp_path / "disk.img"
    lock, _note = disk.prepare(image, 16)
    lock.close()
    yield image


def test_a_disk_in_use_by_another_launcher_is_refused(made_disk: Path) -> None:
    first = disk.DiskLock(made_disk)
    try:
        with pytest.raises(disk.DiskError, match="another 'looming run' holds it") as refused:
            disk.DiskLock(made_disk)
        assert f"the disk image {made_disk} is in use by another VM" in str(refused.value)
    finally:
        first.close()
    disk.DiskLock(made_disk).close()  # free again


def test_a_disk_a_qemu_has_open_is_refused(made_disk: Path) -> None:
    # qemu's own image locking (byte-range locks), from a qemu started by hand.
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none", "-S",
         "-monitor", "stdio", "-drive", f"file={made_disk},format=raw,if=none,id=d"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert qemu.stdout is not None
        seen = ""
        while "(qemu)" not in seen:  # the monitor's prompt: the image is open
            chunk = qemu.stdout.read(1)
            assert chunk, f"qemu ended: {seen}"
            seen += chunk
        with pytest.raises(disk.DiskError, match="a qemu has it open"):
            disk.DiskLock(made_disk)
    finally:
        qemu.kill()
        qemu.wait()
    disk.DiskLock(made_disk).close()


def test_a_disk_in_use_stops_looming_run_with_exit_2(made_disk: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "app-vm.json"
    manifest.write_text('{"arch": "x86_64", "kernel": "k", "initrd": "i", "needs_disk": true}')
    holder = os.open(made_disk, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "looming.vm.launch", str(manifest), "--vm-disk", str(made_disk)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(holder)
    assert done.returncode == 2
    assert f"the disk image {made_disk} is in use by another VM" in done.stderr


def test_the_disk_is_a_virtio_disk_whose_flushes_reach_the_host(tmp_path: Path) -> None:
    manifest: dict[str, object] = {
        "arch": "aarch64", "kernel": "k", "initrd": "i", "unikernel": "app",
    }  # fmt: skip
    options, keys = launch.split_arguments(["--vm-disk-size", "64"])
    assert options.disk_size_mb == 64
    command = launch.qemu_command(manifest, options, keys, tmp_path / "a,b.img")
    drive = command[command.index("-drive") + 1]
    # cache=writeback: the guest sees a write cache and its flushes become
    # fdatasync on the host (cache=unsafe would drop them).
    assert drive.split(",")[-2:] == ["cache=writeback", "discard=unmap"]
    assert drive.startswith(f"file={tmp_path}/a,,b.img,format=raw,")
    assert "virtio-blk-device,drive=disk0" in command
    assert "LOOMING_DISK=1" in command[command.index("-append") + 1]
    without = launch.qemu_command(manifest, options, keys)
    assert "-drive" not in without and "LOOMING_DISK=0" in without[without.index("-append") + 1]


def test_each_instance_has_its_own_default_disk(tmp_path: Path) -> None:
    manifest = tmp_path / "dist" / "app-vm.json"
    assert disk.default_path(manifest, "app", 0) == tmp_path / "dist" / "app-disk.img"
    assert disk.default_path(manifest, "app", 2) == tmp_path / "dist" / "app-2-disk.img"


def test_guest_paths_must_be_on_the_disk(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="no disk mounted at"):
        on_disk("kv_rw", "data", str(tmp_path))  # a folder, not a mount
    assert on_disk("kv_rw", "data/x", "/proc") == "/proc/data/x"
    assert on_disk("block", "/proc/b.img", "/proc") == "/proc/b.img"
    for outside in ("/etc/data", "../data", "data/../../x"):
        with pytest.raises(UsageError, match="is not on the VM's disk"):
            on_disk("kv_store", outside, "/proc")


def boot_counter_twice(app: Path, image: Path) -> list[subprocess.CompletedProcess[str]]:
    """The ``counter`` app booted twice on the disk ``image``: each boot ends
    well and counts one more boot in both its kv_rw store and its block."""
    runs = []
    for boot in (1, 2):
        done = subprocess.run(
            [sys.executable, "-m", "looming.cli", "run", "--vm-timeout", "150",
             "--vm-disk", str(image), "--vm-disk-size", "32"],
            cwd=app, capture_output=True, text=True, timeout=200, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"counter: kv_rw boots={boot} block boots={boot}" in done.stdout
        runs.append(done)
    return runs


@pytest.mark.slow
def test_kv_rw_and_block_keep_their_data_across_boots(images: Images, tmp_path: Path) -> None:
    app = images.app("counter", "x86_64")
    image = tmp_path / "counter.img"
    for boot, done in enumerate(boot_counter_twice(app, image), 1):
        assert ("made the disk image" in done.stdout) == (boot == 1)
    # What the guest wrote, read on the host by e2fsprogs: the file system
    # is clean (the guest unmounted it) and holds the store's file.
    assert subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True).returncode == 0
    read = subprocess.run(
        ["debugfs", "-R", "cat /state/boots", str(image)], capture_output=True, text=True
    )
    assert read.stdout == "2"
