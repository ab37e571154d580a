"""The language of ``config.py``: devices, keys, jobs and unikernels.

A ``config.py`` describes *what* a unikernel needs, never *which*
implementation provides it; a target decides that at configure time.
Every object records the line of ``config.py`` that made it, so errors
point there.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from looming.errors import ConfigError
from looming.runtime import KEY_PARSERS

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNIKERNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

KEY_TYPES = KEY_PARSERS


@dataclass(frozen=True)
class Location:
    """Where in ``config.py`` something was declared."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


def caller_location() -> Location:
    """The innermost frame outside looming's own config package."""
    frame = sys._getframe(1)
    here = str(Path(__file__).parent)
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return Location("<unknown>", 0)
    return Location(frame.f_code.co_filename, frame.f_lineno)


def fail(message: str, where: Location | None = None) -> ConfigError:
    where = where or caller_location()
    return ConfigError(message, path=where.path, line=where.line)


@dataclass(eq=False)
class Key:
    """A configuration value settable at configure time and at run time.

    ``looming configure --port 80`` bakes 80 in as the default;
    ``looming run --port 81`` (or ``app.pyz --port 81``) overrides it.
    """

    name: str
    type_name: str
    default: Any
    doc: str
    where: Location

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, text: str) -> Any:
        try:
            return KEY_TYPES[self.type_name](text)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.option}: {exc}") from None


def key(name: str, type: type | str = str, default: Any = None, doc: str = "") -> Key:
    """Declare a key: ``key("port", int, default=8080, doc="TCP port")``."""
    where = caller_location()
    if not _NAME.match(name):
        raise fail(f"key name {name!r} must be a Python identifier (letters, digits, _)", where)
    type_name = type if isinstance(type, str) else _type_name(type)
    if type_name not in KEY_TYPES:
        valid = ", ".join(sorted(KEY_TYPES))
        raise fail(f"key {name!r} has unsupported type {type!r}; use one of: {valid}", where)
    if isinstance(default, str) and type_name != "str":
        try:
            default = KEY_TYPES[type_name](default)
        except ValueError as exc:
            message = f"key {name!r}: default {default!r} is not a {type_name}: {exc}"
            raise fail(message, where) from None
    return Key(name, type_name, default, doc, where)


def http_keys() -> list[Key]:
    """The keys of an HTTP service (see ``looming.http.service``), for
    ``main(..., keys=[port, *http_keys()])``; each is also read from its
    ``LOOMING_*`` environment variable."""
    where = caller_location()
    return [
        Key("access_log", "str", "off", "access log: off, common or json", where),
        Key("metrics", "str", "", "path of a Prometheus metrics endpoint, e.g. /metrics", where),
        Key("max_connections", "int", 1000, "connections served at once (0: no limit)", where),
        Key(
            "http_parser",
            "str",
            "auto",
            "HTTP/1.1 parser: auto (httptools if found), h11, httptools",
            where,
        ),
        Key(
            "shutdown_timeout",
            "float",
            10.0,
            "seconds responses in flight get to finish on SIGTERM",
            where,
        ),
        Key("ws_max_size", "int", 16 * 1024 * 1024, "websocket message bytes at most", where),
        Key(
            "cancel_on_disconnect",
            "float",
            0.0,
            "seconds a handler whose client left may run on before it is cancelled (0: never)",
            where,
        ),
        Key(
            "max_body_size",
            "int",
            16 * 1024 * 1024,
            "request body bytes at most where it is held whole (streamed bodies: no cap)",
            where,
        ),
        Key("root_path", "str", "", "path prefix the service is mounted under, e.g. /api", where),
        Key(
            "proxy_headers",
            "bool",
            False,
            "take the scheme and client from X-Forwarded-Proto/For of trusted proxies",
            where,
        ),
        Key(
            "forwarded_allow_ips",
            "str",
            "127.0.0.1",
            "proxies trusted with --proxy-headers: addresses, networks or *",
            where,
        ),
    ]


def _type_name(t: type) -> str:
    names = {
        int: "int",
        str: "str",
        float: "float",
        bool: "bool",
        ipaddress.IPv4Interface: "ipv4_interface",
        ipaddress.IPv4Address: "ipv4_address",
        ipaddress.IPv6Interface: "ipv6_interface",
        ipaddress.IPv6Address: "ipv6_address",
    }
    return names.get(t, getattr(t, "__name__", repr(t)))


@dataclass(eq=False)
class Device:
    """A node of the device graph: a kind, its settings and what it needs.

    Two devices of the same kind with the same settings and dependencies are
    the same device (one ``time()`` serves the whole unikernel).
    """

    kind: str
    settings: tuple[tuple[str, Any], ...]
    deps: list[Device]
    where: Location
    name_hint: str

    def setting(self, name: str, default: Any = None) -> Any:
        return dict(self.settings).get(name, default)

    def requires(self, *devices: Device) -> Device:
        """Add dependencies after creation (for graphs built in several steps)."""
        for d in devices:
            if not isinstance(d, Device):
                raise fail(f"{self.kind}: requires() takes devices, not {d!r}")
            self.deps.append(d)
        return self

    def identity(self) -> tuple[Any, ...]:
        return (self.kind, self.settings, tuple(id(d) for d in self.deps))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings)
        return f"{self.kind}({args})"


_interned: dict[tuple[Any, ...], Device] = {}


