"""Building a VM image: a Debian cloud kernel and an initramfs holding only
the interpreter, what the unikernel reaches, and /init.

Everything the guest runs comes from Debian packages of the guest's
architecture (see :mod:`looming.vm.packages`). What goes in is computed:
the standard-library modules from the unikernel's imports
(:mod:`looming.vm.stdlib`), the shared libraries from the ELF files'
``DT_NEEDED`` entries, the kernel modules from their ``depends=`` fields.
"""

from __future__ import annotations

import ast
import functools
import gzip
import importlib.util
import io
import json
import lzma
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from looming.config.build import (
    DYNAMIC_IMPORTS,
    BuildReport,
    Closure,
    ModuleLocator,
    application_tree_files,
    configured,
    module_closure,
    write_zipapp,
)
from looming.config.build_boot import APP as APP_TREE_IN_ARCHIVE
from looming.errors import ConfigError, UsageError
from looming.vm import bootcache, cpio, elf, wheels
from looming.vm.arch import Arch, get_arch
from looming.vm.bytecode import Compiler
from looming.vm.diskimage import describe as disk_description
from looming.vm.importcheck import ImageModules, check_imports, wheel_tops
from looming.vm.ivshmem import vchans_of
from looming.vm.kernel import IMAGE_FORMAT, PVH_FORMAT, kernels_cache, pack_for_pvh, pack_image
from looming.vm.kernelbuild import (
    KernelSpec,
    builtin_drivers,
    check_build_tools,
    minimal_kernel,
    parse_kernel,
)
from looming.vm.nic import DEFAULT_DRIVER, NIC_DRIVERS, driver_modules, parse_nic_drivers
from looming.vm.packages import (
    AptArchive,
    PackageError,
    PackageInfo,
    cache_root,
    check_host_tools,
)
from looming.vm.stdlib import (
    GuestStdlib,
    StdlibClosure,
    StdlibModule,
    builtin_modules,
    imports_of,
    stdlib_closure,
)
from looming.vm.storage import MOUNT as DISK_MOUNT

Progress = Callable[[str], None]

# Kernel modules the image loads after the virtio transport of the machine
# (with whatever they depend on; the NICs' come from looming.vm.nic): where
# the machine has a virtio-rng device, its driver (a source of entropy, so
# os.urandom does not wait at boot).
ENTROPY_MODULE = "virtio_rng"
# The disk's driver, for unikernels with storage on it (looming.vm.storage);
# ext4 and its checksums are built into Debian's cloud kernels.
DISK_MODULE = "virtio_blk"
STORAGE_MODULE = "looming.vm.storage"
LIBRARY_PACKAGES = ("libc6", "zlib1g", "libexpat1", "libffi8")
# ssl's library: only for unikernels that import ssl outside a try (asyncio
# imports it optionally; without libssl it is left out, 6 MB less).
SSL_PACKAGE = "libssl3"
CA_PACKAGE = "ca-certificates"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"  # what update-ca-certificates would write
# What manylinux wheels may take from the system besides libc (PEP 599's list).
WHEEL_LIBRARY_PACKAGES = ("libgcc-s1", "libstdc++6")
DEVICE_NODES = (
    ("dev/console", 5, 1, 0o600),
    ("dev/null", 1, 3, 0o666),
    ("dev/zero", 1, 5, 0o666),
    ("dev/random", 1, 8, 0o666),
    ("dev/urandom", 1, 9, 0o666),
    ("dev/tty", 5, 0, 0o666),
)
INTERFACE = "eth0"
ARCHIVE_IN_IMAGE = "/app/unikernel.pyz"
APP_TREE_IN_IMAGE = "/app/files"  # the app's modules and the files they read (templates, ...)
INIT_SOURCE = Path(__file__).with_name("init.py")
GUEST_PYTHON = "3.11"  # Debian 12's python3-minimal; wheels are fetched for it
SITE_PACKAGES = "usr/lib/python3/dist-packages"  # the wheels' files, for the guest's Python
INIT_MODULE = "_looming_vm_init"  # /init's program, as bytecode in the stdlib folder


@dataclass
class ImageReport:
    """What ``looming build`` made and what is in it."""

    arch: str
    manifest: Path
    kernel: Path
    initrd: Path
    kernel_size: int
    initrd_size: int
    initrd_unpacked: int
    # bzImage (the guest unpacks itself), or vmlinux-pvh-xz or Image-xz (looming run unpacks it)
    kernel_format: str = "bzImage"
    kernel_unpacked: int = 0
    kernel_sha256: str = ""  # of the unpacked vmlinux, when looming run unpacks it
    kernel_build: str = "debian"  # or "minimal": compiled by looming.vm.kernelbuild
    kernel_build_id: str = ""  # the minimal kernel's folder in the cache (for --disk-image)
    packages: dict[str, str] = field(default_factory=dict)
    stdlib_modules: list[str] = field(default_factory=list)
    extension_modules: list[str] = field(default_factory=list)
    libraries: list[str] = field(default_factory=list)
    kernel_modules: list[str] = field(default_factory=list)
    app_modules: list[str] = field(default_factory=list)
    app_files: list[str] = field(default_factory=list)  # beside the app's modules, in /app/files
    archive_size: int = 0
    crunched_files: int = 0
    dropped_optional: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Packed: what dist/ holds and what is copied to another machine."""
        return self.kernel_size + self.initrd_size

    @property
    def booted_size(self) -> int:
        """As booted: what qemu loads, the kernel unpacked plus the initramfs."""
        return (self.kernel_unpacked or self.kernel_size) + self.initrd_size

    def to_json(self) -> dict[str, object]:
        """The manifest: file names relative to its folder (dist/), which
        can so be moved or copied elsewhere and still boot."""
        data = asdict(self)
        folder = self.manifest.parent
        data["manifest"] = self.manifest.name
        for key in ("kernel", "initrd"):
            data[key] = str(Path(data[key]).relative_to(folder))
        data["booted_size"] = self.booted_size
        return data


def check_can_build(arch_name: str, app_dir: Path, main_py: Path) -> Arch:
    """Everything that can be checked before any download: raises UsageError
    or ConfigError with what to do."""
    arch = get_arch(arch_name)
    check_host_tools()
    if shutil.which(arch.qemu) is None:
        raise UsageError(
            f"{arch.qemu} is not installed; it runs {arch.name} images "
            f"(Debian package {'qemu-system-x86' if arch.name == 'x86_64' else 'qemu-system-arm'})"
        )
    closure = module_closure(main_py, app_dir)
    locator = ModuleLocator(app_dir)
    unresolved: set[str] = set()
    # Only the application's own imports are judged: libraries import modules
    # of other Python versions under conditions this check does not evaluate.
    own = [
        s for s in closure.modules.values() if s.path.resolve().is_relative_to(app_dir.resolve())
    ]
    for source in own:
        for module, _names, optional in imports_of(source.source(), source.name, source.is_package):
            if optional or not module:
                continue
            kind, _found = locator.find(module)
            if kind == "missing" and not any(
                module.startswith(m + ".") or module == m for m in closure.modules
            ):
                unresolved.add(f"{module} (imported by {source.name})")
    if unresolved:
        raise ConfigError(
            "the unikernel imports modules that cannot be found: "
            + ", ".join(sorted(unresolved))
            + "; install them or fix the imports"
        )
    return arch


class Tree:
    """The union of several unpacked Debian packages, looked up by path."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots

    def find(self, relative: str) -> Path | None:
        for root in self.roots:
            candidate = root / relative.lstrip("/")
            if candidate.exists():
                return candidate.resolve() if candidate.is_symlink() else candidate
        return None


