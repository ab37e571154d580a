"""VM images: size and boot-to-first-response under qemu, beside the unix target.

For x86_64 and aarch64 (qemu software emulation, no KVM), the static
website, the HTTPS website, the ASGI (Starlette) and FastAPI apps and the
Git-backed website (its store in the guest's memory) are built as a VM
image (twice:
first build and rebuild) and booted with a TAP device in a network
namespace; the time from starting ``looming run`` to the first HTTP answer
on the host side is measured, and the time until Python in the guest prints
its first line. The same unikernel on the unix target (host sockets, the
host's Python) is the baseline: its artifact's size and its time to first
answer. With ``--baseline REV``, each VM image is also built from the
looming sources of git revision REV and booted in the same interleaved
rounds, so a change is measured against what it changes under the same
load. Beside the wall time, the qemu process's CPU time at the first
answer is shown: the guest's work, which a shared host's load moves far
less. With ``--trace``, each image is booted once more with ``--vm-trace``
and the guest's own stages are shown: the kernel until /init, the
interpreter starting, /init's modules and network, the unikernel's start
until its stack opens the NIC. Run as root (namespaces, TAP):

    .venv/bin/python bench/image.py [--quick] [--trace] [--json PATH] [--examples a,b] [--arch ARCH]
        [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
ARCHES = ("x86_64", "aarch64")

# Polls an HTTP(S) server until it answers; prints the monotonic time it did.
# Run inside the namespace, so its clock is the bench's (CLOCK_MONOTONIC).
POLL = """
import socket, ssl, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
context = ssl.create_default_context() if sys.argv[4] == "1" else None
if context is not None:
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
while time.monotonic() < limit:
    try:
        with socket.create_connection((host, port), timeout=0.5) as raw:
            s = raw if context is None else context.wrap_socket(raw, server_hostname="localhost")
            s.settimeout(5)
            s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            if s.recv(12).startswith(b"HTTP/1.1 200"):
                print(time.monotonic(), flush=True)
                sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
"""


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def looming(app: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "looming.cli", *args],
        cwd=app,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise SystemExit(f"looming {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def copy_app(name: str, dest: Path, label: str) -> Path:
    app = dest / f"{name}-{label}"
    shutil.copytree(
        EXAMPLES / name, app, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__")
    )
    return app


class Namespace:
    """A network namespace with a TAP device holding 10.0.0.1/24."""

    def __init__(self) -> None:
        suffix = os.getpid() % 100000
        self.name = f"loomingbench{suffix}"
        self.tap = f"loomingb{suffix}"

    def __enter__(self) -> Namespace:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        for args in (
            ["netns", "add", self.name],
            ["-n", self.name, "tuntap", "add", "dev", self.tap, "mode", "tap"],
            ["-n", self.name, "addr", "add", "10.0.0.1/24", "dev", self.tap],
            ["-n", self.name, "link", "set", self.tap, "up"],
            ["-n", self.name, "link", "set", "lo", "up"],
        ):
            subprocess.run(["ip", *args], check=True, capture_output=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


def first_answer(
    start_command: list[str],
    poll_prefix: list[str],
    host: str,
    port: int,
    tls: bool,
    console: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[float, float, float]:
    """(seconds to the unikernel's first console line, seconds to the first
    HTTP(S) answer, CPU seconds qemu had used by then: nan without qemu)
    after starting ``start_command``; it is stopped after, and its whole
    console goes to ``console`` when given."""
    poller = subprocess.Popen(
        [*poll_prefix, sys.executable, "-c", POLL, host, str(port), "150", str(int(tls))],
        stdout=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    server = subprocess.Popen(
        start_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    ready_at = float("nan")
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if console is not None:
                console.append(line)
            if "serving" in line:
                ready_at = time.monotonic() - started
                break
        answer, _ = poller.communicate(timeout=160)
        cpu = qemu_cpu_seconds(server.pid)
        if poller.returncode != 0:
            raise SystemExit(f"no answer from {host}:{port}")
        return ready_at, float(answer) - started, cpu
    finally:
        server.terminate()
        rest, _ = server.communicate(timeout=30)
        if console is not None:
            console.append(rest)
        if poller.poll() is None:
            poller.kill()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry))
    return found


def qemu_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of the qemu process under ``pid`` (nan if none)."""
    pending = [pid]
    while pending:
        process = pending.pop()
        try:
            name = Path(f"/proc/{process}/comm").read_text().strip()
            stat = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if name.startswith("qemu-system"):
            return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        pending += _children(process)
    return float("nan")


