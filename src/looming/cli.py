"""The ``looming`` command: configure, build, run, describe and clean unikernels.

Bad input from the user is a clear message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from looming import __version__
from looming.errors import ConfigError, LoomingError, UsageError
from looming.extras import require_for

if TYPE_CHECKING:
    from looming.config.build import BuildReport

STATE_FILE = "_build/looming.json"

# Verbs provided by other parts of looming: name -> (module, one-line help).
# Each module has add_arguments(parser) and run(args) -> int.
PLUGIN_VERBS: dict[str, tuple[str, str]] = {
    "store": ("looming.store.cli", "work with a Git-compatible branchable store"),
    "sim": ("looming.sim.cli", "run unikernels on a deterministic simulated network"),
    "tls": (
        "looming.tls.cli",
        "TLS server and client for testing peers (like openssl s_server/s_client)",
    ),
}

DESCRIPTION = """\
looming builds unikernels: applications written against small device
interfaces (console, time, kv_ro, stack, ...) and linked at configure time
to the implementations one deployment needs.

A unikernel is a folder with config.py. In that folder:
  looming configure -t unix     resolve devices, write _build/unix/main.py
  looming build                 make dist/NAME-unix.pyz
  looming run                   run it (its keys: looming run --help)
"""


def _plugin_available(module: str) -> bool:
    base = Path(__file__).resolve().parent
    return base.joinpath(*module.split(".")[1:]).with_suffix(".py").is_file()


class OneLineParser(argparse.ArgumentParser):
    """A parser whose mistakes are one line on stderr and exit code 2 (the
    usage is for ``--help``); its sub-parsers are made of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def make_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; only the plugin named by ``verb`` is imported,
    so one area's dependencies never stand in the way of another's verb."""
    parser: argparse.ArgumentParser = OneLineParser(
        prog="looming",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"looming {__version__}")
    parser.add_argument(
        "--app",
        default=".",
        metavar="DIR",
        help="the application folder holding config.py (default: the current folder)",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    _add_configure(verbs)
    _add_build(verbs)
    verbs.add_parser(
        "run",
        help="run the built unikernel (keys as --KEY VALUE)",
        description="Run the built artifact. Arguments are the unikernel's keys, e.g. "
        "'looming run --port 9000'; 'looming run --help' lists them.",
        add_help=False,
    )
    _add_describe(verbs)
    verbs.add_parser(
        "clean",
        help="remove _build/ and dist/",
        description="Remove the generated _build/ and dist/ folders.",
    )
    for name, (module, summary) in PLUGIN_VERBS.items():
        if _plugin_available(module):
            sub = verbs.add_parser(name, help=summary, description=summary)
            sub.set_defaults(plugin=module)
            if name == verb:
                importlib.import_module(module).add_arguments(sub)
    return parser


def _add_configure(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    configure = verbs.add_parser(
        "configure",
        help="resolve the device graph for a target and write _build/TARGET/main.py",
        description="Resolve config.py's device graph for TARGET and write a readable, "
        "deterministic _build/TARGET/main.py. Keys given as --KEY VALUE become the "
        "built unikernel's defaults.",
        epilog="Target options depend on the target: looming configure -t TARGET --help.",
        add_help=False,
    )
    configure.add_argument(
        "-h",
        "--help",
        action="store_true",
        help="show this help with the target's options and the application's keys",
    )
    configure.set_defaults(configure_help=configure.format_help)
    configure.add_argument("-t", "--target", default="unix", help="the target (default: unix)")
    configure.add_argument(
        "--unikernel",
        metavar="NAME",
        help="which registered unikernel to configure, when config.py registers several",
    )


def _add_build(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    build = verbs.add_parser(
        "build",
        help="build the configured unikernel into dist/",
        description="Build the configured unikernel: a zipapp holding only the modules "
        "it reaches, with its kv_ro data crunched in.",
    )
    build.add_argument("-q", "--quiet", action="store_true", help="print only the artifact path")
    build.add_argument(
        "--list", action="store_true", help="list the modules packed into the artifact"
    )
    build.add_argument(
        "--refresh", action="store_true", help="fetch package lists again (vm: security updates)"
    )
    build.add_argument(
        "--oci",
        action="store_true",
        help="also write dist/NAME-oci/, an OCI image layout: unix target, a minimal "
        "Debian Python root file system running the zipapp, for container engines; vm "
        "target, the qcow2 disk image (see --disk-image) as a KubeVirt containerDisk",
    )
    build.add_argument(
        "--disk-image",
        metavar="FORMAT",
        help="vm target: also write dist/NAME-boot-ARCH.FORMAT, a bootable disk (GPT, an "
        "EFI system partition with a unified kernel image; BIOS boot too on x86_64), "
        "FORMAT raw or qcow2",
    )
    build.add_argument(
        "--disk-keys",
        metavar="KEYS",
        default="",
        help="vm target: unikernel keys the disk image boots with, e.g. --disk-keys='--dhcp'",
    )


def _add_describe(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    describe = verbs.add_parser(
        "describe",
        help="print the device graph (text, or Graphviz DOT with --dot)",
        description="Print the configured unikernel's device graph.",
    )
    describe.add_argument("--dot", action="store_true", help="print Graphviz DOT")
    describe.add_argument("-t", "--target", help="describe for this target instead")
    describe.add_argument(
        "--image",
        action="store_true",
        help="describe the built artifact instead: its size and what it contains",
    )


def _first_verb(args: list[str]) -> tuple[str | None, int]:
    """The verb and its index in ``args`` (skipping global options)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--app":
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return arg, i
    return None, len(args)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    verb, at = _first_verb(args_list)
    if verb in PLUGIN_VERBS:
        try:  # a verb whose part is an extra that is not installed: say which
            require_for(PLUGIN_VERBS[verb][0], f"looming {verb}")
        except UsageError as exc:
            print(f"looming: {exc}", file=sys.stderr)
            return 2
    parser = make_parser(verb)
    # Everything after `run` belongs to the unikernel, verbatim.
    run_keys: list[str] | None = None
    if verb == "run":
        run_keys = args_list[at + 1 :]
        args_list = args_list[: at + 1]
    args, rest = parser.parse_known_args(args_list)
    try:
        if args.verb is None:
            parser.print_help()
            return 2
        if getattr(args, "plugin", None):
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            code: int = importlib.import_module(args.plugin).run(args)
            return code
        app_dir = Path(args.app).resolve()
        if args.verb == "configure":
            return cmd_configure(app_dir, args, rest)
        if rest and args.verb != "run":
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.verb == "build":
            return cmd_build(app_dir, args)
        if args.verb == "run":
            return cmd_run(app_dir, run_keys or [])
        if args.verb == "describe":
            return cmd_describe(app_dir, args)
        if args.verb == "clean":
            return cmd_clean(app_dir)
    except (ConfigError, UsageError) as exc:
        print(f"looming: {exc}", file=sys.stderr)
        return 2
    except LoomingError as exc:
        print(f"looming: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown verb {args.verb}")


