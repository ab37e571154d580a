"""Checking each device given to an application against its parameter's type.

``main("unikernel:App", [console(), kv_ro("data")])`` hands the devices to
``App.__init__`` in order. When a parameter is annotated with one of the
device interfaces of :mod:`looming.devices` (``store: KvRw``), the device
given for it must provide that interface: a read-only store for a ``KvRw``
parameter, or two devices swapped, is an error at configure time naming
config.py's line and the parameter's file and line, not a failure at run
time. The application's source is read, never imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

from looming.config.dsl import Job
from looming.errors import ConfigError

PROVIDES: dict[str, frozenset[str]] = {
    "console": frozenset({"Console"}),
    "time": frozenset({"Time"}),
    "clock": frozenset({"Clock"}),
    "random": frozenset({"Random"}),
    "kv_ro": frozenset({"KvRo"}),
    "kv_rw": frozenset({"KvRw", "KvRo"}),
    "kv_store": frozenset({"KvRw", "KvRo"}),
    "block": frozenset({"Block"}),
    "network": frozenset({"Network"}),
    "stack": frozenset({"Stack"}),
    "tls": frozenset({"Stack"}),
}
"""The device interfaces each device kind provides (a read-write store is
also a read-only one)."""

CHECKED = frozenset().union(*PROVIDES.values())
"""Interfaces a parameter annotation is checked against; others are left alone."""

_WHAT = {
    "KvRo": "a read-only store (kv_ro, or any store)",
    "KvRw": "a read-write store (kv_rw or kv_store)",
    "Stack": "a stack (stack(...) or tls(...))",
    "Network": "a network (default_network() or netif(...))",
}


def _device_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> interface name, for names imported from looming.devices."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("looming.devices"):
            for alias in node.names:
                if alias.name in CHECKED:
                    names[alias.asname or alias.name] = alias.name
    return names


def _interfaces(annotation: ast.expr | None, imported: dict[str, str]) -> set[str]:
    """The device interfaces an annotation names (``X``, ``X | None``, ``"X"``, ``mod.X``)."""
    if annotation is None:
        return set()
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return set()
    found: set[str] = set()
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name) and node.id in imported:
            found.add(imported[node.id])
        elif isinstance(node, ast.Attribute) and node.attr in CHECKED:
            found.add(node.attr)
    return found


def check_device_types(
    job: Job, args: ast.arguments, tree: ast.Module, source: Path, *, drop_self: bool
) -> None:
    """Raise ConfigError if a device does not provide its parameter's interface."""
    imported = _device_names(tree)
    parameters = [*args.posonlyargs, *args.args]
    if drop_self and parameters:
        parameters = parameters[1:]
    for position, (device, parameter) in enumerate(zip(job.devices, parameters, strict=False)):
        wanted = _interfaces(parameter.annotation, imported)
        provided = PROVIDES.get(device.kind)
        if not wanted or provided is None or wanted & provided:
            continue
        expected = " or ".join(_WHAT.get(w, w) for w in sorted(wanted))
        given_for = next(
            (
                i + 1
                for i, other in enumerate(parameters)
                if PROVIDES.get(device.kind, frozenset()) & _interfaces(other.annotation, imported)
            ),
            None,
        )
        hint = (
            f"; it fits parameter #{given_for} ({parameters[given_for - 1].arg}): "
            "are two devices swapped?"
            if given_for is not None and given_for != position + 1
            else ""
        )
        raise ConfigError(
            f"main(): device #{position + 1}, {device!r} ({device.where}), is given for "
            f"parameter {parameter.arg!r} ({source}:{parameter.lineno}), annotated "
            f"{' | '.join(sorted(wanted))}, which needs {expected}{hint}",
            path=job.where.path,
            line=job.where.line,
        )
