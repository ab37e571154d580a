"""vchan between VMs, the host's side: shared files for qemu's ivshmem devices.

A unikernel of the ``vm`` target that serves or connects to a vchan port
gets one ``ivshmem-plain`` PCI device per port, backed by a file in
``/dev/shm`` that both VMs' qemu map (``share=on``). The guest's side,
which lays the vchan rings out in that memory, is
:mod:`looming.vchan.pci`.

Naming, as the process target's registry names its entries: the region of
port PORT served by unikernel NAME is ``/dev/shm/looming-ivshmem-NAME.PORT``,
so two ``looming run`` invocations on one host find each other by the
serving unikernel's name and the port, both known from ``config.py``
(``vchan("kv")`` in ``store``, ``vchan("kv", peer="store")`` in ``front``:
``looming-ivshmem-store.kv``).

- The serving VM's launcher takes ``NAME.PORT.lock`` (an exclusive
  ``flock``, released by the kernel however the launcher ends), makes the
  region (zeroed, :data:`~looming.vchan.pci.REGION_SIZE` bytes, its header
  page naming NAME and PORT) and removes it when it stops, unless a client
  VM still maps it. A second server of the same port: exit 2, *in use*.
- The connecting VM's launcher needs that lock held (the server's
  ``looming run`` started first; otherwise exit 2, *no VM serves*), and
  takes ``NAME.PORT.client.lock`` (a second client: exit 2, *in use*).

``$LOOMING_IVSHMEM_DIR`` puts the regions in another folder (best on a
``tmpfs``), for VMs that should meet only each other.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from looming.vchan import layout, pci
from looming.vchan.segment import shm_dir

PREFIX = "looming-ivshmem-"
DIRECTORY_ENV = "LOOMING_IVSHMEM_DIR"
FACTORY = "PciVchan"  # how the generated main.py names looming.vchan.pci


class IvshmemError(Exception):
    """A vchan region cannot be attached as configured: exit code 2."""


@dataclass(frozen=True)
class Vchan:
    """One vchan of an image: the port, and the peer it connects to (None: served)."""

    port: str
    peer: str | None = None


def vchans_of(main_py: Path) -> list[dict[str, str | None]]:
    """The vchans the generated ``main.py`` connects, for the image's manifest."""
    found: list[dict[str, str | None]] = []
    for node in ast.walk(ast.parse(main_py.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Name) and owner.id == FACTORY and node.args):
            continue
        port = ast.literal_eval(node.args[0])
        peer = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "peer"), None)
        found.append({"port": str(port), "peer": None if peer is None else str(peer)})
    return found


def region_path(name: str, port: str, directory: Path | None = None) -> Path:
    """Where the region of ``name``/``port`` lives: ``$LOOMING_IVSHMEM_DIR`` when
    set (VMs that should meet set the same), else ``/dev/shm``."""
    configured = os.environ.get(DIRECTORY_ENV)
    where = directory or (Path(configured) if configured else shm_dir())
    return where / f"{PREFIX}{name}.{port}"


def _lock(path: Path, mode: int) -> int | None:
    """An open descriptor of ``path`` holding ``flock(mode)``, or None when
    another process holds a conflicting lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f" (looming run, pid {int(path.read_text().strip())})"
    return ""


@dataclass
class Attached:
    """The regions attached to one VM: qemu's arguments, and what to release."""

    arguments: list[str] = field(default_factory=list)
    _locks: list[int] = field(default_factory=list)
    _made: list[Path] = field(default_factory=list)
    _joined: list[Path] = field(default_factory=list)

    def close(self) -> None:
        """Remove the regions this VM served, unless a client VM still maps
        one, and those it joined whose server has gone since; then unlock."""
        for region in self._made:
            _remove_unless_held(region, Path(f"{region}.client.lock"), fcntl.LOCK_EX)
        for region in self._joined:
            _remove_unless_held(region, Path(f"{region}.lock"), fcntl.LOCK_SH)
        self._made.clear()
        self._joined.clear()
        for fd in self._locks:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._locks.clear()


def _remove_unless_held(region: Path, other: Path, mode: int) -> None:
    """Remove ``region`` and its lock files when the other side's lock is free."""
    fd = _lock(other, mode)
    if fd is None:
        return  # the other VM still maps it
    for path in (region, Path(f"{region}.client.lock"), Path(f"{region}.lock")):
        path.unlink(missing_ok=True)
    os.close(fd)


def _serve(attached: Attached, name: str, port: str, directory: Path | None) -> Path:
    try:
        page = pci.header(name, port)
    except ValueError as exc:
        raise IvshmemError(f"{exc}: shorten the unikernel's name or the port") from None
    region = region_path(name, port, directory)
    lock_path = Path(f"{region}.lock")
    fd = _lock(lock_path, fcntl.LOCK_EX)
    if fd is None:
        raise IvshmemError(
            f"vchan {name}/{port} is in use: another VM serves it{_holder(lock_path)}; "
            "stop that one first, or serve the port under another unikernel name"
        )
    attached._locks.append(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    # The same file again if a client VM still maps it (left by a server
    # killed outright): not shrunk, which would crash that qemu (SIGBUS), and
    # its rings left alone; the old server is marked exited, so the client's
    # guest closes that channel and waits for the new server's offer.
    data = os.open(region, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(data).st_size != pci.REGION_SIZE:
            os.ftruncate(data, pci.REGION_SIZE)
        os.pwrite(data, bytes([layout.LIVE_EXITED]), layout.SRV_LIVE)
        os.pwrite(data, page, pci.HEADER_OFFSET)
    finally:
        os.close(data)
    attached._made.append(region)
    return region


def _connect(attached: Attached, peer: str, port: str, directory: Path | None) -> Path:
    region = region_path(peer, port, directory)
    server = _lock(Path(f"{region}.lock"), fcntl.LOCK_SH) if region.exists() else None
    if server is not None or not region.exists():
        if server is not None:  # a region left by a server that died
            os.close(server)
            Path(f"{region}.lock").unlink(missing_ok=True)
        raise IvshmemError(
            f"no VM serves vchan {peer}/{port}: start the {peer!r} unikernel's "
            f"'looming run' first (it makes {region})"
        )
    lock_path = Path(f"{region}.client.lock")
    fd = _lock(lock_path, fcntl.LOCK_EX)
    if fd is None:
        raise IvshmemError(
            f"vchan {peer}/{port} is in use: another VM is connected to it"
            f"{_holder(lock_path)}; a vchan joins exactly two VMs"
        )
    attached._locks.append(fd)
    attached._joined.append(region)
    os.write(fd, f"{os.getpid()}\n".encode())
    return region


def attach(
    unikernel: str, vchans: Sequence[Mapping[str, str | None]], directory: Path | None = None
) -> Attached:
    """Make or find the region of each vchan; raises :class:`IvshmemError`."""
    attached = Attached()
    try:
        for number, spec in enumerate(vchans):
            port, peer = str(spec["port"]), spec.get("peer")
            if peer is None:
                region = _serve(attached, unikernel, port, directory)
            else:
                region = _connect(attached, peer, port, directory)
            attached.arguments += [
                "-object",
                f"memory-backend-file,id=vchan{number},size={pci.REGION_SIZE},"
                f"share=on,mem-path={region}",
                "-device",
                f"ivshmem-plain,memdev=vchan{number}",
            ]
    except BaseException:
        attached.close()
        raise
    return attached
