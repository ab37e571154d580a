"""Packing for the unix target: compiled packages, and the application's
own files, extracted at start by :mod:`looming.config.build_boot`.

A zipapp imports pure Python from inside itself, but neither a compiled
extension nor a file read through ``__file__`` (a Jinja2 templates folder,
Starlette's ``StaticFiles``) can be used from there. The compiled packages
the unikernel reaches are packed as the build's interpreter has them, with
what they were compiled for; when the application's modules name files or
folders beside them (a string such as ``"templates"`` or ``"static/css"``
that is the path of one, relative to the module), those are packed with the
application's modules, which then run from the extracted copy.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from looming.config import build_boot
from looming.errors import ConfigError

if TYPE_CHECKING:
    from looming.config.build import Closure

SHEBANG = b"#!/usr/bin/env python3\n"
BOOT_MODULE = "_looming_boot"
"""The archive's name of :mod:`looming.config.build_boot`."""
_EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)
LAYOUT = b"looming native layout 2\0"
"""Hashed into each digest: a cached copy of another layout is never taken for this one's."""


@dataclass
class NativePack:
    """Compiled packages packed for the build's interpreter (``natives``)."""

    entries: dict[str, bytes]
    manifest: dict[str, object]

    @property
    def packages(self) -> list[str]:
        """The compiled packages packed."""
        return build_boot.listed(self.manifest, "packages")

    @property
    def compiled_for(self) -> str:
        m = self.manifest
        version = [int(v) for v in build_boot.listed(m, "version")]
        return build_boot.describe(str(m["implementation"]), version, str(m["platform"]))


_SKIPPED_SUFFIXES = (".pyc", ".pyi", ".pyx", ".pxd", ".pxi", ".c", ".h", ".cpp", ".hpp")
"""Bytecode, stubs and the C or Cython sources some wheels ship: never imported."""


def _package_files(top: str, libs: dict[str, list[Path]]) -> list[tuple[str, Path]]:
    """(path relative to site-packages, file) of the installed top-level module
    ``top`` and the shared libraries its wheel vendors (``<dist>.libs/``)."""
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise ConfigError(f"{top!r} is imported but not installed; install it or remove the import")
    if spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
        base = folder.parent
        files = [
            f
            for f in folder.rglob("*")
            if f.is_file()
            and "__pycache__" not in f.relative_to(folder).parts
            and not f.name.endswith(_SKIPPED_SUFFIXES)
        ]
    elif spec.origin and spec.has_location:
        base, files = Path(spec.origin).parent, [Path(spec.origin)]
    else:
        return []
    found = [(f.relative_to(base).as_posix(), f) for f in files]
    found += [(f"{p.parent.name}/{p.name}", p) for p in libs.get(top, [])]
    return sorted(found)


def _vendored_libraries() -> dict[str, list[Path]]:
    """Top-level module -> the files of its wheel's ``<dist>.libs/`` folder (auditwheel's)."""
    found: dict[str, list[Path]] = {}
    for top, dists in importlib.metadata.packages_distributions().items():
        for name in dists:
            files = importlib.metadata.distribution(name).files or []
            libs = [f for f in files if len(f.parts) == 2 and f.parts[0].endswith(".libs")]
            found.setdefault(top, []).extend(Path(str(f.locate())) for f in libs)
    return found


def _extension_suffix(name: str) -> str | None:
    matching = [s for s in _EXTENSION_SUFFIXES if name.endswith(s)]
    return max(matching, key=len) if matching else None


