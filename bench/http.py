"""Benchmark: one Starlette application under looming and the servers Python
web developers use, interleaved in rounds, driven by wrk.

    .venv/bin/python bench/http.py [--quick] [--rounds N] [-c 32] [-d 3] [--json PATH]

Servers (each started once, measured in turn in every round, so drift of
this shared machine falls on all alike):

  looming            the app built into a unikernel (looming configure/build/run),
                     on its defaults: uvloop and httptools when installed
  looming-pure       the same unikernel with --loop asyncio --http-parser h11
  uvicorn            uvicorn with httptools and uvloop (what its defaults pick)
  uvicorn-h11        uvicorn --http h11 --loop asyncio
  hypercorn          hypercorn (asyncio worker)
  granian            granian --interface asgi, one worker

Paths: ``/plain`` (a short text response), ``/json`` and ``/static`` (a
16 KiB page held in memory by the app). For static files looming's own
StaticSite (the static website unikernel, its files crunched into memory) is
also measured as ``looming-static`` against the others' in-memory response.
Beside requests/s, each server's CPU time (its process tree's, from /proc)
per request answered is given: on a shared machine it moves less than
requests/s. Then each server's memory (RSS of its process tree) is read
before and with 1,000 idle keep-alive connections open, each having made
one request.

With ``--fairness``, each server also answers 4 ordinary clients while one
more connection keeps 64 pipelined requests in flight: the clients'
requests/s and latency show whether one pipelining connection holds back
the others.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script is called http.py: keep its folder off the import path, or
# `import http` (done by urllib and uvicorn) would find this file.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _BENCH_DIR]

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from dataclasses import asdict  # noqa: E402
from statistics import median  # noqa: E402
from typing import Any  # noqa: E402


def _load_common() -> Any:
    spec = importlib.util.spec_from_file_location("looming_bench_common", _BENCH_DIR / "_common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_common = _load_common()
REPO: Path = _common.REPO
background = _common.background
free_port = _common.free_port
progress = _common.progress
run_wrk = _common.run_wrk
table = _common.table
wait_for_http = _common.wait_for_http
write_json = _common.write_json

PAGE = (b"<!doctype html><title>bench</title>" + b"<p>looming bench page</p>\n" * 700)[:16384]

APP = f"""\
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

PAGE = {PAGE!r}


async def plain(request):
    return PlainTextResponse("Hello, world!")


async def json_(request):
    return JSONResponse({{"message": "Hello, world!"}})


async def static(request):
    return Response(PAGE, media_type="text/html; charset=utf-8")


app = Starlette(routes=[Route("/plain", plain), Route("/json", json_), Route("/static", static)])
"""

CONFIG = """\
from looming.config import clock, console, default_network, http_keys, key, main, register, stack

port = key("port", int, default=8000)
devices = [console(), stack(default_network()), clock()]
register("bench", [main("unikernel:Bench", devices, keys=[port, *http_keys()])])
"""

UNIKERNEL = """\
from typing import Any

from app import app

from looming.http.service import HttpSettings, serve_asgi


class Bench:
    def __init__(self, console: Any, stack: Any, clock: Any, *, port: int, **http: Any) -> None:
        self.console, self.stack, self.clock, self.port = console, stack, clock, port
        self.settings = HttpSettings.from_keys(**http)

    async def start(self) -> None:
        await serve_asgi(
            app, self.console, self.stack, clock=self.clock, port=self.port, settings=self.settings
        )
