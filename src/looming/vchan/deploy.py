"""The process deployment: run every unikernel of a config.py together, supervised.

``looming run`` for the ``process`` target comes here. Each unikernel
registered in ``config.py`` is linked for the ``process`` target and built
into ``dist/<name>-process.pyz``; then each is started in its own process,
all sharing a fresh private vchan registry, each serving its ports under
its own name. Keys given on the command line go to every unikernel that
declares them.

Supervision, after Erlang/OTP's supervisors and systemd's units:

* **Start order** follows the vchan dependencies of config.py: a unikernel
  that connects to ``vchan(port, peer=P)`` starts once P has published its
  ports (a cycle is a configuration error).
* **Restart policies** per unikernel (``looming configure -t process
  --restart store=always,front=on-failure``): ``never`` (the default: its
  exit stops the deployment, as before), ``on-failure`` (restarted when it
  exits non-zero or is killed) or ``always``; restarts wait 0.1 s, doubling
  per restart within the budget period, capped at 5 s; more than the
  budget's restarts within its period (``--restart-budget 10/30``: ten in
  thirty seconds) stop the deployment, as OTP's intensity does.
* **Nothing outlives ``looming run``**: each unikernel carries
  ``PR_SET_PDEATHSIG(SIGKILL)`` and a janitor process removes the private
  registry and the unikernels' /dev/shm segments when the launcher dies,
  even by SIGKILL. On SIGINT/SIGTERM the unikernels are stopped (SIGTERM,
  then SIGKILL after a grace period) and the same is cleaned.

Usage: python -m looming.vchan.deploy --app DIR [--KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
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


POLICIES = ("never", "on-failure", "always")
DEFAULT_BUDGET = (5, 10.0)
FIRST_DELAY = 0.1
MAX_DELAY = 5.0
PUBLISH_TIMEOUT = 30.0


@dataclass
class Member:
    """One unikernel of the deployment."""

    name: str
    artifact: Path
    keys: dict[str, Any]  # name -> KeyDecl
    process: subprocess.Popen[bytes] | None = None
    pidfd: int = -1
    peers: tuple[str, ...] = ()  # the unikernels it connects to over vchan
    serves: tuple[str, ...] = ()  # the vchan ports it publishes
    policy: str = "never"
    restarts: list[float] = field(default_factory=list)  # monotonic times
    restart_at: float | None = None


def parse_policies(text: str, names: list[str]) -> dict[str, str]:
    """``"store=always,front=on-failure"`` -> a policy per unikernel (``never`` when unnamed)."""
    policies = dict.fromkeys(names, "never")
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, policy = item.partition("=")
        if not eq or policy not in POLICIES:
            raise ConfigError(
                f"restart policy {item!r}: write NAME=POLICY with POLICY one of {', '.join(POLICIES)}"
            )
        if name not in policies:
            raise ConfigError(
                f"restart policy for {name!r}, which is not a unikernel of config.py "
                f"({', '.join(names)})"
            )
        policies[name] = policy
    return policies


def parse_budget(text: str) -> tuple[int, float]:
    """``"5/10"``: at most five restarts within ten seconds."""
    count, slash, seconds = text.partition("/")
    try:
        budget = (int(count), float(seconds))
    except ValueError:
        budget = (-1, 0.0)
    if not slash or budget[0] < 0 or budget[1] <= 0:
        raise ConfigError(f"restart budget {text!r}: write COUNT/SECONDS, such as 5/10")
    return budget


def start_order(members: list[Member]) -> list[Member]:
    """Dependencies (vchan peers) first; ConfigError on a cycle or an unknown peer."""
    by_name = {m.name: m for m in members}
    ordered: list[Member] = []
    state: dict[str, str] = {}

    def visit(member: Member, chain: list[str]) -> None:
        if state.get(member.name) == "done":
            return
        if state.get(member.name) == "visiting":
            raise ConfigError(f"the vchan peers form a cycle: {' -> '.join([*chain, member.name])}")
        state[member.name] = "visiting"
        for peer in member.peers:
            if peer not in by_name:
                raise ConfigError(f"{member.name} connects to {peer!r}, which is no unikernel here")
            visit(by_name[peer], [*chain, member.name])
        state[member.name] = "done"
        ordered.append(member)

    for member in members:
        visit(member, [])
    return ordered


def restart_delay(member: Member, now: float, budget: tuple[int, float]) -> float | None:
    """Seconds to wait before restarting ``member`` now, or None when the budget is spent."""
    count, period = budget
    member.restarts = [t for t in member.restarts if now - t < period]
    if len(member.restarts) >= count:
        return None
    return float(min(FIRST_DELAY * 2.0 ** len(member.restarts), MAX_DELAY))


def should_restart(member: Member, code: int) -> bool:
    return member.policy == "always" or (member.policy == "on-failure" and code != 0)


def deployment_options(app_dir: Path) -> dict[str, Any]:
    """The process target's options as ``looming configure`` saved them."""
    from looming.config.targets import get_target

    state: dict[str, Any] = {}
    state_path = app_dir / STATE_FILE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
    return {**get_target(TARGET_NAME).default_options(), **state.get("options", {})}


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
    options = deployment_options(app_dir)
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
        vchans = [d.device for d in linked.devices if d.device.kind == "vchan"]
        members.append(
            Member(
                unikernel.name,
                artifact,
                {k.name: k for k in linked.keys},
                peers=tuple(sorted({str(v.setting("peer")) for v in vchans if v.setting("peer")})),
                serves=tuple(str(v.setting("port")) for v in vchans if not v.setting("peer")),
            )
        )
    names = [m.name for m in members]
    policies = parse_policies(str(options.get("restart", "")), names)
    for member in members:
        member.policy = policies[member.name]
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


