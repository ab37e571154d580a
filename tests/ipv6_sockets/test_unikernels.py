"""Generated unikernels on IPv6: built like a user builds them, run with
IPv6 listen addresses, fetched with curl and cloned with git."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.config.tooling import copy_example, looming, running


def built(name: str, tmp_path: Path) -> Path:
    app = copy_example(name, tmp_path)
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    return app


@pytest.fixture(scope="module")
def store_website(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built("store_website", tmp_path_factory.mktemp("store-website"))


def curl(*args: str) -> str:
    done = subprocess.run(
        ["curl", "-sS", "-g", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_static_website_on_ipv6_only_and_dual_stack(tmp_path: Path) -> None:
    app = built("static_website", tmp_path)
    index = (app / "htdocs" / "index.html").read_text()
    ready = r"serving (http://\[::1\]:(\d+))$"
    with running(app, "--port", "0", "--ipv6", "true", ready=ready) as (_, match):
        # --ipv6: ::1 beside the default --ipv4 127.0.0.1: both loopbacks, one port.
        assert curl("-6", match.group(1) + "/") == index
        assert curl("-4", f"http://127.0.0.1:{match.group(2)}/") == index
    with running(app, "--port", "0", "--ipv6-address", "::", ready=ready) as (_, match):
        port = match.group(2)
        assert curl("-6", f"http://[::1]:{port}/") == index
        assert curl("-4", f"http://127.0.0.1:{port}/") == index
    with running(
        app, "--port", "0", "--ipv6-address", "::", "--ipv6-only", "true", ready=ready
    ) as (
        _,
        match,
    ):
        port = match.group(2)
        assert curl("-6", f"http://[::1]:{port}/") == index
        # IPv6 only, as on --net direct: no IPv4 client is served.
        refused = subprocess.run(
            ["curl", "-4", "-sS", "-m", "5", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert refused.returncode == 7, refused  # curl: failed to connect
    with running(app, "--port", "0", "--ipv6-only", "true", ready=ready) as (_, match):
        # Without an IPv6 address given: the IPv6 loopback, as --ipv6 gives.
        assert curl("-6", match.group(1) + "/") == index


def test_https_website_on_ipv6(tmp_path: Path) -> None:
    app = built("https_website", tmp_path)
    index = (app / "htdocs" / "index.html").read_text()
    ready = r"serving https://\[::1\]:(\d+)$"
    with running(app, "--port", "0", "--ipv6-address", "::1", ready=ready) as (_, match):
        port = match.group(1)
        page = curl(
            "--cacert",
            str(app / "ca.pem"),
            "--resolve",
            f"localhost:{port}:[::1]",
            f"https://localhost:{port}/",
        )
        assert page == index


def test_store_website_clone_over_ipv6(store_website: Path, tmp_path: Path) -> None:
    app = store_website
    keys = ["--port", "0", "--push-port", "0", "--listen", "::", "--push-anonymous-read", "true"]
    with running(app, *keys, ready=r"serving (http://\[::1\]:\d+)$") as (proc, match):
        page = curl("-6", match.group(1) + "/index.html")
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the next line names the push URL
        push = re.search(r"git push (http://\[::1\]:\d+)/ main", line)
        assert push is not None, line
        clone = tmp_path / "site"
        done = subprocess.run(
            ["git", "clone", "-q", push.group(1) + "/", str(clone)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        # The repository cloned over IPv6 holds the page served over IPv6.
        assert (clone / "index.html").read_text() == page


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        (["--ipv6-address", "::1:"], "not a valid ipv6_interface"),
        (["--ipv6-address", "127.0.0.1"], "not a valid ipv6_interface"),
        (["--ipv6", "maybe"], "not a valid bool"),
        (["--listen", "[::1"], "unbalanced brackets"),
    ],
)
def test_bad_addresses_stop_a_unikernel_with_exit_2(
    keys: list[str], says: str, store_website: Path
) -> None:
    done = looming(store_website, "run", *keys, check=False)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr
