"""Resolving the device graph: from declared devices to a linking plan.

A target maps each device to an :class:`Impl` (which class, which
arguments, which devices it needs); this module orders the result so every
device is connected after the ones it uses, detects cycles and unsatisfied
devices, checks the application's entry point against the devices it is
given, and collects the keys.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from looming.config.dsl import Device, Job, Key, Location, Unikernel
from looming.config.typecheck import check_device_types
from looming.errors import ConfigError
from looming.extras import check_application

if TYPE_CHECKING:
    from looming.config.targets import Target


@dataclass(frozen=True)
class KeyDecl:
    """A key in the plan: from config.py or added by an implementation."""

    name: str
    type_name: str
    default: Any
    doc: str
    where: Location | None = None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @classmethod
    def from_key(cls, k: Key) -> KeyDecl:
        return cls(k.name, k.type_name, k.default, k.doc, k.where)


@dataclass(frozen=True)
class Dep:
    """An argument of an :class:`Impl`: the variable holding the device that
    ``Impl.deps`` names ``name``."""

    name: str


Arg = str | Dep
"""A Python expression (``keys.NAME`` reads a key), or a device the implementation needs."""

# A positional placeholder left from before devices were named: emitted as
# written it would be a set literal, so it is refused instead.
_POSITIONAL = re.compile(r"^\{\d+\}$")


@dataclass
class Impl:
    """How a target provides one device.

    ``factory`` is ``"module:Name"`` or ``"module:Name.method"``; ``args`` and
    ``kwargs`` values are Python expressions (``keys.NAME`` for key values) or
    :class:`Dep` markers for the devices of ``deps``, by name. Without
    ``deps`` the device's own dependencies are connected first, unnamed.
    """

    factory: str
    args: Sequence[Arg] = ()
    kwargs: Sequence[tuple[str, Arg]] = ()
    awaited: bool = False
    disconnect: str | None = None
    deps: Mapping[str, Device] | None = None
    keys: Sequence[KeyDecl] = ()
    crunch: Sequence[tuple[str, str]] = ()
    served_folders: Sequence[str] = ()
    """Folders of the application read in place at run time (checked at build)."""
    summary: str = ""
    check: str | None = None
    """``"module:function"`` called with the key-valued ``kwargs`` before any
    device connects: a bad value is reported before a device is opened."""

    @property
    def module(self) -> str:
        return self.factory.split(":", 1)[0]

    @property
    def qualname(self) -> str:
        return self.factory.split(":", 1)[1]

    @property
    def class_name(self) -> str:
        return self.qualname.split(".", 1)[0]


@dataclass
class PlannedDevice:
    device: Device
    impl: Impl
    var: str
    dep_vars: list[str]
    dep_names: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Every :class:`Dep` names a device of ``deps``; no string still
        holds a positional ``{0}`` (devices are passed as ``Dep(name)``)."""
        for arg in [*self.impl.args, *(v for _, v in self.impl.kwargs)]:
            if isinstance(arg, Dep) and arg.name not in self.dep_names:
                named = ", ".join(self.dep_names) or "none"
                problem = f"uses the device {arg.name!r} but its deps name only: {named}"
                fix = "add it to deps"
            elif isinstance(arg, str) and _POSITIONAL.search(arg):
                problem = f"passes {arg!r}: devices are no longer numbered"
                fix = 'name them in deps={"time": ...} and pass Dep("time")'
            else:
                continue
            raise ConfigError(
                f"the implementation {self.impl.factory} of {self.device.kind!r} {problem}; {fix}",
                path=self.device.where.path,
                line=self.device.where.line,
            )

    def call(self) -> str:
        self.check()

        def fill(arg: Arg) -> str:
            return arg if isinstance(arg, str) else self.dep_names[arg.name]

        parts = [fill(a) for a in self.impl.args]
        parts += [f"{k}={fill(v)}" for k, v in self.impl.kwargs]
        text = f"{self.impl.qualname}({', '.join(parts)})"
        return f"await {text}" if self.impl.awaited else text


@dataclass
class PlannedJob:
    job: Job
    is_class: bool
    device_vars: list[str]


@dataclass
class Plan:
    unikernel: Unikernel
    app_dir: Path
    target: str
    options: dict[str, str]
    devices: list[PlannedDevice] = field(default_factory=list)
    jobs: list[PlannedJob] = field(default_factory=list)
    keys: list[KeyDecl] = field(default_factory=list)

    def key(self, name: str) -> KeyDecl | None:
        return next((k for k in self.keys if k.name == name), None)


class _DeviceWalk:
    """Depth first through the device graph: each device's implementation,
    and the devices in an order where each comes after those it uses."""

    def __init__(self, target: Target, options: dict[str, str]) -> None:
        self.target = target
        self.options = options
        self.impls: dict[int, Impl] = {}
        self.order: list[Device] = []
        self.state: dict[int, str] = {}

    def deps(self, dev: Device) -> list[Device]:
        """What ``dev`` needs: its implementation's devices, else its own."""
        impl = self.impls[id(dev)]
        return list(impl.deps.values()) if impl.deps is not None else list(dev.deps)

    def visit(self, dev: Device, path: list[Device]) -> None:
        mark = self.state.get(id(dev))
        if mark == "done":
            return
        if mark == "active":
            cycle = [*path[path.index(dev) :], dev]
            chain = " -> ".join(f"{d.kind} ({d.where})" for d in cycle)
            raise ConfigError(
                f"the devices form a cycle: {chain}; break it so each device only "
                "needs devices made before it",
                path=dev.where.path,
                line=dev.where.line,
            )
        self.state[id(dev)] = "active"
        self.impls[id(dev)] = implement(self.target, dev, self.options)
        for d in self.deps(dev):
            self.visit(d, [*path, dev])
        self.state[id(dev)] = "done"
        self.order.append(dev)


def _variable_names(order: list[Device]) -> dict[int, str]:
    """The variable holding each device in the generated code: its name
    hint, numbered from the second device with the same hint."""
    names: dict[str, int] = {}
    var_of: dict[int, str] = {}
    for dev in order:
        base = dev.name_hint
        count = names.get(base, 0)
        names[base] = count + 1
        var_of[id(dev)] = base if count == 0 else f"{base}_{count}"
    return var_of


LOGS_KEY = KeyDecl(
    "logs",
    "str",
    "*:info",
    "log levels, e.g. '*:info,http:debug' (debug|info|warning|error|quiet)",
)


def _collect_keys(unikernel: Unikernel, devices: list[PlannedDevice]) -> list[KeyDecl]:
    """The jobs' keys, then the implementations', then ``logs``; a name
    declared twice must have one type."""
    seen: dict[str, KeyDecl] = {}
    keys: list[KeyDecl] = []
    declared = [KeyDecl.from_key(k) for job in unikernel.jobs for k in job.keys]
    declared += [decl for pd in devices for decl in pd.impl.keys]
    for k in [*declared, LOGS_KEY]:
        prior = seen.get(k.name)
        if prior is None:
            seen[k.name] = k
            keys.append(k)
        elif prior.type_name != k.type_name:
            where = k.where or prior.where
            raise ConfigError(
                f"key {k.name!r} is declared twice with different types "
                f"({prior.type_name} and {k.type_name}); rename one",
                path=where.path if where else None,
                line=where.line if where else None,
            )
    return keys


def resolve(unikernel: Unikernel, app_dir: Path, target: Target, options: dict[str, str]) -> Plan:
    plan = Plan(unikernel, app_dir, target.name, dict(options))
    walk = _DeviceWalk(target, plan.options)
    for job in unikernel.jobs:
        for dev in job.devices:
            walk.visit(dev, [])
    # A later device may have claimed a base name that an earlier suffix used.
    var_of = _variable_names(walk.order)
    for dev in walk.order:
        impl = walk.impls[id(dev)]
        deps = [var_of[id(d)] for d in walk.deps(dev)]
        named = {name: var_of[id(d)] for name, d in (impl.deps or {}).items()}
        planned = PlannedDevice(dev, impl, var_of[id(dev)], deps, named)
        planned.check()
        plan.devices.append(planned)
    # A part installed as an extra (TLS, the store) is checked now, not at run time.
    check_application(
        [
            (d.device.kind, d.impl.module, d.device.where.path, d.device.where.line)
            for d in plan.devices
        ],
        app_dir,
    )
    plan.keys = _collect_keys(unikernel, plan.devices)
    for job in unikernel.jobs:
        is_class = check_entry_point(job, app_dir)
        plan.jobs.append(PlannedJob(job, is_class, [var_of[id(d)] for d in job.devices]))
    return plan


def implement(target: Target, dev: Device, options: dict[str, str]) -> Impl:
    """The target's implementation of ``dev``, or the portable one every target shares."""
    from looming.config.devices import PORTABLE

    if not target.supports(dev.kind) and dev.kind in PORTABLE:
        return PORTABLE[dev.kind](dev)
    return target.implement(dev, options)


def check_entry_point(job: Job, app_dir: Path) -> bool:
    """Check ``job.target`` exists and accepts its devices and keys.

    Reads the module's source (without importing it). Returns whether the
    entry point is a class (else an async function).
    """
    rel = Path(*job.module.split("."))
    candidates = [app_dir / rel.with_suffix(".py"), app_dir / rel / "__init__.py"]
    source_path = next((p for p in candidates if p.is_file()), None)
    where = job.where
    if source_path is None:
        raise ConfigError(
            f"main(): no module {job.module!r} in {app_dir} (expected {candidates[0].name})",
            path=where.path,
            line=where.line,
        )
    try:
        tree = ast.parse(source_path.read_text(encoding="utf-8"), str(source_path))
    except SyntaxError as exc:
        raise ConfigError(
            f"syntax error: {exc.msg}", path=str(source_path), line=exc.lineno or 1
        ) from None
    node = next(
        (
            n
            for n in tree.body
            if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.name == job.attribute
        ),
        None,
    )
    if node is None:
        defined = sorted(
            n.name
            for n in tree.body
            if isinstance(n, ast.ClassDef | ast.AsyncFunctionDef | ast.FunctionDef)
        )
        raise ConfigError(
            f"main(): {job.module}.py defines no class or function {job.attribute!r}"
            + (f" (it defines: {', '.join(defined)})" if defined else ""),
            path=where.path,
            line=where.line,
        )
    if isinstance(node, ast.ClassDef):
        init = next(
            (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
            None,
        )
        if init is not None:
            _check_signature(job, f"{job.attribute}.__init__", init.args, drop_self=True)
            check_device_types(job, init.args, tree, source_path, drop_self=True)
        return True
    if isinstance(node, ast.FunctionDef):
        raise ConfigError(
            f"main(): {job.attribute} must be a class or an 'async def' function",
            path=where.path,
            line=where.line,
        )
    _check_signature(job, job.attribute, node.args, drop_self=False)
    check_device_types(job, node.args, tree, source_path, drop_self=False)
    return False


def _check_signature(job: Job, shown: str, args: ast.arguments, *, drop_self: bool) -> None:
    where = job.where
    positional = [a.arg for a in [*args.posonlyargs, *args.args]]
    if drop_self and positional:
        positional = positional[1:]
    required = len(positional) - len(args.defaults)
    given = len(job.devices)
    if args.vararg is None and given > len(positional):
        raise ConfigError(
            f"main(): {shown} takes {len(positional)} devices ({', '.join(positional)}) "
            f"but config.py gives {given}",
            path=where.path,
            line=where.line,
        )
    if given < required:
        missing = ", ".join(positional[given:required])
        raise ConfigError(
            f"main(): {shown} needs {required} devices but config.py gives {given}; "
            f"unsatisfied: {missing}. Add the devices to main(...) in order",
            path=where.path,
            line=where.line,
        )
    kwonly = {a.arg for a in args.kwonlyargs}
    kw_required = {
        a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None
    }
    keys = {k.name for k in job.keys}
    if args.kwarg is None:
        extra = sorted(keys - kwonly - set(positional))
        if extra:
            raise ConfigError(
                f"main(): {shown} does not accept the key(s) {', '.join(extra)}; "
                "add keyword-only parameters for them",
                path=where.path,
                line=where.line,
            )
    unsatisfied = sorted(kw_required - keys)
    if unsatisfied:
        raise ConfigError(
            f"main(): {shown} needs the key(s) {', '.join(unsatisfied)}; "
            "declare them with key(...) and pass keys=[...]",
            path=where.path,
            line=where.line,
        )