def device(
    kind: str,
    deps: Sequence[Device] = (),
    *,
    name: str | None = None,
    where: Location | None = None,
    **settings: Any,
) -> Device:
    """Make (or reuse) the device of ``kind`` with these settings and deps."""
    where = where or caller_location()
    for d in deps:
        if not isinstance(d, Device):
            raise fail(f"{kind}() expects devices as dependencies, not {d!r}", where)
    made = Device(kind, tuple(sorted(settings.items())), list(deps), where, name or kind)
    ident = made.identity()
    existing = _interned.get(ident)
    if existing is not None:
        return existing
    _interned[ident] = made
    return made


@dataclass(eq=False)
class Job:
    """An application entry point and the devices it is given, in order."""

    target: str
    devices: list[Device]
    keys: list[Key]
    where: Location

    @property
    def module(self) -> str:
        return self.target.split(":", 1)[0]

    @property
    def attribute(self) -> str:
        return self.target.split(":", 1)[1]


@dataclass(eq=False)
class Unikernel:
    """What ``register`` records: a named set of jobs run together."""

    name: str
    jobs: list[Job]
    where: Location
    packages: list[str] = field(default_factory=list)


@dataclass
class Registry:
    """Everything one ``config.py`` declared."""

    unikernels: list[Unikernel] = field(default_factory=list)


_registry = Registry()


def reset() -> Registry:
    """Start a fresh declaration scope (called before executing a config.py)."""
    global _registry
    _registry = Registry()
    _interned.clear()
    return _registry


def current() -> Registry:
    return _registry


def main(target: str, devices: Sequence[Device] = (), *, keys: Sequence[Key] = ()) -> Job:
    """The application: ``main("unikernel:Website", [console(), ...], keys=[port])``.

    ``target`` names a class (constructed with the devices positionally and the
    keys by name, then its ``start()`` is awaited) or an async function (called
    the same way) in a module of the application folder.
    """
    where = caller_location()
    if not isinstance(target, str) or target.count(":") != 1:
        raise fail(f"main() target must look like 'module:Name', not {target!r}", where)
    module, attr = target.split(":")
    if not all(_NAME.match(p) for p in module.split(".")) or not _NAME.match(attr):
        raise fail(f"main() target {target!r} is not 'module:Name' with Python names", where)
    devs = list(devices)
    for i, d in enumerate(devs):
        if not isinstance(d, Device):
            raise fail(
                f"main(): device #{i + 1} is {d!r}, not a device; "
                "use the device functions from looming.config (console(), kv_ro(...), ...)",
                where,
            )
    for k in keys:
        if not isinstance(k, Key):
            raise fail(f"main(): keys must be made with key(...), not {k!r}", where)
    return Job(target, devs, list(keys), where)


def register(name: str, jobs: Sequence[Job], *, packages: Sequence[str] = ()) -> Unikernel:
    """Declare a unikernel called ``name`` that runs ``jobs`` together."""
    where = caller_location()
    if not isinstance(name, str) or not _UNIKERNEL_NAME.match(name):
        raise fail(f"register(): name {name!r} must match [A-Za-z0-9][A-Za-z0-9_-]*", where)
    if isinstance(jobs, Job):
        jobs = [jobs]
    if not jobs:
        raise fail(f"register({name!r}): give at least one job made with main(...)", where)
    for j in jobs:
        if not isinstance(j, Job):
            raise fail(f"register({name!r}): jobs must be made with main(...), not {j!r}", where)
    if any(u.name == name for u in _registry.unikernels):
        raise fail(f"register(): a unikernel named {name!r} is already registered", where)
    u = Unikernel(name, list(jobs), where, _checked_packages(name, packages, where))
    _registry.unikernels.append(u)
    return u


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _checked_packages(name: str, packages: object, where: Location) -> list[str]:
    """``register(packages=...)`` as a list of module names, each of whose
    top-level package is in the application folder or installed; else a
    :class:`ConfigError` at the ``register`` line."""
    if not isinstance(packages, (list, tuple)):
        example = repr([packages]) if isinstance(packages, str) else "['plugins']"
        raise fail(
            f"register({name!r}): packages must be a list of package names, "
            f"e.g. packages={example}, not the {type(packages).__name__} {packages!r}",
            where,
        )
    for package in packages:
        if not isinstance(package, str) or not _MODULE_NAME.match(package):
            raise fail(
                f"register({name!r}): packages=[...] holds {package!r}, which is not a "
                "module name (like 'plugins' or 'anyio._backends'); fix it",
                where,
            )
        why = _why_not_packable(package.partition(".")[0], Path(where.path).parent)
        if why:
            raise fail(f"register({name!r}): packages=[{package!r}]: {why}", where)
    return list(packages)


def _why_not_packable(top: str, app_dir: Path) -> str:
    """Why the top-level module ``top`` cannot be packed ("" if it can): it
    is neither in ``app_dir`` nor installed, or it is in the standard library."""
    if (app_dir / f"{top}.py").is_file() or (app_dir / top).is_dir():
        return ""
    if top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return f"{top!r} is in the standard library, which the host provides; remove it"
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):  # imported already, without a spec
        return ""
    if spec is None:
        return (
            f"{top!r} is not installed and not a module of the application folder "
            f"({app_dir}); install it (pip install ...) or fix the name"
        )
    return ""
