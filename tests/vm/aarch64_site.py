"""Debian's arm64 Python with an aarch64 site-packages, for the test suites under qemu-user.

The compiled packages the suites need (cryptography, cffi, dulwich) and the
pure-Python ones they run with (pytest, hypothesis and their dependencies)
are fetched as wheels for the guest exactly as the vm image builder fetches
them (``looming.vm.wheels.fetch``: the versions installed here, manylinux
tags up to the guest's glibc, pip's hash check, then the SHA-256 of each file
recorded in ``$LOOMING_VM_CACHE/wheels/aarch64/index.json`` and checked at
every reuse). They are unpacked once into ``$LOOMING_VM_CACHE/usersite/aarch64``;
a later run needs no network. Shared objects the sysroot lacks (libgcc_s,
libstdc++, libcrypt, libsqlite3, liblzma, libbz2) and the guest Python's C
headers come as Debian arm64 packages through the builder's apt cache, as
the sysroot does.

The interpreter runs through a small shell script that starts
``qemu-aarch64-static`` with the sysroot and passes its own path as the
guest's ``argv[0]``: ``sys.executable`` is then that script, so a test
that starts another Python (vchan's two processes, the FFI helper) starts
it under emulation too, with no binfmt_misc registration on the host. A
host program the tests run (git) is executed natively.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from looming.vm import wheels
from looming.vm.arch import get_arch
from looming.vm.image import GUEST_PYTHON, WHEEL_LIBRARY_PACKAGES
from looming.vm.packages import AptArchive, PackageError, PackageInfo, Progress, cache_root
from looming.vm.sysroot import python_sysroot

ARCH = "aarch64"
# The FFI suite's libraries, and the rest of what the stdlib's extension
# modules load (_sqlite3, _lzma, _bz2) beyond the sysroot.
FFI_LIBRARY_PACKAGES = ("libcrypt1", "libsqlite3-0", "liblzma5", "libbz2-1.0")
# What the TLS, store, vchan and FFI suites import (tlslite-ng: the TLS
# tests' shared peer module imports it), and pytest's own plugin for the
# suite's ``timeout`` setting; their dependencies follow.
TEST_DISTRIBUTIONS = (
    "h11",  # looming's own dependency
    "httptools",  # looming[fast]: the HTTP tests run each parser and loop
    "uvloop",
    "cryptography",
    "cffi",
    "dulwich",
    "hypothesis",
    "pytest",
    "pytest-timeout",
    "tlslite-ng",
)


@dataclass(frozen=True)
class Guest:
    """What the emulated test runs need, made by :func:`prepare`."""

    python: Path  # the script running Debian's arm64 Python under qemu-user
    compiler: Path  # $CC for the FFI's compiled backend and layout probes
    site: Path  # the aarch64 site-packages


def prepare(folder: Path, progress: Progress) -> Guest:
    """The guest's Python, compiler and site-packages, with scripts in ``folder``.

    apt is asked once (asking costs seconds on a loaded machine); the
    sysroot, the packages and the wheels come from the image builder's cache."""
    arch = get_arch(ARCH)
    emulator = shutil.which(arch.qemu_user)
    compiler = shutil.which(f"{ARCH}-linux-gnu-gcc")
    if emulator is None or compiler is None:
        raise FileNotFoundError(
            f"qemu-aarch64-static or {ARCH}-linux-gnu-gcc is missing: run scripts/system-deps.sh"
        )
    root = python_sysroot(ARCH, progress)
    archive = AptArchive(arch, cache_root(), progress)
    dev_name = f"libpython{GUEST_PYTHON}-dev"
    infos = archive.infos(["libc6", dev_name, *WHEEL_LIBRARY_PACKAGES, *FFI_LIBRARY_PACKAGES])
    libraries = _libraries(
        archive, [infos[n] for n in (*WHEEL_LIBRARY_PACKAGES, *FFI_LIBRARY_PACKAGES)]
    )
    run_folder = _links(folder / "lib-run", libraries)
    python = folder / "python3"
    python.write_text(
        "#!/bin/sh\n"
        f"exec {emulator} -L {root} -E LD_LIBRARY_PATH={run_folder} -0 {python} "
        f'{root / f"usr/bin/python{GUEST_PYTHON}"} "$@"\n'
    )
    python.chmod(0o755)
    link_folder = _links(
        folder / "lib-link",
        {
            "libz.so": root / "lib/aarch64-linux-gnu/libz.so.1",
            **{f"{name.split('.so')[0]}.so": path for name, path in libraries.items()},
        },
    )
    include = archive.unpack(infos[dev_name]) / "usr/include"
    cc = folder / "cc"
    cc.write_text(
        CC_SCRIPT.format(
            compiler=f"{compiler} -I{include / f'python{GUEST_PYTHON}'} -I{include} -L{link_folder}",
            emulator=f"{emulator} -L {root}",
        )
    )
    cc.chmod(0o755)
    return Guest(python, cc, site_packages(_glibc(infos["libc6"].version), progress))


