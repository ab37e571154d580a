"""The sans-I/O rule, held by a test: a protocol core imports no I/O.

DESIGN.md's second idea: every protocol is a plain object that takes bytes
and the current time in and gives bytes, events and the next deadline out; a
thin asyncio shell drives it. So no core module may import ``asyncio``,
``socket``, ``time``, ``os``, ``random`` or ``threading`` - time and
randomness come from the Time, Clock and Random devices - and neither may any
looming module a core imports, however indirectly.

The check reads source, not ``sys.modules``: it walks each module's syntax
tree (function-level imports included, ``if TYPE_CHECKING:`` blocks left
out because they never run), resolves relative imports, and follows imports
of looming modules to their files. It does not follow the implicit import of
parent packages (``looming.net.tcp``'s ``__init__`` re-exports the asyncio
shell ``layer``); a core that imports a package by name does reach its
``__init__`` and is checked through it.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
BANNED = frozenset({"asyncio", "socket", "time", "os", "random", "threading"})

# The cores, as globs under src/looming, and the shells inside them.
CORE_GLOBS = (
    "net/wire/*.py",
    "net/tcp/*.py",
    "tls/*.py",
    "store/merge*.py",
    "store/treemerge.py",
    "vchan/ring.py",
    "net/netif/fabric.py",
)
SHELLS = frozenset(
    {
        # The asyncio shell around TcpEndpoint, and the package that re-exports it.
        "looming.net.tcp.layer",
        "looming.net.tcp",
        # TLS over flows and streams, the tls device, the command line.
        "looming.tls",
        "looming.tls.__main__",
        "looming.tls.flow",
        "looming.tls.device",
        "looming.tls.cli",
        # Files: keys and certificates, key log, saved sessions, ticket keys.
        "looming.tls.keyload",
        "looming.tls.keylog",
        "looming.tls.session_file",
        "looming.tls.ticket_file",
    }
)
# Imports by which cores break the rule today, (importer, imported), each with
# its reason. A violation is let through only when its chain takes one of these
# edges, so any new path to I/O still fails. This list only shrinks.
ALLOWED: dict[tuple[str, str], str] = {
    # tls/certs.py:64: CertifiedKey.from_pem_files reads files through keyload.
    ("looming.tls.certs", "looming.tls.keyload"): "PEM files read by a core class",
    # tls/engine.py:31: the engine takes LABELS_13 and key_log_line from keylog,
    # whose KeyLogFile (same module) opens a file under a threading lock.
    ("looming.tls.engine", "looming.tls.keylog"): "key log labels beside the file writer",
}


@dataclass(frozen=True)
class Violation:
    """A core reaching a banned module: the chain of imports, the last one banned."""

    core: str
    chain: tuple[str, ...]
    banned: str
    where: str  # file:line of the banned import

    def edges(self) -> list[tuple[str, str]]:
        """Each import the chain takes, the banned one last."""
        names = (*self.chain, self.banned)
        return list(itertools.pairwise(names))

    def __str__(self) -> str:
        path = " -> ".join(self.chain)
        return f"{self.core}: {path} imports {self.banned} ({self.where})"


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_file(name: str, src: Path) -> Path | None:
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:``."""
    nodes: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def imports_of(path: Path, src: Path) -> list[tuple[str, int]]:
    """The absolute names ``path`` imports at run time, with their lines.

    ``from a.b import c`` yields ``a.b.c`` when that is a looming module,
    otherwise ``a.b``.
    """
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if module_file(sub, src) else base, node.lineno))
    return found


def violations(cores: list[str], src: Path) -> list[Violation]:
    """Every banned import reachable from each core through modules under ``src``."""
    edges: dict[str, list[tuple[str, int]]] = {}

    def imported(name: str) -> list[tuple[str, int]]:
        if name not in edges:
            file = module_file(name, src)
            edges[name] = imports_of(file, src) if file else []
        return edges[name]

    found: list[Violation] = []
    for core in cores:
        seen = {core}
        queue: list[tuple[str, tuple[str, ...]]] = [(core, (core,))]
        while queue:
            name, chain = queue.pop(0)
            for target, line in imported(name):
                top = target.split(".")[0]
                if top in BANNED:
                    where = f"{module_file(name, src)}:{line}"
                    found.append(Violation(core, chain, target, where))
                elif top == src_top(src, target) and target not in seen:
                    seen.add(target)
                    queue.append((target, (*chain, target)))
    return found


def src_top(src: Path, name: str) -> str | None:
    """The top-level package of ``name`` if it lives under ``src``."""
    top = name.split(".")[0]
    return top if module_file(top, src) else None


def core_modules(src: Path) -> list[str]:
    root = src / "looming"
    names = {module_name(p, src) for pattern in CORE_GLOBS for p in root.glob(pattern)}
    return sorted(names - SHELLS)


def allowed(violation: Violation) -> bool:
    return any(edge in ALLOWED for edge in violation.edges())