@dataclass(frozen=True)
class Example:
    name: str
    manifest: str  # the unikernel's name, as dist/ names its artifacts
    port: int
    tls: bool
    arches: tuple[str, ...]
    vm_options: tuple[str, ...] = ()  # given to `looming configure -t vm`


EXAMPLES_MEASURED = [
    Example("static_website", "website", 8080, False, ARCHES),
    Example("https_website", "https_website", 8443, True, ARCHES),
    Example("asgi", "asgi", 8000, False, ARCHES),
    Example("fastapi", "fastapi", 8000, False, ARCHES),
    # The Git store on the VM's disk (made by the first boot, in dist/).
    Example("store_website", "store-website", 8080, False, ARCHES),
]


def build_vm(
    work: Path, example: Example, arch: str, env: dict[str, str] | None = None, label: str = ""
) -> dict[str, object]:
    app = copy_app(example.name, work, f"{arch}{label}")
    looming(app, "configure", "-t", "vm", "--arch", arch, *example.vm_options, env=env)
    began = time.monotonic()
    looming(app, "build", env=env)
    first = time.monotonic() - began
    began = time.monotonic()
    looming(app, "build", env=env)  # everything cached: the rebuild after an edit
    rebuild = time.monotonic() - began
    path = app / "dist" / f"{example.manifest}-vm.json"
    manifest = json.loads(path.read_text())
    return {
        "path": path, "first_build_s": first, "rebuild_s": rebuild, "manifest": manifest,
        "env": env,
    }  # fmt: skip


def baseline_env(work: Path, revision: str) -> dict[str, str]:
    """An environment whose looming is the sources of git ``revision``."""
    source = work / f"looming-{revision}"
    source.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision, "src"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {revision}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    return {**os.environ, "PYTHONPATH": str(source / "src")}


def build_cases(
    work: Path, examples: list[Example], arches: set[str], baseline: str | None = None
) -> dict[str, dict[str, object]]:
    """Each example on the unix target and as a VM image per architecture
    (and with ``baseline``, as built by that git revision's looming too)."""
    env = baseline_env(work, baseline) if baseline else None
    cases: dict[str, dict[str, object]] = {}
    for example in examples:
        unix_app = copy_app(example.name, work, "unix")
        looming(unix_app, "configure", "-t", "unix")
        began = time.monotonic()
        looming(unix_app, "build")
        cases[f"{example.name} unix"] = {
            "app": unix_app, "port": example.port, "tls": example.tls,
            "first_build_s": time.monotonic() - began,
            "size": (unix_app / "dist" / f"{example.manifest}-unix.pyz").stat().st_size,
        }  # fmt: skip
        for arch in (a for a in example.arches if a in arches):
            progress(f"{example.name} {arch}: building the image (twice)")
            built = build_vm(work, example, arch)
            cases[f"{example.name} {arch}"] = {**built, "port": example.port, "tls": example.tls}
            if baseline:
                progress(f"{example.name} {arch}: building the image as {baseline} did")
                built = build_vm(work, example, arch, env, f"-{baseline}")
                name = f"{example.name} {arch} {baseline}"
                cases[name] = {**built, "port": example.port, "tls": example.tls}
    return cases


