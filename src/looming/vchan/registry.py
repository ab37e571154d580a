"""The rendezvous registry that stands in for xenstore.

A server publishes a port ``(name, port)`` as two files in the registry
directory: ``<name>.<port>.pid`` holding its pid, then the Unix socket
``<name>.<port>.sock`` a client connects to. Names and ports match
``[A-Za-z0-9_-]+``. Entries are removed when the client has connected (a
vchan has exactly one client), when the server closes, and, for a server
that died, by :func:`recover_entries` at the next start.

The directory is ``$LOOMING_VCHAN_REGISTRY`` when set, else
``$XDG_RUNTIME_DIR/looming-vchan``, else ``/tmp/looming-vchan-<uid>``.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from looming.errors import AddressInUse
from looming.vchan.segment import pid_alive

REGISTRY_ENV = "LOOMING_VCHAN_REGISTRY"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# sockaddr_un holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


def default_directory() -> Path:
    configured = os.environ.get(REGISTRY_ENV)
    if configured:
        return Path(configured)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "looming-vchan"
    return Path(f"/tmp/looming-vchan-{os.getuid()}")


def check_name(what: str, value: str) -> str:
    """``value`` if it is a valid peer name or port, else a clear ValueError."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"vchan {what} {value!r} is not valid: use letters, digits, '_' and '-' only"
        )
    return value


@dataclass(frozen=True, slots=True)
class Entry:
    """Where one published port lives in the registry."""

    directory: Path
    name: str
    port: str

    @property
    def socket_path(self) -> Path:
        return self.directory / f"{self.name}.{self.port}.sock"

    @property
    def pid_path(self) -> Path:
        return self.directory / f"{self.name}.{self.port}.pid"

    def check_length(self) -> None:
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            raise ValueError(
                f"vchan registry path {self.socket_path} is longer than {_MAX_SOCKET_PATH} "
                f"bytes; use shorter names or point {REGISTRY_ENV} at a shorter directory"
            )

    def remove(self) -> None:
        """Unpublish: the socket first, so a pid file never outlives nothing."""
        self.socket_path.unlink(missing_ok=True)
        self.pid_path.unlink(missing_ok=True)


def entry(name: str, port: str, directory: Path | None = None) -> Entry:
    result = Entry(
        directory or default_directory(), check_name("name", name), check_name("port", port)
    )
    result.check_length()
    return result


def ensure_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def claim(target: Entry) -> None:
    """Write the pid file for ``target``, taking over a dead server's entry.

    Raises :class:`~looming.errors.AddressInUse` when a live process serves it.
    """
    ensure_directory(target.directory)
    for _ in range(3):
        try:
            fd = os.open(
                target.pid_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
        except FileExistsError:
            owner = read_pid(target.pid_path)
            if owner is not None and pid_alive(owner):
                raise AddressInUse(
                    f"vchan port {target.name}/{target.port} is already served by process {owner}"
                ) from None
            target.remove()
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return
    raise AddressInUse(f"vchan port {target.name}/{target.port} keeps being taken; try again")


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None  # still being written, or garbage: treated as unowned by recovery


def recover_entries(directory: Path | None = None) -> list[Path]:
    """Remove entries whose server process is gone; returns removed pid files."""
    directory = directory or default_directory()
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not name.endswith(".pid"):
            continue
        path = directory / name
        owner = read_pid(path)
        if owner is None or pid_alive(owner):
            continue
        with contextlib.suppress(OSError):
            (directory / (name[: -len(".pid")] + ".sock")).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
