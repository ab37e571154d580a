"""OCI image layouts: ``looming build --oci``.

For a ``vm``-target unikernel the layout is a KubeVirt containerDisk
(:func:`write_container_disk`): one layer holding the qcow2 disk image of
:mod:`looming.vm.diskimage` as ``/disk/NAME.qcow2``, owned by 107:107.
For a unix-target one it is a root file system, as follows.

The image's one layer is a minimal Debian root file system: the guest
Python (Debian's ``python3.11-minimal``), the shared libraries it and its
extension modules need, the standard-library modules the unikernel reaches
(as bytecode), the wheels of its compiled packages and the unikernel's
zipapp, all chosen exactly as for a VM image (:mod:`looming.vm.image`),
without the kernel, its modules and /init. The entry point runs the zipapp
with that Python; what the unix target's devices need from the host
(sockets, folders given as keys) the container engine provides.

The layout (``dist/NAME-oci/``: ``oci-layout``, ``index.json`` and
``blobs/sha256/``) is what ``skopeo copy oci:dist/NAME-oci docker://...``
pushes to a registry and ``umoci unpack`` turns into a runtime bundle. The
same inputs give the same bytes: the tar is sorted, owned by root and dated
1970, the gzip stream carries no time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import stat
import sys
import tarfile
import tempfile
from pathlib import Path

from looming.vm import cpio
from looming.vm.arch import Arch, get_arch
from looming.vm.bytecode import Compiler
from looming.vm.image import (
    APP_TREE_IN_IMAGE,
    ARCHIVE_IN_IMAGE,
    INIT_MODULE,
    SITE_PACKAGES,
    ImageContents,
    Progress,
    _app_closure,
    _check_image_imports,
    _directories,
    _gather_contents,
    _initramfs_files,
)
from looming.vm.packages import check_host_tools

START = "app/start.py"
# What /init does for a VM: the zipapp's __main__ run as __main__, without
# runpy (which the image need not hold).
START_SOURCE = f'''"""Runs the unikernel's zipapp: the image's entry point."""
import os
import sys
import zipimport

archive = "{ARCHIVE_IN_IMAGE}"
sys.argv[0] = archive
sys.path.insert(0, archive)
if os.path.isdir("{APP_TREE_IN_IMAGE}"):  # the app's modules beside the files they read
    sys.path.insert(0, "{APP_TREE_IN_IMAGE}")
    os.chdir("{APP_TREE_IN_IMAGE}")
importer = zipimport.zipimporter(archive)
main = type(sys)("__main__")
main.__file__ = importer.get_filename("__main__")
main.__loader__ = importer
main.__spec__ = importer.find_spec("__main__")
main.__package__ = ""
sys.modules["__main__"] = main
exec(importer.get_code("__main__"), main.__dict__)
'''
MEDIA = "application/vnd.oci.image"


def _root_files(contents: ImageContents) -> list[cpio.Entry]:
    """The VM image's files without the kernel's modules and /init, plus the start script."""
    version = contents.guest.version
    # Bytecode is made here when this Python is the guest's version.
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    compiler = Compiler() if here == version else None
    try:
        files = _initramfs_files(contents, compiler)
    finally:
        if compiler is not None:
            compiler.close()
    init_program = f"usr/lib/python{version}/{INIT_MODULE}.pyc"
    kept = {
        entry.path: entry
        for entry in files
        if not entry.path.startswith("lib/modules/") and entry.path not in ("init", init_program)
    }
    kept[START] = cpio.regular(START, START_SOURCE.encode())
    kept["tmp"] = cpio.Entry("tmp", stat.S_IFDIR | 0o1777)
    ordered = sorted(kept)
    entries = _directories(ordered)
    taken = {entry.path for entry in entries}
    return entries + [kept[path] for path in ordered if path not in taken]


def _tar(entries: list[cpio.Entry]) -> bytes:
    """The entries as a deterministic tar archive (a layer's diff)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mode = stat.S_IMODE(entry.mode)
            info.uname = info.gname = "root"
            if stat.S_ISDIR(entry.mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISLNK(entry.mode):
                info.type = tarfile.SYMTYPE
                info.linkname = entry.data.decode()
                tar.addfile(info)
            elif stat.S_ISREG(entry.mode):
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return out.getvalue()


def _blob(blobs: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _entry_point(version: str) -> dict[str, object]:
    """The image configuration's ``config`` of a unix-target unikernel."""
    return {
        "Entrypoint": [f"/usr/bin/python{version}", "-S", f"/{START}"],
        "Env": ["PATH=/usr/bin", f"PYTHONPATH=/{SITE_PACKAGES}"],
        "WorkingDir": "/app",
    }


def _write_layout(
    folder: Path, layer_tar: bytes, arch: Arch, run: dict[str, object], level: int = 9
) -> None:
    """``oci-layout``, the blobs and ``index.json`` (last) into ``folder``;
    ``run`` is the image configuration's ``config``, ``level`` the layer's gzip level."""
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (folder / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    layer = _blob(blobs, gzip.compress(layer_tar, compresslevel=level, mtime=0))
    config = {
        "architecture": arch.debian,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": run,
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"],
        },
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": f"{MEDIA}.manifest.v1+json",
        "config": {"mediaType": f"{MEDIA}.config.v1+json", **_blob(blobs, _json(config))},
        "layers": [{"mediaType": f"{MEDIA}.layer.v1.tar+gzip", **layer}],
    }
    index = {
        "schemaVersion": 2,
        "mediaType": f"{MEDIA}.index.v1+json",
        "manifests": [
            {
                "mediaType": f"{MEDIA}.manifest.v1+json",
                **_blob(blobs, _json(manifest)),
                "platform": {"architecture": arch.debian, "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    (folder / "index.json").write_bytes(_json(index))


def build_layout(
    app_dir: Path,
    unikernel: str,
    main_py: Path,
    crunch: list[tuple[str, str]],
    arch_name: str,
    progress: Progress,
) -> Path:
    """Write ``dist/<unikernel>-oci/`` for ``arch_name``; all or nothing
    (made in a folder beside it and moved into place)."""
    arch = get_arch(arch_name)
    check_host_tools()
    dist = app_dir / "dist"
    target = dist / f"{unikernel}-oci"
    with tempfile.TemporaryDirectory(prefix="looming-oci-") as work:
        contents, _pyz, _wheels = _gather_contents(
            app_dir, main_py, crunch, arch, Path(work), progress
        )
        progress("importing the unikernel against the image's modules")
        _check_image_imports(contents, _app_closure(main_py, app_dir), main_py, progress)
        progress("writing the OCI image layout")
        layer_tar = _tar(_root_files(contents))
        dist.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=dist))
        try:
            _write_layout(staging, layer_tar, arch, _entry_point(contents.guest.version))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# KubeVirt's containerDisk: the disk image under /disk/, readable by the
# user its virt-launcher runs qemu as (107, "qemu").
CONTAINER_DISK_FOLDER = "disk"
QEMU_UID = 107


def container_disk_tar(name: str, disk: Path) -> bytes:
    """The containerDisk layer: ``disk/`` and ``disk/<name>`` (the qcow2
    file ``disk``) owned by 107:107, dated 1970, as a tar archive."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo(CONTAINER_DISK_FOLDER)
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o555
        folder.uid = folder.gid = QEMU_UID
        tar.addfile(folder)
        info = tarfile.TarInfo(f"{CONTAINER_DISK_FOLDER}/{name}")
        info.size = disk.stat().st_size
        info.mode = 0o440
        info.uid = info.gid = QEMU_UID
        with disk.open("rb") as data:
            tar.addfile(info, data)
    return out.getvalue()


def write_container_disk(target: Path, disk: Path, name: str, arch_name: str) -> Path:
    """``target`` (``dist/NAME-oci/``): an OCI image layout holding the qcow2
    disk image ``disk`` as ``/disk/<name>``, KubeVirt's containerDisk. No
    entry point: KubeVirt reads the file, it does not run the image. All or
    nothing (made beside ``target`` and moved into place)."""
    arch = get_arch(arch_name)
    layer_tar = container_disk_tar(name, disk)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # The qcow2's clusters are compressed already: gzip's fastest level.
        _write_layout(staging, layer_tar, arch, {}, level=1)
        staging.chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
