"""Targets: plug-ins that link a device graph for one kind of deployment.

Each module in this package defines ``TARGET``, an instance of a
:class:`Target` subclass; installed packages may add more through the
``looming.targets`` entry-point group. A target decides which
implementation backs each device kind, how the artifact is built and how
it runs, so adding a target touches no other target.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from looming.config.dsl import Device
from looming.errors import ConfigError

if TYPE_CHECKING:
    from looming.config.build import BuildReport
    from looming.config.plan import Impl


class Target:
    """Base class of targets. Subclasses set ``name`` and ``summary``; which
    device kinds they have, and how, comes from the table of
    :mod:`looming.config.kinds` (a target from an entry point overrides
    :meth:`supports` and :meth:`implement` instead). Building and running
    default to a zipapp run by this Python."""

    name = ""
    summary = ""

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        """Add this target's ``looming configure`` options (``--net`` ...)."""

    def default_options(self) -> dict[str, str]:
        return {}

    def implement(self, device: Device, options: dict[str, str]) -> Impl:
        """The implementation of ``device``; raise ConfigError if unsupported."""
        from looming.config.kinds import KINDS

        build = KINDS.get(device.kind, {}).get(self.name)
        if build is None:
            raise self.unsupported(device)
        return build(device, options)

    def unsupported(self, device: Device, why: str = "") -> ConfigError:
        # Built-in targets answer supports() from the kind table; entry points their own way.
        others = [
            t.name for t in all_targets().values() if t.supports(device.kind) and t is not self
        ]
        hint = f"; targets that have one: {', '.join(others)}" if others else ""
        return ConfigError(
            f"the {self.name} target has no implementation for device {device.kind!r}"
            + (f" ({why})" if why else "")
            + hint,
            path=device.where.path,
            line=device.where.line,
        )

    def supports(self, kind: str) -> bool:
        from looming.config.kinds import targets_with

        return self.name in targets_with(kind)

    def artifact(self, app_dir: Path, unikernel: str) -> Path:
        return app_dir / "dist" / f"{unikernel}-{self.name}.pyz"

    def build(
        self, app_dir: Path, unikernel: str, main_py: Path, crunch: list[tuple[str, str]]
    ) -> BuildReport:
        """Build the artifact for the configured ``main_py`` (a zipapp by default).

        Targets that make something else (a VM image, ...) override this; it
        may print progress for long work.
        """
        from looming.config.build import write_zipapp

        return write_zipapp(self.artifact(app_dir, unikernel), main_py, app_dir, crunch)

    def describe_artifact(self, artifact: Path) -> str:
        """What ``looming describe --image`` prints: size and contents."""
        import zipfile

        lines = [f"{artifact.name}: {artifact.stat().st_size} bytes"]
        with zipfile.ZipFile(artifact) as z:
            infos = z.infolist()
            total = sum(i.file_size for i in infos)
            lines.append(f"{len(infos)} entries, {total} bytes uncompressed")
            lines += [f"  {i.file_size:>9}  {i.filename}" for i in infos]
        return "\n".join(lines) + "\n"

    def run_command(self, artifact: Path, argv: list[str]) -> list[str]:
        """The command line that runs the built ``artifact``."""
        import sys

        return [sys.executable, str(artifact), *argv]


_cache: dict[str, Target] | None = None


def all_targets() -> dict[str, Target]:
    """Every available target by name (built-in modules, then entry points)."""
    global _cache
    if _cache is not None:
        return _cache
    found: dict[str, Target] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        target = getattr(module, "TARGET", None)
        if isinstance(target, Target):
            found[target.name] = target
    for ep in entry_points(group="looming.targets"):
        target = ep.load()
        if isinstance(target, Target):
            found.setdefault(target.name, target)
    _cache = found
    return found


def get_target(name: str) -> Target:
    targets = all_targets()
    if name not in targets:
        raise ConfigError(f"unknown target {name!r}; valid targets: {', '.join(sorted(targets))}")
    return targets[name]