def _load_plan(
    app_dir: Path, target_name: str, options: dict[str, str], unikernel: str | None
) -> Any:
    from looming.config import loader, plan
    from looming.config.targets import get_target

    target = get_target(target_name)
    registry = loader.load(app_dir)
    chosen = registry.unikernels
    if unikernel is not None:
        chosen = [u for u in registry.unikernels if u.name == unikernel]
        if not chosen:
            names = ", ".join(u.name for u in registry.unikernels)
            raise UsageError(f"no unikernel named {unikernel!r}; config.py registers: {names}")
    elif len(chosen) > 1:
        names = ", ".join(u.name for u in registry.unikernels)
        raise UsageError(
            f"config.py registers several unikernels ({names}); pick one with --unikernel"
        )
    merged = {**target.default_options(), **options}
    return target, plan.resolve(chosen[0], app_dir, target, merged)


def _parse_key_overrides(plan: Any, rest: list[str]) -> dict[str, Any]:
    from looming.runtime import KeySpec, parse_keys
    from looming.runtime import UsageError as RuntimeUsage

    specs = [KeySpec(k.name, k.type_name, None, k.doc) for k in plan.keys]
    given = {arg.split("=", 1)[0] for arg in rest if arg.startswith("--")}
    try:
        values = parse_keys(specs, rest)
    except RuntimeUsage as exc:
        raise UsageError(str(exc)) from None
    return {
        s.name: getattr(values, s.name)
        for s in specs
        if s.option in given or "--" + s.name in given
    }


