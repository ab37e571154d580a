"""The static website served from a store branch: StaticSite drops its caches
when the branch moves, and the store_website example, built and run with
``looming``, serves what ``git push`` (the real git client) published."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from looming.http import StaticSite
from looming.http.message import Request
from looming.store.kv import StoreKv
from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "store_website"


def get(site: StaticSite, target: str) -> tuple[int, bytes, dict[bytes, bytes]]:
    response = asyncio.run(site(Request("GET", target, [])))
    assert isinstance(response.body, bytes)
    return response.status, response.body, dict(response.headers)


def test_static_site_revalidates_when_the_branch_moves(disk_repo: Repo, git: GitRunner) -> None:
    store = disk_repo.store()
    store.set("index.html", b"<p>one</p>")
    kv = StoreKv(store)
    site = StaticSite(kv)
    status, body, headers = get(site, "/")
    assert (status, body) == (200, b"<p>one</p>")
    first_etag = headers[b"etag"]
    # Another writer (another process, here another Repo on the same folder).
    assert disk_repo.path is not None
    other = Repo.open(disk_repo.path, clock=UnixClock())
    other.store().set("index.html", b"<p>two</p>")
    other.store().set("new/page.html", b"<p>new</p>")
    status, body, headers = get(site, "/")
    assert (status, body) == (200, b"<p>two</p>")
    assert headers[b"etag"] != first_etag
    assert get(site, "/new/page.html")[:2] == (200, b"<p>new</p>")
    other.store().remove("new")
    assert get(site, "/new/page.html")[0] == 404
    # git moves the ref into packed-refs, then a writer makes it loose again.
    git("pack-refs", "--all", cwd=disk_repo.path)
    assert get(site, "/")[:2] == (200, b"<p>two</p>")
    other.store().set("index.html", b"<p>three</p>")
    assert get(site, "/")[:2] == (200, b"<p>three</p>")
    other.close()
    git("fsck", "--strict", cwd=disk_repo.path)


def test_static_site_keeps_its_cache_while_the_branch_stays(disk_repo: Repo) -> None:
    store = disk_repo.store()
    store.set("a.txt", b"a")
    kv = StoreKv(store)
    site = StaticSite(kv)
    reads = 0
    real_digest = kv.digest

    async def counting_digest(key: str) -> str:
        nonlocal reads
        reads += 1
        return await real_digest(key)

    # Counts how often the file is looked up in the store (once per resolve).
    kv.digest = counting_digest  # type: ignore[method-assign]
    for _ in range(5):
        assert get(site, "/a.txt")[:2] == (200, b"a")
    assert reads == 1
    store.set("b.txt", b"b")
    assert get(site, "/a.txt")[:2] == (200, b"a")
    assert reads == 2


def _looming(app: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "looming.cli", *args],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"looming {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def _curl(url: str) -> tuple[int, bytes]:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", url],
        capture_output=True,
        timeout=30,
        check=True,
    )
    body, _, code = done.stdout.rpartition(b"\n")
    return int(code), body


def test_example_serves_what_git_pushed(tmp_path: Path, git: GitRunner) -> None:
    app = tmp_path / "store_website"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__"))
    _looming(app, "configure", "-t", "unix")
    _looming(app, "build")
    token = "website-push-token-0123456789"
    (tmp_path / "push.token").write_text(token + "\n")
    unikernel = subprocess.Popen(
        [
            *(sys.executable, "-m", "looming.cli", "run", "--port", "0", "--push-port", "0"),
            *("--push-token-file", str(tmp_path / "push.token")),
        ],
        cwd=app,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert unikernel.stdout is not None
        access_line = unikernel.stdout.readline()
        assert access_line.startswith("push port access: writes need the token"), access_line
        site_line = unikernel.stdout.readline()
        push_line = unikernel.stdout.readline()
        site_match = re.fullmatch(r"serving (http://\S+)\n", site_line)
        push_match = re.fullmatch(r"git push (http://\S+) main\n", push_line)
        assert site_match and push_match, (site_line, push_line)
        site, anonymous = site_match[1], push_match[1]
        assert site.startswith("http://127.0.0.1:")  # loopback unless --listen says otherwise
        remote = anonymous.replace("http://", f"http://user:{token}@")
        code, page = _curl(site + "/")
        assert code == 200 and b"It works" in page
        # Without the token, nothing gets in: no clone (anonymous reads are
        # off by default) and no write through the JSON API.
        assert _curl(anonymous + "/api/main/get/index.html")[0] == 401
        done = subprocess.run(
            [
                *("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"),
                *("--data-binary", "defaced", anonymous + "/api/main/set/index.html"),
            ],
            capture_output=True,
            timeout=30,
            check=True,
        )
        assert done.stdout == b"401"
        # Publish: clone the site, change it, push it back with git.
        git("clone", "-q", remote, "work", cwd=tmp_path)
        work = tmp_path / "work"
        (work / "index.html").write_text("<h1>published by git push</h1>\n")
        (work / "docs").mkdir()
        (work / "docs" / "page.html").write_text("<p>a new page</p>\n")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "publish", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        assert _curl(site + "/") == (200, b"<h1>published by git push</h1>\n")
        assert _curl(site + "/docs/page.html") == (200, b"<p>a new page</p>\n")
        # And again, removing a page: the site forgets it.
        git("rm", "-q", "docs/page.html", cwd=work)
        git("commit", "-q", "-m", "unpublish", cwd=work)
        git("push", "-q", "origin", "HEAD:main", cwd=work)
        assert _curl(site + "/docs/page.html")[0] == 404
        assert unikernel.poll() is None
    finally:
        unikernel.terminate()
        unikernel.wait(timeout=30)
    # Stopping closed the store device: its writer's spare files are gone.
    # The repository is state under _build/, not among the sources.
    assert not (app / "site.git").exists()
    repository = app / "_build" / "site.git"
    spares = repository / "looming-spares"
    assert spares.is_dir() and list(spares.iterdir()) == []
    git("fsck", "--strict", cwd=repository)
    assert git("log", "--format=%s", "main", cwd=repository).split("\n")[:2] == [
        "unpublish",
        "publish",
    ]
