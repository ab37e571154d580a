"""Bad input to the vm target: a clear message and exit code 2, before any download."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_devices_a_vm_has_no_implementation_for_are_named(tmp_path: Path) -> None:
    app = tmp_path / "disk"
    app.mkdir()
    (app / "config.py").write_text(
        "from looming.config import block, main, register\n"
        'register("disk", [main("unikernel:Disk", [block("disk.img")])])\n'
    )
    (app / "unikernel.py").write_text("class Disk:\n    pass\n")
    done = looming(app, "configure", "-t", "vm", "--arch", "x86_64")
    assert done.returncode == 2
    assert "the vm target has no implementation for device 'block'" in done.stderr
    assert "a VM image has no disk" in done.stderr


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


def test_kv_store_needs_storage_memory_and_says_it_does_not_persist(tmp_path: Path) -> None:
    app = _copy(EXAMPLES / "store_website", tmp_path)
    done = looming(app, "configure", "-t", "vm", "--arch", "x86_64")
    assert done.returncode == 2
    assert "config.py:" in done.stderr and "a VM image has no disk yet" in done.stderr
    assert "--storage memory" in done.stderr and "lost at power-off" in done.stderr
    assert not (app / "_build" / "vm").exists()
    done = looming(app, "configure", "-t", "vm", "--arch", "x86_64", "--storage", "memory")
    assert done.returncode == 0, done.stderr
    main_py = (app / "_build" / "vm" / "main.py").read_text()
    assert "in the guest's memory, lost at power-off" in main_py
    assert "StoreKv.connect" in main_py
    # kv_rw has no such option: refused whatever is given.
    config = app / "config.py"
    config.write_text(
        config.read_text()
        .replace('kv_store("_build/site.git", branch="main")', 'kv_rw("data")')
        .replace("kv_store,", "kv_rw,")
    )
    done = looming(app, "configure", "-t", "vm", "--arch", "x86_64", "--storage", "memory")
    assert done.returncode == 2
    assert "no implementation for device 'kv_rw'" in done.stderr