def cmd_configure(app_dir: Path, args: argparse.Namespace, rest: list[str]) -> int:
    from dataclasses import replace

    from looming.config import codegen
    from looming.config.targets import get_target

    target = get_target(args.target)
    target_parser = OneLineParser(prog=f"looming configure -t {target.name}", add_help=False)
    target.add_options(target_parser)
    if args.help:
        print(_configure_help(app_dir, args, target_parser, rest), end="")
        return 0
    target_args, keys_argv = target_parser.parse_known_args(rest)
    options = {k: str(v) for k, v in vars(target_args).items() if v is not None}
    target, plan = _load_plan(app_dir, target.name, options, args.unikernel)
    overrides = _parse_key_overrides(plan, keys_argv)
    plan.keys = [
        replace(k, default=overrides[k.name]) if k.name in overrides else k for k in plan.keys
    ]
    command_parts = ["looming configure", f"-t {target.name}"]
    command_parts += [f"--{k.replace('_', '-')} {v}" for k, v in sorted(options.items())]
    command_parts += [f"--{k.replace('_', '-')} {v}" for k, v in sorted(overrides.items())]
    source = codegen.generate(plan, " ".join(command_parts))
    out = app_dir / "_build" / target.name / "main.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(source, encoding="utf-8")
    tmp.replace(out)
    state = {
        "target": target.name,
        "unikernel": plan.unikernel.name,
        "options": options,
        "keys": {k: str(v) for k, v in overrides.items()},
        "crunch": [list(c) for d in plan.devices for c in d.impl.crunch],
        "served_folders": [f for d in plan.devices for f in d.impl.served_folders],
        "packages": list(plan.unikernel.packages),
        "job_modules": sorted({pj.job.module for pj in plan.jobs}),
    }
    (app_dir / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    shown_opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(options.items()))
    print(f"configured {plan.unikernel.name} for {target.name} ({shown_opts}): {_rel(out)}")
    return 0


def _configure_help(
    app_dir: Path, args: argparse.Namespace, target_parser: argparse.ArgumentParser, rest: list[str]
) -> str:
    """configure's help, then the target's options, then the application's keys
    (those of the implementations the options given choose, e.g. --net direct)."""
    parts = [args.configure_help(), ""]
    options = target_parser.format_help().split("\n", 1)[1].strip("\n")
    parts.append(f"options of the {args.target} target:")
    parts.append(options.split(":", 1)[1].strip("\n") if ":" in options else "  (none)")
    try:
        target_args, _keys = target_parser.parse_known_args(rest)
        chosen = {k: str(v) for k, v in vars(target_args).items() if v is not None}
        _target, plan = _load_plan(app_dir, args.target, chosen, args.unikernel)
    except (ConfigError, UsageError, LoomingError) as exc:
        parts += ["", f"keys: (config.py in {app_dir} could not be read: {exc})"]
        parts += _application_keys(app_dir, args.unikernel)
    else:
        parts += ["", f"keys of {plan.unikernel.name} (--KEY VALUE bakes in a default):"]
        parts += [f"  {k.option} {k.type_name.upper()}  {k.doc}" for k in plan.keys]
    return "\n".join(parts) + "\n"


def _application_keys(app_dir: Path, unikernel: str | None) -> list[str]:
    """The keys config.py itself declares, for a help whose target cannot link
    the application (its devices' keys depend on the target's choices)."""
    from looming.config import loader
    from looming.config.plan import KeyDecl

    try:
        chosen = loader.load(app_dir).unikernels
    except (ConfigError, UsageError, LoomingError):
        return []
    chosen = [u for u in chosen if unikernel is None or u.name == unikernel]
    keys = [KeyDecl.from_key(k) for u in chosen for job in u.jobs for k in job.keys]
    if not keys:
        return []
    lines = ["", "keys config.py declares (those of the devices depend on the target):"]
    return lines + [f"  {k.option} {k.type_name.upper()}  {k.doc}" for k in keys]