def native_pack(
    tops: set[str], app: dict[str, bytes] | None = None, unpacked: list[str] | None = None
) -> NativePack:
    """The compiled packages ``tops`` as this interpreter has them, and the
    application's ``app`` entries (relative path: bytes), with a manifest of
    what they need (with neither, the start still checks the Python version)
    and of the ``unpacked`` modules (installed here, not packed: the start
    names one that is imported, see :class:`build_boot.NotPacked`)."""
    libs = _vendored_libraries() if tops else {}
    entries: dict[str, bytes] = {}
    suffixes: set[str] = set()
    for top in sorted(tops):
        for relative, path in _package_files(top, libs):
            entries[build_boot.FILES + relative] = path.read_bytes()
            suffix = _extension_suffix(relative)
            if suffix is not None:
                suffixes.add(suffix)
    entries.update((build_boot.APP + name, data) for name, data in (app or {}).items())

    def digest(prefix: str) -> str:
        """Of the entries under ``prefix``: each tree is its own cache copy,
        so a rebuild of the application shares the compiled packages'."""
        hashed = hashlib.sha256(LAYOUT)
        for name in sorted(n for n in entries if n.startswith(prefix)):
            hashed.update(f"{name}\0{len(entries[name])}\0".encode() + entries[name])
        return hashed.hexdigest()[:32]

    manifest: dict[str, object] = {
        "implementation": sys.implementation.name,
        "version": list(sys.version_info[:2]),
        "platform": sysconfig.get_platform(),
        "suffixes": sorted(suffixes),
        "packages": sorted(tops),
        "app": len(app or {}),
        "requires": list(build_boot.REQUIRES),
        "digest": digest(build_boot.FILES),
        "app_digest": digest(build_boot.APP),
    }
    if unpacked:
        manifest["unpacked"] = sorted(unpacked)
    entries[build_boot.MANIFEST] = json.dumps(manifest, sort_keys=True, indent=1).encode()
    entries[f"{BOOT_MODULE}.py"] = Path(build_boot.__file__).read_bytes()
    return NativePack(entries, manifest)


_NEVER_DATA = frozenset({"_build", "dist", "__pycache__", "node_modules", "site-packages"})
"""Folders never packed as the application's files (builds, caches, installs)."""


def _names_a_path(text: str) -> bool:
    return (
        0 < len(text) < 256
        and not text.startswith(("/", "~"))
        and not any(c in text for c in "\n\0*?")
        and text not in (".", "./")
    )


def _packable(path: Path, root: Path, excluded: tuple[Path, ...]) -> bool:
    """Whether ``path`` (resolved) is an application file or folder to pack."""
    if path == root or not path.is_relative_to(root) or not path.exists():
        return False
    parts = path.relative_to(root).parts
    if any(p.startswith(".") or p in _NEVER_DATA for p in parts):
        return False
    if any(path.is_relative_to(e) for e in excluded):
        return False
    return not (path.is_dir() and (path / "pyvenv.cfg").exists())


CONVENTIONAL_FOLDERS = ("templates", "static")
"""Folders beside an application module packed even when no string names
them: Flask's and Quart's defaults (``template_folder``, ``static_folder``)."""


