"""The process deployment: run every unikernel of a config.py together.

``looming run`` for the ``process`` target comes here. Each unikernel
registered in ``config.py`` is linked for the ``process`` target and built
into ``dist/<name>-process.pyz``; then each is started in its own process,
all sharing a fresh private vchan registry, each serving its ports under
its own name. Keys given on the command line go to every unikernel that
declares them. When any unikernel exits, or on SIGINT/SIGTERM, the others
are stopped (SIGTERM, then SIGKILL after a grace period) and the registry
is removed, along with anything a killed process left in /dev/shm.

Usage: python -m looming.vchan.deploy --app DIR [--KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from looming.errors import ConfigError, LoomingError
from looming.vchan.device import NAME_ENV
from looming.vchan.registry import REGISTRY_ENV
from looming.vchan.segment import pid_alive, recover_segments

STATE_FILE = "_build/looming.json"
DEPLOY_ROOT = Path("/tmp")
DEPLOY_PREFIX = "looming-vchan-deploy-"
GRACE_SECONDS = 5.0
TARGET_NAME = "process"


@dataclass
class Member:
    """One unikernel of the deployment."""

    name: str
    artifact: Path
    keys: dict[str, Any]  # name -> KeyDecl
    process: subprocess.Popen[bytes] | None = None
    pidfd: int = -1


def build_all(app_dir: Path) -> list[Member]:
    """Link and build every registered unikernel for the process target."""
    from looming.config import codegen, loader, plan
    from looming.config.build import write_zipapp
    from looming.config.targets import get_target

    target = get_target(TARGET_NAME)
    state: dict[str, Any] = {}
    state_path = app_dir / STATE_FILE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
    options = {**target.default_options(), **state.get("options", {})}
    overrides: dict[str, str] = state.get("keys", {})
    registry = loader.load(app_dir)
    members = []
    for unikernel in registry.unikernels:
        linked = plan.resolve(unikernel, app_dir, target, options)
        linked.keys = [
            replace(k, default=overrides[k.name]) if k.name in overrides else k for k in linked.keys
        ]
        command = f"looming run (process deployment of {unikernel.name})"
        main_py = app_dir / "_build" / TARGET_NAME / unikernel.name / "main.py"
        main_py.parent.mkdir(parents=True, exist_ok=True)
        main_py.write_text(codegen.generate(linked, command), encoding="utf-8")
        artifact = target.artifact(app_dir, unikernel.name)
        crunch = [c for d in linked.devices for c in d.impl.crunch]
        write_zipapp(artifact, main_py, app_dir, list(crunch))
        members.append(Member(unikernel.name, artifact, {k.name: k for k in linked.keys}))
    return members


def split_keys(members: list[Member], argv: list[str]) -> dict[str, list[str]]:
    """Each member's share of ``--key value`` arguments (a key may go to several)."""
    shares: dict[str, list[str]] = {m.name: [] for m in members}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: keys are given as --KEY VALUE")
        option, eq, _ = arg.partition("=")
        name = option[2:].replace("-", "_")
        takers = [m for m in members if name in m.keys]
        if not takers:
            known = sorted({k for m in members for k in m.keys})
            raise ConfigError(
                f"no unikernel declares the key {option}; keys: "
                + ", ".join("--" + k.replace("_", "-") for k in known)
            )
        words = [arg]
        is_flag = all(m.keys[name].type_name == "bool" for m in takers)
        if not eq and not (is_flag and (i + 1 == len(argv) or argv[i + 1].startswith("--"))):
            if i + 1 == len(argv):
                raise ConfigError(f"{option} needs a value")
            words.append(argv[i + 1])
            i += 1
        for member in takers:
            shares[member.name].extend(words)
        i += 1
    return shares


