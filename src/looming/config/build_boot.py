"""The start of a zipapp that holds compiled modules (the unix target's).

A zipapp cannot import a compiled extension from inside itself, and the
host's own copy of a package (Debian's python3-pydantic-core, or none) need
not match the pure-Python half the build packed. So the build packs every
compiled package the unikernel reaches, as the build's interpreter has it,
under ``_looming_native/`` with a manifest of what they were compiled for;
this module (packed as ``_looming_boot.py``, called first by the artifact's
``__main__``) checks that the running interpreter can load them, extracts
them once into a private cache folder named by their digest and puts that
folder on ``sys.path`` right after the artifact.

An interpreter that cannot load them (another version, implementation,
ABI or platform) gets one line naming the interpreter the artifact was
built for, and exit status 2, before anything else is imported.

Only the standard library is used, in a syntax Python 3.7 parses (the
generated ``__main__`` needs 3.7 too), so an older ``python3`` reaches the
message rather than a SyntaxError.
"""

from __future__ import annotations

import atexit
import calendar
import importlib.machinery
import json
import os
import shutil
import stat
import sys
import sysconfig
import tempfile
import time
import zipfile

NATIVE_DIR = "_looming_native"
"""Folder of the archive holding the compiled packages (``files/``) and the manifest."""

MANIFEST = NATIVE_DIR + "/manifest.json"
FILES = NATIVE_DIR + "/files/"
"""The compiled packages: on ``sys.path`` right after the artifact."""
APP = NATIVE_DIR + "/app/"
"""The application's modules with the files they read beside them (templates,
static folders): on ``sys.path`` before the artifact, so ``__file__`` is a
real path there."""
COMPLETE = ".complete"
"""Written last into an extracted folder: a folder without it is not used."""

REQUIRES = (3, 11)
"""The oldest Python looming runs on (``requires-python`` in pyproject.toml)."""

CACHE_ENV = "LOOMING_NATIVE_CACHE"
"""Where extracted packages are kept (default ``$XDG_CACHE_HOME/looming/native``)."""


def describe(implementation: str, version: list[int], platform: str) -> str:
    names = {"cpython": "CPython", "pypy": "PyPy"}
    return f"{names.get(implementation, implementation)} {version[0]}.{version[1]} on {platform}"


def listed(manifest: dict[str, object], key: str) -> list[str]:
    """The list ``key`` of the manifest, as strings."""
    value = manifest.get(key)
    return [str(v) for v in value] if isinstance(value, list) else []


def incompatibility(manifest: dict[str, object], archive: str) -> str | None:
    """Why this interpreter cannot run ``archive`` (too old, or unable to load
    the extensions packed in it), or None."""
    requires = [int(v) for v in listed(manifest, "requires")] or list(REQUIRES)
    if tuple(sys.version_info[:2]) < tuple(requires):
        running = ".".join(str(v) for v in sys.version_info[:3])
        python = f"python{requires[0]}.{requires[1]}"
        return (
            f"{archive} needs Python {requires[0]}.{requires[1]} or newer; "
            f"{sys.executable or 'this interpreter'} is Python {running}. "
            f"Run it with {python} or newer ({python} {archive})"
        )
    if not listed(manifest, "packages"):
        return None
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    wanted = listed(manifest, "suffixes")
    version = [int(v) for v in listed(manifest, "version")]
    here = describe(sys.implementation.name, list(sys.version_info[:2]), sysconfig.get_platform())
    built = describe(str(manifest["implementation"]), version, str(manifest["platform"]))
    if (
        sys.implementation.name != manifest["implementation"]
        or sysconfig.get_platform() != manifest["platform"]
        or any(s not in suffixes for s in wanted)
        or tuple(sys.version_info[:2]) < tuple(version)
    ):
        python = f"python{version[0]}.{version[1]}"
        return (
            f"{archive} holds compiled modules ({', '.join(listed(manifest, 'packages'))}) "
            f"built for {built} ({' '.join(wanted)}); {sys.executable or 'this interpreter'} "
            f"is {here} ({' '.join(suffixes[:1])}). Run it with {python} ({python} {archive}), "
            "or build it with the interpreter that is to run it"
        )
    return None


def _private_folder(path: str) -> bool:
    """Make ``path`` (mode 700) if needed; whether it is ours alone."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def cache_root() -> str | None:
    """The folder extracted packages are kept in, or None if none is ours alone."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "looming", "native")
    return root if _private_folder(root) else None