"""


def version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def looming_command() -> list[str]:
    beside_python = Path(sys.executable).with_name("looming")
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("looming")
    if found is None:
        raise SystemExit("the looming command is not installed: run `make venv` first")
    return [found]


def build_looming_app(work: Path, port: int, *, static_site: bool) -> list[str]:
    """Configure and build the app (or the static website) in ``work`` unless
    built already; the run command."""
    looming = looming_command()
    if static_site:
        app = work / "static_website"
        ignore = shutil.ignore_patterns("_build", "dist", "__pycache__")
        shutil.copytree(REPO / "examples" / "static_website", app, ignore=ignore)
        (app / "htdocs" / "bench.html").write_bytes(PAGE)
    else:
        app = work / "bench_app"
    if not app.exists():
        app.mkdir()
        (app / "app.py").write_text(APP)
        (app / "config.py").write_text(CONFIG)
        (app / "unikernel.py").write_text(UNIKERNEL)
    if not (app / "dist").exists():
        for verb in (["configure", "-t", "unix"], ["build"]):
            subprocess.run([*looming, *verb], cwd=app, check=True, stdout=subprocess.DEVNULL)
    command = [*looming, "--app", str(app), "run", "--port", str(port)]
    return command if static_site else [*command, "--max-connections", "0"]


def peer_commands(
    work: Path, port_of: dict[str, int], access_log: bool = False
) -> dict[str, tuple[list[str], str]]:
    """Name -> (command, path checked for readiness); with ``access_log``,
    every server logs each request (to a file or /dev/null, as the bench
    starts them), in the common log format where it can choose."""
    (work / "bench_app.py").write_text(APP)
    py = sys.executable
    app_dir = ["--app-dir", str(work)]

    def looming(name: str, static_site: bool = False) -> list[str]:
        # Built only when measured (configure and build take a few seconds).
        return (
            build_looming_app(work, port_of[name], static_site=static_site)
            if name in port_of
            else []
        )

    logs = "--access-log" if access_log else "--no-access-log"
    level = "info" if access_log else "warning"
    commands: dict[str, tuple[list[str], str]] = {
        "looming": (looming("looming"), "/plain"),
        "looming-pure": ([*looming("looming-pure"), "--loop", "asyncio", "--http-parser", "h11"], "/plain"),
        "looming-static": (looming("looming-static", static_site=True), "/bench.html"),
        "uvicorn": ([py, "-m", "uvicorn", *app_dir, "bench_app:app", "--port", str(port_of.get("uvicorn", 0)), logs, "--log-level", level, "--http", "httptools", "--loop", "uvloop"], "/plain"),
        "uvicorn-h11": ([py, "-m", "uvicorn", *app_dir, "bench_app:app", "--port", str(port_of.get("uvicorn-h11", 0)), logs, "--log-level", level, "--http", "h11", "--loop", "asyncio"], "/plain"),
        "hypercorn": ([py, "-m", "hypercorn", "--bind", f"127.0.0.1:{port_of.get('hypercorn', 0)}", "--log-level", level, *(["--access-logfile", "-"] if access_log else []), "bench_app:app"], "/plain"),
        "granian": ([py, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port_of.get("granian", 0)), "--workers", "1", "--log-level", level, logs, "bench_app:app"], "/plain"),
    }  # fmt: skip
    if access_log:
        # (the static website example has no access log key: it runs as it is)
        for name in ("looming", "looming-pure"):
            if commands[name][0]:
                commands[name][0].extend(["--access-log", "common"])
    return commands


def tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in KiB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(
                next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            )
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of ``pid`` and all its descendants, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total / ticks


def idle_connections_rss(pid: int, port: int, path: str, count: int) -> tuple[int, int, int]:
    """(RSS before, RSS with ``count`` idle keep-alive connections, connections that answered)."""
    before = tree_rss_kib(pid)
    sockets: list[socket.socket] = []
    answered = 0
    request = f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode()
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            sockets.append(sock)
        for sock in sockets:
            try:
                if sock.recv(65536).startswith(b"HTTP/1.1 200"):
                    answered += 1
            except OSError:
                pass
        time.sleep(1.0)
        with_idle = tree_rss_kib(pid)
    finally:
        for sock in sockets:
            sock.close()
    return before, with_idle, answered


@contextmanager
def servers(
    work: Path, names: list[str], access_log: bool = False
) -> Iterator[dict[str, tuple[Any, int, str]]]:
    ports = {name: free_port() for name in names}
    commands = peer_commands(work, ports, access_log)
    running: dict[str, tuple[Any, int, str]] = {}
    with ExitStack() as stack:
        for name in names:
            command, ready_path = commands[name]
            process = stack.enter_context(background(command, cwd=work, name=name))
            wait_for_http(f"http://127.0.0.1:{ports[name]}{ready_path}", timeout=60)
            process.check_running()
            running[name] = (process, ports[name], ready_path)
        yield running


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "-c", "--connections", type=int, default=32, help="wrk connections (default 32)"
    )
    parser.add_argument(
        "-d", "--duration", type=float, default=3.0, help="seconds per measurement (default 3)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--idle", type=int, default=1000, help="idle keep-alive connections for the memory figure"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 2 s (--breakdown: 3 x 2,000 requests)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--servers",
        metavar="A,B",
        help="only these servers (default: all installed; looming is always measured)",
    )
    parser.add_argument(
        "--paths", metavar="A,B", default="/plain,/json,/static", help="paths measured"
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the idle keep-alive memory figure"
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="every server logs each request (uvicorn's default; common format for looming)",
    )
    parser.add_argument(
        "--fairness",
        action="store_true",
        help=f"also measure {FAIR_CLIENTS} ordinary clients beside one pipelining {PIPELINE_DEPTH} requests",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="only split looming's per-request Python cost, in-process without sockets, "
        "into the application's own and the server's (see breakdown)",
    )
    args = parser.parse_args(argv)
    args.paths = [path for path in args.paths.split(",") if path]
    unknown = [path for path in args.paths if path not in ("/plain", "/json", "/static")]
    if unknown:
        parser.error(f"unknown path {unknown[0]!r}: choose among /plain, /json, /static")
    return args


PIPELINE_DEPTH = 64
"""Requests the pipelining client of the fairness figure keeps in flight."""
FAIR_CLIENTS = 4
"""Ordinary clients (one request at a time each) beside it."""
PIPELINE_SCRIPT = """\
init = function(args)
   local r = {}
   for i = 1, tonumber(args[1]) do r[i] = wrk.format() end
   req = table.concat(r)