def _library_dirs(arch: Arch) -> list[str]:
    return [f"lib/{arch.triplet}", f"usr/lib/{arch.triplet}", "lib", "usr/lib"]


def _resolve_libraries(
    binaries: list[Path], tree: Tree, arch: Arch
) -> tuple[dict[str, Path], list[str]]:
    """Library path in the image -> file, for everything ``binaries`` need;
    and the sonames that were found nowhere."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    pending = list(binaries)
    seen: set[str] = set()
    while pending:
        binary = pending.pop()
        for soname in elf.needed_libraries(binary):
            if soname in seen:
                continue
            seen.add(soname)
            for directory in _library_dirs(arch):
                path = tree.find(f"{directory}/{soname}")
                if path is not None:
                    found[f"{directory}/{soname}"] = path
                    pending.append(path)
                    break
            else:
                missing.append(soname)
    return found, missing


def _kernel_modules(
    kernel_tree: Path, arch: Arch, disk: bool = False, nic_drivers: tuple[str, ...] = ()
) -> tuple[str, list[Path]]:
    """The kernel's version and the modules to load, dependencies first
    (with ``disk``, the virtio disk's driver too; the NIC ``nic_drivers``,
    by default the machine's virtio one)."""
    versions = sorted((kernel_tree / "lib" / "modules").iterdir())
    if not versions:
        raise PackageError(f"no kernel modules in {kernel_tree}")
    base = versions[-1]
    builtin_file = base / "modules.builtin"
    builtin = set()
    if builtin_file.is_file():
        builtin = {Path(line).stem.replace("-", "_") for line in builtin_file.read_text().split()}
    by_name = {p.stem.replace("-", "_"): p for p in base.rglob("*.ko")}
    ordered: list[Path] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in builtin or name in visiting:
            return
        visiting.add(name)
        path = by_name.get(name)
        if path is None:
            raise PackageError(f"kernel module {name} is not in {base.name}")
        for dependency in filter(None, elf.module_info(path).get("depends", "").split(",")):
            visit(dependency)
        ordered.append(path)

    drivers = nic_drivers or (DEFAULT_DRIVER[arch.virtio_transport],)
    for driver in drivers:
        for name in NIC_DRIVERS[driver]:
            if name not in builtin and name not in by_name:
                raise UsageError(
                    f"--nic-drivers: the {arch.name} kernel {base.name} has no {driver} "
                    f"driver (module {name}); leave {driver} out"
                )
    wanted = [arch.virtio_transport, *driver_modules(drivers)]
    if arch.entropy_device:
        wanted.append(ENTROPY_MODULE)
    if disk:
        wanted.append(DISK_MODULE)
    for name in wanted:
        visit(name)
    return base.name, ordered


def _compiled(source: Path, name: str, compiler: Compiler | None) -> tuple[str, bytes]:
    """(suffix, bytes): bytecode without docstrings when this interpreter
    matches the guest's (the same magic number), else the source."""
    data = source.read_bytes()
    if compiler is None:
        return ".py", data
    code = compiler.compile(data, f"/usr/lib/{name}", strip_docstrings=True)
    # A sourceless .pyc: flags, date and size are not checked for those.
    return ".pyc", importlib.util.MAGIC_NUMBER + b"\x00" * 12 + code


def _with_bytecode(archive: Path, compiler: Compiler | None, app_dir: Path) -> bytes:
    """The zipapp with bytecode beside each module, so the guest does not
    compile them at every boot (seconds under emulation). The sources stay
    for tracebacks; the bytecode is hash-based and unchecked, so nothing
    compares timestamps. Libraries' bytecode has no docstrings (the
    application's own keeps them, in case it reads them)."""
    if compiler is None:
        return archive.read_bytes()
    out = io.BytesIO()
    # Stored, not deflated: the initramfs is compressed as a whole, and packs
    # stored members tighter than deflated ones; nor is anything inflated at boot.
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename.startswith(APP_TREE_IN_ARCHIVE):
                continue  # laid out as files in the image (APP_TREE_IN_IMAGE)
            data = source.read(info)
            top = info.filename.split("/")[0].removesuffix(".py")
            own = top == "__main__" or (app_dir / f"{top}.py").is_file() or (app_dir / top).is_dir()
            if own or not info.filename.endswith(".py"):
                # Libraries' sources stay out (their tracebacks name file
                # and line); the application's own stay for its tracebacks.
                target.writestr(info, data, compress_type=zipfile.ZIP_STORED)
            if not info.filename.endswith(".py"):
                continue
            code = compiler.compile(
                data, f"{ARCHIVE_IN_IMAGE}/{info.filename}", strip_docstrings=not own
            )
            flags = (1).to_bytes(4, "little")  # hash-based, source not checked
            pyc = importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(data)
            compiled = zipfile.ZipInfo(info.filename + "c", date_time=info.date_time)
            compiled.external_attr = info.external_attr
            target.writestr(compiled, pyc + code, compress_type=zipfile.ZIP_STORED)
    return out.getvalue()


MODULE_SIGNATURE_MAGIC = b"~Module signature appended~\n"


def _unsigned(module: bytes) -> bytes:
    """A kernel module without its appended signature: the kernel then skips
    checking it (an RSA verification, slow under emulation). Debian's kernel
    does not insist on signed modules; it only marks itself tainted."""
    if not module.endswith(MODULE_SIGNATURE_MAGIC):
        return module
    # struct module_signature (12 bytes) ends with the signature's length.
    trailer = len(MODULE_SIGNATURE_MAGIC) + 12
    signature_length = int.from_bytes(
        module[-len(MODULE_SIGNATURE_MAGIC) - 4 : -len(MODULE_SIGNATURE_MAGIC)], "big"
    )
    if signature_length + trailer > len(module):
        return module
    return module[: len(module) - trailer - signature_length]


def _frozen_modules() -> set[str]:
    """The stdlib modules frozen into this interpreter, and so into the
    guest's when it is the same Python version (``-X frozen_modules`` is on
    by default outside a source tree)."""
    import _imp

    names: list[str] = getattr(_imp, "_frozen_module_names", lambda: [])()
    # os stays: its file is the landmark by which the interpreter finds its
    # prefix (without it, a warning at start-up and a longer search).
    return {name.removesuffix(".__init__") for name in names} - {"__hello__", "os"}


def _directories(paths: list[str]) -> list[cpio.Entry]:
    made: set[str] = set()
    entries: list[cpio.Entry] = []
    for path in paths:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            directory = "/".join(parts[:i])
            if directory not in made:
                made.add(directory)
                entries.append(cpio.directory(directory))
    return entries


# Compiled packages a library imports only when an option asks for them,
# one looming never gives: anyio imports uvloop for anyio.run(...,
# backend_options={"use_uvloop": True}), while a unikernel's event loop is
# looming's runtime's own asyncio loop. Left out of the image unless another
# module imports them too.
ON_REQUEST: dict[str, frozenset[str]] = {
    "uvloop": frozenset({"anyio._backends._asyncio"}),
}


def on_request_only(closure: Closure) -> set[str]:
    """The compiled packages of ``closure`` imported only as :data:`ON_REQUEST` says."""
    left_out = set()
    for top, requesters in ON_REQUEST.items():
        if top not in closure.external:
            continue
        importers = {
            source.name
            for source in closure.modules.values()
            if top.encode() in source.source()
            and any(
                module.split(".")[0] == top
                for module, _names, _optional in imports_of(
                    source.source(), source.name, source.is_package
                )
            )
        }
        if importers <= requesters:
            left_out.add(top)
    return left_out


def _wheels_for(
    closure: Closure, arch: Arch, archive: AptArchive, progress: Progress
) -> list[wheels.Wheel]:
    """Wheels for the guest of the compiled packages the unikernel reaches."""
    left_out = on_request_only(closure)
    for top in sorted(left_out):
        progress(f"left out {top}: imported only on request ({', '.join(ON_REQUEST[top])})")
    external = closure.external - left_out
    if not external:
        return []
    libc = archive.info("libc6").version
    match = re.match(r"(\d+)\.(\d+)", libc)
    if match is None:
        raise PackageError(f"libc6 {libc}: not a glibc version")
    glibc = (int(match.group(1)), int(match.group(2)))
    return wheels.fetch(
        wheels.distributions(external), arch, GUEST_PYTHON, glibc, cache_root(), progress
    )


def _ca_bundle(tree: Path) -> bytes:
    """Debian's CA certificates as one PEM bundle, in the order
    update-ca-certificates writes them."""
    folder = tree / "usr" / "share" / "ca-certificates"
    return b"".join(
        path.read_bytes().rstrip(b"\n") + b"\n" for path in sorted(folder.rglob("*.crt"))
    )


def _requires(closure: Closure, top: str) -> bool:
    """Whether a module of ``closure`` imports ``top`` outside a ``try``."""
    return any(
        module.split(".")[0] == top and not optional
        for source in closure.modules.values()
        for module, _names, optional in imports_of(source.source(), source.name, source.is_package)
    )


def _write_shared_objects(files: dict[str, bytes], folder: Path) -> list[Path]:
    """The wheels' shared objects, written to ``folder`` for their DT_NEEDED to be read."""
    written = []
    for relative, data in files.items():
        name = Path(relative).name
        if name.endswith(".so") or ".so." in name:
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written.append(path)
    return written


def _compression(arch: Arch, options: dict[str, str]) -> str:
    """The initramfs's compression, checked to be possible here."""
    compression = options.get("compress") or arch.default_compression
    if compression in ("zstd", "lz4") and shutil.which(compression) is None:
        raise UsageError(
            f"the initramfs is compressed with the {compression} command, which is not "
            f"installed (Debian package {compression}); install it or configure with "
            "--compress xz"
        )
    return compression


@dataclass
class GuestPackages:
    """The Debian packages an image is made of, unpacked."""

    version: str  # the guest's Python, as "3.11"
    python_name: str  # its interpreter's package, python3.11-minimal
    packages: dict[str, PackageInfo]
    trees: dict[str, Path]  # package name -> its unpacked tree
    tree: Tree  # the interpreter's and the libraries' packages, as one
    kernel_tree: Path


def _guest_python(archive: AptArchive) -> tuple[str, str]:
    """The package of the interpreter python3-minimal depends on, and its version."""
    python_meta = archive.info("python3-minimal")
    depends = [d.split("(")[0].strip() for d in python_meta.depends.split(",")]
    python_name = next((d for d in depends if d.startswith("python3.")), "")
    if not python_name.endswith("-minimal"):
        raise PackageError(f"python3-minimal names no interpreter: {python_meta.depends}")
    return python_name, python_name.removeprefix("python").removesuffix("-minimal")


def _resolve_packages(
    archive: AptArchive, closure: Closure, with_wheels: bool, uses_tls: bool,
    minimal: KernelSpec | None = None, progress: Progress = print,
) -> GuestPackages:  # fmt: skip
    """Stage 1, resolve: the Debian packages the image needs, unpacked
    (with ``minimal``, the kernel's source package, and the kernel built
    from it)."""
    python_name, version = _guest_python(archive)
    names = [python_name, f"libpython{version}-minimal", f"libpython{version}-stdlib"]
    kernel_info = archive.kernel()
    built_kernel = None
    if minimal is not None:
        kernel_info, built_kernel = minimal_kernel(archive, kernel_info, minimal, progress)
    packages = {kernel_info.name: kernel_info}
    library_packages = [*LIBRARY_PACKAGES, *(WHEEL_LIBRARY_PACKAGES if with_wheels else ())]
    if with_wheels or _requires(closure, "ssl"):
        library_packages.append(SSL_PACKAGE)
    if uses_tls:  # looming's TLS trusts the system's CAs when the app gives none
        library_packages.append(CA_PACKAGE)
    packages.update(archive.infos([*names, *library_packages]))
    trees = {name: archive.unpack(info) for name, info in packages.items()}
    tree = Tree([trees[n] for n in [*names, *library_packages]])
    kernel_tree = built_kernel or trees[kernel_info.name]
    return GuestPackages(version, python_name, packages, trees, tree, kernel_tree)


class CombinedStdlib(GuestStdlib):
    """The guest's standard library, split by Debian over libpython-minimal
    and libpython-stdlib, looked up as one."""

    def __init__(self, first: GuestStdlib, second: GuestStdlib, triplet: str, abi: str) -> None:
        super().__init__(first.stdlib, triplet, abi)
        self.first = first
        self.second = second

    def find(self, name: str) -> StdlibModule | None:
        return self.first.find(name) or self.second.find(name)


def _libraries_present(tree: Tree, arch: Arch, module: StdlibModule) -> bool:
    """Whether every shared library an extension module needs is in ``tree``."""
    _found, missing = _resolve_libraries([module.path], tree, arch)
    return not missing


# Standard-library modules a library reaches by name, not by import: the
# unix target's socket stack (in an OCI image, looming.vm.oci) resolves names
# with getaddrinfo, which encodes them with the idna codec, found by name.
LIBRARY_STDLIB: dict[str, tuple[str, ...]] = {
    "looming.unix.socket_stack": ("encodings.idna",),
    # Jinja2's lexer decodes string literals in templates with this codec.
    "jinja2.lexer": ("encodings.unicode_escape",),
}


def _stdlib_roots(
    closure: Closure, site_files: dict[str, bytes], stdlib_names: set[str]
) -> list[tuple[str, tuple[str, ...], bool]]:
    """The standard-library imports of the unikernel's modules, of /init
    and of the wheels' Python files: where the stdlib walk starts."""
    roots: list[tuple[str, tuple[str, ...], bool]] = [
        (module, (), False)
        for library, modules in LIBRARY_STDLIB.items()
        if library in closure.modules
        for module in modules
    ]
    for source in closure.modules.values():
        roots += [
            item
            # source(): a namespace package has no file of its own
            for item in imports_of(source.source(), source.name, source.is_package)
            if item[0].split(".")[0] in stdlib_names
        ]
    roots += imports_of(INIT_SOURCE.read_bytes(), "__init_program__", False)
    for relative, data in site_files.items():
        if relative.endswith(".py"):
            name = relative.removesuffix(".py").replace("/", ".")
            is_package = name.endswith(".__init__")
            name = name.removesuffix(".__init__")
            roots += [
                item
                for item in imports_of(data, name, is_package)
                if item[0].split(".")[0] in stdlib_names
            ]
    return roots


def _guest_stdlib_closure(
    guest: GuestPackages,
    arch: Arch,
    closure: Closure,
    site_files: dict[str, bytes],
    progress: Progress,
) -> tuple[Path, StdlibClosure]:
    """Stage 2, closure: the guest's interpreter and the standard-library
    modules the unikernel reaches."""
    version = guest.version
    interpreter_path = guest.tree.find(f"usr/bin/python{version}")
    if interpreter_path is None:
        raise PackageError(f"no usr/bin/python{version} in {guest.python_name}")
    abi = version.replace(".", "")
    stdlib_dir = guest.tree.find(f"usr/lib/python{version}/os.py")
    if stdlib_dir is None:
        raise PackageError(f"no standard library in libpython{version}-minimal")
    minimal = GuestStdlib(stdlib_dir.parent, arch.triplet, abi)
    extra = GuestStdlib(
        guest.trees[f"libpython{version}-stdlib"] / f"usr/lib/python{version}", arch.triplet, abi
    )
    builtins = builtin_modules(interpreter_path)
    roots = _stdlib_roots(closure, site_files, set(sys.stdlib_module_names) | builtins)
    stdlib = stdlib_closure(
        roots,
        CombinedStdlib(minimal, extra, arch.triplet, abi),
        builtins,
        functools.partial(_libraries_present, guest.tree, arch),
    )
    if stdlib.missing:
        # Imports under conditions the walk cannot judge; reported, not fatal.
        progress(
            f"note: imported but not in Python {version} for {arch.debian}: "
            + ", ".join(sorted(stdlib.missing))
        )
    return interpreter_path, stdlib


@dataclass
class ImageLibraries:
    """The shared libraries in the image and the dynamic loader."""

    files: dict[str, Path]  # library path in the image -> file
    loader: str  # the loader's path, as the interpreter names it
    loader_file: Path


def _image_libraries(
    interpreter_path: Path,
    extensions: list[StdlibModule],
    site_files: dict[str, bytes],
    tree: Tree,
    arch: Arch,
) -> ImageLibraries:
    """Stage 3, libraries: what the interpreter, the stdlib's extension
    modules and the wheels' shared objects need, and the dynamic loader."""
    site_dir = Path(tempfile.mkdtemp(prefix="looming-wheels-"))
    shared_objects = _write_shared_objects(site_files, site_dir)
    bundled = {path.name for path in shared_objects}  # auditwheel's *.libs, found by RPATH
    libraries, missing_libraries = _resolve_libraries(
        [interpreter_path, *(m.path for m in extensions), *shared_objects], tree, arch
    )
    shutil.rmtree(site_dir, ignore_errors=True)
    missing_libraries = [name for name in missing_libraries if name not in bundled]
    if missing_libraries:
        raise PackageError(
            "shared libraries needed but in none of the image's packages: "
            + ", ".join(sorted(missing_libraries))
        )
    loader = elf.interpreter(interpreter_path)
    if loader is None:
        raise PackageError(f"{interpreter_path} names no dynamic loader")
    loader_file = tree.find(loader)
    if loader_file is None:
        raise PackageError(f"the dynamic loader {loader} is not in libc6")
    return ImageLibraries(libraries, loader, loader_file)


@dataclass
class ImageContents:
    """Everything the initramfs holds, found by the stages before it."""

    arch: Arch
    app_dir: Path
    guest: GuestPackages
    interpreter_path: Path
    libraries: ImageLibraries
    stdlib: StdlibClosure
    site_files: dict[str, bytes]
    module_files: list[Path]  # kernel modules, dependencies first
    builtin_modules: list[str]  # drivers built into a minimal kernel
    pyz: Path
    uses_tls: bool
    uses_disk: bool = False  # storage devices on the VM's disk (looming.vm.storage)
    kernel_build: str = "debian"  # or "minimal" (looming.vm.kernelbuild)


def _interpreter_entries(contents: ImageContents) -> list[cpio.Entry]:
    """The interpreter, its shared libraries and the dynamic loader."""
    version = contents.guest.version
    libraries = contents.libraries
    loader = libraries.loader
    entries = [
        cpio.regular(
            f"usr/bin/python{version}", contents.interpreter_path.read_bytes(), executable=True
        ),
        cpio.symlink("usr/bin/python3", f"python{version}"),
    ]
    for image_path, path in libraries.files.items():
        entries.append(cpio.regular(image_path, path.read_bytes(), executable=True))
    loader_name = Path(loader).name
    in_library_dir = next((p for p in libraries.files if Path(p).name == loader_name), None)
    if in_library_dir is not None and in_library_dir != loader.lstrip("/"):
        # The loader is also a library (libc needs it): one copy, one link.
        entries.append(cpio.symlink(loader.lstrip("/"), "/" + in_library_dir))
    else:
        entries.append(
            cpio.regular(loader.lstrip("/"), libraries.loader_file.read_bytes(), executable=True)
        )
    return entries


def _stdlib_entries(
    contents: ImageContents, compiler: Compiler | None, frozen: set[str]
) -> list[cpio.Entry]:
    """The standard-library modules, as bytecode where it can be made here."""
    version = contents.guest.version
    entries = []
    for module in contents.stdlib.modules.values():
        if module.name in frozen:
            continue
        if module.is_extension:
            entries.append(
                cpio.regular(
                    f"usr/lib/python{version}/lib-dynload/{module.path.name}",
                    module.path.read_bytes(),
                    executable=True,
                )
            )
            continue
        relative = "/".join(module.name.split("."))
        relative = f"{relative}/__init__" if module.is_package else relative
        suffix, data = _compiled(module.path, f"python{version}/{relative}.py", compiler)
        entries.append(cpio.regular(f"usr/lib/python{version}/{relative}{suffix}", data))
    return entries


def _site_entries(site_files: dict[str, bytes], compiler: Compiler | None) -> list[cpio.Entry]:
    """The wheels' files, their Python modules as bytecode where it can be made here."""
    entries = []
    for relative, data in site_files.items():
        image_path = f"{SITE_PACKAGES}/{relative}"
        if relative.endswith(".py") and compiler is not None:
            header = importlib.util.MAGIC_NUMBER + b"\x00" * 12
            code = compiler.compile(data, "/" + image_path, strip_docstrings=False)
            entries.append(cpio.regular(image_path + "c", header + code))
        else:
            entries.append(cpio.regular(image_path, data, executable=relative.endswith(".so")))
    return entries


def _init_entries(
    settings: dict[str, object], version: str, compiler: Compiler | None
) -> list[cpio.Entry]:
    """/init with its settings, and its program as bytecode where it can be made here."""
    init_source = INIT_SOURCE.read_text().replace(
        "CONFIG: dict[str, Any] = {}", f"CONFIG: dict[str, Any] = {settings!r}", 1
    )
    shebang = f"#!/usr/bin/python{version} -ISB\n"
    if compiler is None:
        return [cpio.regular("init", f"{shebang}{init_source}".encode(), True)]
    # The kernel runs /init as a script, which Python would compile at every
    # boot (30 ms under emulation): the program is bytecode beside the
    # standard library instead, and /init only calls it.
    program = f"usr/lib/python{version}/{INIT_MODULE}.py"
    code = compiler.compile(init_source.encode(), "/" + program, strip_docstrings=False)
    header = importlib.util.MAGIC_NUMBER + b"\x00" * 12
    return [
        cpio.regular(program + "c", header + code),
        cpio.regular("init", f"{shebang}from {INIT_MODULE} import main\nmain()\n".encode(), True),
    ]


def _initramfs_files(contents: ImageContents, compiler: Compiler | None) -> list[cpio.Entry]:
    """Every file of the initramfs (a later entry replaces an earlier one of the same path)."""
    # Modules frozen into the interpreter are imported from there, never
    # from a file: theirs would only take room and unpacking time.
    frozen = _frozen_modules() if compiler is not None else set()
    entries = [*_interpreter_entries(contents), *_stdlib_entries(contents, compiler, frozen)]
    if contents.uses_tls:
        entries.append(cpio.regular(CA_BUNDLE, _ca_bundle(contents.guest.trees[CA_PACKAGE])))
    entries += _site_entries(contents.site_files, compiler)
    module_paths = []
    for path in contents.module_files:
        image_path = f"lib/modules/{path.name}"
        module_paths.append("/" + image_path)
        entries.append(cpio.regular(image_path, _unsigned(path.read_bytes())))
    archive = _with_bytecode(contents.pyz, compiler, contents.app_dir)
    entries.append(cpio.regular(ARCHIVE_IN_IMAGE.lstrip("/"), archive))
    tree = application_tree_files(contents.pyz)
    base = APP_TREE_IN_IMAGE.lstrip("/")
    entries += [cpio.regular(f"{base}/{name}", data) for name, data in tree.items()]
    boot_cache = bootcache.for_image(contents) if compiler is not None else None
    if boot_cache is not None:
        entries.append(cpio.regular(bootcache.PATH_IN_IMAGE.lstrip("/"), boot_cache))
    settings: dict[str, object] = {
        "modules": module_paths,
        "finit_module": contents.arch.finit_module,
        "interface": INTERFACE,
        "archive": ARCHIVE_IN_IMAGE,
        "app_tree": APP_TREE_IN_IMAGE if tree else None,
        "site_packages": "/" + SITE_PACKAGES if contents.site_files else None,
        "disk": DISK_MOUNT if contents.uses_disk else None,
        "boot_cache": bootcache.PATH_IN_IMAGE if boot_cache is not None else None,
        "boot_cache_version": bootcache.VERSION,
    }
    entries += _init_entries(settings, contents.guest.version, compiler)
    return entries


def _initramfs(contents: ImageContents) -> bytes:
    """Stage 4, initramfs: the uncompressed cpio archive."""
    version = contents.guest.version
    compile_here = sys.version_info[:2] == tuple(int(p) for p in version.split("."))
    # Bytecode is made here when this Python is the guest's version.
    compiler = Compiler() if compile_here else None
    try:
        files = {entry.path: entry for entry in _initramfs_files(contents, compiler)}
    finally:
        if compiler is not None:
            compiler.close()
    for node, major, minor, mode in DEVICE_NODES:
        files[node] = cpio.char_device(node, major, minor, mode)
    for directory in ("proc", "sys", "tmp"):
        files[directory] = cpio.directory(directory)
    ordered_paths = sorted(files)
    entries = _directories(ordered_paths)
    taken = {e.path for e in entries}
    entries += [files[p] for p in ordered_paths if p not in taken]
    return cpio.archive(entries)


def _write_initrd(raw: bytes, compression: str, arch: Arch, out_dir: Path) -> Path:
    """The initramfs compressed as the kernel can unpack it, written to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("initrd.*"):
        stale.unlink()
    if compression == "gzip":
        initrd = out_dir / "initrd.gz"
        initrd.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    elif compression == "lz4":
        # The kernel's LZ4 decoder takes the legacy frame format only (-l).
        initrd = out_dir / "initrd.lz4"
        packed = subprocess.run(
            ["lz4", "-q", "-l", "-12", "-c", "-"], input=raw, capture_output=True, check=True
        )
        initrd.write_bytes(packed.stdout)
    elif compression == "zstd":
        # A tenth larger than xz, but the guest kernel unpacks it several
        # times faster (under emulation, a second less to the first answer);
        # the stdlib has no zstd, so the host's zstd command packs it.
        initrd = out_dir / "initrd.zst"
        packed = subprocess.run(
            ["zstd", "-q", "-c", "-19", "--check", "-"], input=raw, capture_output=True, check=True
        )
        initrd.write_bytes(packed.stdout)
    else:
        # xz takes a quarter less room than gzip; the kernel's decoder wants
        # CRC32 checks, not xz's default CRC64.
        initrd = out_dir / "initrd.xz"
        # The branch filter makes machine code (most of the image) pack tighter.
        xz_filters: list[dict[str, int]] = [{"id": lzma.FILTER_LZMA2, "preset": 6}]
        if arch.xz_branch_filter is not None:
            xz_filters.insert(0, {"id": arch.xz_branch_filter})
        initrd.write_bytes(
            lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=xz_filters)
        )
    return initrd


@dataclass
class KernelFile:
    """The kernel as stored in the image's folder."""

    path: Path
    format: str  # see ImageReport.kernel_format
    unpacked: int
    sha256: str


def _copy_kernel(
    kernel_tree: Path, kernel_version: str, arch: Arch, out_dir: Path, progress: Progress
) -> KernelFile:
    """Stage 5, kernel: Debian's kernel, packed smaller where the machine
    boots it unpacked by looming run."""
    vmlinuz = kernel_tree / "boot" / f"vmlinuz-{kernel_version}"
    for stale in out_dir.glob("kernel*"):
        stale.unlink()
    if arch.kernel_compressed:
        stored = pack_for_pvh(vmlinuz, kernels_cache(), progress) if arch.pvh_boot else None
        stored_format = PVH_FORMAT
    else:
        stored = pack_image(vmlinuz, kernels_cache(), progress)
        stored_format = IMAGE_FORMAT
    if stored is None:
        kernel = out_dir / "kernel"
        shutil.copyfile(vmlinuz, kernel)
        return KernelFile(kernel, "bzImage", vmlinuz.stat().st_size, "")
    # Smaller than Debian's bzImage or than any gzip of the arm64 Image;
    # looming run unpacks it on the host, once.
    kernel = out_dir / "kernel.xz"
    shutil.copyfile(stored.packed, kernel)
    return KernelFile(kernel, stored_format, stored.unpacked_size, stored.unpacked_sha256)


def _write_manifest(
    report: ImageReport,
    arch: Arch,
    unikernel: str,
    wheel_list: list[wheels.Wheel],
    main_py: Path,
    app_modules: list[str],
) -> None:
    manifest_data = report.to_json()
    manifest_data["console"] = arch.console
    manifest_data["unikernel"] = unikernel  # the default MAC is derived from it
    manifest_data["wheels"] = {
        w.name: {"version": w.version, "file": w.path.name, "sha256": w.sha256} for w in wheel_list
    }
    manifest_data["usage"] = keys_usage(main_py)
    # The launcher refuses to boot a unikernel that drives a NIC without one.
    manifest_data["needs_network"] = "looming.vm.nic" in app_modules
    # ... and attaches a disk image to one whose storage is on it.
    manifest_data["needs_disk"] = STORAGE_MODULE in app_modules
    manifest_data["vchans"] = vchans_of(main_py)  # ivshmem regions looming run attaches
    partial = report.manifest.with_name(f".{report.manifest.name}.new")
    partial.write_text(json.dumps(manifest_data, indent=2, sort_keys=True) + "\n")
    partial.replace(report.manifest)


def _app_closure(main_py: Path, app_dir: Path) -> Closure:
    """The unikernel's modules, with the packages ``register(..., packages=[...])``
    named (what the zipapp packs, so the stdlib walk starts from all of it)."""
    packages, _jobs = configured(main_py)
    return module_closure(main_py, app_dir, tuple(f"{p}.*" for p in packages))


def _gather_contents(
    app_dir: Path, main_py: Path, crunch: list[tuple[str, str]], arch: Arch, work: Path,
    progress: Progress, nic_drivers: tuple[str, ...] = (), kernel: str = "debian",
) -> tuple[ImageContents, BuildReport, list[wheels.Wheel]]:  # fmt: skip
    """Stages 1 to 3: packages, the zipapp (in ``work``), the stdlib closure,
    the libraries and kernel modules; nothing is written to dist/."""
    archive = AptArchive(arch, cache_root(), progress)
    closure = _app_closure(main_py, app_dir)
    wheel_list = _wheels_for(closure, arch, archive, progress)
    progress(f"packing the unikernel's modules for {arch.name}")
    pyz = write_zipapp(work / "unikernel.pyz", main_py, app_dir, crunch)
    uses_tls = any(m.startswith("looming.tls") for m in pyz.modules)
    minimal = KernelSpec(arch, nic_drivers) if kernel == "minimal" else None
    guest = _resolve_packages(archive, closure, bool(wheel_list), uses_tls, minimal, progress)
    progress("computing the standard-library modules the unikernel reaches")
    site_files = wheels.unpack(wheel_list)
    interpreter_path, stdlib = _guest_stdlib_closure(guest, arch, closure, site_files, progress)
    extensions = [m for m in stdlib.modules.values() if m.is_extension]
    libraries = _image_libraries(interpreter_path, extensions, site_files, guest.tree, arch)
    uses_disk = STORAGE_MODULE in pyz.modules
    _kernel_version, module_files = _kernel_modules(guest.kernel_tree, arch, uses_disk, nic_drivers)
    contents = ImageContents(
        arch=arch,
        app_dir=app_dir,
        guest=guest,
        interpreter_path=interpreter_path,
        libraries=libraries,
        stdlib=stdlib,
        site_files=site_files,
        module_files=module_files,
        builtin_modules=builtin_drivers(guest.kernel_tree),
        pyz=pyz.artifact,
        uses_tls=uses_tls,
        uses_disk=uses_disk,
        kernel_build=kernel,
    )
    return contents, pyz, wheel_list


def _check_image_imports(
    contents: ImageContents, closure: Closure, main_py: Path, progress: Progress
) -> None:
    """Stage 4, check: the unikernel imported against what the image holds."""
    if sys.version_info[:2] != tuple(int(p) for p in contents.guest.version.split(".")):
        progress(f"note: imports not checked: this is not Python {contents.guest.version}")
        return
    app_dir = contents.app_dir.resolve()
    own = [
        name
        for name, source in closure.modules.items()
        if name != "__main__" and source.path.resolve().is_relative_to(app_dir)
    ]
    dynamic = [
        name for key in DYNAMIC_IMPORTS for name in DYNAMIC_IMPORTS[key] if name in closure.modules
    ]
    locator = ModuleLocator(contents.app_dir)
    compiled = {
        top: where
        for top in wheel_tops(contents.site_files)
        if (where := locator.search_path(top)) is not None
    }
    builtins = builtin_modules(contents.interpreter_path)
    with tempfile.TemporaryDirectory(prefix="looming-tree-") as folder:
        tree = application_tree_files(contents.pyz)
        for name, data in tree.items():  # laid out as /app/files holds them
            (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(folder) / name).write_bytes(data)
        check_imports(
            ImageModules(
                archive=contents.pyz,
                main_py=main_py,
                stdlib={*contents.stdlib.modules, *builtins, *_frozen_modules(), "os"},
                stdlib_names=set(sys.stdlib_module_names) | builtins,
                compiled=compiled,
                modules=[*own, *dynamic],
                tree=Path(folder) if tree else None,
            ),
            contents.app_dir,
            progress,
        )


def _image_report(
    contents: ImageContents, pyz: BuildReport, raw_size: int, initrd: Path, kernel: KernelFile,
    manifest: Path,
) -> ImageReport:  # fmt: skip
    stdlib = contents.stdlib.modules.values()
    return ImageReport(
        arch=contents.arch.name,
        manifest=manifest,
        kernel=kernel.path,
        initrd=initrd,
        kernel_size=kernel.path.stat().st_size,
        kernel_format=kernel.format,
        kernel_unpacked=kernel.unpacked,
        kernel_sha256=kernel.sha256,
        initrd_size=initrd.stat().st_size,
        initrd_unpacked=raw_size,
        packages={name: info.version for name, info in contents.guest.packages.items()},
        stdlib_modules=sorted(m.name for m in stdlib if not m.is_extension),
        extension_modules=sorted(m.name for m in stdlib if m.is_extension),
        libraries=sorted([contents.libraries.loader.lstrip("/"), *contents.libraries.files]),
        kernel_modules=[p.stem for p in contents.module_files] + contents.builtin_modules,
        kernel_build=contents.kernel_build,
        kernel_build_id=contents.guest.kernel_tree.name if contents.builtin_modules else "",
        app_modules=pyz.modules,
        app_files=pyz.app_files,
        archive_size=pyz.size,
        crunched_files=pyz.crunched_files,
        dropped_optional=sorted(contents.stdlib.dropped),
    )


def _write_image(
    contents: ImageContents, out_dir: Path, compression: str, progress: Progress
) -> tuple[int, Path, KernelFile]:
    """Stages 5 and 6, into ``out_dir``: the initramfs, then the kernel."""
    progress("writing the initramfs")
    raw = _initramfs(contents)
    initrd = _write_initrd(raw, compression, contents.arch, out_dir)
    progress("copying the kernel")
    kernel_version = _kernel_modules(contents.guest.kernel_tree, contents.arch)[0]
    kernel = _copy_kernel(
        contents.guest.kernel_tree, kernel_version, contents.arch, out_dir, progress
    )
    return len(raw), initrd, kernel


def build_image(
    app_dir: Path,
    unikernel: str,
    main_py: Path,
    crunch: list[tuple[str, str]],
    options: dict[str, str],
    progress: Progress,
) -> ImageReport:
    """Build ``dist/<unikernel>-vm.json`` with its kernel and initramfs, in
    stages: resolve the packages, walk the stdlib closure, find the shared
    libraries, check the imports, write the initramfs, copy the kernel. All
    or nothing: the files are made in a folder beside the image's and moved
    into place, the manifest last."""
    arch = check_can_build(options.get("arch", "x86_64"), app_dir, main_py)
    compression = _compression(arch, options)
    kernel_build = parse_kernel(options.get("kernel"))
    if kernel_build == "minimal":
        check_build_tools(arch)  # before anything is downloaded
    try:
        nic_drivers = parse_nic_drivers(options.get("nic_drivers"), arch.virtio_transport)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not options.get("nic_drivers") and arch.name == "x86_64":
        nic_drivers += ("virtio-mmio",)  # for microvm, which boots sooner than pc
    if options.get("firecracker") and "virtio-mmio" not in nic_drivers:
        nic_drivers += ("virtio-mmio",)  # Firecracker's devices are virtio-mmio
    dist = app_dir / "dist"
    out_dir = dist / f"{unikernel}-vm-{arch.name}"
    with tempfile.TemporaryDirectory(prefix="looming-image-") as work:
        contents, pyz, wheel_list = _gather_contents(
            app_dir, main_py, crunch, arch, Path(work), progress, nic_drivers, kernel_build
        )
        progress("importing the unikernel against the image's modules")
        _check_image_imports(contents, _app_closure(main_py, app_dir), main_py, progress)
        dist.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=dist))
        staging.chmod(0o755)
        try:
            raw_size, initrd, kernel = _write_image(contents, staging, compression, progress)
            shutil.rmtree(out_dir, ignore_errors=True)
            staging.rename(out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    kernel = KernelFile(out_dir / kernel.path.name, kernel.format, kernel.unpacked, kernel.sha256)
    manifest = dist / f"{unikernel}-vm.json"
    report = _image_report(contents, pyz, raw_size, out_dir / initrd.name, kernel, manifest)
    _write_manifest(report, arch, unikernel, wheel_list, main_py, pyz.modules)
    from looming.vm.firecracker import write_machine_files

    write_machine_files(report, unikernel, bool(options.get("firecracker")), progress)
    return report


def keys_usage(main_py: Path) -> str | None:
    """The unikernel's ``--help`` text, read from the generated ``main.py``
    (its ``KEYS`` list and its ``runtime.main`` call) without running it, so
    ``looming run --help`` need not boot a VM to list the keys. None when
    the file does not have the generated form."""
    from looming.runtime import KeySpec, usage

    specs: list[KeySpec] = []
    name: str | None = None
    try:
        tree = ast.parse(main_py.read_bytes())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "KEYS" for t in node.targets)
                and isinstance(node.value, ast.List)
            ):
                for call in node.value.elts:
                    if not isinstance(call, ast.Call):
                        return None
                    specs.append(KeySpec(*(ast.literal_eval(a) for a in call.args)))
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "main"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                name = node.args[0].value
    except (SyntaxError, ValueError, TypeError):
        return None
    if name is None:
        return None
    return usage(name, specs)


