"""Packages with compiled code, as wheels for the guest's architecture and Python.

The guest runs Debian's CPython (3.11) on glibc, which takes manylinux
wheels. For each installed distribution the unikernel reaches that has
compiled code, the same version is fetched with ``pip download
--only-binary=:all:`` for the guest's platform (manylinux tags up to the
guest's glibc), with its dependencies pinned to the versions installed
here. pip checks each file against the hash the index publishes; the
wheels are kept in ``$LOOMING_VM_CACHE/wheels/ARCH/`` with their SHA-256
in ``index.json``, checked again at every reuse, so a later build needs no
network and a changed file in the cache is noticed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from looming.errors import UsageError
from looming.vm.arch import Arch

OLDEST_MANYLINUX = 17  # manylinux2014 = manylinux_2_17
WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


class WheelError(UsageError):
    """A package has no wheel for the guest, or its wheel cannot be fetched: exit 2."""


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    path: Path
    sha256: str


def distributions(tops: set[str]) -> dict[str, str]:
    """Installed distribution name -> version, for top-level import names."""
    owners = importlib.metadata.packages_distributions()
    found: dict[str, str] = {}
    for top in sorted(tops):
        names = owners.get(top)
        if not names:
            raise WheelError(
                f"{top!r} has compiled code but belongs to no installed distribution, so no "
                "wheel can be fetched for the image; install it with pip"
            )
        for name in names:
            found[name] = importlib.metadata.version(name)
    return found


def _installed_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions[_normal(name)] = dist.version
    return versions


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def platforms(arch: Arch, glibc: tuple[int, int]) -> list[str]:
    """pip's --platform values the guest takes: manylinux up to its glibc."""
    machine = arch.name
    return [f"manylinux_2_{minor}_{machine}" for minor in range(glibc[1], OLDEST_MANYLINUX - 1, -1)]


def fetch(
    wanted: dict[str, str],
    arch: Arch,
    python: str,
    glibc: tuple[int, int],
    cache: Path,
    progress: Callable[[str], None],
) -> list[Wheel]:
    """The wheels of ``wanted`` (name -> version) and their dependencies for the guest."""
    folder = cache / "wheels" / arch.name
    folder.mkdir(parents=True, exist_ok=True)
    index_file = folder / "index.json"
    index: dict[str, dict[str, str]] = (
        json.loads(index_file.read_text()) if index_file.is_file() else {}
    )
    key = f"{python}:" + ",".join(f"{n}=={v}" for n, v in sorted(wanted.items()))
    if key in index and all((folder / f).is_file() for f in index[key]):
        return _checked(folder, index[key])
    progress(f"fetching wheels for {arch.name}: {', '.join(f'{n} {v}' for n, v in wanted.items())}")
    constraints = folder / "constraints.txt"
    constraints.write_text(
        "".join(f"{n}=={v}\n" for n, v in sorted(_installed_versions().items()) if n != "pip")
    )
    before = {p.name for p in folder.glob("*.whl")}
    # LOOMING_PIP: another Python to run pip with (tests give one that fails).
    command = [
        os.environ.get("LOOMING_PIP", sys.executable), "-m", "pip", "download", "--disable-pip-version-check",
        "--only-binary=:all:", "--implementation", "cp",
        "--python-version", python, "--abi", f"cp{python.replace('.', '')}",
        *(f"--platform={p}" for p in platforms(arch, glibc)),
        "--dest", str(folder), "-c", str(constraints),
        *(f"{n}=={v}" for n, v in sorted(wanted.items())),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise WheelError(_explain(done.stderr or done.stdout, wanted, arch, python))
    # pip names each file it saved or found already downloaded.
    files = sorted(
        {Path(m).name for m in re.findall(r"(?:Saved|already downloaded) (\S+\.whl)", done.stdout)}
        | ({p.name for p in folder.glob("*.whl")} - before)
    )
    entry = {name: _sha256(folder / name) for name in files}
    index[key] = entry
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return _checked(folder, entry)


def _checked(folder: Path, entry: dict[str, str]) -> list[Wheel]:
    wheels = []
    for file_name, digest in sorted(entry.items()):
        path = folder / file_name
        if _sha256(path) != digest:
            raise WheelError(
                f"the cached wheel {path} does not match the SHA-256 recorded when it was "
                "fetched; delete it and build again"
            )
        match = WHEEL_NAME.match(file_name)
        name, version = (match["name"], match["version"]) if match else (file_name, "?")
        wheels.append(Wheel(name, version, path, digest))
    return wheels


def _explain(output: str, wanted: dict[str, str], arch: Arch, python: str) -> str:
    named = re.search(r"(?:No matching distribution found for|version that satisfies the "
                      r"requirement) ([A-Za-z0-9_.\-]+)", output)  # fmt: skip
    if named:
        package = named.group(1).split("=")[0]
        return (
            f"{package} has no wheel for {arch.name} and CPython {python} (manylinux); an "
            "image holds only packages built for its architecture: use another version "
            f"of {package} that has one, or another architecture"
        )
    last = (output.strip().splitlines() or ["(no output)"])[-1]
    return (
        f"pip could not fetch wheels of {', '.join(wanted)} for {arch.name}: {last}; "
        "check the network"
    )


def unpack(wheels: list[Wheel]) -> dict[str, bytes]:
    """Relative path -> contents of every file the wheels install into site-packages."""
    files: dict[str, bytes] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel.path) as archive:
            for info in archive.infolist():
                if info.is_dir() or info.filename.split("/")[0].endswith(".data"):
                    continue
                files[info.filename] = archive.read(info)
    return files