_prepared: dict[Path, Guest] = {}


def session_guest(factory: pytest.TempPathFactory) -> Guest:
    """:func:`prepare` once per pytest session (the test modules share it);
    a missing emulator or compiler fails the test, naming what to install."""
    base = factory.getbasetemp()
    if base not in _prepared:
        try:
            _prepared[base] = prepare(factory.mktemp("aarch64-python"), lambda message: None)
        except FileNotFoundError as exc:
            pytest.fail(str(exc))
    return _prepared[base]


def _glibc(version: str) -> tuple[int, int]:
    """The guest's glibc (major, minor), from its libc6 package's version."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise PackageError(f"libc6 {version}: not a glibc version")
    return int(match.group(1)), int(match.group(2))


def site_packages(glibc: tuple[int, int], progress: Progress) -> Path:
    """The unpacked aarch64 site-packages, made once and kept in the cache."""
    arch = get_arch(ARCH)
    wanted = {name: importlib.metadata.version(name) for name in TEST_DISTRIBUTIONS}
    found = wheels.fetch(wanted, arch, GUEST_PYTHON, glibc, cache_root(), progress)
    stamp = "".join(f"{w.path.name} {w.sha256}\n" for w in found)
    target = cache_root() / "usersite" / arch.name
    if (target / ".wheels").is_file() and (target / ".wheels").read_text() == stamp:
        return target
    partial = target.with_name(f"{arch.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for relative, contents in wheels.unpack(found).items():
        path = partial / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents)
    (partial / ".wheels").write_text(stamp)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def _libraries(archive: AptArchive, packages: list[PackageInfo]) -> dict[str, Path]:
    """Shared objects the sysroot lacks, by file name: what manylinux wheels
    take from the system besides libc (libgcc_s for cryptography's Rust
    code; the Debian packages the image builder puts beside the wheels), and
    the C libraries the FFI suite binds (libcrypt; libsqlite3, which
    Python's own sqlite3 module loads too), liblzma and libbz2."""
    found: dict[str, Path] = {}
    for package in packages:
        tree = archive.unpack(package)
        for folder in ("usr/lib/aarch64-linux-gnu", "lib/aarch64-linux-gnu"):
            for path in sorted((tree / folder).glob("lib*.so.*")):
                found[path.name] = path
    return found


def _links(folder: Path, names: dict[str, Path]) -> Path:
    """``folder`` holding a link per name (the packages' own paths may hold a
    colon, which a search path cannot)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in names.items():
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(target)
    return folder


# ``$CC`` for the FFI under emulation: the aarch64 cross compiler with the
# guest Python's own headers (Debian's arm64 libpython-dev, whose
# pyconfig.h describes the guest's build) ahead of the host's, and the
# guest's zlib, libcrypt and libsqlite3 to link against. A program it links
# (no -shared, -c, -S, -E or -fsyntax-only; the FFI's layout probes) named
# by -o becomes NAME.aarch64 and NAME a script running it under qemu-user,
# as binfmt_misc would: the emulated Python can then run it.
CC_SCRIPT = """#!/bin/sh
out=; link=1; previous=
for word in "$@"; do
    case "$word" in -shared|-c|-S|-E|-fsyntax-only) link=0;; esac
    [ "$previous" = -o ] && out=$word
    previous=$word
done
{compiler} "$@" || exit $?
if [ $link = 1 ] && [ -n "$out" ]; then
    mv "$out" "$out.aarch64"
    printf '#!/bin/sh\\nexec {emulator} %s "$@"\\n' "$(realpath "$out.aarch64")" > "$out"
    chmod +x "$out"
fi
"""