def test_cores_import_no_io() -> None:
    cores = core_modules(SRC)
    assert "looming.net.tcp.connection" in cores and "looming.vchan.ring" in cores
    found = [v for v in violations(cores, SRC) if not allowed(v)]
    assert not found, "sans-I/O cores importing I/O:\n" + "\n".join(map(str, found))


def test_allow_list_is_still_needed() -> None:
    """An allowed import that no longer leads to I/O must leave the list."""
    used = {edge for v in violations(core_modules(SRC), SRC) for edge in v.edges()}
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"remove from ALLOWED: {stale}"


def test_shells_exist() -> None:
    """A renamed shell must not silently widen or narrow the rule."""
    missing = [name for name in SHELLS if module_file(name, SRC) is None]
    assert not missing, f"SHELLS names modules that do not exist: {missing}"


# The checker itself, on a synthetic package.


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import asyncio\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "clean.py").write_text("import struct\nfrom fakepkg.sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("from __future__ import annotations\n")
    return tmp_path


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio\n",
        "import os.path\n",
        "from time import monotonic\n",
        "def later():\n    import socket\n    return socket\n",
        "class C:\n    def m(self):\n        from random import random\n",
        "try:\n    import threading\nexcept ImportError:\n    pass\n",
    ],
)
def test_checker_finds_a_direct_import(fake: Path, source: str) -> None:
    (fake / "fakepkg" / "core.py").write_text(source)
    found = violations(["fakepkg.core"], fake)
    assert len(found) == 1
    assert found[0].chain == ("fakepkg.core",)
    assert found[0].banned.split(".")[0] in BANNED
    assert "core.py:" in found[0].where


def test_checker_follows_imports_transitively(fake: Path) -> None:
    (fake / "fakepkg" / "sub" / "leaf.py").write_text("from .. import shell\n")
    (fake / "fakepkg" / "shell.py").write_text("import struct\n\n\ndef f():\n    import time\n")
    found = violations(["fakepkg.clean"], fake)
    assert [(v.chain, v.banned) for v in found] == [
        (("fakepkg.clean", "fakepkg.sub.leaf", "fakepkg.shell"), "time")
    ]
    assert found[0].where.endswith("shell.py:5")


def test_checker_reaches_a_package_imported_by_name(fake: Path) -> None:
    (fake / "fakepkg" / "core.py").write_text("from fakepkg import clean\nimport fakepkg\n")
    found = violations(["fakepkg.core"], fake)
    assert [v.chain for v in found] == [("fakepkg.core", "fakepkg")]


def test_checker_passes_clean_code_and_type_checking_imports(fake: Path) -> None:
    (fake / "fakepkg" / "core.py").write_text(
        "from typing import TYPE_CHECKING\nimport struct\nfrom .sub import leaf\n"
        "if TYPE_CHECKING:\n    import asyncio\nelse:\n    import hashlib\n"
        "import timeit, ossaudiodev_like\n"
    )
    assert violations(["fakepkg.core"], fake) == []
    (fake / "fakepkg" / "core.py").write_text(
        "import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n    import os\n"
    )
    assert [v.banned for v in violations(["fakepkg.core"], fake)] == ["os"]


def test_allow_list_lets_through_only_its_own_edges() -> None:
    via_engine = Violation(
        "looming.tls.server",
        ("looming.tls.server", "looming.tls.engine", "looming.tls.keylog"),
        "os",
        "keylog.py:17",
    )
    assert allowed(via_engine)
    via_messages = Violation(
        "looming.tls.messages", ("looming.tls.messages", "looming.tls.keylog"), "os", "keylog.py:17"
    )
    assert not allowed(via_messages)
    direct = Violation("looming.tls.engine", ("looming.tls.engine",), "time", "engine.py:1")
    assert not allowed(direct)


# Host devices only where a host program starts: DESIGN.md's fourth idea. Time,
# clock and randomness reach library code as devices passed in; a module
# outside looming.unix that imported it could fall back to the host's and a
# simulation would silently read the real clock. These modules are programs
# of the host (or take nothing but data from looming.unix), each with why.
HOST_ENTRY_POINTS: dict[str, str] = {
    "looming.store.cli": "the `looming store` command",
    "looming.store.http": "`looming store serve`: host sockets, the host's random for HTTPS",
    "looming.tls.cli": "the `looming tls` command",
    "looming.ffi.helper": "the isolated library's helper, a host process of its own",
    "looming.config.build": "the build tool: the kv_ro manifest format, no device",
    "looming.sim.node": "kv_ro crunched into a node's artifact: read-only data, no device",
    "looming.vm.storage": "inside a VM the storage devices are the unix ones on its disk",
}
HOST_DEVICE_CLASS = re.compile(r"^Unix(Time|Clock|Random|Console)$")