def _stale_inputs(app_dir: Path, artifact: Path) -> list[str]:
    """The configuration and source files changed since ``artifact`` was built."""
    built = artifact.stat().st_mtime
    skip = {"_build", "dist", "__pycache__"}
    newer = [
        path
        for path in app_dir.rglob("*")
        if path.is_file()
        and not skip.intersection(path.relative_to(app_dir).parts[:-1])
        and path.suffix == ".py"
        and path.stat().st_mtime > built
    ]
    state = app_dir / STATE_FILE
    if state.is_file() and state.stat().st_mtime > built:
        newer.append(state)
    return sorted({_rel(p) for p in newer})


def _state(app_dir: Path) -> dict[str, Any]:
    path = app_dir / STATE_FILE
    if not path.is_file():
        raise UsageError(f"{app_dir} is not configured; run 'looming configure -t unix' first")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def cmd_build(app_dir: Path, args: argparse.Namespace) -> int:
    if args.refresh:
        os.environ["LOOMING_REFRESH"] = "1"  # read by looming.vm.packages
    from looming.config.build import folder_notices
    from looming.config.targets import get_target

    state = _state(app_dir)
    target = get_target(state["target"])
    if args.oci and target.name not in ("unix", "vm"):
        raise UsageError(
            f"--oci makes an image of a unix- or vm-target unikernel; this one is configured "
            f"for {target.name}: run 'looming configure -t unix' (or -t vm) first"
        )
    if args.disk_image is not None or args.disk_keys or (args.oci and target.name == "vm"):
        from looming.vm.diskimage import check_build_options

        opts = state.get("options", {})
        check_build_options(target.name, opts, args.disk_image, args.oci, args.disk_keys)
    main_py = app_dir / "_build" / target.name / "main.py"
    config_py = app_dir / "config.py"
    if config_py.stat().st_mtime > main_py.stat().st_mtime:
        raise UsageError("config.py changed since 'looming configure'; configure again")
    started = time.perf_counter()
    if not args.quiet:
        print(f"building {state['unikernel']} for {target.name} ...", flush=True)
    crunch = [(str(name), str(folder)) for name, folder in state["crunch"]]
    notices = folder_notices(
        app_dir, [folder for _, folder in crunch] + list(state.get("served_folders", []))
    )
    report = target.build(app_dir, state["unikernel"], main_py, crunch)
    if args.oci and target.name == "unix":
        _build_oci(app_dir, str(state["unikernel"]), main_py, crunch)
    if target.name == "vm":
        from looming.vm.diskimage import build_artifacts

        for line in build_artifacts(
            report.artifact, args.disk_image, args.oci, args.disk_keys, lambda m: print(f"  {m}")
        ):
            print(f"  {line}", flush=True)
    elapsed = time.perf_counter() - started
    if args.quiet:
        print(_rel(report.artifact))
        return 0
    if args.list:
        for name in report.modules:
            print(f"  {name}")
    print(
        f"built {_rel(report.artifact)}: {report.size / 1024:.1f} KiB, "
        f"{len(report.modules)} modules, {report.crunched_files} crunched files "
        f"in {elapsed:.2f} s"
    )
    for line in _packed_lines(report) + notices:
        print(f"  {line}")
    return 0


def _packed_lines(report: BuildReport) -> list[str]:
    """What ``looming build`` says of the compiled packages and application files."""
    lines = []
    if report.compiled_packed:
        packed = ", ".join(report.compiled_packed)
        lines.append(f"packs compiled packages for {report.compiled_for}: {packed}")
    if report.app_files:
        named = ", ".join(report.app_files)
        lines.append(f"packs what the application's modules name beside them: {named}")
    host = sorted(set(report.external) - set(report.compiled_packed))
    if host:
        lines.append(f"uses installed packages with compiled code: {', '.join(host)}")
    return lines