end
request = function() return req end
"""


def run_beside_pipelining(url: str, work: Path, duration: float) -> tuple[Any, float]:
    """wrk's result for :data:`FAIR_CLIENTS` ordinary clients while one more
    connection pipelines :data:`PIPELINE_DEPTH` requests at a time; and that
    connection's requests/s. A server that answers one connection's
    pipelined requests before looking at the others starves the clients."""
    script = work / "pipeline.lua"
    if not script.exists():
        script.write_text(PIPELINE_SCRIPT)
    seconds = f"-d{max(1, round(duration))}s"
    hog_command = ["wrk", "-t1", "-c1", seconds, "-s", str(script), url, "--", str(PIPELINE_DEPTH)]
    with subprocess.Popen(hog_command, stdout=subprocess.PIPE, text=True) as hog:
        clients = run_wrk(url, threads=1, connections=FAIR_CLIENTS, duration=duration)
        hog_output = hog.communicate()[0]
    hog_rps = re.search(r"Requests/sec:\s+([\d.]+)", hog_output)
    if hog_rps is None:
        raise RuntimeError(f"cannot read wrk output:\n{hog_output}")
    return clients, float(hog_rps.group(1))


def measure_fairness(
    running: dict[str, tuple[Any, int, str]], work: Path, rounds: int, duration: float
) -> dict[str, list[tuple[Any, float]]]:
    """:func:`run_beside_pipelining` on each server's ready path, in interleaved rounds."""
    results: dict[str, list[tuple[Any, float]]] = {}
    names = list(running)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else list(reversed(names)):
            _process, port, ready_path = running[name]
            clients, hog = run_beside_pipelining(
                f"http://127.0.0.1:{port}{ready_path}", work, duration
            )
            results.setdefault(name, []).append((clients, hog))
            progress(
                f"round {round_index + 1} fairness {name}: clients {clients.requests_per_second:,.0f} req/s, p99 {clients.latency_p99_ms:.2f} ms; pipelining {hog:,.0f} req/s"
            )
    return results


def print_fairness(results: dict[str, list[tuple[Any, float]]]) -> None:
    print()
    print(
        f"{FAIR_CLIENTS} ordinary clients beside one pipelining {PIPELINE_DEPTH} requests (medians)"
    )
    rows = [
        [
            name,
            f"{median(c.requests_per_second for c, _ in pairs):,.0f}",
            f"{median(c.latency_p50_ms for c, _ in pairs):.2f}",
            f"{median(c.latency_p99_ms for c, _ in pairs):.2f}",
            f"{median(hog for _, hog in pairs):,.0f}",
        ]
        for name, pairs in results.items()
    ]
    print(table(["server", "clients req/s", "p50 ms", "p99 ms", "pipelining req/s"], rows))


