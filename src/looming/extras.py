"""The parts of looming installed as extras, and the error that names them.

``pip install looming`` is the core: configure, build and run, host sockets,
looming's TCP/IP stack, HTTP/1.1 and ASGI, the simulator and vchan; it needs
h11 only. TLS, the Git-compatible store, the compiled FFI backend, HTTP/2 and
WebSockets need more, each installed with its extra (``pip install
'looming[tls]'``). ``looming configure`` checks the extras an application
needs (from its devices and its imports) before writing anything, so a
missing one is a one-line error then, never an ImportError while the
unikernel runs. The HTTP server offers HTTP/2 and WebSockets only when h2
and wsproto are installed; without them a connection is served as HTTP/1.1.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable
from pathlib import Path

from looming.errors import ConfigError, UsageError

# extra -> the distributions' import names it installs
EXTRAS: dict[str, tuple[str, ...]] = {
    "tls": ("cryptography",),
    "store": ("dulwich",),
    "ffi": ("cffi",),
    "http2": ("h2",),
    "websocket": ("wsproto",),
}

# looming module (or package) -> the extra it needs
PARTS: dict[str, str] = {
    "looming.tls": "tls",
    "looming.store": "store",
    "looming.ffi.compiled": "ffi",
    "looming.http.http2": "http2",
    "looming.http.websocket": "websocket",
}

_SKIPPED_DIRS = frozenset({"_build", "dist", "__pycache__"})


class MissingExtra(UsageError):
    """A part of looming is used whose extra is not installed."""

    def __init__(self, extra: str, what: str, missing: Iterable[str]) -> None:
        self.extra = extra
        names = ", ".join(missing)
        super().__init__(
            f"{what} needs looming's {extra!r} extra ({names} is not installed): "
            f"pip install 'looming[{extra}]'"
        )


def missing_packages(extra: str) -> list[str]:
    """The packages of ``extra`` that cannot be imported here."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def extra_for(module: str) -> str | None:
    """The extra ``module`` (a looming module name) needs, if any."""
    for part, extra in PARTS.items():
        if module == part or module.startswith(part + "."):
            return extra
    return None


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` unless ``extra`` is installed."""
    missing = missing_packages(extra)
    if missing:
        raise MissingExtra(extra, what, missing)


def require_for(module: str, what: str) -> None:
    """Raise :class:`MissingExtra` unless the extra ``module`` needs is installed."""
    extra = extra_for(module)
    if extra is not None:
        require(extra, what)


def check_application(
    devices: Iterable[tuple[str, str, str | None, int | None]], app_dir: Path
) -> None:
    """Check the extras an application needs at configure time.

    ``devices`` holds ``(kind, implementation module, config path, line)``
    for each device of the plan; the application's own modules are read
    (never imported) for the looming modules they import. Raises
    :class:`~looming.errors.ConfigError` naming the first missing extra.
    """
    for kind, module, path, line in devices:
        try:
            require_for(module, f"the {kind} device")
        except MissingExtra as error:
            raise ConfigError(str(error), path=path, line=line) from None
    for source in sorted(_app_sources(app_dir)):
        for module, line in _looming_imports(source):
            try:
                require_for(module, f"{source.name} (import {module})")
            except MissingExtra as error:
                raise ConfigError(str(error), path=str(source), line=line) from None


def _app_sources(app_dir: Path) -> Iterable[Path]:
    for path in app_dir.rglob("*.py"):
        rel = path.relative_to(app_dir).parts
        if not any(p in _SKIPPED_DIRS or p.startswith(".") for p in rel[:-1]):
            yield path


def _looming_imports(source: Path) -> Iterable[tuple[str, int]]:
    """Every ``looming.*`` module ``source`` imports, at any depth, with its line."""
    try:
        tree = ast.parse(source.read_bytes(), str(source))
    except (OSError, SyntaxError, ValueError):
        return  # reported by the entry point check, or not part of the unikernel
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("looming."):
                yield name, node.lineno
