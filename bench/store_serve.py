"""Benchmark: ``looming store serve`` beside ``git http-backend``, over smart HTTP.

    .venv/bin/python bench/store_serve.py [--mb N] [--rounds R]

Each round pushes a commit holding one new file of N MB of random bytes
(20 by default) and clones the repository, with the git CLI as the client,
first to looming (``looming store serve`` with a token, as a separate
process) and then to git's own smart HTTP server (``git http-backend`` run
as CGI by Python's threading HTTP server), interleaved round by round. The
client sets ``http.postBuffer`` above the pack size so both servers get a
Content-Length body (the CGI runner cannot take a chunked one). Printed:
median seconds per operation and looming/git ratios, and the peak RSS of
the looming server process.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import CGIHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TOKEN = "bench-token-0123456789abcdef"
GIT = ["git", "-c", "http.postBuffer=1000000000", "-c", "user.name=b", "-c", "user.email=b@b"]


def git(*args: str, cwd: Path) -> None:
    done = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace')}")


@contextmanager
def looming_server(repo: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    env = {**os.environ, "LOOMING_STORE_TOKEN": TOKEN}
    command = [sys.executable, "-m", "looming.store.cli", "-C", str(repo), "serve", "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    try:
        assert server.stdout is not None
        found = re.search(rb"http://127\.0\.0\.1:(\d+)/", server.stdout.readline())
        assert found is not None, "store serve did not start"
        yield f"http://u:{TOKEN}@127.0.0.1:{int(found.group(1))}/", server
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


@contextmanager
def git_server(root: Path) -> Iterator[str]:
    cgi = root / "cgi-bin"
    cgi.mkdir()
    script = cgi / "git"
    script.write_text("#!/bin/sh\nexec git http-backend\n")
    script.chmod(0o755)
    os.environ.update(GIT_PROJECT_ROOT=str(root), GIT_HTTP_EXPORT_ALL="1")
    here = os.getcwd()
    os.chdir(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), CGIHTTPRequestHandler)
    CGIHTTPRequestHandler.log_message = lambda *args: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cgi-bin/git/peer.git"
    finally:
        server.shutdown()
        os.chdir(here)


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timed(*args: str, cwd: Path) -> float:
    start = time.perf_counter()
    git(*args, cwd=cwd)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        return run(work, options.mb, options.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, mb: int, rounds: int) -> int:
    import dulwich

    from looming.store.repo import Repo
    from looming.unix.clock import UnixClock

    Repo.init(str(work / "looming.git"), clock=UnixClock()).close()
    subprocess.run(["git", "init", "-q", "--bare", str(work / "peer.git")], check=True)
    git("config", "http.receivepack", "true", cwd=work / "peer.git")
    if os.getuid() == 0:
        # Python's CGI runner drops to "nobody" before running a script, and
        # git refuses a repository its user does not own.
        work.chmod(0o755)
        subprocess.run(["chown", "-R", "nobody", str(work / "peer.git")], check=True)
    times: dict[str, list[float]] = {}
    with looming_server(work / "looming.git") as (looming_url, server), git_server(work) as git_url:
        for round_number in range(rounds):
            for name, url in (("looming", looming_url), ("git", git_url)):
                client = work / f"client-{name}"
                if round_number == 0:
                    git("init", "-q", "-b", "main", str(client), cwd=work)
                (client / f"f{round_number}.bin").write_bytes(os.urandom(mb * 1_000_000))
                git("add", ".", cwd=client)
                git("commit", "-q", "-m", f"round {round_number}", cwd=client)
                push = timed("push", "-q", url, "HEAD:main", cwd=client)
                target = work / f"clone-{name}-{round_number}"
                clone = timed("clone", "-q", url, str(target), cwd=work)
                shutil.rmtree(target)
                times.setdefault(f"{name} push", []).append(push)
                times.setdefault(f"{name} clone", []).append(clone)
        rss = peak_rss_mb(server.pid)
    version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    dulwich_version = ".".join(map(str, dulwich.__version__))
    print(f"{version}; dulwich {dulwich_version}; Python {sys.version.split()[0]}")
    print(f"{rounds} rounds, each a push of one new {mb} MB file and a clone of everything")
    for operation in ("push", "clone"):
        ours = statistics.median(times[f"looming {operation}"])
        theirs = statistics.median(times[f"git {operation}"])
        print(
            f"{operation:5}  looming {ours:6.2f} s   git http-backend {theirs:6.2f} s   "
            f"ratio {ours / theirs:5.2f}x"
        )
    print(f"looming server peak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