def describe_image(manifest_path: Path) -> str:
    """What ``looming describe --image`` prints for a VM image."""
    data = json.loads(manifest_path.read_text())

    def mib(size: int) -> str:
        return f"{size / 2**20:.1f} MiB"

    total = int(data["kernel_size"]) + int(data["initrd_size"])
    booted = int(data.get("kernel_unpacked") or data["kernel_size"]) + int(data["initrd_size"])
    kernel_format = data.get("kernel_format", "bzImage")
    kernel_note = {
        "bzImage": " (bzImage: the guest unpacks itself)",
        PVH_FORMAT: f" (vmlinux packed with xz, booted through its PVH entry; "
        f"{mib(data.get('kernel_unpacked', 0))} once looming run unpacks it on the host)",
        IMAGE_FORMAT: f" (Image packed with xz; "
        f"{mib(data.get('kernel_unpacked', 0))} once looming run unpacks it on the host)",
    }.get(kernel_format, f" ({kernel_format})")
    if data.get("kernel_build") == "minimal":
        kernel_note += "; minimal kernel compiled from Debian's source, drivers built in"
    lines = [
        f"{manifest_path.name}: {data['arch']} image, {mib(total)} ({total} bytes) packed, "
        f"{mib(booted)} as booted (kernel unpacked + initramfs)",
        f"  kernel     {data['kernel']}  {mib(data['kernel_size'])}{kernel_note}",
        f"  initramfs  {data['initrd']}  {mib(data['initrd_size'])} "
        f"({mib(data['initrd_unpacked'])} unpacked)",
        "Debian packages:",
        *(f"  {name} {version}" for name, version in sorted(data["packages"].items())),
        *(["wheels:"] if data.get("wheels") else []),
        *(
            f"  {name} {w['version']}  {w['file']}  sha256 {w['sha256']}"
            for name, w in sorted(data.get("wheels", {}).items())
        ),
        f"unikernel archive: {data['archive_size']} bytes, {len(data['app_modules'])} modules, "
        f"{data['crunched_files']} crunched files",
        f"standard library: {len(data['stdlib_modules'])} modules (bytecode), "
        f"extensions: {', '.join(data['extension_modules']) or 'none'}",
        f"shared libraries: {', '.join(data['libraries'])}",
        f"{'kernel drivers (built in)' if data.get('kernel_build') == 'minimal' else 'kernel modules'}"
        f": {', '.join(data['kernel_modules'])}",
    ]
    if data.get("dropped_optional"):
        lines.append(f"optional modules left out: {', '.join(data['dropped_optional'])}")
    lines += disk_description(data)  # --disk-image, --oci
    lines.append("modules:")
    lines += [f"  {name}" for name in data["app_modules"]]
    lines += [f"  {name}" for name in data["stdlib_modules"]]
    return "\n".join(lines) + "\n"
