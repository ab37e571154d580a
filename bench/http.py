"""Benchmark: the static website unikernel against python -m http.server and
uvicorn + Starlette StaticFiles, all serving the same htdocs folder, driven by wrk.

    .venv/bin/python bench/http.py [--quick] [--json PATH] [-t 1] [-c 16] [-d 5]

The looming server is built and run the way a user would: `looming configure
-t unix --port N`, `looming build`, `looming run --port N` in a temporary copy
of examples/static_website.
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
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import AbstractContextManager, contextmanager  # noqa: E402
from dataclasses import asdict  # noqa: E402
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
WrkResult = _common.WrkResult
background = _common.background
free_port = _common.free_port
progress = _common.progress
run_wrk = _common.run_wrk
table = _common.table
wait_for_http = _common.wait_for_http
write_json = _common.write_json

SITE = REPO / "examples" / "static_website"

UVICORN_APP = """\
import os

from starlette.applications import Starlette
from starlette.staticfiles import StaticFiles

app = Starlette()
app.mount("/", StaticFiles(directory=os.environ["LOOMING_BENCH_HTDOCS"], html=True))
"""

Server = Callable[[Path, int], AbstractContextManager[None]]


def looming_command() -> list[str]:
    beside_python = Path(sys.executable).with_name("looming")
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("looming")
    if found is None:
        raise SystemExit("the looming command is not installed: run `make venv` first")
    return [found]


@contextmanager
def looming_server(work: Path, port: int) -> Iterator[None]:
    app = work / "static_website"
    shutil.copytree(SITE, app, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__"))
    looming = looming_command()
    progress(f"looming configure -t unix --port {port} && looming build (in {app})")
    for verb in (["configure", "-t", "unix", "--port", str(port)], ["build"]):
        subprocess.run([*looming, *verb], cwd=app, check=True, stdout=subprocess.DEVNULL)
    with background([*looming, "run", "--port", str(port)], cwd=app, name="looming") as process:
        wait_for_http(f"http://127.0.0.1:{port}/")
        process.check_running()
        yield


@contextmanager
def http_server(work: Path, port: int) -> Iterator[None]:
    command = [
        sys.executable, "-m", "http.server", str(port),
        "--bind", "127.0.0.1", "--directory", str(SITE / "htdocs"),
    ]  # fmt: skip
    with background(command, name="http.server") as process:
        wait_for_http(f"http://127.0.0.1:{port}/")
        process.check_running()
        yield


@contextmanager
def uvicorn_server(work: Path, port: int) -> Iterator[None]:
    (work / "bench_static_app.py").write_text(UVICORN_APP)
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(work), "bench_static_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    os.environ["LOOMING_BENCH_HTDOCS"] = str(SITE / "htdocs")
    with background(command, name="uvicorn") as process:
        wait_for_http(f"http://127.0.0.1:{port}/")
        process.check_running()
        yield


def uvicorn_implementation() -> str:
    # uvicorn's defaults (--http auto, --loop auto) pick these when installed.
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"uvicorn {version_of('uvicorn')} ({http}, {loop}) + starlette {version_of('starlette')} StaticFiles"


def version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


PEERS: list[tuple[str, Server, Callable[[], str]]] = [
    ("looming", looming_server, lambda: f"looming.http (h11 {version_of('h11')} parsing, asyncio), unix target"),
    ("http.server", http_server, lambda: f"python -m http.server (Python {platform.python_version()}, HTTP/1.0, threads)"),
    ("uvicorn", uvicorn_server, uvicorn_implementation),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "-c", "--connections", type=int, default=16, help="wrk connections (default 16)"
    )
    parser.add_argument(
        "-d", "--duration", type=float, default=5.0, help="seconds per measurement (default 5)"
    )
    parser.add_argument(
        "--paths", nargs="+", default=None, help="paths to fetch (default / and /data/large.txt)"
    )
    parser.add_argument("--quick", action="store_true", help="2 s per measurement, only /")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    duration = 2.0 if args.quick else args.duration
    paths = args.paths or (["/"] if args.quick else ["/", "/data/large.txt"])
    warmup = 1.0

    results: dict[str, dict[str, Any]] = {}
    implementations: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="looming-bench-http-") as tmp:
        for name, server, describe in PEERS:
            implementations[name] = describe()
            port = free_port()
            work = Path(tmp) / name
            work.mkdir()
            with server(work, port):
                for path in paths:
                    url = f"http://127.0.0.1:{port}{path}"
                    run_wrk(
                        url, threads=args.threads, connections=args.connections, duration=warmup
                    )
                    progress(
                        f"{name}: wrk -t{args.threads} -c{args.connections} -d{duration:g}s {url}"
                    )
                    result = run_wrk(
                        url, threads=args.threads, connections=args.connections, duration=duration
                    )
                    results.setdefault(path, {})[name] = result
                    progress(
                        f"{name} {path}: {result.requests_per_second:,.0f} req/s, p99 {result.latency_p99_ms:.2f} ms"
                    )

    print()
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{duration:g}s, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    for name, description in implementations.items():
        print(f"  {name:12} {description}")
    ratios: dict[str, dict[str, float]] = {}
    for path, by_server in results.items():
        print()
        print(f"GET {path}")
        rows = [
            [
                name,
                f"{result.requests_per_second:,.0f}",
                f"{result.latency_p50_ms:.2f}",
                f"{result.latency_p99_ms:.2f}",
                str(result.errors + result.non_2xx),
            ]
            for name, result in by_server.items()
        ]
        print(table(["server", "req/s", "p50 ms", "p99 ms", "errors"], rows))
        mine = by_server["looming"]
        ratios[path] = {}
        for peer in ("http.server", "uvicorn"):
            other = by_server[peer]
            throughput = mine.requests_per_second / max(other.requests_per_second, 1e-9)
            latency = mine.latency_p99_ms / max(other.latency_p99_ms, 1e-9)
            ratios[path][f"looming/{peer} req/s"] = throughput
            ratios[path][f"looming/{peer} p99"] = latency
            print(
                f"  looming/{peer}: {throughput:.2f}x the requests/s,"
                f" {latency:.2f}x the p99 latency (lower is better)"
            )

    if args.json:
        payload: dict[str, Any] = {
            "wrk": {
                "threads": args.threads,
                "connections": args.connections,
                "duration_s": duration,
            },
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "implementations": implementations,
            "results": {
                path: {name: asdict(result) for name, result in by_server.items()}
                for path, by_server in results.items()
            },
            "ratios": ratios,
        }
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
