"""Test tiers: ``pytest --fast`` runs what needs nothing but this checkout.

The fast tier leaves out four marks:

* ``root`` and ``slow``: set by hand on the tests (``pytestmark = ...``);
* ``peer``: the test runs a program written elsewhere (openssl, git, curl,
  tshark, ...). Set here, from the source: a test is a peer test when its
  module, a ``tests`` helper module it imports, or a fixture it uses names
  such a program as a string literal (``["git", "init"]``,
  ``shutil.which("openssl")``);
* ``qemu``: the same, for a string naming qemu.

``slow`` is also given to every test listed in ``tests/slow-tests.txt``:
the tests measured at more than 0.3 s in the fast tier's own run (see that
file). ``--fast`` is the same as ``-m "not root and not slow and not peer
and not qemu"``, and it loads the hypothesis profile ``fast`` (20 examples
where a test does not set its own count, no deadline) and runs a fifth of
each state machine's examples; both select the tier ``make test-fast`` and
``make check`` run (on one pytest-xdist worker per core). The whole suite
(``make test``) runs every test with its full count.
"""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings

# Fewer examples for the edit-test loop; a test that sets max_examples keeps
# it. No deadline: the fast tier runs on two workers beside other work, and a
# deadline there would measure the machine's load, not the code.
settings.register_profile("fast", max_examples=20, stateful_step_count=20, deadline=None)

PEER_PROGRAMS = frozenset(
    {
        "curl",
        "dnsmasq",
        "git",
        "gnutls-cli",
        "gnutls-serv",
        "h2load",
        "openssl",
        "ssh",
        "sshd",
        "tshark",
        "wrk",
    }
)
SLOW_MARKS = ("root", "slow", "peer", "qemu")
SLOW_LIST = Path(__file__).with_name("slow-tests.txt")
# A fast-tier test slower than this is named at the end of the run, to be
# listed in SLOW_LIST (the list's own bar is lower; this one allows for load).
REPORT_OVER = 1.0
_over: list[tuple[float, str]] = []
_stale: list[str] = []  # ids in SLOW_LIST that a whole-suite collection did not find


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="only the fast tier: no root, slow, peer or qemu tests (see tests/tiers.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "peer: runs a program written elsewhere (tests/tiers.py)")
    config.addinivalue_line("markers", "qemu: boots or runs code under qemu (tests/tiers.py)")
    if config.getoption("fast"):
        settings.load_profile("fast")


def measured_slow(path: Path = SLOW_LIST) -> frozenset[str]:
    """The test ids (without parameters) listed in ``tests/slow-tests.txt``."""
    lines = path.read_text().splitlines() if path.exists() else []
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _marks_in(strings: frozenset[str]) -> set[str]:
    marks = set()
    if strings & PEER_PROGRAMS:
        marks.add("peer")
    if any(s.startswith("qemu") for s in strings):
        marks.add("qemu")
    return marks


