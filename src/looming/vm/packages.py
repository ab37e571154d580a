"""Debian packages for a guest architecture: fetched with apt, unpacked with dpkg-deb.

Each architecture gets a private apt configuration and state under the
cache folder (``APT::Architecture`` set to the guest's), so fetching arm64
packages on an amd64 host never touches the host's dpkg architectures or
its package lists. Downloaded ``.deb`` files and their unpacked trees are
kept, so a second build fetches nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from looming.errors import LoomingError, UsageError
from looming.vm.arch import Arch

Progress = Callable[[str], None]

SYSTEM_SOURCES = Path("/etc/apt/sources.list.d")
SYSTEM_SOURCES_LIST = Path("/etc/apt/sources.list")


class PackageError(LoomingError):
    """A Debian package could not be found, fetched or unpacked."""


def cache_root() -> Path:
    """Where packages and unpacked trees are kept between builds."""
    configured = os.environ.get("LOOMING_VM_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "looming" / "vm"


@dataclass(frozen=True)
class PackageInfo:
    name: str
    version: str
    filename: str  # the .deb's name in the archive's pool
    depends: str


def check_host_tools() -> None:
    """Fail with a clear message, before any download, if apt or dpkg-deb is missing."""
    for tool, package in (("apt-get", "apt"), ("apt-cache", "apt"), ("dpkg-deb", "dpkg")):
        if shutil.which(tool) is None:
            raise UsageError(
                f"building a VM image needs {tool} (Debian package {package}); "
                "build on a Debian or Ubuntu host"
            )


# Set by ``looming build --refresh``: fetch the package lists again (once per
# architecture and build), so security updates of the kernel, libc and
# Python reach the image.
REFRESH_ENV = "LOOMING_REFRESH"
_refreshed: set[Path] = set()


class AptArchive:
    """apt, configured privately for one guest architecture."""

    def __init__(self, arch: Arch, root: Path, progress: Progress) -> None:
        self.arch = arch
        self.root = root / arch.debian
        self.progress = progress
        self.apt_dir = self.root / "apt"
        self.debs = self.root / "debs"
        self.trees = self.root / "trees"
        self._updated = False

    def _options(self) -> list[str]:
        apt = self.apt_dir
        return [
            "-o", f"APT::Architecture={self.arch.debian}",
            "-o", f"APT::Architectures={self.arch.debian}",
            "-o", f"Dir::State={apt / 'state'}",
            "-o", f"Dir::State::status={apt / 'state' / 'status'}",
            "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", f"Dir::Etc={apt / 'etc'}",
            "-o", "Dir::Etc::Trusted=/etc/apt/trusted.gpg",
            "-o", "Dir::Etc::TrustedParts=/etc/apt/trusted.gpg.d",
            "-o", "Acquire::Languages=none",
            "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip

    def _prepare(self) -> None:
        etc = self.apt_dir / "etc"
        for sub in (
            self.apt_dir / "state" / "lists" / "partial",
            self.apt_dir / "cache" / "archives" / "partial",
            etc / "sources.list.d",
            etc / "preferences.d",
            etc / "apt.conf.d",
            self.debs,
            self.trees,
        ):
            sub.mkdir(parents=True, exist_ok=True)
        (self.apt_dir / "state" / "status").touch()
        # The guest's packages come from the same archives the host uses.
        if SYSTEM_SOURCES_LIST.is_file():
            shutil.copy(SYSTEM_SOURCES_LIST, etc / "sources.list")
        if SYSTEM_SOURCES.is_dir():
            for source in SYSTEM_SOURCES.iterdir():
                if source.suffix in (".list", ".sources"):
                    shutil.copy(source, etc / "sources.list.d" / source.name)

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        command = [tool, *self._options(), *args]
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise PackageError(
                f"{' '.join([tool, *args])} failed: {detail[-1] if detail else done.returncode}"
            )
        return done.stdout

    def update(self) -> None:
        """Fetch the package lists for the guest architecture."""
        self._prepare()
        self.progress(f"fetching Debian package lists for {self.arch.debian}")
        self._run("apt-get", "-q", "update")
        self._updated = True

    def _ensure_lists(self) -> None:
        lists = self.apt_dir / "state" / "lists"
        refresh = os.environ.get(REFRESH_ENV) == "1" and self.root not in _refreshed
        if refresh or not any(lists.glob("*_Packages*")):
            self.update()
            _refreshed.add(self.root)

    def info(self, name: str) -> PackageInfo:
        """The candidate version of package ``name``."""
        return self.infos([name])[name]

    def infos(self, names: list[str]) -> dict[str, PackageInfo]:
        """The candidate versions of several packages, asking apt once."""
        self._ensure_lists()
        try:
            text = self._run("apt-cache", "show", "--no-all-versions", *names)
        except PackageError:
            if self._updated:
                raise
            self.update()
            text = self._run("apt-cache", "show", "--no-all-versions", *names)
        found: dict[str, PackageInfo] = {}
        for paragraph in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in paragraph.splitlines():
                if not line or line[0].isspace():
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key, value.strip())
            if "Package" not in fields or "Filename" not in fields:
                continue
            found.setdefault(
                fields["Package"],
                PackageInfo(
                    fields["Package"],
                    fields["Version"],
                    Path(fields["Filename"]).name,
                    ", ".join(filter(None, (fields.get("Pre-Depends"), fields.get("Depends")))),
                ),
            )
        absent = [n for n in names if n not in found]
        if absent:
            raise PackageError(
                f"no {self.arch.debian} package named {', '.join(absent)} in the archive"
            )
        return found

    def kernel(self) -> PackageInfo:
        """The cloud kernel package the architecture's metapackage points at."""
        meta = self.info(self.arch.kernel_package)
        first = meta.depends.split(",")[0].split("(")[0].strip()
        if not first.startswith("linux-image-"):
            raise PackageError(f"{meta.name} does not depend on a kernel image: {meta.depends}")
        return self.info(first)

    def fetch(self, package: PackageInfo) -> Path:
        """The package's .deb, downloaded unless already cached."""
        # apt-get download names the file with the epoch's colon escaped.
        pattern = f"{package.name}_{package.version.replace(':', '%3a')}_*.deb"
        cached = sorted(self.debs.glob(pattern))
        if cached:
            return cached[0]
        self.progress(f"downloading {package.name} {package.version} ({self.arch.debian})")
        try:
            self._run(
                "apt-get", "-q", "download", f"{package.name}={package.version}", cwd=self.debs
            )
        except PackageError:
            if self._updated:
                raise
            # The lists were stale (the version left the archive): refresh once.
            self.update()
            fresh = self.info(package.name)
            return self.fetch(fresh)
        cached = sorted(self.debs.glob(pattern))
        if not cached:
            raise PackageError(f"apt-get download did not produce {pattern}")
        return cached[0]

    def unpack(self, package: PackageInfo) -> Path:
        """The package's files, unpacked with dpkg-deb once and kept."""
        tree = self.trees / f"{package.name}_{package.version}"
        marker = tree / ".unpacked"
        if marker.is_file():
            return tree
        deb = self.fetch(package)
        self.progress(f"unpacking {deb.name}")
        partial = tree.with_name(tree.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        done = subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(partial)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise PackageError(f"dpkg-deb -x {deb.name} failed: {done.stderr.strip()}")
        (partial / ".unpacked").write_text(package.version + "\n")
        shutil.rmtree(tree, ignore_errors=True)
        partial.rename(tree)
        return tree

    def get(self, name: str) -> tuple[PackageInfo, Path]:
        package = self.info(name)
        return package, self.unpack(package)
