"""The ``process`` target: every unikernel of config.py in its own process.

``looming configure -t process --unikernel NAME`` links one of them (as the
``unix`` target would, plus the ``vchan`` device); ``looming run`` then builds
and starts *all* the unikernels config.py registers, each in its own
process, connected by vchan through a private registry, and stops them
together (see :mod:`looming.vchan.deploy`). Devices other than ``vchan`` are
provided exactly as by the ``unix`` target, with the same options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from looming.config.dsl import Device, device
from looming.config.plan import Arg, Dep, Impl, KeyDecl
from looming.config.targets import Target
from looming.config.targets.unix import TARGET as UNIX

VCHAN_NAME_KEY = "vchan_name"
VCHAN_REGISTRY_KEY = "vchan_registry"


class ProcessTarget(Target):
    name = "process"
    summary = "each unikernel of config.py in its own process, connected by vchan"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        UNIX.add_options(parser)
        parser.add_argument(
            "--restart",
            default="",
            help="restart policies, NAME=never|on-failure|always,... (default: never; "
            "a unikernel that stops for good stops the deployment)",
        )
        parser.add_argument(
            "--restart-budget",
            dest="restart_budget",
            default="5/10",
            help="at most COUNT restarts of one unikernel within SECONDS, as COUNT/SECONDS "
            "(default 5/10); past it the deployment stops",
        )

    def default_options(self) -> dict[str, str]:
        return {**UNIX.default_options(), "restart": "", "restart_budget": "5/10"}

    def run_command(self, artifact: Path, argv: list[str]) -> list[str]:
        app_dir = artifact.resolve().parent.parent
        return [sys.executable, "-m", "looming.vchan.deploy", "--app", str(app_dir), *argv]


def vchan_impl(dev: Device, options: dict[str, str]) -> Impl:
    """A vchan port, served or to a peer, through the deployment's registry."""
    port, peer = dev.setting("port"), dev.setting("peer")
    keys = [
        KeyDecl(
            VCHAN_REGISTRY_KEY,
            "str",
            None,
            "vchan registry folder (the process deployment passes a private one)",
        )
    ]
    kwargs: list[tuple[str, Arg]] = [
        ("read_size", repr(dev.setting("read_size"))),
        ("write_size", repr(dev.setting("write_size"))),
        ("registry", f"keys.{VCHAN_REGISTRY_KEY}"),
    ]
    if peer is None:
        keys.append(
            KeyDecl(
                VCHAN_NAME_KEY,
                "str",
                None,
                "name this unikernel serves vchan ports under (the deployment passes it)",
            )
        )
        kwargs.append(("name", f"keys.{VCHAN_NAME_KEY}"))
        summary = f"vchan serving port {port}"
    else:
        kwargs.append(("peer", repr(peer)))
        summary = f"vchan to {peer}/{port}"
    return Impl(
        "looming.vchan.device:VchanDevice.connect",
        args=[repr(port)],
        kwargs=[("time", Dep("time")), *kwargs],
        awaited=True,
        disconnect="disconnect",
        # Waits for the peer and ring deadlines run on the time device.
        deps={"time": device("time", where=dev.where)},
        keys=keys,
        summary=summary,
    )


TARGET = ProcessTarget()