@functools.cache
def _strings_of_file(path: Path) -> frozenset[str]:
    try:
        source = path.read_bytes()
        if not any(name.encode() in source for name in (*PEER_PROGRAMS, "qemu")):
            return frozenset()  # most modules: no need to parse them
        tree = ast.parse(source, str(path))
    except (OSError, SyntaxError):
        return frozenset()
    return frozenset(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def _is_project_module(module: ModuleType | None, root: Path) -> bool:
    """A module of the project's tests (not looming, the stdlib or an installed package)."""
    file = getattr(module, "__file__", None)
    if module is None or not file or module.__name__ == __name__:
        return False
    return _is_project_file(file, root)


@functools.cache
def _is_project_file(file: str, root: Path) -> bool:
    path = Path(file).resolve()
    return path.is_relative_to(root) and "site-packages" not in path.parts


@functools.cache
def _module_marks(module: ModuleType, root: Path) -> frozenset[str]:
    """Marks from the module's own source and from the project helpers it imports."""
    marks: set[str] = set()
    seen: set[str] = set()
    pending = [module]
    while pending:
        mod = pending.pop()
        if mod.__name__ in seen or not getattr(mod, "__file__", None):
            continue
        seen.add(mod.__name__)
        marks |= _marks_in(_strings_of_file(Path(str(mod.__file__))))
        for value in vars(mod).values():
            helper = value if isinstance(value, ModuleType) else inspect.getmodule(value)
            if _is_project_module(helper, root) and not helper.__name__.endswith("conftest"):  # type: ignore[union-attr]
                pending.append(helper)  # type: ignore[arg-type]
    return frozenset(marks)


@functools.cache
def _strings_of_function(func: Any) -> frozenset[str]:
    try:
        tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return frozenset()
    return frozenset(
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    )


@functools.cache
def _fixture_marks(func: Any) -> frozenset[str]:
    """Marks from a fixture's source and the functions of its module it names
    (a conftest fixture returning its module's ``run_git``)."""
    marks = _marks_in(_strings_of_function(func))
    module = inspect.getmodule(func)
    try:
        tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return frozenset(marks)
    for node in ast.walk(tree):
        callee = getattr(module, node.id, None) if isinstance(node, ast.Name) else None
        if inspect.isfunction(callee) and callee is not func:
            marks |= _marks_in(_strings_of_function(callee))
    return frozenset(marks)


def item_marks(item: pytest.Item) -> set[str]:
    """The peer and qemu marks ``item`` earns from what it runs."""
    marks: set[str] = set()
    # Helpers and fixtures are followed inside the test folder only, never
    # into looming itself (whose sources name git, openssl, ...).
    root = item.config.rootpath.resolve()
    root = root / "tests" if (root / "tests").is_dir() else root
    module = getattr(item, "module", None)
    if module is not None:
        marks |= _module_marks(module, root)
    info = getattr(item, "_fixtureinfo", None)
    for defs in info.name2fixturedefs.values() if info is not None else ():
        for fixturedef in defs:
            marks |= _project_fixture_marks(fixturedef.func, root)
    return marks


@functools.cache
def _project_fixture_marks(func: Any, root: Path) -> frozenset[str]:
    if callable(func) and _is_project_module(inspect.getmodule(func), root):
        return _fixture_marks(func)
    return frozenset()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = measured_slow()
    for item in items:
        for mark in sorted(item_marks(item)):
            item.add_marker(mark)
        if item.nodeid.split("[")[0] in slow:
            item.add_marker("slow")
    if [Path(arg).resolve() for arg in config.args] == [config.rootpath.resolve() / "tests"]:
        _stale[:] = sorted(slow - {item.nodeid.split("[")[0] for item in items})
    if not config.getoption("fast"):
        return
    for cls in {getattr(item, "cls", None) for item in items}:
        _fewer_stateful_examples(cls)
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if any(item.get_closest_marker(m) for m in SLOW_MARKS) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _fewer_stateful_examples(cls: Any) -> None:
    """A fifth of a state machine's examples (at least 10) in the fast tier.

    ``Machine.TestCase.settings = settings(max_examples=...)`` sets a count
    the ``fast`` profile cannot lower; the whole suite keeps it."""
    if not (isinstance(cls, type) and cls.__qualname__.endswith(".TestCase")):
        return
    own = getattr(cls, "settings", None)
    if isinstance(own, settings) and own.max_examples > 10:
        fewer = settings(own, max_examples=max(10, own.max_examples // 5), deadline=None)
        setattr(cls, "settings", fewer)  # noqa: B010 (a class made at run time)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > REPORT_OVER:
        _over.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _stale:
        terminalreporter.write_sep("-", f"{SLOW_LIST.name} names tests that are gone")
        for nodeid in _stale:
            terminalreporter.write_line(nodeid)
    if not (config.getoption("fast") and _over):
        return
    terminalreporter.write_sep(
        "-", f"fast-tier tests over {REPORT_OVER} s: add them to {SLOW_LIST.name}"
    )
    for duration, nodeid in sorted(_over, reverse=True):
        terminalreporter.write_line(f"{duration:5.1f} s  {nodeid.split('[')[0]}")
