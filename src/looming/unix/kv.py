"""Key-value stores on the host: a folder, or data crunched into the artifact.

Keys are ``/``-separated; each name is checked so that no key can reach
outside the store (``..``, empty names, NUL and backslashes are refused as
missing keys).

A read-only folder (``kv_ro``), crunched or read in place, serves what
:func:`served_target` allows, one rule for both: nothing hidden (a name
starting with ``.``) in the key or in where it leads, nothing outside the
folder, and links to folders are not followed (a link to a file inside is).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from looming.devices.kv import EntryKind
from looming.errors import DeviceError, KeyNotFound, NotAValue

MANIFEST_DIR = "_looming/kv"


def split_key(key: str) -> tuple[str, ...] | None:
    """The names of ``key``, or ``None`` when it cannot name anything safely."""
    parts = tuple(p for p in key.split("/") if p != "")
    for p in parts:
        if p in (".", "..") or "\x00" in p or "\\" in p:
            return None
    return parts


class DirectoryKv:
    """:class:`looming.devices.KvRo` over a host folder (``--kv-ro direct``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).resolve()
        if not self._root.is_dir():
            raise DeviceError(f"kv_ro: {self._root} is not a folder; create it or fix the path")

    @classmethod
    async def connect(cls, root: str | os.PathLike[str]) -> DirectoryKv:
        return cls(root)

    def _path(self, key: str) -> Path | None:
        parts = split_key(key)
        if parts is None:
            return None
        found = served_target(self._root, parts)
        return found if isinstance(found, Path) else None

    def _value_path(self, key: str) -> Path:
        path = self._path(key)
        if path is None or not path.exists():
            raise KeyNotFound(key)
        if path.is_dir():
            raise NotAValue(f"{key!r} is a dictionary, not a value")
        if not path.is_file():
            # A FIFO, socket or device: reading it could block for ever.
            raise KeyNotFound(key)
        return path

    async def exists(self, key: str) -> EntryKind | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        return EntryKind.DICTIONARY if path.is_dir() else EntryKind.VALUE

    async def get(self, key: str) -> bytes:
        return self._value_path(key).read_bytes()

    async def get_partial(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        with self._value_path(key).open("rb") as f:
            f.seek(offset)
            return f.read(length)

    async def size(self, key: str) -> int:
        return self._value_path(key).stat().st_size

    async def list(self, prefix: str = "") -> list[tuple[str, EntryKind]]:
        path = self._path(prefix)
        if path is None or not path.exists():
            raise KeyNotFound(prefix)
        if not path.is_dir():
            raise NotAValue(f"{prefix!r} is a value, not a dictionary")
        listing = []
        for name in sorted(os.listdir(path)):
            child = self._path(f"{prefix}/{name}")
            if child is not None and child.exists():
                listing.append((name, EntryKind.DICTIONARY if child.is_dir() else EntryKind.VALUE))
        return listing

    async def digest(self, key: str) -> str:
        path = self._path(key)
        if path is None or not path.exists():
            raise KeyNotFound(key)
        if path.is_dir():
            listing = "\n".join(f"{n}:{k.value}" for n, k in await self.list(key))
            return hashlib.sha256(listing.encode()).hexdigest()
        return hashlib.sha256(path.read_bytes()).hexdigest()

    async def last_modified(self, key: str) -> float:
        path = self._path(key)
        if path is None or not path.exists():
            raise KeyNotFound(key)
        return path.stat().st_mtime


class DirectoryKvRw(DirectoryKv):
    """:class:`looming.devices.KvRw` over a host folder, created if missing.

    Values are written to a temporary file and renamed into place, so a
    reader never sees half a value.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        super().__init__(root)
        self._writes = 0

    @classmethod
    async def connect(cls, root: str | os.PathLike[str]) -> DirectoryKvRw:
        return cls(root)

    def _path(self, key: str) -> Path | None:
        """The application's own state: any name, hidden ones too (values are
        written through hidden temporary files), as long as it stays inside."""
        parts = split_key(key)
        if parts is None:
            return None
        path = self._root.joinpath(*parts)
        # A symlink inside the folder must not lead outside it.
        if not path.resolve().is_relative_to(self._root):
            return None
        return path

    def generation(self) -> object:
        """Changes with every write made through this device, so a cache of
        what was read (:class:`looming.http.StaticSite`) drops what a write
        replaced. Files changed in the folder by other programs are not seen."""
        return self._writes

    def _writable_path(self, key: str) -> Path:
        path = self._path(key)
        parts = split_key(key)
        if path is None or not parts:
            raise DeviceError(f"kv_rw: {key!r} is not a valid key (empty, '..', NUL or '\\')")
        return path

    async def set(self, key: str, value: bytes) -> None:
        path = self._writable_path(key)
        if path.is_dir():
            raise NotAValue(f"{key!r} is a dictionary; remove it before storing a value")
        self._make_parents(key, path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        await asyncio.to_thread(_write_durably, tmp, value)
        os.replace(tmp, path)
        _sync_folder(path.parent)
        self._writes += 1

    def _make_parents(self, key: str, path: Path) -> None:
        """The dictionaries above ``path``; a value among them is an error
        naming the key, not an OSError."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise NotAValue(f"{key!r} is below a value; remove that value first") from None

    async def remove(self, key: str) -> None:
        path = self._writable_path(key) if split_key(key) else self._root
        self._writes += 1
        if path == self._root:
            for child in self._root.iterdir():
                _remove_tree(child)
            return
        if path.exists() or path.is_symlink():
            _remove_tree(path)
            _sync_folder(path.parent)

    async def rename(self, source: str, dest: str) -> None:
        """Move ``source`` to ``dest``, replacing what is there. Onto itself
        it does nothing; the root and moves into itself are refused."""
        src_parts, dst_parts = split_key(source), split_key(dest)
        if not src_parts or not dst_parts:
            raise DeviceError("kv_rw: cannot rename the root or rename onto it")
        src = self._path(source)
        if src is None or not (src.exists() or src.is_symlink()):
            raise KeyNotFound(source)
        if dst_parts[: len(src_parts)] == src_parts:
            if dst_parts == src_parts:
                return
            raise DeviceError(f"kv_rw: cannot move {source!r} into itself ({dest!r})")
        dst = self._writable_path(dest)
        self._make_parents(dest, dst)
        if src_parts[: len(dst_parts)] == dst_parts:
            # Out of the dictionary it replaces first, so removing that
            # dictionary does not remove it.
            aside = dst.with_name(f".{dst.name}.rename{os.getpid()}")
            os.replace(src, aside)
            src = aside
        if dst.exists() or dst.is_symlink():
            _remove_tree(dst)
        os.replace(src, dst)
        _sync_folder(dst.parent)
        if src.parent != dst.parent:
            _sync_folder(src.parent)
        self._writes += 1


