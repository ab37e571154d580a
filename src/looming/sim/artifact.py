"""Building a unikernel for the sim target and loading it as a node.

A node runs from its built artifact, the zipapp ``looming build`` made for
the ``sim`` target. Several nodes (and several runs of one node) live in one
process, and two applications may both have a module called ``unikernel``,
so each loaded copy gets its own namespace: the application's modules are
imported from the zip as ``_looming_sim_nodes.<copy>.<module>`` through a
private ``__import__`` in their globals. looming itself and third-party
libraries are shared with the host, as they are the same code. When the
application's modules read files beside them (templates, static folders),
the build packed those modules with the files as a tree (see
:func:`looming.config.build._data_pack`): it is extracted once into the
cache of :mod:`looming.config.build_boot`, and the modules' ``__file__``
names their copy there, so ``Path(__file__).parent / "static"`` is a folder.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import json
import sys
import types
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from looming.config import build_boot
from looming.errors import ConfigError, UsageError

ROOT = "_looming_sim_nodes"
_DATA_TOPS = {"__main__.py", "_looming", "looming", build_boot.NATIVE_DIR, "_looming_boot.py"}
_copies = itertools.count()


def _newest_mtime(app_dir: Path) -> float:
    newest = 0.0
    for path in app_dir.rglob("*"):
        rel = path.relative_to(app_dir).parts
        if rel and rel[0] in ("_build", "dist", "__pycache__"):
            continue
        if "__pycache__" in rel:
            continue
        if path.is_file():
            newest = max(newest, path.stat().st_mtime)
    return newest


def ensure_artifact(app_dir: Path, unikernel: str | None = None) -> Path:
    """The sim artifact of the application in ``app_dir``, built if missing or stale.

    Building here is ``looming configure -t sim`` plus ``looming build``
    without touching the folder's saved configuration (``_build/looming.json``),
    so a folder configured for another target stays as it was.
    """
    from looming.config import build, codegen, loader, plan
    from looming.config.targets import get_target

    app_dir = app_dir.resolve()
    if not (app_dir / "config.py").is_file():
        raise UsageError(f"no application in {app_dir}: there is no config.py")
    target = get_target("sim")
    registry = loader.load(app_dir)
    chosen = registry.unikernels
    if unikernel is not None:
        chosen = [u for u in chosen if u.name == unikernel]
    if len(chosen) != 1:
        names = ", ".join(u.name for u in registry.unikernels) or "none"
        raise UsageError(
            f"{app_dir}/config.py: cannot tell which unikernel to run (registered: {names}); "
            "name one with unikernel=..."
        )
    artifact = target.artifact(app_dir, chosen[0].name)
    if artifact.is_file() and artifact.stat().st_mtime >= _newest_mtime(app_dir):
        return artifact
    resolved = plan.resolve(chosen[0], app_dir, target, target.default_options())
    main_py = app_dir / "_build" / "sim" / "main.py"
    main_py.parent.mkdir(parents=True, exist_ok=True)
    main_py.write_text(codegen.generate(resolved, "looming configure -t sim"), encoding="utf-8")
    crunch = [tuple(c) for d in resolved.devices for c in d.impl.crunch]
    build.write_zipapp(artifact, main_py, app_dir, crunch)  # type: ignore[arg-type]  # pairs
    return artifact


def _application_tree(archive: zipfile.ZipFile) -> str:
    """The folder of the application's modules and the files they read,
    extracted from ``archive``; "" when the build packed none."""
    try:
        manifest = json.loads(archive.read(build_boot.MANIFEST))
    except KeyError:
        return ""
    if not manifest.get("app"):
        return ""
    return build_boot.extract(archive, str(manifest["app_digest"]), build_boot.APP)


@dataclass(frozen=True)
class KeyInfo:
    name: str
    type_name: str


class Artifact:
    """The contents of one built zipapp, read once."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        try:
            with zipfile.ZipFile(self.path) as z:
                self.sources = {
                    name: z.read(name)
                    for name in z.namelist()
                    if name.endswith(".py") and name.partition("/")[0] not in _DATA_TOPS
                }
                self.sources["__main__.py"] = z.read("__main__.py")
                self.files_root = _application_tree(z)
        except (OSError, zipfile.BadZipFile, KeyError) as error:
            raise UsageError(f"{path} is not a built looming unikernel: {error}") from None
        self.code: dict[str, types.CodeType] = {}
        app_dir = self.path.parent.parent
        tops = {name.partition("/")[0].removesuffix(".py") for name in self.sources}
        tops.discard("__main__")
        self.app_modules = frozenset(
            top
            for top in tops
            if (app_dir / f"{top}.py").is_file()
            or (app_dir / top / "__init__.py").is_file()
            or importlib.util.find_spec(top) is None
        )

    def file_of(self, zip_name: str) -> str:
        """The ``__file__`` of the module packed as ``zip_name``: its copy in
        the extracted application tree if there is one, else inside the zip."""
        if self.files_root:
            copy = Path(self.files_root, zip_name)
            if copy.is_file():
                return str(copy)
        return f"{self.path}/{zip_name}"

    def source_of(self, module: str) -> tuple[str, bytes, bool] | None:
        """(path in the zip, source, is a package) of an application module."""
        base = module.replace(".", "/")
        for name, is_package in ((f"{base}.py", False), (f"{base}/__init__.py", True)):
            if name in self.sources:
                return name, self.sources[name], is_package
        return None

    def load(self, label: str) -> LoadedUnikernel:
        """A fresh copy of the unikernel's modules (as a new process would have)."""
        safe = "".join(c if c.isalnum() else "_" for c in label)
        namespace = f"{ROOT}.c{next(_copies)}_{safe}"
        _FINDER.copies[namespace] = self
        _ensure_package(ROOT)
        _ensure_package(namespace)
        module = importlib.import_module(f"{namespace}.__main__")
        keys = getattr(module, "KEYS", None)
        start = getattr(module, "start", None)
        if keys is None or start is None:
            raise ConfigError(f"{self.path}: not a looming unikernel (no KEYS or start)")
        return LoadedUnikernel(namespace, keys, start)


