"""Bad input to the vm target: a clear message and exit code 2, before any download."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm.conftest import APPS, EXAMPLES, looming


def _copy(source: Path, dest: Path) -> Path:
    app = dest / source.name
    shutil.copytree(source, app, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__"))
    return app


def _env_with_cache(cache: Path, path: str | None = None) -> dict[str, str]:
    env = {**os.environ, "LOOMING_VM_CACHE": str(cache)}
    if path is not None:
        env["PATH"] = path
    return env


def test_an_unsupported_architecture_is_refused_at_configure(tmp_path: Path) -> None:
    app = _copy(EXAMPLES / "hello", tmp_path)
    done = looming(app, "configure", "-t", "vm", "--arch", "sparc64")
    assert done.returncode == 2
    assert "unsupported VM architecture 'sparc64'" in done.stderr
    assert "x86_64" in done.stderr and "aarch64" in done.stderr
    assert not (app / "_build" / "vm").exists()


def test_a_missing_qemu_is_reported_before_any_download(tmp_path: Path) -> None:
    app = _copy(EXAMPLES / "hello", tmp_path)
    assert looming(app, "configure", "-t", "vm", "--arch", "aarch64").returncode == 0
    # A PATH with apt and dpkg-deb but no qemu.
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        found = shutil.which(tool)
        assert found is not None, f"{tool} is needed on the host"
        (tools / tool).symlink_to(found)
    cache = tmp_path / "cache"
    done = looming(app, "build", env=_env_with_cache(cache, str(tools)))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "qemu-system-aarch64 is not installed" in done.stderr
    assert "qemu-system-arm" in done.stderr  # the Debian package to install
    assert not cache.exists()


def test_unresolvable_imports_are_reported_before_any_download(tmp_path: Path) -> None:
    app = _copy(APPS / "bad_import", tmp_path)
    assert looming(app, "configure", "-t", "vm", "--arch", "x86_64").returncode == 0
    cache = tmp_path / "cache"
    done = looming(app, "build", env=_env_with_cache(cache))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "looming_module_that_does_not_exist (imported by unikernel)" in done.stderr
    assert not cache.exists()


def test_bad_machine_options_at_run_are_usage_errors(tmp_path: Path) -> None:
    manifest = tmp_path / "image.json"
    manifest.write_text('{"arch": "x86_64", "kernel": "k", "initrd": "i"}')
    done = subprocess.run(
        [sys.executable, "-m", "looming.vm.launch", str(manifest), "--vm-memory", "lots"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--vm-memory: 'lots' is not a number" in done.stderr


def test_a_unikernel_with_a_network_needs_a_tap_to_boot(tmp_path: Path) -> None:
    manifest = tmp_path / "image.json"
    manifest.write_text('{"arch": "aarch64", "kernel": "k", "initrd": "i", "needs_network": true}')
    done = subprocess.run(
        [sys.executable, "-m", "looming.vm.launch", str(manifest), "--port", "80"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "give --vm-tap NAME" in done.stderr


@pytest.mark.parametrize(
    ("app_name", "disk_factories", "memory_factories"),
    [
        ("store_website", ["connect_kv_store("], ["StoreKv.connect"]),
        ("counter", ["connect_kv_rw(", "connect_block("], ["DirectoryKvRw.connect", "FileBlock"]),
    ],
)
def test_storage_is_on_the_disk_unless_storage_memory_is_given(
    tmp_path: Path, app_name: str, disk_factories: list[str], memory_factories: list[str]
) -> None:
    source = APPS / app_name if (APPS / app_name).is_dir() else EXAMPLES / app_name
    app = _copy(source, tmp_path)
    done = looming(app, "configure", "-t", "vm", "--arch", "x86_64")
    assert done.returncode == 0, done.stderr
    main_py = (app / "_build" / "vm" / "main.py").read_text()
    assert all(f"await {factory}" in main_py for factory in disk_factories)
    assert "on the VM's disk" in main_py
    assert not any(factory in main_py for factory in memory_factories)
    done = looming(app, "configure", "-t", "vm", "--arch", "x86_64", "--storage", "memory")
    assert done.returncode == 0, done.stderr
    main_py = (app / "_build" / "vm" / "main.py").read_text()
    assert "in the guest's memory, lost at power-off" in main_py
    assert all(factory in main_py for factory in memory_factories)
    assert "looming.vm.storage" not in main_py and "looming.vm.gitstore" not in main_py


def test_configure_help_lists_the_storage_keys(tmp_path: Path) -> None:
    app = _copy(EXAMPLES / "store_website", tmp_path)
    done = looming(app, "configure", "-t", "vm", "--help")
    assert done.returncode == 0, done.stderr
    assert "could not be read" not in done.stdout
    assert "--site-git-repo STR" in done.stdout and "(on the VM's disk)" in done.stdout
    assert "--push-port INT" in done.stdout and "--storage {disk,memory}" in done.stdout


def test_configure_help_lists_config_keys_when_the_target_cannot_link(tmp_path: Path) -> None:
    app = _copy(EXAMPLES / "store_website", tmp_path)
    done = looming(app, "configure", "-t", "vm", "--arch", "sparc64", "--help")
    assert done.returncode == 0, done.stderr
    assert "unsupported VM architecture 'sparc64'" in done.stdout
    assert "keys config.py declares" in done.stdout
    assert "--push-port INT" in done.stdout and "--push-anonymous-read BOOL" in done.stdout