def installed_servers() -> list[str]:
    """The servers to measure: those whose packages are installed."""
    names = [
        "looming",
        "looming-pure",
        "looming-static",
        "uvicorn",
        "uvicorn-h11",
        "hypercorn",
        "granian",
    ]
    needs = {"uvicorn": ("uvicorn", "httptools", "uvloop"), "uvicorn-h11": ("uvicorn",)}
    needs |= {"hypercorn": ("hypercorn",), "granian": ("granian",)}
    missing = {
        n for n, pkgs in needs.items() if any(version_of(p) == "not installed" for p in pkgs)
    }
    if missing:
        progress(f"left out (not installed): {', '.join(sorted(missing))}")
    return [n for n in names if n not in missing]


def measure(
    args: argparse.Namespace, names: list[str], rounds: int, duration: float
) -> tuple[
    dict[str, dict[str, list[Any]]],
    dict[str, dict[str, list[float]]],
    dict[str, tuple[int, int, int]],
    dict[str, list[tuple[Any, float]]],
]:
    """wrk's results and the server's CPU microseconds per request, per path
    and server, in interleaved rounds; then each server's memory before and
    with idle keep-alive connections."""
    paths = {path: names for path in args.paths}
    samples: dict[str, dict[str, list[Any]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}
    memory: dict[str, tuple[int, int, int]] = {}
    fairness: dict[str, list[tuple[Any, float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="looming-bench-http-") as tmp,
        servers(Path(tmp), names, args.access_log) as running,
    ):
        for _process, port, ready_path in running.values():
            run_wrk(
                f"http://127.0.0.1:{port}{ready_path}",
                threads=args.threads,
                connections=args.connections,
                duration=1.0,
            )
        for round_index in range(rounds):
            for path, who in paths.items():
                for name in who if round_index % 2 == 0 else list(reversed(who)):
                    process, port, _ready = running[name]
                    target = "/bench.html" if name == "looming-static" else path
                    if name == "looming-static" and path != "/static":
                        continue
                    cpu_before = tree_cpu_seconds(process.process.pid)
                    result = run_wrk(
                        f"http://127.0.0.1:{port}{target}",
                        threads=args.threads,
                        connections=args.connections,
                        duration=duration,
                    )
                    used = tree_cpu_seconds(process.process.pid) - cpu_before
                    per_request = used * 1e6 / max(result.requests, 1)
                    samples.setdefault(path, {}).setdefault(name, []).append(result)
                    cpu.setdefault(path, {}).setdefault(name, []).append(per_request)
                    progress(
                        f"round {round_index + 1} {path} {name}: {result.requests_per_second:,.0f} req/s, p99 {result.latency_p99_ms:.2f} ms, {per_request:.1f} us CPU/request, errors {result.errors + result.non_2xx}"
                    )
        if args.fairness:
            fairness.update(measure_fairness(running, Path(tmp), rounds, duration))
        for name, (process, port, ready_path) in running.items():
            if args.no_memory:
                break
            memory[name] = idle_connections_rss(process.process.pid, port, ready_path, args.idle)
            progress(
                f"{name}: RSS {memory[name][0]} KiB idle, {memory[name][1]} KiB with {memory[name][2]} keep-alive connections"
            )
    return samples, cpu, memory, fairness


def print_requests(
    samples: dict[str, dict[str, list[Any]]], cpu: dict[str, dict[str, list[float]]]
) -> dict[str, dict[str, dict[str, float]]]:
    """Each path's medians per server and looming's ratios to the others."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for path, by_server in samples.items():
        print()
        print(f"GET {path}")
        rows = []
        for name, results in by_server.items():
            rps = median(r.requests_per_second for r in results)
            p50 = median(r.latency_p50_ms for r in results)
            p99s = [r.latency_p99_ms for r in results]
            p99 = median(p99s)
            errors = sum(r.errors + r.non_2xx for r in results)
            used = median(cpu[path][name])
            summary.setdefault(path, {})[name] = {
                "rps": rps,
                "p50_ms": p50,
                "p99_ms": p99,
                "errors": errors,
                "cpu_us_per_request": used,
            }
            # The p99's spread over the rounds: on a shared machine a pause of
            # the whole process (another program's turn) sets it, whoever serves.
            spread = f"{min(p99s):.1f}-{max(p99s):.1f}"
            rows.append(
                [
                    name,
                    f"{rps:,.0f}",
                    f"{p50:.2f}",
                    f"{p99:.2f}",
                    spread,
                    f"{used:.1f}",
                    str(errors),
                ]
            )
        print(
            table(
                ["server", "req/s", "p50 ms", "p99 ms", "p99 rounds", "CPU us/req", "errors"], rows
            )
        )
        mine = summary[path]["looming"]
        for peer in ("looming-pure", "uvicorn", "uvicorn-h11", "hypercorn", "granian"):
            if peer in summary[path]:
                theirs = summary[path][peer]
                print(
                    f"  looming/{peer}: {mine['rps'] / max(theirs['rps'], 1e-9):.2f}x the requests/s, "
                    f"{theirs['cpu_us_per_request'] / max(mine['cpu_us_per_request'], 1e-9):.2f}x less CPU per request"
                )
        if path == "/static" and "uvicorn" in summary[path] and "looming-static" in summary[path]:
            static = summary[path]["looming-static"]
            theirs = summary[path]["uvicorn"]
            print(
                f"  looming StaticSite/uvicorn (in-memory page): {static['rps'] / max(theirs['rps'], 1e-9):.2f}x the requests/s, "
                f"{theirs['cpu_us_per_request'] / max(static['cpu_us_per_request'], 1e-9):.2f}x less CPU per request"
            )
    return summary


RAW_APP = """\
async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
"""
"""A raw ASGI application: almost all of its cost through a server is the server's."""


class _NullTransport:
    """A transport that counts writes and sends nothing (no kernel in the figures)."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _NullFlow:
    """What the fast path borrows a transport from (as the socket stack's flows lend theirs)."""

    local_address = ("127.0.0.1", 8000)
    remote_address = ("127.0.0.1", 40000)

    def __init__(self) -> None:
        self.transport = _NullTransport()

    def lend_transport(self, protocol: Any) -> _NullTransport:
        return self.transport

    def take_back(self, pending: bytes, **state: Any) -> None:
        raise RuntimeError("the fast path handed the connection back")

    def connection_lost(self, exc: Exception | None) -> None: ...


def _per_request_us(step: Any, count: int, repeats: int) -> float:
    """The fastest of ``repeats`` runs of ``count`` steps, in microseconds of
    this thread's CPU time a step (time other programs take is not counted)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.thread_time_ns()
        for _ in range(count):
            step()
        best = min(best, (time.thread_time_ns() - started) / count / 1e3)
    return best


BURST = 32
"""Connections the breakdown feeds a request each before the loop's turn
ends, as wrk's 32 connections are answered together under load: their
responses are then written together, as the server does after a turn
(see looming.http.fast_asgi.flush_writes)."""


def _through_fast_path(app: Any, path: str, count: int, repeats: int) -> float:
    """Microseconds a keep-alive GET of ``path`` takes on looming's fast path
    (its head fed to each of :data:`BURST` connections as a read, their
    responses written to nothing at the end of each such turn)."""
    from looming.http import AsgiAdapter, ServerConfig
    from looming.http.fast_asgi import flush_writes
    from looming.http.server import HttpServer
    from looming.unix.clock import UnixClock

    adapter = AsgiAdapter(app)
    server = HttpServer(adapter, ServerConfig(parser="httptools"), clock=UnixClock())
    flows = [_NullFlow() for _ in range(BURST)]
    receivers = [
        adapter.fast_connection(server, flow, lambda: None).data_received for flow in flows
    ]
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n".encode()

    def turn() -> None:
        for received in receivers:
            received(head)
        flush_writes(server)  # (what the loop's next turn does)

    turns = max(1, count // BURST)
    us = _per_request_us(turn, turns, repeats) / BURST
    written = sum(flow.transport.writes for flow in flows)
    if written < turns * BURST * repeats:
        raise RuntimeError(f"{path}: {written} responses to {turns * BURST * repeats} requests")
    return us


def _app_alone(app: Any, path: str, count: int, repeats: int) -> float:
    """Microseconds the application takes for ``path`` called directly, with
    a scope copied from a template and receive/send that do nothing."""
    template = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
                "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
                "raw_path": path.encode(), "query_string": b"", "root_path": "",
                "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}  # fmt: skip
    headers = [(b"host", b"127.0.0.1:8000")]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    def step() -> None:
        scope = template.copy()
        scope["headers"], scope["state"], scope["extensions"] = list(headers), {}, {}
        try:
            app(scope, receive, send).send(None)
        except StopIteration:
            return
        raise RuntimeError(f"{path}: the application waited")

    return _per_request_us(step, count, repeats)


def breakdown(paths: list[str], count: int = 20_000, repeats: int = 7) -> list[list[str]]:
    """Rows of (application and path, the application alone, through the
    fast path, the server's share), in microseconds a request, measured in a
    callback of the event loop looming would run (uvloop when installed).
    The application's own part is what any server pays for it; only the
    server's share (and the kernel's, not measured here) differs between servers."""
    import asyncio

    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    apps: dict[str, Any] = {}
    for name, source in (("raw ASGI", RAW_APP), ("Starlette", APP)):
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<bench {name}>", "exec"), namespace)
        apps[name] = namespace["app"]
    cases = [("raw ASGI", "/plain"), *(("Starlette", path) for path in paths)]
    rows: list[list[str]] = []

    def measure() -> None:
        for name, path in cases:
            alone = _app_alone(apps[name], path, count, repeats)
            total = _through_fast_path(apps[name], path, count, repeats)
            rows.append([f"{name} {path}", f"{alone:.2f}", f"{total:.2f}", f"{total - alone:.2f}"])

    try:
        loop.run_until_complete(_in_callback(loop, measure))
        runners = asyncio.all_tasks(loop)  # the servers' idle runner tasks
        for task in runners:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*runners, return_exceptions=True))
    finally:
        loop.close()
    return rows


async def _in_callback(loop: Any, work: Any) -> None:
    """Run ``work`` in a callback of ``loop`` (as transports call protocols), not in a task."""
    done = loop.create_future()

    def call() -> None:
        try:
            work()
        except BaseException as error:  # handed to the waiting task
            done.set_exception(error)
        else:
            done.set_result(None)

    loop.call_soon(call)
    await done


def print_breakdown(paths: list[str], quick: bool) -> None:
    count, repeats = (2_000, 3) if quick else (20_000, 7)
    print(
        f"per-request Python cost in-process, no sockets (fastest of {repeats} x {count:,}; Python {platform.python_version()}, starlette {version_of('starlette')})"
    )
    headers = ["application and path", "app alone us", "through looming us", "server's share us"]
    print(table(headers, breakdown(paths, count, repeats)))


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.breakdown:
        print_breakdown(args.paths, args.quick)
        return 0
    rounds, duration = (1, 2.0) if args.quick else (args.rounds, args.duration)
    names = installed_servers()
    if args.servers:
        wanted = {"looming", *args.servers.split(",")}
        unknown = wanted - set(names)
        if unknown:
            print(f"error: unknown or not installed server {sorted(unknown)[0]!r}", file=sys.stderr)
            return 2
        names = [name for name in names if name in wanted]
    samples, cpu, memory, fairness = measure(args, names, rounds, duration)
    print()
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{duration:g}s x {rounds} interleaved rounds (medians){', access logs on' if args.access_log else ''}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"  starlette {version_of('starlette')}, h11 {version_of('h11')}, uvicorn {version_of('uvicorn')} (httptools {version_of('httptools')}, uvloop {version_of('uvloop')}), hypercorn {version_of('hypercorn')}, granian {version_of('granian')}"
    )
    summary = print_requests(samples, cpu)
    print()
    print(f"memory with {args.idle} idle keep-alive connections (RSS of the process tree)")
    rows = [
        [name, f"{b / 1024:.1f}", f"{w / 1024:.1f}", f"{(w - b) / max(n, 1):.1f}", str(n)]
        for name, (b, w, n) in memory.items()
    ]
    print(table(["server", "MiB before", "MiB with", "KiB/conn", "answered"], rows))
    if fairness:
        print_fairness(fairness)
    print()
    print(
        "goals: looming >= 1.5x uvicorn (httptools+uvloop); >= 0.8x granian on /plain; static >= 2x uvicorn"
    )
    if args.json:
        write_json(args.json, {
            "wrk": {"threads": args.threads, "connections": args.connections, "duration_s": duration, "rounds": rounds},
            "versions": {p: version_of(p) for p in ("starlette", "h11", "uvicorn", "httptools", "uvloop", "hypercorn", "granian")},
            "summary": summary,
            "samples": {path: {n: [asdict(r) for r in rs] for n, rs in by.items()} for path, by in samples.items()},
            "memory_kib": {n: {"before": b, "with_idle": w, "answered": c} for n, (b, w, c) in memory.items()},
            "fairness": {n: [{"clients": asdict(c), "pipelining_rps": h} for c, h in pairs] for n, pairs in fairness.items()},
        })  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