@dataclass
class LoadedUnikernel:
    namespace: str
    keys: Sequence[Any]
    start: Callable[..., Any]

    def unload(self) -> None:
        for name in [
            n for n in sys.modules if n == self.namespace or n.startswith(self.namespace + ".")
        ]:
            del sys.modules[name]
        _FINDER.copies.pop(self.namespace, None)


def _ensure_package(name: str) -> None:
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = []
        sys.modules[name] = package
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, package)


def _private_builtins(namespace: str, app_modules: frozenset[str]) -> dict[str, Any]:
    real_import = builtins.__import__

    def import_(
        name: str,
        globals: dict[str, Any] | None = None,
        locals: dict[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> types.ModuleType:
        top = name.partition(".")[0]
        if level == 0 and top in app_modules:
            if fromlist:
                return real_import(f"{namespace}.{name}", None, None, fromlist, 0)
            importlib.import_module(f"{namespace}.{name}")
            return sys.modules[f"{namespace}.{top}"]
        return real_import(name, globals, locals, fromlist or (), level)

    table = dict(builtins.__dict__)
    table["__import__"] = import_
    return table


class _ArtifactFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self) -> None:
        self.copies: dict[str, Artifact] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(ROOT + "."):
            return None
        parts = fullname.split(".")
        if len(parts) < 3:
            return None
        namespace = ".".join(parts[:2])
        artifact = self.copies.get(namespace)
        if artifact is None:
            return None
        relative = ".".join(parts[2:])
        found = artifact.source_of(relative)
        if found is None:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self, is_package=found[2])
        spec.origin = artifact.file_of(found[0])
        if found[2]:
            spec.submodule_search_locations = []
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        parts = module.__name__.split(".")
        namespace = ".".join(parts[:2])
        artifact = self.copies[namespace]
        found = artifact.source_of(".".join(parts[2:]))
        assert found is not None
        zip_name, source, _ = found
        module.__dict__["__builtins__"] = _private_builtins(namespace, artifact.app_modules)
        module.__file__ = artifact.file_of(zip_name)
        # Every boot runs the modules afresh, but compiles them only once.
        code = artifact.code.get(zip_name)
        if code is None:
            code = artifact.code[zip_name] = compile(
                source, module.__file__, "exec", dont_inherit=True
            )
        exec(code, module.__dict__)


_FINDER = _ArtifactFinder()
sys.meta_path.insert(0, _FINDER)
