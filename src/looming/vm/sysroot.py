"""A root file system of the guest's Python, for running it with qemu user emulation.

The same Debian packages the image is built from, unpacked together into
one folder: ``qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11``
then runs looming's code (and its tests) on aarch64 on an x86_64 host.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from looming.vm.arch import get_arch
from looming.vm.packages import AptArchive, PackageError, Progress, cache_root

SYSROOT_PACKAGES = ("libpython3.11-stdlib", "libc6", "zlib1g", "libexpat1", "libffi8", "libssl3")


def python_sysroot(arch_name: str, progress: Progress) -> Path:
    """The unpacked sysroot for ``arch_name``, made once and kept in the cache."""
    arch = get_arch(arch_name)
    archive = AptArchive(arch, cache_root(), progress)
    meta = archive.info("python3-minimal")
    depends = [d.split("(")[0].strip() for d in meta.depends.split(",")]
    interpreter = next((d for d in depends if d.startswith("python3.")), "")
    if not interpreter:
        raise PackageError(f"python3-minimal names no interpreter: {meta.depends}")
    version = interpreter.removeprefix("python").removesuffix("-minimal")
    names = [
        interpreter,
        f"libpython{version}-minimal",
        *(n.replace("3.11", version) for n in SYSROOT_PACKAGES),
    ]
    packages = [archive.info(name) for name in names]
    stamp = "\n".join(f"{p.name} {p.version}" for p in packages) + "\n"
    root = archive.root / "sysroot"
    if (root / ".packages").is_file() and (root / ".packages").read_text() == stamp:
        return root
    partial = root.with_name("sysroot.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for package in packages:
        deb = archive.fetch(package)
        progress(f"unpacking {deb.name} into the sysroot")
        done = subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(partial)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise PackageError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()}")
    (partial / ".packages").write_text(stamp)
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root