def start(members: list[Member], shares: dict[str, list[str]], registry_dir: Path) -> None:
    env = dict(os.environ)
    env[REGISTRY_ENV] = str(registry_dir)
    for member in members:
        argv = list(shares[member.name])
        if "vchan_name" in member.keys:
            argv += ["--vchan-name", member.name]
        if "vchan_registry" in member.keys:
            argv += ["--vchan-registry", str(registry_dir)]
        member.process = subprocess.Popen(
            [sys.executable, str(member.artifact), *argv],
            env={**env, NAME_ENV: member.name},
        )
        member.pidfd = os.pidfd_open(member.process.pid)
        print(f"deploy: started {member.name} (pid {member.process.pid})", file=sys.stderr)


def supervise(members: list[Member]) -> int:
    """Wait for the first exit or a signal, then stop everyone; the exit code."""
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    old_wakeup = signal.set_wakeup_fd(wake_write)
    code = 0
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(wake_read, selectors.EVENT_READ, None)
            for member in members:
                selector.register(member.pidfd, selectors.EVENT_READ, member)
            first: Member | None = None
            while first is None and not received:
                for key, _ in selector.select():
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_read, 512)
                    else:
                        first = key.data
                        break
        if first is not None and first.process is not None:
            code = first.process.wait()
            print(
                f"deploy: {first.name} exited with status {code}; stopping the others",
                file=sys.stderr,
            )
            code = code if code >= 0 else 128 - code
        elif received:
            print(
                f"deploy: received {signal.Signals(received[0]).name}, stopping every unikernel",
                file=sys.stderr,
            )
            code = 130 if received[0] == signal.SIGINT else 0
        stop_all(members)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(wake_read)
        os.close(wake_write)
    return code


def stop_all(members: list[Member]) -> None:
    running = [m for m in members if m.process is not None and m.process.poll() is None]
    for member in running:
        assert member.process is not None
        member.process.send_signal(signal.SIGTERM)
    for member in running:
        assert member.process is not None
        try:
            member.process.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            print(f"deploy: {member.name} ignored SIGTERM; killing it", file=sys.stderr)
            member.process.kill()
            member.process.wait()
    for member in members:
        if member.pidfd >= 0:
            os.close(member.pidfd)
            member.pidfd = -1


def recover_deployments() -> list[Path]:
    """Remove the registries of deployments whose launcher died (SIGKILL, crash)."""
    removed = []
    for name in os.listdir(DEPLOY_ROOT):
        match = re.fullmatch(re.escape(DEPLOY_PREFIX) + r"(\d+)-\w+", name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(DEPLOY_ROOT / name, ignore_errors=True)
            removed.append(DEPLOY_ROOT / name)
    return removed


def run(app_dir: Path, argv: list[str]) -> int:
    members = build_all(app_dir)
    if "--help" in argv or "-h" in argv:
        for member in members:
            print(f"{member.name}: {member.artifact}", flush=True)
            subprocess.run([sys.executable, str(member.artifact), "--help"], check=False)
        return 0
    shares = split_keys(members, argv)
    recover_deployments()
    registry_dir = Path(tempfile.mkdtemp(prefix=f"{DEPLOY_PREFIX}{os.getpid()}-", dir=DEPLOY_ROOT))
    try:
        start(members, shares, registry_dir)
        return supervise(members)
    except BaseException:
        stop_all(members)
        raise
    finally:
        shutil.rmtree(registry_dir, ignore_errors=True)
        recover_segments()  # whatever a killed unikernel left in /dev/shm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="looming run (process target)",
        description="run every unikernel of config.py in its own process, connected by vchan",
        add_help=False,  # --help belongs to the unikernels: it lists their keys
    )
    parser.add_argument("--app", default=".", help="the application folder")
    args, rest = parser.parse_known_args(argv)
    try:
        return run(Path(args.app).resolve(), rest)
    except ConfigError as exc:
        print(f"looming: {exc}", file=sys.stderr)
        return 2
    except LoomingError as exc:
        print(f"looming: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