def _write_members(
    archive: zipfile.ZipFile, names: list[str], folder: str, prefix: str = FILES
) -> None:
    for name in names:
        relative = name[len(prefix) :]
        parts = relative.split("/")
        if not name.startswith(prefix) or any(p in ("", ".", "..") for p in parts):
            raise RuntimeError(f"bad entry in the artifact: {name!r}")
        target = os.path.join(folder, *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with archive.open(name) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        # The entry's fixed time, not the time of extraction: what a server
        # derives from it (Last-Modified, Starlette's ETag) is then the same
        # on every machine and after every extraction.
        stamp = calendar.timegm((*archive.getinfo(name).date_time, 0, 0, 0))
        os.utime(target, (stamp, stamp))
    with open(os.path.join(folder, COMPLETE), "w") as marker:
        marker.write("complete\n")


UNUSED_FOR = 30 * 86400
"""Seconds after which an extracted copy no start has used is removed (by
the next start that extracts one): rebuilds leave a copy each."""


def _mark_used(final: str) -> None:
    """Refresh the copy's marker time, at most daily (it dates the last use)."""
    marker = os.path.join(final, COMPLETE)
    try:
        if time.time() - os.stat(marker).st_mtime > 86400:
            os.utime(marker)
    except OSError:
        pass


def _prune(root: str, keep: str) -> None:
    """Remove the copies in ``root`` unused for :data:`UNUSED_FOR` seconds."""
    now = time.time()
    for name in os.listdir(root):
        folder = os.path.join(root, name)
        if folder == keep:
            continue
        try:
            used = os.stat(os.path.join(folder, COMPLETE)).st_mtime
        except OSError:
            used = os.stat(folder).st_mtime if os.path.isdir(folder) else now
        if now - used > UNUSED_FOR:
            shutil.rmtree(folder, ignore_errors=True)


def extract(archive: zipfile.ZipFile, digest: str, prefix: str = FILES) -> str:
    """The folder holding the archive's entries under ``prefix`` (one of
    :data:`EXTRACTED`), extracted if needed into the cache as ``digest``."""
    names = sorted(n for n in archive.namelist() if n.startswith(prefix) and not n.endswith("/"))
    root = cache_root()
    if root is None:
        folder = tempfile.mkdtemp(prefix="looming-native-")
        atexit.register(shutil.rmtree, folder, True)
        _write_members(archive, names, folder, prefix)
        return folder
    final = os.path.join(root, digest)
    if os.path.isfile(os.path.join(final, COMPLETE)):
        _mark_used(final)
        return final
    staging = tempfile.mkdtemp(prefix=".staging-", dir=root)
    try:
        _write_members(archive, names, staging, prefix)
        if os.path.isdir(final) and not os.path.isfile(os.path.join(final, COMPLETE)):
            # Not one this code published (renamed only once complete): replace it.
            shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)  # another start may have published it first: then it fails
    except OSError:
        if not os.path.isfile(os.path.join(final, COMPLETE)):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune(root, final)
    return final


class NotPacked:
    """The last finder on ``sys.meta_path``: a module nothing found, that was
    installed where the artifact was built but not packed in it (imported
    under a name computed at run time, which the build cannot read), gets a
    line on stderr, once, saying how to pack it. The import still fails."""

    def __init__(self, archive: str, names: list[str]) -> None:
        self.archive = archive
        self.names = set(names)
        self.told: set[str] = set()

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        top = name.partition(".")[0]
        if top in self.names and top not in self.told:
            self.told.add(top)
            sys.stderr.write(
                f"looming: {os.path.basename(self.archive)} does not hold the module {name!r}: "
                "it was installed where the artifact was built, but nothing the build read "
                "imports it (a name computed at run time?). If the application needs it, add "
                f"register(..., packages=[{top!r}]) in config.py and run 'looming build'\n"
            )
            sys.stderr.flush()
        return None

    def invalidate_caches(self) -> None:
        pass


def prepare(archive_path: str | None = None) -> None:
    """Check this interpreter, then put the extracted application (before the
    artifact) and compiled packages (after it) on sys.path. An interpreter
    that cannot run the artifact gets one line and exit status 2."""
    if archive_path is None:
        archive_path = os.path.dirname(__file__)
    with zipfile.ZipFile(archive_path) as archive:
        try:
            manifest = json.loads(archive.read(MANIFEST))
        except KeyError:
            return
        why = incompatibility(manifest, archive_path)
        if why is not None:
            sys.stderr.write(why + "\n")
            sys.exit(2)
        compiled = extract(archive, str(manifest["digest"])) if listed(manifest, "packages") else ""
        app = extract(archive, str(manifest["app_digest"]), APP) if manifest.get("app") else ""
    if listed(manifest, "unpacked"):
        sys.meta_path.append(NotPacked(archive_path, listed(manifest, "unpacked")))
    here = os.path.abspath(archive_path)
    entries = [os.path.abspath(p) if p else p for p in sys.path]
    position = entries.index(here) if here in entries else 0
    if compiled:
        sys.path.insert(position + 1, compiled)
    if app:
        sys.path.insert(position, app)