def _write_durably(path: Path, value: bytes) -> None:
    with path.open("wb") as f:
        f.write(value)
        f.flush()
        os.fsync(f.fileno())


def _sync_folder(path: Path) -> None:
    """Make a rename or a new name in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@dataclass(frozen=True, slots=True)
class CrunchedEntry:
    size: int
    digest: str
    mtime: float


class CrunchedKv:
    """:class:`looming.devices.KvRo` over data crunched into the artifact.

    ``looming build`` stores the folder's files in the zipapp under
    ``_looming/kv/<name>/`` with a manifest of sizes, digests and
    modification times; this class loads them into memory on connect.
    """

    def __init__(self, entries: dict[tuple[str, ...], tuple[CrunchedEntry, bytes]]) -> None:
        self._values = entries
        self._dirs: dict[tuple[str, ...], dict[str, EntryKind]] = {(): {}}
        for parts in entries:
            for i in range(len(parts)):
                parent = parts[:i]
                kind = EntryKind.VALUE if i == len(parts) - 1 else EntryKind.DICTIONARY
                self._dirs.setdefault(parent, {})[parts[i]] = kind
                if kind is EntryKind.DICTIONARY:
                    self._dirs.setdefault(parts[: i + 1], {})

    @classmethod
    async def connect(cls, name: str, archive: str | None = None) -> CrunchedKv:
        return cls.load(name, archive)

    @classmethod
    def load(cls, name: str, archive: str | None = None) -> CrunchedKv:
        archive = archive or _running_archive()
        if archive is None:
            raise DeviceError(
                f"kv_ro {name!r} was crunched into the artifact, but this code is not "
                "running from one; run the built .pyz, or configure with --kv-ro direct"
            )
        read = _reader_of_running_archive(archive)
        if read is not None:
            return cls(_crunched_entries(name, read))
        import zipfile  # another archive than the one running

        with zipfile.ZipFile(archive) as z:
            return cls(_crunched_entries(name, z.read))

    def _lookup(self, key: str) -> tuple[CrunchedEntry, bytes]:
        parts = split_key(key)
        if parts is None:
            raise KeyNotFound(key)
        found = self._values.get(parts)
        if found is None:
            if parts in self._dirs:
                raise NotAValue(f"{key!r} is a dictionary, not a value")
            raise KeyNotFound(key)
        return found

    async def exists(self, key: str) -> EntryKind | None:
        parts = split_key(key)
        if parts is None:
            return None
        if parts in self._values:
            return EntryKind.VALUE
        return EntryKind.DICTIONARY if parts in self._dirs else None

    async def get(self, key: str) -> bytes:
        return self._lookup(key)[1]

    async def get_partial(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        return self._lookup(key)[1][offset : offset + length]

    async def size(self, key: str) -> int:
        return self._lookup(key)[0].size

    async def list(self, prefix: str = "") -> list[tuple[str, EntryKind]]:
        parts = split_key(prefix)
        if parts is None:
            raise KeyNotFound(prefix)
        children = self._dirs.get(parts)
        if children is None:
            if parts in self._values:
                raise NotAValue(f"{prefix!r} is a value, not a dictionary")
            raise KeyNotFound(prefix)
        return sorted(children.items())

    async def digest(self, key: str) -> str:
        parts = split_key(key)
        if parts is not None and parts in self._dirs and parts not in self._values:
            listing = "\n".join(f"{n}:{k.value}" for n, k in await self.list(key))
            return hashlib.sha256(listing.encode()).hexdigest()
        return self._lookup(key)[0].digest

    async def last_modified(self, key: str) -> float:
        parts = split_key(key)
        if parts is not None and parts in self._dirs and parts not in self._values:
            return 0.0
        return self._lookup(key)[0].mtime


def _crunched_entries(
    name: str, read: Callable[[str], bytes]
) -> dict[tuple[str, ...], tuple[CrunchedEntry, bytes]]:
    """kv_ro ``name``'s values, with ``read`` giving an archive's member."""
    entries: dict[tuple[str, ...], tuple[CrunchedEntry, bytes]] = {}
    manifest = json.loads(read(f"{MANIFEST_DIR}/{name}.json"))
    for rel, meta in manifest["files"].items():
        data = read(f"{MANIFEST_DIR}/{name}/{rel}")
        entry = CrunchedEntry(meta["size"], meta["sha256"], meta["mtime"])
        entries[tuple(rel.split("/"))] = (entry, data)
    return entries


def _reader_of_running_archive(archive: str) -> Callable[[str], bytes] | None:
    """Reads members of ``archive`` through the zipimporter this module was
    loaded by, when it is that archive: its directory is already read, and
    importing zipfile (with pathlib and importlib.util) is a boot cost a
    VM guest feels. None otherwise."""
    loader = globals().get("__loader__")
    get_data = getattr(loader, "get_data", None)
    if getattr(loader, "archive", None) != archive or get_data is None:
        return None

    def read(member: str) -> bytes:
        try:
            data = get_data(f"{archive}/{member}")
        except OSError:
            raise KeyError(f"There is no item named {member!r} in the archive") from None
        assert isinstance(data, bytes)
        return data

    return read


def _running_archive() -> str | None:
    """The zipapp this module was imported from, if any."""
    loader = globals().get("__loader__")
    archive = getattr(loader, "archive", None)
    return archive if isinstance(archive, str) else None


HIDDEN = "hidden"
HIDDEN_TARGET = "a link to a hidden entry"
OUTSIDE = "leading outside the folder"
FOLDER_LINK = "a link to a folder (not followed)"
LINK_LOOP = "a link that loops"


def served_target(root: Path, parts: tuple[str, ...]) -> Path | str:
    """Where the key ``parts`` leads in the read-only folder ``root`` (an
    absolute, resolved path), or why it is not served.

    The one rule for a folder crunched into the artifact and one read in
    place: no name of the key starts with ``.``; the key, links resolved,
    stays inside ``root`` and no name of that target (relative to ``root``)
    starts with ``.`` (so ``env.txt -> .env`` is refused); and links to
    folders are not followed, neither as the key's last name nor on the way
    (a link to a file inside the folder is served under its own name).
    Whether the target exists is left to the caller.
    """
    if any(name.startswith(".") for name in parts):
        return HIDDEN
    path = root.joinpath(*parts)
    try:
        target = path.resolve()
        if target == path:
            return path  # no link on the way (``root`` is resolved already)
        parent_target = path.parent.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a loop, before Python 3.13
        return LINK_LOOP
    if not target.is_relative_to(root):
        return OUTSIDE
    if any(name.startswith(".") for name in target.relative_to(root).parts):
        return HIDDEN_TARGET
    if parent_target != path.parent or target.is_dir():
        return FOLDER_LINK  # a link to a folder, on the way or at the end
    return target


@dataclass
class FolderSurvey:
    """What a kv_ro folder holds, as the server will see it."""

    served: list[tuple[str, Path]]
    """Regular files the folder serves: (relative name, path)."""
    hidden: list[str]
    """Entries whose name starts with ``.`` (their contents are not listed),
    and links leading to one."""
    outside: list[str]
    """Symbolic links leading out of the folder."""
    unusable: list[str]
    """Broken links, links to folders, FIFOs, sockets, devices and
    unreadable files, with why."""

    def left_out(self) -> str:
        """One line naming what will not be served, or ``""``."""
        parts = []
        for what, names in (
            ("hidden", self.hidden),
            ("leading outside the folder", self.outside),
            ("unusable", self.unusable),
        ):
            if names:
                shown = ", ".join(names[:5]) + (
                    f" and {len(names) - 5} more" if len(names) > 5 else ""
                )
                parts.append(f"{len(names)} {what} ({shown})")
        return "; ".join(parts)

    def add(self, rel: str, path: Path, found: Path | str) -> None:
        """File the entry ``rel`` (at ``path``) by what :func:`served_target` found."""
        if found == HIDDEN:
            self.hidden.append(rel + ("/" if path.is_dir() and not path.is_symlink() else ""))
        elif found == HIDDEN_TARGET:
            self.hidden.append(f"{rel} ({HIDDEN_TARGET})")
        elif found == OUTSIDE and path.exists():
            self.outside.append(rel)
        elif found == OUTSIDE:
            self.unusable.append(f"{rel}: a broken link")
        elif isinstance(found, str):
            self.unusable.append(f"{rel}: {found}")
        elif (why := _unusable(path)) is not None:
            self.unusable.append(f"{rel}: {why}")
        elif not path.is_dir():
            self.served.append((rel, path))


def _unusable(path: Path) -> str | None:
    """Why ``path`` (not a folder) cannot be served; ``None`` if it can."""
    if path.is_symlink() and not path.exists():
        return "a broken link"
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return e.strerror or "cannot be read"
    if stat.S_ISDIR(mode):
        return None
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable"
    return None


def survey_folder(folder: Path) -> FolderSurvey:
    """Sort the entries of ``folder`` into served, hidden, outside and unusable,
    each by :func:`served_target`, the rule a folder read in place follows at
    every request. Hidden folders and links to folders are not entered."""
    root = folder.resolve()
    survey = FolderSurvey([], [], [], [])
    pending = [root]
    while pending:
        where = pending.pop()
        try:
            entries = sorted(os.scandir(where), key=lambda e: e.name)
        except OSError as e:
            survey.unusable.append(f"{where.relative_to(root).as_posix()}/: {e.strerror}")
            continue
        for entry in entries:
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            found = served_target(root, tuple(rel.split("/")))
            survey.add(rel, path, found)
            if isinstance(found, Path) and entry.is_dir(follow_symlinks=False):
                pending.append(path)
    survey.served.sort()
    survey.hidden.sort()
    survey.outside.sort()
    survey.unusable.sort()
    return survey


def crunch_manifest(folder: Path) -> tuple[dict[str, object], list[tuple[str, Path]]]:
    """The manifest and (relative name, file) pairs for crunching ``folder``.

    Only what :func:`survey_folder` finds servable is packed: hidden entries,
    links leading outside the folder, and anything but a regular file are
    left out, as the server leaves them out when reading a folder in place.
    """
    files: dict[str, object] = {}
    pairs: list[tuple[str, Path]] = []
    for rel, path in survey_folder(folder).served:
        data = path.read_bytes()
        files[rel] = {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "mtime": int(path.stat().st_mtime),
        }
        pairs.append((rel, path))
    return {"version": 1, "files": files}, pairs
