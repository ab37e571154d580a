"""Building the artifact: a zipapp holding only what the unikernel reaches.

The module closure is computed from import statements (read, never
executed), starting at the generated ``main.py``: the application's
modules, looming's modules and pure-Python third-party modules are copied
in; the standard library and packages with compiled extensions are left to
the interpreter that runs the artifact. kv_ro folders are crunched in.
Entries are written sorted with fixed timestamps, so building twice gives
identical contents.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import io
import json
import sys
import sysconfig
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from looming.unix.kv import MANIFEST_DIR, crunch_manifest

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
SHEBANG = b"#!/usr/bin/env python3\n"
_EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


@dataclass
class ModuleSource:
    name: str
    path: Path
    is_package: bool


@dataclass
class Closure:
    modules: dict[str, ModuleSource] = field(default_factory=dict)
    external: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)


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
        elif top in sys.builtin_module_names or top in sys.stdlib_module_names:
            result = ("stdlib", None)
        else:
            spec = importlib.util.find_spec(top)
            if spec is None:
                result = ("missing", None)
            elif spec.submodule_search_locations:
                location = Path(next(iter(spec.submodule_search_locations)))
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
        top, _, rest = name.partition(".")
        kind, location = self._root(top)
        if kind not in ("app", "lib") or location is None:
            return kind, None
        if location.suffix == ".py":
            return (kind, ModuleSource(name, location, False)) if not rest else ("missing", None)
        path = location.joinpath(*rest.split(".")) if rest else location
        if (path / "__init__.py").is_file():
            return kind, ModuleSource(name, path / "__init__.py", True)
        if path.with_suffix(".py").is_file():
            return kind, ModuleSource(name, path.with_suffix(".py"), False)
        return "missing", None


def _imports(source: ModuleSource) -> list[tuple[str, tuple[str, ...]]]:
    """(module, imported names) for each import outside TYPE_CHECKING blocks."""
    tree = ast.parse(source.path.read_bytes(), str(source.path))
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
            walk(list(ast.iter_child_nodes(node)))

    walk(tree.body)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_closure(entry: Path, app_dir: Path, extra: tuple[str, ...] = ()) -> Closure:
    """Every app or pure-Python library module reachable from ``entry``."""
    locator = ModuleLocator(app_dir)
    closure = Closure()
    pending: list[ModuleSource] = [ModuleSource("__main__", entry, False)]
    for name in extra:
        _kind, extra_src = locator.find(name)
        if extra_src is not None:
            pending.append(extra_src)

    def want(name: str) -> ModuleSource | None:
        if name in closure.modules:
            return None
        kind, src = locator.find(name)
        if kind == "external":
            closure.external.add(name.partition(".")[0])
        elif kind == "missing":
            closure.missing.add(name)
        return src

    while pending:
        src = pending.pop()
        if src.name in closure.modules:
            continue
        closure.modules[src.name] = src
        parts = src.name.split(".")
        for i in range(1, len(parts)):
            parent = want(".".join(parts[:i]))
            if parent is not None:
                pending.append(parent)
        for module, names in _imports(src):
            if not module:
                continue
            found = want(module)
            if found is not None:
                pending.append(found)
            for n in names:
                if n == "*":
                    continue
                _kind, sub = locator.find(f"{module}.{n}")
                if sub is not None and sub.name not in closure.modules:
                    pending.append(sub)
    closure.missing = {
        m for m in closure.missing if not any(m.startswith(k + ".") for k in closure.modules)
    }
    return closure


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


def write_zipapp(
    artifact: Path,
    main_py: Path,
    app_dir: Path,
    crunch: list[tuple[str, str]],
) -> BuildReport:
    closure = module_closure(main_py, app_dir)
    entries: dict[str, bytes] = {}
    for src in closure.modules.values():
        entries[_archive_name(src)] = src.path.read_bytes()
    crunched = 0
    for name, dirname in crunch:
        folder = app_dir / dirname
        if not folder.is_dir():
            from looming.errors import ConfigError

            raise ConfigError(f"kv_ro folder {folder} does not exist; create it or fix config.py")
        manifest, pairs = crunch_manifest(folder)
        entries[f"{MANIFEST_DIR}/{name}.json"] = json.dumps(manifest, sort_keys=True).encode()
        for rel, path in pairs:
            entries[f"{MANIFEST_DIR}/{name}/{rel}"] = path.read_bytes()
            crunched += 1
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, entries[arcname], compresslevel=9)
    artifact.parent.mkdir(parents=True, exist_ok=True)
    tmp = artifact.with_suffix(".tmp")
    tmp.write_bytes(SHEBANG + buffer.getvalue())
    tmp.chmod(0o755)
    tmp.replace(artifact)
    return BuildReport(
        artifact,
        artifact.stat().st_size,
        sorted(n for n in closure.modules if n != "__main__"),
        sorted(closure.external),
        crunched,
    )