def host_device_uses(path: Path, src: Path) -> list[str]:
    """Where ``path`` imports looming.unix or constructs a host device, as file:line."""
    found = [
        f"{path}:{line} imports {name}"
        for name, line in imports_of(path, src)
        if name == "looming.unix" or name.startswith("looming.unix.")
    ]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if HOST_DEVICE_CLASS.match(called):
                found.append(f"{path}:{node.lineno} constructs {called}")
    return found


def host_device_violations(src: Path) -> dict[str, list[str]]:
    """Each module outside looming.unix that reaches for host devices."""
    found: dict[str, list[str]] = {}
    for path in sorted((src / "looming").rglob("*.py")):
        name = module_name(path, src)
        if name == "looming.unix" or name.startswith("looming.unix."):
            continue
        uses = host_device_uses(path, src)
        if uses:
            found[name] = uses
    return found


def test_host_devices_only_at_host_entry_points() -> None:
    found = host_device_violations(SRC)
    bad = {name: uses for name, uses in found.items() if name not in HOST_ENTRY_POINTS}
    assert not bad, (
        "pass the Time, Clock or Random device in instead of reaching for the host's:\n"
        + "\n".join(use for uses in bad.values() for use in uses)
    )
    stale = sorted(set(HOST_ENTRY_POINTS) - set(found))
    assert not stale, f"remove from HOST_ENTRY_POINTS: {stale}"


def test_host_device_check_finds_imports_and_constructions(tmp_path: Path) -> None:
    pkg = tmp_path / "looming"
    (pkg / "unix").mkdir(parents=True)
    for name in ("__init__.py", "unix/__init__.py", "unix/clock.py"):
        (pkg / name).write_text("")
    (pkg / "quiet.py").write_text("from looming.devices import Clock\n")
    (pkg / "lazy.py").write_text("def f():\n    from looming.unix.clock import UnixClock\n")
    (pkg / "sneaky.py").write_text("import looming\nc = looming.unix.clock.UnixClock()\n")
    (pkg / "unix" / "own.py").write_text("from looming.unix.clock import UnixClock\n")
    found = host_device_violations(tmp_path)
    assert sorted(found) == ["looming.lazy", "looming.sneaky"]
    assert found["looming.lazy"][0].endswith("lazy.py:2 imports looming.unix.clock")
    assert found["looming.sneaky"] == [f"{pkg / 'sneaky.py'}:2 constructs UnixClock"]


# No import circle inside the TLS package: each handshake module depends only on
# what lies below it (engine -> client/server -> their TLS 1.2 and PSK parts ->
# messages, key schedule, records, wire). Imports under ``if TYPE_CHECKING:`` and
# inside functions count too: a circle hidden there is still one.
def package_import_graph(package: str, src: Path) -> dict[str, set[str]]:
    """Each module of ``package`` and the modules of ``package`` it imports."""
    root = src.joinpath(*package.split("."))
    graph: dict[str, set[str]] = {}
    for path in sorted(root.glob("*.py")):
        name = module_name(path, src)
        base = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    head = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1])
                    module = ".".join(filter(None, (head, node.module)))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if module_file(sub, src) else module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in {module_name(p, src) for p in root.glob("*.py")}}
        graph[name].discard(name)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


# Function-level imports that close a circle today, each with its reason. This
# list only shrinks; the handshake modules have none.
CIRCLE_EXCEPTIONS: dict[tuple[str, str], str] = {
    # tls/certs.py:64: CertifiedKey.from_pem_files loads through keyload,
    # which builds CertifiedKeys.
    ("looming.tls.certs", "looming.tls.keyload"): "a convenience loader on the class",
    # tls/config.py:21: the default certificate compression is what is installed.
    ("looming.tls.config", "looming.tls.certcompress"): "defaults from installed codecs",
}


def test_tls_modules_import_no_circle() -> None:
    graph = package_import_graph("looming.tls", SRC)
    assert "looming.tls.client" in graph["looming.tls.engine"]
    stale = [edge for edge in CIRCLE_EXCEPTIONS if edge[1] not in graph[edge[0]]]
    assert not stale, f"remove from CIRCLE_EXCEPTIONS: {stale}"
    for importer, imported in CIRCLE_EXCEPTIONS:
        graph[importer].discard(imported)
    cycles = import_cycles(graph)
    assert not cycles, "TLS modules importing each other in a circle:\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_cycle_check_finds_a_circle_through_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n"
    )
    (pkg / "c.py").write_text("def f():\n    from fakepkg.a import x\n")
    (pkg / "d.py").write_text("from . import a\n")
    graph = package_import_graph("fakepkg", tmp_path)
    assert import_cycles(graph) == [["fakepkg.a", "fakepkg.b", "fakepkg.c"]]
    (pkg / "c.py").write_text("from . import d\n")
    assert import_cycles(graph) == [["fakepkg.a", "fakepkg.b", "fakepkg.c"]]  # graph as read
    assert import_cycles(package_import_graph("fakepkg", tmp_path)) == [
        ["fakepkg.a", "fakepkg.b", "fakepkg.c", "fakepkg.d"]
    ]