def measure(
    cases: dict[str, dict[str, object]], runs: int
) -> dict[str, list[tuple[float, float, float]]]:
    """Start to first answer, interleaved: unix and each VM in turn, so a
    change in the host's load (shared machines) falls on all alike."""
    times: dict[str, list[tuple[float, float, float]]] = {label: [] for label in cases}
    with Namespace() as namespace:
        inside = ["ip", "netns", "exec", namespace.name]
        for i in range(runs):
            for n, (label, case) in enumerate(cases.items()):
                progress(f"{label}: start to first answer, run {i + 1}/{runs}")
                port = int(str(case["port"])) + (0 if "unix" not in label else 10000 + n)
                if "unix" in label:
                    command = [
                        sys.executable, "-m", "looming.cli", "--app", str(case["app"]), "run",
                        "--port", str(port), "--ipv4", "127.0.0.1/8",
                    ]  # fmt: skip
                    figures = first_answer(command, [], "127.0.0.1", port, bool(case["tls"]))
                else:
                    command = [
                        *inside, sys.executable, "-m", "looming.vm.launch", str(case["path"]),
                        "--vm-tap", namespace.tap, "--vm-timeout", "150",
                    ]  # fmt: skip
                    env = case.get("env")
                    figures = first_answer(
                        command, inside, "10.0.0.2", port, bool(case["tls"]),
                        env=env if isinstance(env, dict) else None,
                    )  # fmt: skip
                times[label].append(figures)
    return times


# The guest's boot stages in a --vm-trace console: the kernel's printk stamp
# or /init's own (seconds since the guest's boot, on the host's clock under TCG).
TRACE_STAGES = (
    ("kernel", re.compile(r"^\[\s*([0-9.]+)\] Run /init as init process")),
    ("python", re.compile(r"^looming-vm:\s+([0-9.]+) /init started")),
    ("modules", re.compile(r"^looming-vm:\s+([0-9.]+) modules loaded")),
    ("network", re.compile(r"^looming-vm:\s+([0-9.]+) network configured")),
    ("nic open", re.compile(r"^\[\s*([0-9.]+)\] device \S+ entered promiscuous mode")),
)


def boot_stages(console: str) -> dict[str, float]:
    """When the guest reached each of :data:`TRACE_STAGES` (those it printed)."""
    stages: dict[str, float] = {}
    for line in console.splitlines():
        for stage, pattern in TRACE_STAGES:
            found = pattern.match(line)
            if found and stage not in stages:
                stages[stage] = float(found.group(1))
    return stages


def trace_boots(cases: dict[str, dict[str, object]]) -> dict[str, dict[str, float]]:
    """One boot of each VM case with --vm-trace: the guest's own stages."""
    stages: dict[str, dict[str, float]] = {}
    with Namespace() as namespace:
        inside = ["ip", "netns", "exec", namespace.name]
        for label, case in cases.items():
            if "unix" in label:
                continue
            progress(f"{label}: a traced boot")
            command = [
                *inside, sys.executable, "-m", "looming.vm.launch", str(case["path"]),
                "--vm-tap", namespace.tap, "--vm-timeout", "150", "--vm-trace",
            ]  # fmt: skip
            console: list[str] = []
            env = case.get("env")
            _ready, answer, _cpu = first_answer(
                command, inside, "10.0.0.2", int(str(case["port"])), bool(case["tls"]), console,
                env if isinstance(env, dict) else None,
            )  # fmt: skip
            stages[label] = {**boot_stages("".join(console)), "answer (host)": answer}
    return stages


def report_stages(stages: dict[str, dict[str, float]]) -> None:
    """Each traced boot's stages as the time each took after the one before."""
    names = [stage for stage, _pattern in TRACE_STAGES]
    print()
    print(
        "one traced boot each (--vm-trace, which itself slows the console): seconds in each stage"
    )
    header = f"{'case':<32} " + " ".join(f"{n:>8}" for n in names) + f" {'answer':>8}"
    print(header)
    print("-" * len(header))
    for label, reached in stages.items():
        previous, cells = 0.0, []
        for name in names:
            at = reached.get(name)
            cells.append(f"{'-':>8}" if at is None else f"{at - previous:>8.2f}")
            previous = previous if at is None else at
        print(f"{label:<32} " + " ".join(cells) + f" {reached['answer (host)']:>8.2f}")
    print(
        "kernel: to 'Run /init'; python: the interpreter starting /init; modules, network:\n"
        "/init's stages; nic open: the unikernel's imports and start until its stack opens\n"
        "the NIC; answer: from starting looming run to the first answer, on the host."
    )


