"""Building the artifact: a zipapp holding only what the unikernel reaches.

The module closure is computed from import statements (read, never
executed), starting at the generated ``main.py``: the application's
modules, looming's modules and pure-Python third-party modules are copied
in; the standard library is left to the interpreter that runs the artifact.
Packages with compiled extensions are either left to that interpreter too
(the VM image installs them as wheels for its own), or, with ``natives``
(the unix target), packed as the build's interpreter has them under
``_looming_native/`` with what they were compiled for: the artifact checks
at start that it runs on an interpreter that can load them and extracts
them once into a private cache (:mod:`looming.config.build_boot`), so the
pure half (pydantic) and the compiled half (pydantic_core) always come from
one installation. kv_ro folders are crunched in. The files and folders the
application's modules read beside them (templates, static folders) are packed
on every target with a copy of those modules, under ``_looming_native/app/``:
the unix start extracts them, the sim's node loader and the VM image lay
them out as files.
Entries are written sorted with fixed timestamps and modes, so building
twice, or in two clones, gives identical bytes.

Imports made by name at run time (anyio's backends, pydantic's lazy
attributes) are invisible to that reading: :data:`DYNAMIC_IMPORTS` lists the
common ones, ``register(..., packages=[...])`` adds whole packages, and
before the artifact is moved into place the application's modules are
imported from it in a child interpreter that sees only the artifact, the
standard library and the compiled packages (:func:`smoke_import`). A module
still missing is named in a :class:`~looming.errors.ConfigError`, and
nothing is left in ``dist/``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.machinery
import importlib.util
import io
import json
import os
import re
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from looming.config import build_boot
from looming.config.build_native import (
    NativePack,
    application_files,
    compiled_packages_to_pack,
    distribution_metadata,
    installed_modules,
    main_with_boot,
    native_pack,
    referenced_paths,
    required_modules,
    shebang,
)
from looming.config.build_smoke import smoke_import, top_level_imports
from looming.config.build_times import packed_times, zip_date_time
from looming.errors import ConfigError
from looming.unix.kv import MANIFEST_DIR, crunch_manifest, survey_folder

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
DateTime = tuple[int, int, int, int, int, int]
_EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)

DYNAMIC_IMPORTS: dict[str, tuple[str, ...]] = {
    # anyio loads its event-loop backend by name (to_thread, streams, ...):
    # Starlette's sync endpoints, StreamingResponse and BackgroundTasks need it.
    "anyio": ("anyio._backends", "anyio._backends._asyncio"),
    # pydantic resolves most of its public names lazily, by import_module.
    "pydantic": ("pydantic.*",),
    # OpenTelemetry (which FastAPI reports to when it is installed) loads its
    # context implementation through an entry point.
    "opentelemetry.context": ("opentelemetry.context.contextvars_context",),
    # Django names its defaults in settings strings and loads them by
    # import_string: template tag libraries, template engines and loaders,
    # the default cache, session, message, file-storage and e-mail backends.
    "django": (
        "django.templatetags.*",
        "django.template.backends.django",
        "django.template.loader_tags",
        "django.template.defaulttags",
        "django.template.defaultfilters",
        "django.template.loaders.*",
        "django.middleware.*",
        "django.core.cache.backends.locmem",
        "django.contrib.sessions.backends.db",
        "django.contrib.messages.storage.fallback",
        "django.core.files.storage.filesystem",
        "django.core.mail.backends.smtp",
        "django.db.backends.sqlite3.*",
    ),
}
"""Modules imported by name at run time, packed whenever the key (a module
or a top-level package) is reached. ``pkg.*`` stands for every module of
``pkg``. Others are added with ``register(..., packages=[...])``."""

PROBED = frozenset({"uvloop", "httptools"})
"""Modules looming looks for by name at run time and does without (the
``loop`` and ``parser`` keys' ``auto``): an artifact without them is not
told that they are installed where it was built."""

_ISOLATED_RUN = """
import importlib.machinery, json, runpy, sys
allowed = json.loads(sys.argv[1])
class RunningInterpreters:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        where = allowed.get(name)
        return None if where is None else importlib.machinery.PathFinder.find_spec(name, [where])
sys.meta_path.append(RunningInterpreters)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def isolated_run_command(artifact: Path, argv: list[str]) -> list[str]:
    """The command that runs the zipapp ``artifact`` as another machine
    would: this interpreter without its site-packages (``-S -s``), so a
    module the build left out fails here too, but with its own
    :data:`PROBED` modules (uvloop, httptools), as any interpreter that has
    them gives them to the artifact."""
    locator = ModuleLocator(artifact.parent)
    allowed = {name: where for name in sorted(PROBED) if (where := locator.search_path(name))}
    program = [sys.executable, "-S", "-s", "-c", _ISOLATED_RUN, json.dumps(allowed)]
    return [*program, str(artifact), *argv]


_NEVER_PACKED = ("pydantic.v1", "pydantic.mypy", "pydantic.plugin._loader_v1", "fastapi.cli")
"""Subpackages a ``pkg.*`` leaves out: the legacy API and tool plug-ins,
which import what an application does not have."""


@dataclass
class ModuleSource:
    name: str
    path: Path
    is_package: bool
    namespace: bool = False
    """A namespace package (a folder without ``__init__.py``): packed as an empty one."""

    def source(self) -> bytes:
        return b"" if self.namespace else self.path.read_bytes()


@dataclass
class Closure:
    modules: dict[str, ModuleSource] = field(default_factory=dict)
    external: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    search_paths: dict[str, str] = field(default_factory=dict)
    """Where each external (compiled) top-level package is installed."""


def _shadowed_module(top: str, package: Path) -> Path:
    """The module ``top.py`` beside the package ``top/`` when the package is a
    shim that finds and runs that file from ``sys.path`` at import time (as
    python-multipart's ``multipart/`` does for the ``multipart`` distribution's
    ``multipart.py``): inside a zip the shim would not find it, so the module
    itself is packed. Else ``package``."""
    module = package.parent / f"{top}.py"
    init = package / "__init__.py"
    if module.is_file() and init.is_file() and f'"{top}.py"' in init.read_text(errors="replace"):
        return module
    return package


_RUN_TIME = frozenset({"__main__", "__mp_main__"})
"""Names the running interpreter gives its main script: never a module to pack
(``import __main__`` in Django's autoreloader means the artifact itself)."""


def _find_spec(top: str) -> importlib.machinery.ModuleSpec | None:
    """``importlib.util.find_spec(top)``; a module whose lookup fails (a broken
    ``sys.modules`` entry, a finder raising) is a one-line error naming it."""
    try:
        return importlib.util.find_spec(top)
    except Exception as exc:
        raise ConfigError(
            f"cannot locate module {top!r} to pack it ({type(exc).__name__}: {exc}); "
            "check that it is installed correctly, or leave it out of register(packages=[...])"
        ) from None


class ModuleLocator:
    """Finds modules' source files without importing them."""

    def __init__(self, app_dir: Path) -> None:
        self.app_dir = app_dir
        paths = sysconfig.get_paths()
        self._stdlib = {Path(paths["stdlib"]).resolve(), Path(paths["platstdlib"]).resolve()}
        self._roots: dict[str, tuple[str, Path | None]] = {}

    def _root(self, top: str) -> tuple[str, Path | None]:
        """('app'|'lib'|'stdlib'|'external'|'missing', location) of a top-level name."""
        if top in self._roots:
            return self._roots[top]
        result: tuple[str, Path | None]
        if (self.app_dir / f"{top}.py").is_file():
            result = ("app", self.app_dir / f"{top}.py")
        elif (self.app_dir / top / "__init__.py").is_file():
            result = ("app", self.app_dir / top)
        elif top in sys.builtin_module_names or top in sys.stdlib_module_names or top in _RUN_TIME:
            result = ("stdlib", None)
        else:
            spec = _find_spec(top)
            if spec is None:
                result = ("missing", None)
            elif spec.submodule_search_locations:
                location = _shadowed_module(top, Path(next(iter(spec.submodule_search_locations))))
                result = (self._classify(location), location)
            elif spec.origin and spec.origin.endswith(".py"):
                location = Path(spec.origin)
                result = (self._classify(location), location)
            else:
                result = ("external", None)
        self._roots[top] = result
        return result

    def _classify(self, location: Path) -> str:
        resolved = location.resolve()
        if any(resolved.is_relative_to(s) for s in self._stdlib) and (
            "site-packages" not in resolved.parts
        ):
            return "stdlib"
        if resolved.is_dir() and any(
            p.name.endswith(_EXTENSION_SUFFIXES) for p in resolved.rglob("*")
        ):
            return "external"
        return "lib"

    def find(self, name: str) -> tuple[str, ModuleSource | None]:
        """The kind of ``name`` and its source file, if it has one.

        For a package with compiled code ("external") the Python source is
        given too: it is read for the pure modules it imports, never packed.
        """
        top, _, rest = name.partition(".")
        kind, location = self._root(top)
        if kind not in ("app", "lib", "external") or location is None:
            return kind, None
        if location.suffix == ".py":
            return (kind, ModuleSource(name, location, False)) if not rest else ("missing", None)
        path = location.joinpath(*rest.split(".")) if rest else location
        if (path / "__init__.py").is_file():
            return kind, ModuleSource(name, path / "__init__.py", True)
        if path.is_dir() and (not rest or any(path.glob("*.py"))):
            return kind, ModuleSource(name, path / "__init__.py", True, namespace=True)
        if path.with_suffix(".py").is_file():
            return kind, ModuleSource(name, path.with_suffix(".py"), False)
        return ("external", None) if kind == "external" else ("missing", None)

    def search_path(self, top: str) -> str | None:
        """The folder an installed top-level module ``top`` is imported from."""
        spec = _find_spec(top)
        if spec is None:
            return None
        if spec.submodule_search_locations:
            return str(Path(next(iter(spec.submodule_search_locations))).parent)
        return str(Path(spec.origin).parent) if spec.origin else None

    def submodules(self, package: str) -> list[str]:
        """Every module of the app or pure-Python library ``package``, itself included."""
        kind, src = self.find(package)
        if src is None or kind == "external":
            return []
        if not src.is_package:
            return [package]
        root = src.path.parent
        names = [package]
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            if not parts or not all(p.isidentifier() for p in parts):
                continue
            name = ".".join((package, *parts))
            if not any(name == n or name.startswith(n + ".") for n in _NEVER_PACKED):
                names.append(name)
        return names


_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?:\.[A-Z]\w*|:[A-Za-z_]\w*)")
"""A string naming an object in a module (``pkg.mod.Class``, ``pkg.mod:app``)."""