def _die_with_launcher() -> None:
    """In the child before exec: SIGKILL when the launcher dies (its one thread)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def start_member(member: Member, argv: list[str], registry_dir: Path) -> None:
    env = {**os.environ, REGISTRY_ENV: str(registry_dir), NAME_ENV: member.name}
    argv = list(argv)
    if "vchan_name" in member.keys:
        argv += ["--vchan-name", member.name]
    if "vchan_registry" in member.keys:
        argv += ["--vchan-registry", str(registry_dir)]
    member.process = subprocess.Popen(
        [sys.executable, str(member.artifact), *argv],
        env=env,
        preexec_fn=_die_with_launcher,
    )
    member.pidfd = os.pidfd_open(member.process.pid)
    print(f"deploy: started {member.name} (pid {member.process.pid})", file=sys.stderr)


def wait_until_published(member: Member, registry_dir: Path) -> None:
    """Until ``member`` serves its ports (its dependents may then connect), or exits."""
    from looming.vchan import registry

    entries = [registry.entry(member.name, port, registry_dir) for port in member.serves]
    deadline = time.monotonic() + PUBLISH_TIMEOUT
    assert member.process is not None
    while time.monotonic() < deadline and member.process.poll() is None:
        pid = member.process.pid
        if all(registry.read_pid(e.pid_path) == pid for e in entries):
            return
        time.sleep(0.02)


def start(members: list[Member], shares: dict[str, list[str]], registry_dir: Path) -> None:
    for member in start_order(members):
        start_member(member, shares[member.name], registry_dir)
        if any(member.name in other.peers for other in members):
            wait_until_published(member, registry_dir)


def _exit_code(status: int) -> int:
    return status if status >= 0 else 128 - status


def supervise(
    members: list[Member],
    shares: dict[str, list[str]],
    registry_dir: Path,
    budget: tuple[int, float] = DEFAULT_BUDGET,
) -> int:
    """Restart per policy; stop everyone on a final exit or a signal; the exit code."""
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    old_wakeup = signal.set_wakeup_fd(wake_write)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(wake_read, selectors.EVENT_READ, None)
            for member in members:
                selector.register(member.pidfd, selectors.EVENT_READ, member)
            code = _watch(selector, members, shares, registry_dir, budget, wake_read, received)
        stop_all(members)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(wake_read)
        os.close(wake_write)
    return code


def _watch(
    selector: selectors.BaseSelector,
    members: list[Member],
    shares: dict[str, list[str]],
    registry_dir: Path,
    budget: tuple[int, float],
    wake_read: int,
    received: list[int],
) -> int:
    """The supervision loop; returns the deployment's exit code."""
    while not received:
        pending = [m.restart_at for m in members if m.restart_at is not None]
        timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
        for key, _ in selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
                continue
            member: Member = key.data
            assert member.process is not None
            status = member.process.wait()
            code = _exit_code(status)
            selector.unregister(member.pidfd)
            os.close(member.pidfd)
            member.pidfd = -1
            now = time.monotonic()
            delay = restart_delay(member, now, budget) if should_restart(member, code) else None
            if delay is None:
                why = "" if member.policy == "never" else " and its restart budget is spent"
                print(
                    f"deploy: {member.name} exited with status {status}{why}; stopping the others",
                    file=sys.stderr,
                )
                return code
            print(
                f"deploy: {member.name} exited with status {status}; restarting in {delay:g} s "
                f"(policy {member.policy})",
                file=sys.stderr,
            )
            member.restart_at = now + delay
        for member in members:
            if member.restart_at is not None and member.restart_at <= time.monotonic():
                member.restart_at = None
                member.restarts.append(time.monotonic())
                start_member(member, shares[member.name], registry_dir)
                selector.register(member.pidfd, selectors.EVENT_READ, member)
    print(
        f"deploy: received {signal.Signals(received[0]).name}, stopping every unikernel",
        file=sys.stderr,
    )
    return 130 if received[0] == signal.SIGINT else 0


def janitor(launcher: int, registry_dir: Path) -> int:
    """Clean up after ``launcher`` however it ends: its registry, its unikernels' shared memory."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        watched = os.pidfd_open(launcher)
    except ProcessLookupError:
        watched = -1
    if watched >= 0:
        select.select([watched], [], [])
    # The unikernels die with the launcher (their parent-death signal): give
    # them a moment, then take what they left.
    for pause in (0.2, 0.5, 1.5):
        time.sleep(pause)
        shutil.rmtree(registry_dir, ignore_errors=True)
        recover_segments()
    return 0


def start_janitor(registry_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "looming.vchan.deploy",
            "--janitor",
            str(os.getpid()),
            str(registry_dir),
        ],
        start_new_session=True,  # a Ctrl-C to the terminal's group is the launcher's business
        stdin=subprocess.DEVNULL,
    )


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
    budget = parse_budget(str(deployment_options(app_dir).get("restart_budget", "5/10")))
    recover_deployments()
    registry_dir = Path(tempfile.mkdtemp(prefix=f"{DEPLOY_PREFIX}{os.getpid()}-", dir=DEPLOY_ROOT))
    start_janitor(registry_dir)
    try:
        start(members, shares, registry_dir)
        return supervise(members, shares, registry_dir, budget)
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
    parser.add_argument("--janitor", nargs=2, metavar=("PID", "DIR"), help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.janitor:
        return janitor(int(args.janitor[0]), Path(args.janitor[1]))
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