def _build_oci(app_dir: Path, unikernel: str, main_py: Path, crunch: list[tuple[str, str]]) -> None:
    """``looming build --oci``: an OCI image layout beside the zipapp (looming.vm.oci)."""
    import platform

    from looming.vm.oci import build_layout

    arch = platform.machine() if platform.machine() in ("x86_64", "aarch64") else "x86_64"
    folder = build_layout(
        app_dir, unikernel, main_py, crunch, arch, lambda m: print(f"  {m}", flush=True)
    )
    print(f"  OCI image layout for {arch}: {_rel(folder)} (skopeo copy oci:{_rel(folder)} ...)")


def cmd_run(app_dir: Path, keys: list[str]) -> int:
    from looming.config.targets import get_target

    state = _state(app_dir)
    target = get_target(state["target"])
    artifact = target.artifact(app_dir, state["unikernel"])
    if not artifact.is_file():
        raise UsageError(f"{_rel(artifact)} is not built; run 'looming build' first")
    stale = _stale_inputs(app_dir, artifact)
    if stale:
        shown = ", ".join(stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
        print(
            f"looming: warning: {_rel(artifact)} is older than {shown}; "
            "run 'looming configure' and 'looming build' to run what they say",
            file=sys.stderr,
        )
    command = target.run_command(artifact, keys)
    sys.stdout.flush()
    os.execv(command[0], command)


def cmd_describe(app_dir: Path, args: argparse.Namespace) -> int:
    if args.image:
        from looming.config.targets import get_target

        state = _state(app_dir)
        target = get_target(state["target"])
        artifact = target.artifact(app_dir, state["unikernel"])
        if not artifact.is_file():
            raise UsageError(f"{_rel(artifact)} is not built; run 'looming build' first")
        print(target.describe_artifact(artifact), end="")
        return 0
    state_path = app_dir / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    target_name = args.target or state.get("target", "unix")
    options = state.get("options", {}) if target_name == state.get("target") else {}
    _target, plan = _load_plan(app_dir, target_name, options, state.get("unikernel"))
    print(describe_dot(plan) if args.dot else describe_text(plan), end="")
    return 0


def describe_text(plan: Any) -> str:
    opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(plan.options.items()))
    lines = [f"{plan.unikernel.name}: target {plan.target} {opts}".rstrip(), "devices:"]
    width = max((len(d.var) for d in plan.devices), default=0)
    for d in plan.devices:
        needs = f" <- {', '.join(d.dep_vars)}" if d.dep_vars else ""
        lines.append(
            f"  {d.var:<{width}}  {d.device.kind:<8} {d.impl.factory}  ({d.impl.summary}){needs}"
        )
    lines.append("jobs:")
    for pj in plan.jobs:
        lines.append(f"  {pj.job.target}({', '.join(pj.device_vars)})")
    lines.append("keys:")
    for k in plan.keys:
        lines.append(f"  {k.option} {k.type_name} = {k.default!r}  {k.doc}")
    return "\n".join(lines) + "\n"


def describe_dot(plan: Any) -> str:
    lines = [f'digraph "{plan.unikernel.name}" {{', "  rankdir=BT;", "  node [shape=box];"]
    for d in plan.devices:
        label = f"{d.var}\\n{d.device.kind}: {d.impl.class_name}"
        lines.append(f'  "{d.var}" [label="{label}"];')
        for dep in d.dep_vars:
            lines.append(f'  "{d.var}" -> "{dep}";')
    for i, pj in enumerate(plan.jobs):
        name = f"job{i}"
        lines.append(f'  "{name}" [label="{pj.job.target}", shape=ellipse];')
        for var in pj.device_vars:
            lines.append(f'  "{name}" -> "{var}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def cmd_clean(app_dir: Path) -> int:
    for name in ("_build", "dist"):
        path = app_dir / name
        if path.exists():
            shutil.rmtree(path)
            print(f"removed {_rel(path)}")
    return 0


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