def _imports(source: ModuleSource) -> list[tuple[str, tuple[str, ...]]]:
    """(module, imported names) for each import outside TYPE_CHECKING blocks.

    A string constant of the form ``pkg.mod.Class`` or ``pkg.mod:name`` gives
    (``pkg.mod.Name``, ``(STRING,)``): a module perhaps imported by that name
    at run time (``logging.config.dictConfig``'s handler classes, an
    ``"app.main:app"``), to be packed if it is one."""
    if source.namespace:
        return []
    try:
        tree = ast.parse(source.source(), str(source.path))
    except (SyntaxError, ValueError, OSError) as exc:
        raise ConfigError(
            f"cannot read module {source.name} ({source.path}) to follow its imports: "
            f"{type(exc).__name__}: {exc}; fix it or leave it out of register(packages=[...])"
        ) from None
    package = source.name if source.is_package else source.name.rpartition(".")[0]
    found: list[tuple[str, tuple[str, ...]]] = []

    def walk(nodes: list[ast.stmt] | list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                walk(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.extend((a.name, ()) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                found.append((module, tuple(a.name for a in node.names)))
            elif isinstance(node, ast.Call):
                named = _imported_by_name(node, package)
                if named:
                    found.append((named, ()))
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _DOTTED_NAME.fullmatch(node.value)
            ):
                found.append((node.value.replace(":", "."), (STRING,)))
            walk(list(ast.iter_child_nodes(node)))

    walk(tree.body)
    return found


STRING = "<named in a string>"
"""The imported names :func:`_imports` gives a module named in a string."""


def _imported_by_name(call: ast.Call, package: str) -> str | None:
    """The module of ``import_module("x")`` or ``__import__("x")`` with a literal name."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if called not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    if not isinstance(first, ast.Constant) or not isinstance(first.value, str):
        return None
    name: str = first.value
    if name.startswith("."):
        dots = len(name) - len(name.lstrip("."))
        base = package.split(".")
        base = base[: len(base) - (dots - 1)] if dots > 1 else base
        name = ".".join([*base, name[dots:]]) if name[dots:] else ".".join(base)
    return name if all(p.isidentifier() for p in name.split(".")) else None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ModuleWalk:
    """The walk behind :func:`module_closure`: a stack of modules to read and
    the closure they add up to."""

    def __init__(self, entry: Path, app_dir: Path) -> None:
        self.locator = ModuleLocator(app_dir)
        self.closure = Closure()
        self.walked: set[str] = set()  # modules read, packed or (external) not
        self.pending: list[ModuleSource] = [ModuleSource("__main__", entry, False)]
        self.triggered: set[str] = set()  # DYNAMIC_IMPORTS keys already expanded

    def expand(self, names: tuple[str, ...]) -> None:
        """Queue ``names`` (``pkg.*``: every module of ``pkg``)."""
        for name in names:
            base = name.removesuffix(".*")
            if self.locator.find(base)[0] == "external":  # packed whole, or the host's
                self.closure.external.add(base.partition(".")[0])
                continue
            listed = self.locator.submodules(base) if name.endswith(".*") else [name]
            for listed_name in listed:
                kind, src = self.locator.find(listed_name)
                if src is not None and kind != "external":
                    self.pending.append(src)
                elif kind == "external":
                    self.closure.external.add(listed_name.partition(".")[0])
                elif kind == "missing" and not name.endswith(".*"):
                    self.closure.missing.add(listed_name)

    def want(self, name: str) -> None:
        """Queue the module ``name`` unless it was read; note it when it is
        compiled (external) or found nowhere."""
        if name in self.walked:
            return
        kind, src = self.locator.find(name)
        if kind == "external":
            self.closure.external.add(name.partition(".")[0])
        elif kind == "missing":
            self.closure.missing.add(name)
        if src is not None:
            self.pending.append(src)

    def visit(self, src: ModuleSource) -> None:
        """Take ``src`` and queue what it brings: the modules DYNAMIC_IMPORTS
        names for it, its parent packages and its imports."""
        self.walked.add(src.name)
        if src.name == "__main__" or self.locator.find(src.name)[0] != "external":
            self.closure.modules[src.name] = src
        for key in (src.name, src.name.partition(".")[0]):
            if key in DYNAMIC_IMPORTS and key not in self.triggered:
                self.triggered.add(key)
                self.expand(DYNAMIC_IMPORTS[key])
        parts = src.name.split(".")
        for i in range(1, len(parts)):
            self.want(".".join(parts[:i]))
        for module, names in _imports(src):
            if names == (STRING,):
                self._want_named(module, src.name)
            elif module:
                self.want(module)
                self._want_submodules(module, names)

    def _want_named(self, dotted: str, named_by: str) -> None:
        """The longest module ``dotted`` starts with, when it is one of the
        package (or the application) of the module ``named_by`` naming it."""
        top = dotted.partition(".")[0]
        if top.startswith("__") or top == "looming":  # looming links its own at configure
            return
        if top != named_by.partition(".")[0] and self.locator.find(top)[0] != "app":
            return
        parts = dotted.split(".")
        for end in range(len(parts), 1, -1):
            name = ".".join(parts[:end])
            if name in self.walked:
                return
            found_kind, src = self.locator.find(name)
            if src is not None and found_kind != "external":
                self.pending.append(src)
                return

    def _want_submodules(self, module: str, names: tuple[str, ...]) -> None:
        """Those of ``names`` (from ``from module import ...``) that are modules."""
        for n in names:
            if n == "*":
                continue
            _kind, sub = self.locator.find(f"{module}.{n}")
            if sub is not None and sub.name not in self.walked:
                self.pending.append(sub)

    def run(self) -> Closure:
        while self.pending:
            src = self.pending.pop()
            if src.name not in self.walked:
                self.visit(src)
        closure = self.closure
        closure.missing = {
            m for m in closure.missing if not any(m.startswith(k + ".") for k in closure.modules)
        }
        closure.search_paths = {
            top: path
            for top in closure.external
            if (path := self.locator.search_path(top)) is not None
        }
        return closure


def module_closure(entry: Path, app_dir: Path, extra: tuple[str, ...] = ()) -> Closure:
    """Every app or pure-Python library module reachable from ``entry``.

    ``extra`` names more modules to start from (``pkg.*``: all of ``pkg``);
    :data:`DYNAMIC_IMPORTS` adds its modules for each key that is reached.
    """
    walk = _ModuleWalk(entry, app_dir)
    walk.expand(extra)
    return walk.run()


def _archive_name(src: ModuleSource) -> str:
    if src.name == "__main__":
        return "__main__.py"
    base = "/".join(src.name.split("."))
    return f"{base}/__init__.py" if src.is_package else f"{base}.py"


@dataclass
class BuildReport:
    artifact: Path
    size: int
    modules: list[str]
    external: list[str]
    crunched_files: int
    compiled_for: str = ""
    """With packed compiled packages: the interpreter they need ("CPython 3.11 on linux-x86_64")."""
    compiled_packed: list[str] = field(default_factory=list)
    """The compiled packages packed (``natives``)."""
    app_files: list[str] = field(default_factory=list)
    """Files and folders the application's modules name, packed beside them (``natives``)."""


STATE_FILE = "looming.json"
"""The configure state, in ``_build/``: the unikernel's packages and jobs are read from it."""


def configured(main_py: Path) -> tuple[list[str], list[str]]:
    """The packages ``register`` asked for and the jobs' modules, from the configure state."""
    state_path = main_py.parent.parent / STATE_FILE
    if not state_path.is_file():
        return [], []
    state = json.loads(state_path.read_text())
    return list(state.get("packages", [])), list(state.get("job_modules", []))


def _check_packages(packages: list[str], app_dir: Path) -> None:
    locator = ModuleLocator(app_dir)
    for name in packages:
        kind, _src = locator.find(name)
        if kind in ("missing", "stdlib") or not re.fullmatch(r"[\w.]+", name):
            why = {
                "missing": "is not installed",
                "stdlib": "is in the standard library, which the host provides",
            }.get(kind, "is not a module name")
            raise ConfigError(f"register(packages=[...]): {name!r} {why}; remove it or fix it")


def folder_notices(app_dir: Path, folders: list[str]) -> list[str]:
    """Check the kv_ro folders a build serves; a line for each that leaves
    something out (hidden entries, links leading outside, FIFOs and the like).

    A missing folder is an error: the unikernel could not start without it.
    """
    notices = []
    for dirname in folders:
        folder = app_dir / dirname
        if not folder.is_dir():
            raise ConfigError(f"kv_ro folder {dirname}/ does not exist; create it or fix config.py")
        left_out = survey_folder(folder).left_out()
        if left_out:
            notices.append(f"kv_ro {dirname}/ will not serve {left_out}")
    return notices


def _crunch_entries(app_dir: Path, crunch: list[tuple[str, str]]) -> tuple[dict[str, bytes], int]:
    """The archive entries of the crunched kv_ro folders (and how many files).

    Only regular files inside each folder are packed, never hidden ones or
    what a symbolic link outside the folder points at; times are those of
    ``SOURCE_DATE_EPOCH`` (0, no Last-Modified, without it), so two clones
    build the same bytes.
    """
    entries: dict[str, bytes] = {}
    crunched = 0
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    for name, dirname in crunch:
        folder = app_dir / dirname
        if not folder.is_dir():
            raise ConfigError(f"kv_ro folder {folder} does not exist; create it or fix config.py")
        root = folder.resolve()
        manifest, pairs = crunch_manifest(folder)
        files: dict[str, dict[str, object]] = manifest["files"]  # type: ignore[assignment]
        for rel, path in pairs:
            if not path.resolve().is_relative_to(root):
                del files[rel]
                continue
            files[rel]["mtime"] = epoch
            entries[f"{MANIFEST_DIR}/{name}/{rel}"] = path.read_bytes()
            crunched += 1
        entries[f"{MANIFEST_DIR}/{name}.json"] = json.dumps(manifest, sort_keys=True).encode()
    return entries, crunched


def write_zipapp(
    artifact: Path,
    main_py: Path,
    app_dir: Path,
    crunch: list[tuple[str, str]],
    *,
    packages: list[str] | None = None,
    smoke_modules: list[str] | None = None,
    natives: bool = False,
) -> BuildReport:
    """Build the zipapp ``artifact``; all or nothing.

    ``packages`` and ``smoke_modules`` default to what configure recorded
    (``register(packages=...)`` and the jobs' modules). ``natives`` packs the
    compiled packages reached, for this interpreter (see the module's doc).
    """
    recorded_packages, recorded_jobs = configured(main_py)
    packages = recorded_packages if packages is None else packages
    if smoke_modules is None:
        smoke_modules = [*top_level_imports(main_py), *recorded_jobs]
    _check_packages(packages, app_dir)
    starts = tuple(f"{p}.*" for p in packages)
    closure = module_closure(main_py, app_dir, starts)
    if natives:
        closure = _with_requirements(closure, main_py, app_dir, starts)
    else:
        _allow_requirements(closure, app_dir)
    notice = websocket_notice(closure, app_dir)
    if notice is not None:
        print(f"looming: warning: {notice}", file=sys.stderr, flush=True)
    entries: dict[str, bytes] = {}
    for src in closure.modules.values():
        entries[_archive_name(src)] = src.source()
    if natives:
        pack, app_files = _extracted_pack(closure, app_dir, crunch, entries)
    else:
        pack, app_files = _data_pack(closure, app_dir, crunch, entries)
    packed_tops = {name.partition(".")[0] for name in closure.modules}
    entries.update(distribution_metadata(packed_tops | set(pack.packages if pack else ())))
    crunched_entries, crunched = _crunch_entries(app_dir, crunch)
    entries.update(crunched_entries)
    content = shebang(pack) + _zip_bytes(entries, _packed_stamps(app_dir, entries))
    with _written_atomically(artifact, content) as tmp:
        smoke_import(
            tmp,
            smoke_modules,
            closure,
            natives=natives,
            boot=pack is not None,
            app_dir=app_dir,
            app_files=app_files,
        )
    return BuildReport(
        artifact,
        artifact.stat().st_size,
        sorted(n for n in closure.modules if n != "__main__"),
        sorted(closure.external),
        crunched,
        pack.compiled_for if pack is not None else "",
        build_boot.listed(pack.manifest, "packages") if pack is not None else [],
        app_files,
    )


def _mentions_websockets(source: ModuleSource) -> bool:
    """Whether a module names WebSockets: a name or attribute such as
    ``WebSocketRoute``, ``@app.websocket`` or ``starlette.websockets``, or
    the ASGI scope type ``"websocket"``."""
    if source.namespace:
        return False
    for node in ast.walk(ast.parse(source.source(), str(source.path))):
        if isinstance(node, ast.Name):
            name = node.id
        elif isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.alias):
            name = node.name
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value if node.value == "websocket" else ""
        else:
            continue
        if "websocket" in name.lower():
            return True
    return False


def websocket_notice(closure: Closure, app_dir: Path) -> str | None:
    """A warning when the application's modules use WebSockets and wsproto,
    which looming serves them with, is not installed: the artifact would
    answer each upgrade as a plain request (a 404 from most applications)."""
    locator = ModuleLocator(app_dir)
    if locator.find("wsproto")[0] not in ("missing", "stdlib"):
        return None
    users = sorted(
        name
        for name, src in closure.modules.items()
        if name != "__main__" and locator.find(name)[0] == "app" and _mentions_websockets(src)
    )
    if not users:
        return None
    return (
        f"{', '.join(users)} use{'s' if len(users) == 1 else ''} WebSockets, but wsproto is "
        "not installed: the artifact will answer WebSocket upgrades as plain requests. "
        "Install looming[websocket] (pip install wsproto) and build again"
    )


def _with_requirements(
    closure: Closure, main_py: Path, app_dir: Path, starts: tuple[str, ...]
) -> Closure:
    """``closure`` grown by what its compiled packages require (their
    compiled code imports it unseen: :func:`required_modules`)."""
    tried: set[str] = set()
    while True:
        reached = closure.external | {name.partition(".")[0] for name in closure.modules}
        new = required_modules(closure.external) - reached - tried
        if not new:
            return closure
        tried |= new
        starts = (*starts, *sorted(new))
        closure = module_closure(main_py, app_dir, starts)


def _allow_requirements(closure: Closure, app_dir: Path) -> None:
    """Without ``natives`` the host provides the compiled packages; what they
    require is then the host's too (cryptography's core imports cffi's
    ``_cffi_backend`` unseen), so the smoke import may find it there."""
    locator = ModuleLocator(app_dir)
    allowed = closure.search_paths
    while new := required_modules(set(allowed)) - set(allowed):
        for top in sorted(new):
            allowed[top] = locator.search_path(top) or ""
        for top in [t for t, path in allowed.items() if not path]:
            del allowed[top]
        if not new & set(allowed):
            return


def _application_tree(
    closure: Closure, app_dir: Path, crunch: list[tuple[str, str]], entries: dict[str, bytes]
) -> tuple[dict[str, bytes], list[Path]]:
    """The application's modules with the files and folders they name beside
    them (relative name: bytes), when they name any, and the paths named.
    The modules' entries are taken from ``entries`` (left there too)."""
    locator = ModuleLocator(app_dir)
    app_modules = [
        src
        for name, src in closure.modules.items()
        if name != "__main__" and locator.find(name)[0] == "app"
    ]
    named = referenced_paths(
        [(src.path, src.source()) for src in app_modules if not src.namespace],
        app_dir,
        [app_dir / dirname for _name, dirname in crunch],
    )
    if not named:
        return {}, []
    app = {_archive_name(src): entries[_archive_name(src)] for src in app_modules}
    files = application_files(named, app_dir)
    app.update((name, path.read_bytes()) for name, path in files.items())
    return app, named


def _named(named: list[Path], app_dir: Path) -> list[str]:
    root = app_dir.resolve()
    return [p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in named]


def _extracted_pack(
    closure: Closure, app_dir: Path, crunch: list[tuple[str, str]], entries: dict[str, bytes]
) -> tuple[NativePack | None, list[str]]:
    """Move into ``entries`` what runs extracted (``natives``): the compiled
    packages, and, when the application's modules name files or folders
    beside them, those modules with those files. Also the paths named."""
    app, named = _application_tree(closure, app_dir, crunch, entries)
    for name in app:
        entries.pop(name, None)  # the modules run from the extracted copy only
    tops = compiled_packages_to_pack(closure)
    packed = tops | {name.partition(".")[0] for name in closure.modules}
    unpacked = installed_modules() - packed - closure.external - PROBED
    pack = native_pack(tops, app, sorted(unpacked))
    entries.update(pack.entries)
    entries["__main__.py"] = main_with_boot(entries["__main__.py"])
    return pack, _named(named, app_dir)


def _data_pack(
    closure: Closure, app_dir: Path, crunch: list[tuple[str, str]], entries: dict[str, bytes]
) -> tuple[NativePack | None, list[str]]:
    """Without ``natives`` (the sim and vm targets): when the application's
    modules name files or folders beside them, add the tree of those modules
    and files under :data:`build_boot.APP` (the modules stay in place too).
    The artifact's loader lays the tree out as real files and runs the
    modules from there: the sim's node loader (:mod:`looming.sim.artifact`),
    the VM image's initramfs (:func:`application_tree_files`). Also the paths
    named."""
    app, named = _application_tree(closure, app_dir, crunch, entries)
    if not app:
        return None, []
    pack = native_pack(set(), app)
    entries.update(pack.entries)
    return pack, _named(named, app_dir)


def application_tree_files(archive: Path) -> dict[str, bytes]:
    """The application tree :func:`_data_pack` packed in ``archive`` (relative
    name: bytes); empty when there is none."""
    with zipfile.ZipFile(archive) as z:
        return {
            name.removeprefix(build_boot.APP): z.read(name)
            for name in sorted(z.namelist())
            if name.startswith(build_boot.APP) and not name.endswith("/")
        }


def _packed_stamps(app_dir: Path, entries: dict[str, bytes]) -> dict[str, DateTime]:
    """The zip times of the application's files packed beside it (see
    :mod:`looming.config.build_times`), warning once if a clone would not
    build the same bytes."""
    files = {}
    for name in entries:
        if name.startswith(build_boot.APP):
            relative = name.removeprefix(build_boot.APP)
            if (app_dir / relative).is_file():
                files[relative] = app_dir / relative
    packed = packed_times(app_dir, files)
    notice = packed.notice()
    if notice is not None:
        print(f"looming: warning: {notice}", file=sys.stderr, flush=True)
    return {build_boot.APP + name: zip_date_time(t) for name, t in packed.times.items()}


def _zip_bytes(entries: dict[str, bytes], stamps: dict[str, DateTime] | None = None) -> bytes:
    """The archive of ``entries``: sorted, fixed modes, and fixed times but
    for ``stamps`` (the same bytes every build of the same sources)."""
    buffer = io.BytesIO()
    stamps = stamps or {}
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=stamps.get(arcname, FIXED_TIME))
            info.external_attr = 0o644 << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            # Compiled packages are large binaries: level 9 takes 3.5 times
            # level 6's time on cryptography's 15 MB core for 0.6 % less.
            level = 6 if arcname.startswith(build_boot.FILES) else 9
            z.writestr(info, entries[arcname], compresslevel=level)
    return buffer.getvalue()


@contextlib.contextmanager
def _written_atomically(artifact: Path, content: bytes) -> Iterator[Path]:
    """A temporary file holding ``content`` beside ``artifact``, moved into
    place if the block succeeds and removed whatever happens."""
    artifact.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{artifact.name}.", dir=artifact.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        tmp.chmod(0o755)
        yield tmp
        tmp.replace(artifact)
    finally:
        tmp.unlink(missing_ok=True)
