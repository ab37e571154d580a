"""Folders served safely: the static website built with its folder crunched
in and read directly, with hidden files, links leading outside, a broken link
and a FIFO planted in it. None is ever served (and the build names them); a
link that stays inside is."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.config.tooling import copy_example, looming, running

SECRETS = ["/.env", "/.git/config", "/.git/", "/css/.htpasswd", "/%2egit/config", "/leak.txt"]
SECRETS += ["/outside/passwd", "/outside/", "/pipe", "/dangling"]


def plant(app: Path, outside: Path) -> None:
    htdocs = app / "htdocs"
    (htdocs / ".env").write_text("SECRET=1\n")
    (htdocs / ".git").mkdir()
    (htdocs / ".git" / "config").write_text("[core]\n")
    (htdocs / "css" / ".htpasswd").write_text("admin:x\n")
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    (htdocs / "leak.txt").symlink_to(outside / "passwd")
    (htdocs / "outside").symlink_to(outside)
    (htdocs / "alias.html").symlink_to(htdocs / "index.html")
    (htdocs / "dangling").symlink_to(outside / "nothing-here")
    os.mkfifo(htdocs / "pipe")  # reading it would block until a writer came


@pytest.fixture(scope="module", params=["crunch", "direct"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp(f"folders-{request.param}")
    app = copy_example("static_website", folder)
    plant(app, folder / "outside")
    looming(app, "configure", "-t", "unix", "--kv-ro", request.param)
    built = looming(app, "build").stdout
    # The build says what the folder holds that will not be served.
    (notice,) = [line for line in built.splitlines() if "will not serve" in line]
    for name in (".env", ".git/", "leak.txt", "outside", "dangling: a broken link"):
        assert name in notice, notice
    assert "pipe: not a regular file" in notice and "alias.html" not in notice
    with running(app, "--port", "0", ready=r"serving http://\S+:(\d+)") as (_proc, ready):
        yield int(ready.group(1))


def status_of(port: int, target: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", target)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


@pytest.mark.parametrize("target", SECRETS)
def test_hidden_files_and_links_outside_are_not_served(site: int, target: str) -> None:
    status, body = status_of(site, target)
    assert status == 404, (target, body)
    assert b"SECRET" not in body and b"root:" not in body and b"[core]" not in body


def test_a_link_inside_the_folder_is_served(site: int) -> None:
    index = status_of(site, "/index.html")
    assert index[0] == 200
    assert status_of(site, "/alias.html") == index


@pytest.mark.parametrize("mode", ["crunch", "direct"])
def test_a_missing_folder_is_refused_at_build(tmp_path: Path, mode: str) -> None:
    app = copy_example("static_website", tmp_path)
    looming(app, "configure", "-t", "unix", "--kv-ro", mode)
    (app / "htdocs").rename(app / "elsewhere")
    built = looming(app, "build", check=False)
    assert built.returncode == 2, built
    assert built.stderr.strip() == (
        "looming: kv_ro folder htdocs/ does not exist; create it or fix config.py"
    )
    assert "Traceback" not in built.stderr
