"""The standard-library modules a unikernel reaches, found in the guest's stdlib.

:func:`looming.config.build.module_closure` stops at the standard library
(the host's interpreter brings it). A VM image brings its own, so the walk
continues here through the guest's Debian stdlib: every import the
unikernel's modules make, and the imports of those modules in turn. Imports
guarded by ``try: ... except ImportError`` are optional: such a module is
taken when it is pure Python or its shared libraries are in the image, and
left out otherwise (the code that imports it works without it).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# What CPython needs before any user code runs, and what runs the pyz.
STARTUP_MODULES = (
    "encodings",
    "encodings.aliases",
    "encodings.utf_8",
    "encodings.latin_1",
    "encodings.ascii",
    "encodings.cp437",  # zipfile decodes names that are not flagged UTF-8 with it
    "runpy",
    "pkgutil",  # runpy.run_path imports it when called
)
# Reached only through rarely used paths, and large: never taken, even when
# some stdlib module mentions them (documentation, test and GUI tooling).
NEVER = frozenset(
    {
        "idlelib", "tkinter", "turtle", "turtledemo", "test", "unittest", "doctest",
        "pydoc", "pydoc_data", "lib2to3", "ensurepip", "venv", "distutils", "pdb",
        "_pydecimal", "_pyio", "_pydatetime", "_osx_support", "_aix_support", "sysconfig",
        "_sysconfigdata", "_ctypes_test", "_testcapi", "_testinternalcapi",
        "_testbuffer", "_testmultiphase", "_testclinic", "ctypes.test", "sqlite3.test",
        "ctypes.macholib", "xmlrpc", "mailbox", "imaplib", "nntplib", "smtplib",
        "ftplib", "poplib", "telnetlib", "webbrowser", "curses", "readline",
        "multiprocessing", "concurrent.futures.process", "pickletools", "tracemalloc",
        "_bootsubprocess", "__phello__", "antigravity", "this",
    }
)  # fmt: skip
# Part of every interpreter without an init function of their own, or only on Windows.
CORE = frozenset(
    {"sys", "builtins", "marshal", "_warnings", "_imp", "_frozen_importlib",
     "_frozen_importlib_external", "_winapi", "nt", "winreg", "msvcrt", "_overlapped",
     "_winreg", "_msi"}
)  # fmt: skip
_OPTIONAL_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclass(frozen=True)
class StdlibModule:
    name: str
    path: Path  # in the unpacked tree
    is_package: bool
    is_extension: bool


@dataclass
class StdlibClosure:
    modules: dict[str, StdlibModule] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)  # required, found nowhere
    dropped: set[str] = field(default_factory=set)  # optional, left out


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kind = handler.type
    if kind is None:
        return True
    names = kind.elts if isinstance(kind, ast.Tuple) else [kind]
    return any(isinstance(n, ast.Name) and n.id in _OPTIONAL_ERRORS for n in names)


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
    )


def _is_windows(test: ast.expr) -> bool:
    """``sys.platform == "win32"`` and ``os.name == "nt"``: never true in the guest."""
    if not (isinstance(test, ast.Compare) and len(test.comparators) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    left, right = test.left, test.comparators[0]
    return (
        isinstance(left, ast.Attribute)
        and left.attr in ("platform", "name")
        and isinstance(right, ast.Constant)
        and right.value in ("win32", "nt")
    )


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(
    source: bytes, module: str, is_package: bool, *, lazy: bool = True
) -> list[tuple[str, tuple[str, ...], bool]]:
    """(module, names, optional) for each import in ``source``; with
    ``lazy=False``, imports inside function bodies are left out."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, tuple[str, ...], bool]] = []

    def walk(nodes: Iterable[ast.AST], optional: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and (
                _is_main_guard(node.test) or _is_type_checking(node.test) or _is_windows(node.test)
            ):
                walk(node.orelse, optional)
                continue
            if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
                walk(node.body, True)
                walk([*node.handlers, *node.orelse, *node.finalbody], optional)
                continue
            if isinstance(node, ast.Import):
                found.extend((a.name, (), optional) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    if node.level > 1:
                        base = base[: len(base) - (node.level - 1)]
                    name = ".".join([*base, node.module] if node.module else base)
                else:
                    name = node.module or ""
                found.append((name, tuple(a.name for a in node.names), optional))
            if not lazy and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            walk(ast.iter_child_nodes(node), optional)

    walk(tree.body, False)
    return found


class GuestStdlib:
    """Finds modules in the guest's unpacked standard library."""

    def __init__(self, stdlib: Path, triplet: str, abi: str) -> None:
        self.stdlib = stdlib
        self.dynload = stdlib / "lib-dynload"
        self.extension_suffix = f".cpython-{abi}-{triplet}.so"

    def find(self, name: str) -> StdlibModule | None:
        path = self.stdlib.joinpath(*name.split("."))
        if (path / "__init__.py").is_file():
            return StdlibModule(name, path / "__init__.py", True, False)
        if path.with_suffix(".py").is_file():
            return StdlibModule(name, path.with_suffix(".py"), False, False)
        extension = self.dynload / f"{name}{self.extension_suffix}"
        if "." not in name and extension.is_file():
            return StdlibModule(name, extension, False, True)
        return None


def _never(name: str) -> bool:
    parts = name.split(".")
    return any(".".join(parts[: i + 1]) in NEVER for i in range(len(parts)))


def stdlib_closure(
    roots: Iterable[tuple[str, tuple[str, ...], bool]],
    guest: GuestStdlib,
    builtins: set[str],
    extension_ok: Callable[[StdlibModule], bool] | None = None,
) -> StdlibClosure:
    """The guest stdlib modules reached from the imports in ``roots``.

    ``extension_ok(module) -> bool`` says whether an optional extension
    module can be taken (its shared libraries are available).
    """
    closure = StdlibClosure()
    pending: list[tuple[str, bool]] = [(m, False) for m in STARTUP_MODULES]
    queued_names: list[tuple[str, tuple[str, ...], bool]] = list(roots)
    seen_optional: set[str] = set()

    def want(name: str, optional: bool) -> None:
        pending.append((name, optional))

    for name, names, optional in queued_names:
        want(name, optional)
        for n in names:
            if guest.find(f"{name}.{n}") is not None:
                want(f"{name}.{n}", optional)
    while pending:
        name, optional = pending.pop()
        if not name or name in closure.modules or _never(name) or name in CORE:
            continue
        if optional and name in seen_optional:
            continue
        found = guest.find(name)
        if found is None:
            if name.split(".")[0] in builtins or "." in name:
                continue  # built into the interpreter, or a name inside a module
            (closure.dropped if optional else closure.missing).add(name)
            seen_optional.add(name)
            continue
        if found.is_extension and optional and extension_ok is not None and not extension_ok(found):
            closure.dropped.add(name)
            seen_optional.add(name)
            continue
        closure.modules[name] = found
        closure.missing.discard(name)
        closure.dropped.discard(name)
        parts = name.split(".")
        for i in range(1, len(parts)):
            want(".".join(parts[:i]), False)
        if found.is_extension:
            continue
        for module, names, inner_optional in imports_of(
            found.path.read_bytes(), name, found.is_package, lazy=False
        ):
            # Whatever an optional module needs is itself optional.
            want(module, optional or inner_optional)
            for n in names:
                if n != "*" and guest.find(f"{module}.{n}") is not None:
                    want(f"{module}.{n}", optional or inner_optional)
    _drop_unimportable(closure)
    return closure


def _drop_unimportable(closure: StdlibClosure) -> None:
    """Leave out modules that could not be imported in the guest anyway: those
    whose unconditional imports were left out (``ssl`` without ``_ssl``)."""
    changed = True
    while changed:
        changed = False
        for name, module in list(closure.modules.items()):
            if module.is_extension:
                continue
            required = imports_of(module.path.read_bytes(), name, module.is_package, lazy=False)
            if any(not optional and m in closure.dropped for m, _n, optional in required):
                del closure.modules[name]
                closure.dropped.add(name)
                changed = True


def builtin_modules(interpreter: Path) -> set[str]:
    """The modules compiled into the guest's interpreter (its PyInit_ functions)."""
    return {m.decode() for m in re.findall(rb"PyInit_(\w+)\0", interpreter.read_bytes())}