def referenced_paths(
    sources: list[tuple[Path, bytes]], app_dir: Path, excluded: list[Path]
) -> list[Path]:
    """The files and folders of ``app_dir`` an application module names by a
    string that is their path relative to the module's folder
    (``Jinja2Templates(directory=HERE / "templates")``), and the
    :data:`CONVENTIONAL_FOLDERS` beside it: resolved, sorted.

    ``sources`` are (module file, source); ``excluded`` folders (kv_ro
    folders, crunched apart) and hidden, build and virtual-env folders are
    never named."""
    root = app_dir.resolve()
    skip = tuple(e.resolve() for e in excluded)
    found: set[Path] = set()
    for path, source in sources:
        base = path.parent
        for conventional in CONVENTIONAL_FOLDERS:
            candidate = (base / conventional).resolve()
            if candidate.is_dir() and _packable(candidate, root, skip):
                found.add(candidate)
        for node in ast.walk(ast.parse(source, str(path))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if not _names_a_path(node.value):
                continue
            candidate = (base / node.value).resolve()
            if _packable(candidate, root, skip):
                found.add(candidate)
    return sorted(found)


def application_files(paths: list[Path], app_dir: Path) -> dict[str, Path]:
    """Archive name (relative to ``app_dir``) -> file, for the files and the
    regular files inside the folders ``paths``; hidden entries, caches and
    links leading out of ``app_dir`` are left out."""
    root = app_dir.resolve()
    files: dict[str, Path] = {}
    for path in paths:
        inside = [path] if path.is_file() else sorted(path.rglob("*"))
        for item in inside:
            resolved = item.resolve()
            relative = item.relative_to(path.parent) if item != path else Path(path.name)
            parts = (*path.parent.relative_to(root).parts, *relative.parts)
            if (
                not resolved.is_file()
                or not resolved.is_relative_to(root)
                or any(p.startswith(".") or p == "__pycache__" for p in parts)
                or item.suffix == ".pyc"
            ):
                continue
            files["/".join(parts)] = resolved
    return files


def compiled_packages_to_pack(closure: Closure) -> set[str]:
    """The compiled packages reached, but those a library imports only on a
    request looming never makes (anyio's uvloop): an event loop or parser
    chosen by name at run time (``--loop``, ``--http-parser``) is the running
    interpreter's own."""
    from looming.vm.image import on_request_only

    return closure.external - on_request_only(closure)


def main_with_boot(source: bytes) -> bytes:
    """The generated ``main.py`` calling :func:`build_boot.prepare` before its
    own imports (after its docstring and ``from __future__`` imports)."""
    tree = ast.parse(source)
    after = 0
    for index, node in enumerate(tree.body):
        is_docstring = (
            index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        )
        if is_docstring or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            after = node.end_lineno or node.lineno
        else:
            break
    lines = source.splitlines(keepends=True)
    boot = (
        f"import {BOOT_MODULE}  # compiled packages: check the interpreter, extract them\n"
        f"{BOOT_MODULE}.prepare()\n"
    ).encode()
    return b"".join([*lines[:after], boot, *lines[after:]])


def shebang(pack: NativePack | None) -> bytes:
    """``python3``, or ``python3.X`` when compiled packages need that version."""
    if pack is None or not pack.packages:
        return SHEBANG
    return f"#!/usr/bin/env python{sys.version_info[0]}.{sys.version_info[1]}\n".encode()


_METADATA_FILES = frozenset({"METADATA", "entry_points.txt", "top_level.txt"})
"""What of a ``.dist-info`` folder is packed: enough for
``importlib.metadata.version()`` and entry points, which libraries read at
import time (Litestar its own version, OpenTelemetry its context)."""


def distribution_metadata(tops: set[str]) -> dict[str, bytes]:
    """Archive entries of the ``.dist-info`` metadata of the installed
    distributions that provide the top-level modules ``tops``."""
    owners = importlib.metadata.packages_distributions()
    entries: dict[str, bytes] = {}
    for name in sorted({d for top in tops for d in owners.get(top, [])}):
        for file in importlib.metadata.distribution(name).files or []:
            parts = file.parts
            if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] in _METADATA_FILES:
                entries[file.as_posix()] = Path(str(file.locate())).read_bytes()
    return entries


def installed_modules() -> set[str]:
    """The top-level modules the installed distributions provide (not the
    standard library's)."""
    return {
        top
        for top in importlib.metadata.packages_distributions()
        if top.isidentifier() and top not in sys.stdlib_module_names
    }


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def required_modules(tops: set[str]) -> set[str]:
    """The top-level modules of the installed distributions that those
    providing ``tops`` require (not for an extra): what compiled code may
    import without an import statement the build could read (cryptography's
    Rust core imports cffi's ``_cffi_backend``). Markers other than extras
    are not evaluated: a requirement that is installed is taken."""
    owners = importlib.metadata.packages_distributions()
    provides: dict[str, set[str]] = {}
    for top, dists in owners.items():
        if top.isidentifier():
            for dist in dists:
                provides.setdefault(_normalised(dist), set()).add(top)
    found: set[str] = set()
    for dist in sorted({d for top in tops for d in owners.get(top, [])}):
        for requirement in importlib.metadata.requires(dist) or []:
            name, _, marker = requirement.partition(";")
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", name)
            if match is not None and "extra" not in marker:
                found |= provides.get(_normalised(match.group(1)), set())
    return found - tops
