"""The times of files packed beside an application: a file whose content
changes between two commits, at the same size, gets a new ETag from
Starlette's StaticFiles (which hashes time and size); two clones of one
commit still build the same bytes; a modified file makes the build say it
is not reproducible; SOURCE_DATE_EPOCH wins."""

from __future__ import annotations

import asyncio
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from starlette.staticfiles import StaticFiles

from looming.config import build_boot
from looming.config.build_times import packed_times, zip_date_time
from tests.config.tooling import looming

UNIKERNEL = """
from pathlib import Path

from looming.devices import Console

STATIC = Path(__file__).parent / "static"


class Files:
    def __init__(self, console: Console) -> None:
        self.console = console

    async def start(self) -> None:
        await self.console.log(sorted(p.name for p in STATIC.iterdir()))
"""

CONFIG = """from looming.config import console, main, register
register("files", [main("unikernel:Files", [console()])])
"""

FIRST, SECOND = 1_700_000_000, 1_700_086_400


def git(repo: Path, *args: str, when: int = FIRST) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": f"@{when} +0000",
        "GIT_COMMITTER_DATE": f"@{when} +0000",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    env.pop("SOURCE_DATE_EPOCH", None)
    who = ["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]
    done = subprocess.run(
        ["git", *who, "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def build(app: Path) -> tuple[bytes, str]:
    looming(app, "configure", "-t", "unix")
    done = looming(app, "build")
    return (app / "dist" / "files-unix.pyz").read_bytes(), done.stderr


def etag_of(artifact: bytes, folder: Path, name: str) -> tuple[str, str]:
    """Starlette's ETag and Last-Modified for the packed file ``name``, laid
    out as the artifact's loader lays it out."""
    path = folder / "artifact.pyz"
    path.write_bytes(artifact)
    out = folder / "tree"
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.startswith(build_boot.APP)]
        build_boot._write_members(z, names, str(out), build_boot.APP)
    static = StaticFiles(directory=out / "static")
    scope = {"type": "http", "method": "GET", "headers": [], "path": "/" + name}
    response = asyncio.run(static.get_response(name, scope))
    return response.headers["etag"], response.headers["last-modified"]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    app = tmp_path / "origin" / "files"
    (app / "static").mkdir(parents=True)
    (app / "unikernel.py").write_text(UNIKERNEL)
    (app / "config.py").write_text(CONFIG)
    (app / ".gitignore").write_text("_build/\ndist/\n")
    (app / "static" / "a.txt").write_text("version 1\n")
    git(app, "init", "-q")
    git(app, "add", ".")
    git(app, "commit", "-q", "-m", "one")
    return app


@pytest.mark.slow
def test_a_same_size_change_gets_a_new_etag_and_clones_build_the_same(
    repo: Path, tmp_path: Path
) -> None:
    first, said = build(repo)
    assert "not reproducible" not in said
    (repo / "static" / "a.txt").write_text("version 2\n")  # the same size
    git(repo, "commit", "-q", "-am", "two", when=SECOND)
    second, said = build(repo)
    assert "not reproducible" not in said
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    old = etag_of(first, tmp_path / "x", "a.txt")
    new = etag_of(second, tmp_path / "y", "a.txt")
    assert old[0] != new[0] and old[1] != new[1]
    with zipfile.ZipFile(repo / "dist" / "files-unix.pyz") as z:
        stamp = z.getinfo(build_boot.APP + "static/a.txt").date_time
    assert stamp == zip_date_time(SECOND)  # HEAD's commit time: later, not earlier
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, capture_output=True)
    os.utime(clone / "static" / "a.txt", (1_000_000_000, 1_000_000_000))  # a checkout's time
    again, _ = build(clone)
    assert again == second


@pytest.mark.slow
def test_a_modified_file_is_packed_with_its_time_and_the_build_says_so(repo: Path) -> None:
    (repo / "static" / "a.txt").write_text("edited\n")
    os.utime(repo / "static" / "a.txt", (1_750_000_000, 1_750_000_000))
    (repo / "static" / "new.txt").write_text("untracked\n")
    _, said = build(repo)
    assert "not reproducible" in said and "static/a.txt" in said and "static/new.txt" in said
    assert len([line for line in said.splitlines() if "not reproducible" in line]) == 1
    with zipfile.ZipFile(repo / "dist" / "files-unix.pyz") as z:
        assert z.getinfo(build_boot.APP + "static/a.txt").date_time == zip_date_time(1_750_000_000)


def test_source_date_epoch_wins_and_a_bad_one_is_refused(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"static/a.txt": repo / "static" / "a.txt"}
    assert packed_times(repo, files).times == {"static/a.txt": FIRST}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    assert packed_times(repo, files).times == {"static/a.txt": 1234567890}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(Exception, match="SOURCE_DATE_EPOCH"):
        packed_times(repo, files)


def test_outside_git_a_file_keeps_its_own_time(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("x")
    os.utime(path, (1_600_000_000, 1_600_000_000))
    packed = packed_times(tmp_path, {"a.txt": path})
    assert packed.times == {"a.txt": 1_600_000_000} and packed.notice() is None
