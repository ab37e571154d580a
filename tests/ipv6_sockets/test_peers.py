"""IPv6 and dual-stack servers and clients against peers no one here wrote:
the git CLI, OpenSSL's s_client and s_server, curl and Python's ssl."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from looming.store.repo import Repo
from looming.unix.clock import UnixClock
from tests.tls.pki import Pki, build_pki

LOOMING = [sys.executable, "-m", "looming.cli"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("ipv6-pki"))


@contextmanager
def server(argv: Sequence[str], ready: str, **env: str) -> Iterator[re.Match[str]]:
    """Start ``argv``, wait for a line matching ``ready``, stop it after."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )
    try:
        assert proc.stdout is not None
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"server exited before it was ready: {''.join(seen)}")
            seen.append(line)
            match = re.search(ready, line)
            if match:
                yield match
                return
        raise AssertionError(f"server not ready in time: {''.join(seen)}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(argv: Sequence[str], stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def git(*args: str, cwd: Path | None = None) -> str:
    done = run(["git", *args] if cwd is None else ["git", "-C", str(cwd), *args])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_git_clones_and_pushes_over_ipv6_and_ipv4_from_one_dual_stack_store(
    tmp_path: Path,
) -> None:
    store = tmp_path / "served.git"
    Repo.init(str(store), clock=UnixClock()).close()
    argv = [*LOOMING, "store", "--repo", str(store), "serve", "--host", "::", "--port", "0"]
    token = "ipv6-token-for-tests"
    with server(argv, r"on (http://\[::1\]:(\d+))/ ", LOOMING_STORE_TOKEN=token) as ready:
        port = ready.group(2)
        work = tmp_path / "work"
        git("clone", "-q", f"http://u:{token}@[::1]:{port}/", str(work))
        (work / "page.html").write_text("<h1>over IPv6</h1>\n")
        git("add", "page.html", cwd=work)
        git("-c", "user.name=T", "-c", "user.email=t@x", "commit", "-qm", "v6", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        pushed = git("rev-parse", "HEAD", cwd=work)
        # The same listener serves IPv4 clients.
        for base in (f"http://127.0.0.1:{port}/", ready.group(1) + "/"):
            copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
            git("clone", "-q", f"http://u:{token}@{base.removeprefix('http://')}", str(copy))
            assert git("rev-parse", "HEAD", cwd=copy) == pushed
            assert (copy / "page.html").read_text() == "<h1>over IPv6</h1>\n"
        # The JSON API, with curl forced onto IPv6.
        done = run(["curl", "-6", "-sS", "-g", "-u", f"u:{token}", f"http://[::1]:{port}/"])
        assert done.returncode == 0, done.stderr


def tls_serve(pki: Pki, host: str, *extra: str) -> list[str]:
    leaf = pki.leaves["p256"]
    return [
        *LOOMING,
        "tls",
        "serve",
        "--cert",
        str(leaf.cert_path),
        "--key",
        str(leaf.key_path),
        "--host",
        host,
        "--port",
        "0",
        *extra,
    ]


def test_openssl_curl_and_python_ssl_reach_tls_serve_on_both_families(pki: Pki) -> None:
    ready = r"listening on \[::\]:(\d+)"
    with server(tls_serve(pki, "::", "--http", "--alpn", "http/1.1"), ready) as match:
        port = int(match.group(1))
        done = run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"[::1]:{port}",
                "-servername",
                "localhost",
                "-verify_hostname",
                "localhost",
                "-CAfile",
                str(pki.ca_path),
                "-verify_return_error",
                "-quiet",
            ],
            stdin="GET / HTTP/1.0\r\n\r\n",
        )
        assert "hello from looming over TLS" in done.stdout, done.stderr
        curl = ["curl", "-sS", "-g", "--cacert", str(pki.ca_path), "--http1.1"]
        done = run(
            [*curl, "-6", "--resolve", f"localhost:{port}:[::1]", f"https://localhost:{port}/"]
        )
        assert (done.returncode, done.stdout) == (0, "hello from looming over TLS\n"), done.stderr
        context = ssl.create_default_context(cafile=str(pki.ca_path))
        for family, host in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")):
            with socket.socket(family) as raw:
                raw.settimeout(10)
                raw.connect((host, port))
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    assert tls.getpeername()[0] == host
                    tls.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
                    assert tls.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")


def test_tls_connect_reaches_openssl_s_server_on_ipv6(pki: Pki) -> None:
    leaf = pki.leaves["p256"]
    probe = socket.socket(socket.AF_INET6)
    probe.bind(("::1", 0))
    port = probe.getsockname()[1]
    probe.close()
    argv = [
        "openssl",
        "s_server",
        "-6",
        "-accept",
        f"[::1]:{port}",
        "-cert",
        str(leaf.cert_path),
        "-key",
        str(leaf.key_path),
        "-rev",
    ]
    ca = ["--ca", str(pki.ca_path)]
    with server(argv, r"ACCEPT"):
        done = run(
            [*LOOMING, "tls", "connect", f"[::1]:{port}", "--servername", "localhost", *ca],
            stdin="drow\n",
        )
    assert done.returncode == 0, done.stderr
    assert "word" in done.stdout
    assert "connected: version 0x0304" in done.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["tls", "connect", "::1:4433"], "needs brackets"),
        (["tls", "connect", "[::1]"], r"expected \[IPV6\]:PORT"),
        (["tls", "connect", "[::1]:0"], "port number 1 to 65535"),
        (["tls", "serve", "--cert", "c", "--key", "k", "--host", "[::1"], "unbalanced brackets"),
        (["store", "serve", "--host", "not a host"], "neither an IP address"),
        (["store", "serve", "--port", "70000"], "port number"),
    ],
)
def test_bad_addresses_exit_2_with_the_reason(argv: list[str], says: str, tmp_path: Path) -> None:
    done = run([*LOOMING, *argv], stdin="", LOOMING_STORE_REPO=str(tmp_path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert re.search(says, done.stderr), done.stderr