def summarise(
    cases: dict[str, dict[str, object]], times: dict[str, list[tuple[float, float, float]]]
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for label, case in cases.items():
        manifest = case.get("manifest")
        entry: dict[str, float] = {
            "first_build_s": float(str(case["first_build_s"])),
            "python_running_s": statistics.median(t[0] for t in times[label]),
            "first_answer_s": statistics.median(t[1] for t in times[label]),
            "qemu_cpu_s": statistics.median(t[2] for t in times[label]),
        }
        if isinstance(manifest, dict):
            entry["size_bytes"] = manifest["kernel_size"] + manifest["initrd_size"]
            entry["booted_bytes"] = manifest["booted_size"]
            entry["rebuild_s"] = float(str(case["rebuild_s"]))
        else:
            entry["size_bytes"] = entry["booted_bytes"] = float(str(case["size"]))
        results[label] = entry
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one boot per case (default: five)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    names = [e.name for e in EXAMPLES_MEASURED]
    parser.add_argument(
        "--examples", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}"
    )
    parser.add_argument("--arch", choices=ARCHES, help="only this architecture (default: both)")
    parser.add_argument(
        "--trace", action="store_true", help="also one traced boot per image: the guest's stages"
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also build each VM image with the looming of git revision REV, booted interleaved",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/image.py needs root (a network namespace and a TAP device)", file=sys.stderr)
        return 2
    wanted = args.examples.split(",")
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"unknown examples {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    examples = [e for e in EXAMPLES_MEASURED if e.name in wanted]
    runs = 1 if args.quick else 5
    with tempfile.TemporaryDirectory(prefix="looming-bench-image-") as tmp:
        arches = {args.arch} if args.arch else set(ARCHES)
        cases = build_cases(Path(tmp), examples, arches, args.baseline)
        results = summarise(cases, measure(cases, runs))
        stages = trace_boots(cases) if args.trace else {}
    report(results, runs)
    if stages:
        report_stages(stages)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        progress(f"wrote {args.json}")
    return 0


def report(results: dict[str, dict[str, float]], runs: int) -> None:
    import platform

    print()
    print(
        f"median of {runs} run(s); qemu TCG (no KVM); Python {platform.python_version()}, "
        f"{subprocess.run(['qemu-system-x86_64', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}"
    )
    header = (
        f"{'case':<32} {'packed MB':>9} {'booted MB':>9} {'build s':>8} {'rebuild s':>9} "
        f"{'python s':>9} {'answer s':>9} {'x unix':>7} {'qemu cpu s':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, figures in results.items():
        unix = results[name.split()[0] + " unix"]
        print(
            f"{name:<32} {figures['size_bytes'] / 1e6:>9.2f} {figures['booted_bytes'] / 1e6:>9.2f} "
            f"{figures['first_build_s']:>8.1f} {figures.get('rebuild_s', float('nan')):>9.1f} "
            f"{figures['python_running_s']:>9.2f} {figures['first_answer_s']:>9.2f} "
            f"{figures['first_answer_s'] / unix['first_answer_s']:>7.1f} "
            f"{figures['qemu_cpu_s']:>10.2f}"
        )
    print(
        "packed: kernel as stored (xz) + initramfs, decimal MB; booted: kernel unpacked +\n"
        "initramfs (what qemu loads); unix: the zipapp alone (it uses the host's Python).\n"
        "build s: first build with the Debian packages and wheels cached; rebuild s: the\n"
        "same build again. python s: to the unikernel's 'serving' line; answer s: to the\n"
        "first HTTP (or HTTPS) answer on the host side, from starting looming run; qemu cpu\n"
        "s: the CPU time qemu had used by then (the guest's work, less moved by the load).\n"
        "A case ending in a git revision was built by that revision's looming (--baseline)."
    )


if __name__ == "__main__":
    sys.exit(main())
