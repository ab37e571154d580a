"""What the build packs: modules imported by name (register's packages, a
smoke import that names what is still missing), crunched folders without
hidden files or links leading outside, and the same bytes from two clones."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.config.tooling import copy_example, looming

UNIKERNEL = """
import importlib

from looming.devices import Console

import plugins


class Plugged:
    def __init__(self, console: Console) -> None:
        self.console = console

    async def start(self) -> None:
        await self.console.log(plugins.load().MESSAGE)
"""

PLUGINS = """
import importlib

CHOSEN = "weaver"


def load():
    return importlib.import_module(f"{__name__}.{CHOSEN}")


# Loaded by name at import time, as plug-in registries do.
load()
"""


def plugged_app(folder: Path, packages: str) -> Path:
    app = folder / "plugged"
    (app / "plugins").mkdir(parents=True)
    (app / "plugins" / "__init__.py").write_text(PLUGINS)
    (app / "plugins" / "weaver.py").write_text('MESSAGE = "woven by a plug-in"\n')
    (app / "unikernel.py").write_text(UNIKERNEL)
    (app / "config.py").write_text(
        "from looming.config import console, main, register\n"
        f'register("plugged", [main("unikernel:Plugged", [console()])]{packages})\n'
    )
    return app


def test_a_module_imported_by_name_is_named_and_nothing_is_left_in_dist(tmp_path: Path) -> None:
    app = plugged_app(tmp_path, "")
    looming(app, "configure", "-t", "unix")
    failed = looming(app, "build", check=False)
    assert failed.returncode == 2, failed.stderr
    message = failed.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "plugins.weaver" in message and "packages=['plugins']" in message
    assert not any((app / "dist").iterdir())


def test_register_packages_packs_the_whole_package(tmp_path: Path) -> None:
    app = plugged_app(tmp_path, ', packages=["plugins"]')
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    artifact = app / "dist" / "plugged-unix.pyz"
    with zipfile.ZipFile(artifact) as z:
        assert "plugins/weaver.py" in z.namelist()
    ran = subprocess.run(
        [sys.executable, str(artifact)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr
    assert "woven by a plug-in" in ran.stdout


def test_register_packages_must_name_an_installed_pure_package(tmp_path: Path) -> None:
    for name, why in [("no_such_package_x", "not installed"), ("json", "standard library")]:
        app = plugged_app(tmp_path / name, f', packages=["plugins", "{name}"]')
        # Refused at configure already, at config.py's register line.
        failed = looming(app, "configure", "-t", "unix", check=False)
        assert failed.returncode == 2
        assert name in failed.stderr and why in failed.stderr and "config.py:2:" in failed.stderr
        assert "Traceback" not in failed.stderr


def test_two_clones_build_the_same_bytes(tmp_path: Path) -> None:
    artifacts = []
    for i, (mtime, mode) in enumerate([(1_000_000_000, 0o644), (1_700_000_000, 0o600)]):
        app = copy_example("static_website", tmp_path / f"clone{i}")
        for path in app.rglob("*"):
            if path.is_file():
                path.chmod(mode)
                os.utime(path, (mtime, mtime))
        looming(app, "configure", "-t", "unix")
        looming(app, "build")
        artifacts.append((app / "dist" / "website-unix.pyz").read_bytes())
    assert artifacts[0] == artifacts[1]


def test_crunched_folders_leave_out_hidden_files_and_links_outside(tmp_path: Path) -> None:
    app = copy_example("static_website", tmp_path)
    htdocs = app / "htdocs"
    (htdocs / ".env").write_text("SECRET=1\n")
    (htdocs / ".git").mkdir()
    (htdocs / ".git" / "config").write_text("[core]\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not for the web\n")
    (htdocs / "leak.txt").symlink_to(outside)
    (htdocs / "alias.html").symlink_to(htdocs / "index.html")
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    with zipfile.ZipFile(app / "dist" / "website-unix.pyz") as z:
        names = z.namelist()
        manifest = next(n for n in names if n.endswith("htdocs.json"))
        listed = z.read(manifest).decode()
    assert not any(".env" in n or ".git" in n or "leak.txt" in n for n in names)
    assert "leak.txt" not in listed and ".env" not in listed
    # A link that stays inside the folder is served as its target.
    assert any(n.endswith("/alias.html") for n in names)
