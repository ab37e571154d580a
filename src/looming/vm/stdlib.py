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
        "_pydecimal", "_pyio", "_pydatetime", "_osx_support", "_aix_support",
        "_ctypes_test", "_testcapi", "_testinternalcapi",
        "_testbuffer", "_testmultiphase", "_testclinic", "ctypes.test", "sqlite3.test",
        "ctypes.macholib", "xmlrpc", "mailbox", "imaplib", "nntplib", "smtplib",
        "ftplib", "poplib", "telnetlib", "webbrowser", "curses", "readline",
        "multiprocessing", "concurrent.futures.process", "pickletools", "tracemalloc",
        "_bootsubprocess", "__phello__", "antigravity", "this",
    }
)  # fmt: skip
# Modules imported by name at run time, which no import statement shows:
# taken with the module that imports them. {triplet} is the guest's
# multiarch triplet (x86_64-linux-gnu).
DYNAMIC_STDLIB: dict[str, tuple[str, ...]] = {
    # get_config_var() imports the build's variables by a computed name
    # (zoneinfo asks it for TZPATH, and pydantic imports zoneinfo).
    "sysconfig": ("_sysconfigdata__{triplet}",),
    # str.encode("idna") finds its codec by name (http.client's Host header
    # for a name that is not ASCII).
    "http.client": ("encodings.idna",),
    # Its executors are attributes loaded on first use (a module __getattr__):
    # asyncio's run_in_executor and to_thread reach the thread pool so.
    "concurrent.futures": ("concurrent.futures.thread",),
}
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
        self.triplet = triplet
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


class _StdlibWalk:
    """The walk behind :func:`stdlib_closure`: a stack of (name, optional)
    still to look at, and what each name came to."""

    def __init__(
        self,
        guest: GuestStdlib,
        builtins: set[str],
        extension_ok: Callable[[StdlibModule], bool] | None,
    ) -> None:
        self.guest = guest
        self.builtins = builtins
        self.extension_ok = extension_ok
        self.closure = StdlibClosure()
        self.pending: list[tuple[str, bool]] = [(m, False) for m in STARTUP_MODULES]
        self.seen_optional: set[str] = set()

    def want(self, module: str, names: tuple[str, ...], optional: bool) -> None:
        """``module``, and those of ``names`` imported from it that are submodules."""
        self.pending.append((module, optional))
        for n in names:
            if n != "*" and self.guest.find(f"{module}.{n}") is not None:
                self.pending.append((f"{module}.{n}", optional))

    def _skipped(self, name: str, optional: bool) -> bool:
        if not name or name in self.closure.modules or _never(name) or name in CORE:
            return True
        return optional and name in self.seen_optional

    def _leave_out(self, name: str, optional: bool) -> None:
        (self.closure.dropped if optional else self.closure.missing).add(name)
        self.seen_optional.add(name)

    def _take(self, name: str, optional: bool) -> StdlibModule | None:
        """The module to add for ``name``, or None when it is left out."""
        found = self.guest.find(name)
        if found is None:
            # Built into the interpreter, or a name inside a module: nothing to add.
            if not (name.split(".")[0] in self.builtins or "." in name):
                self._leave_out(name, optional)
            return None
        ok = self.extension_ok
        if found.is_extension and optional and ok is not None and not ok(found):
            self._leave_out(name, True)
            return None
        return found

    def _add(self, name: str, found: StdlibModule, optional: bool) -> None:
        """Take ``found``, its parent packages, and (but for an extension) its imports."""
        self.closure.modules[name] = found
        self.closure.missing.discard(name)
        self.closure.dropped.discard(name)
        parts = name.split(".")
        for i in range(1, len(parts)):
            self.pending.append((".".join(parts[:i]), False))
        for dynamic in DYNAMIC_STDLIB.get(name, ()):
            self.pending.append((dynamic.format(triplet=self.guest.triplet), optional))
        if found.is_extension:
            return
        for module, names, inner_optional in imports_of(
            found.path.read_bytes(), name, found.is_package, lazy=False
        ):
            # Whatever an optional module needs is itself optional.
            self.want(module, names, optional or inner_optional)

    def run(self) -> StdlibClosure:
        while self.pending:
            name, optional = self.pending.pop()
            if self._skipped(name, optional):
                continue
            found = self._take(name, optional)
            if found is not None:
                self._add(name, found, optional)
        _drop_unimportable(self.closure)
        return self.closure


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
    walk = _StdlibWalk(guest, builtins, extension_ok)
    for name, names, optional in roots:
        walk.want(name, names, optional)
    return walk.run()


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
