"""Fixtures for the packaging tests: the sdist and wheel built from this
checkout, and fresh virtual environments holding only what a user installs.

A fresh environment is made without pip and without network: the wheel is
installed by this environment's pip (``pip --python``), and each dependency
is installed by copying the files its installed distribution records (what
pip does when it unpacks a wheel). ``pip check`` then proves the installed
set satisfies every requirement the wheel declares.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class FreshEnv:
    root: Path
    python: Path
    looming: Path
    site_packages: Path

    def run(
        self, *args: str | Path, cwd: Path, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command of this environment from ``cwd``, with no checkout on the path."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = f"{self.root / 'bin'}:{env.get('PATH', '')}"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def run_checked(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


_GENERATED = {"__pycache__", "_build", "dist", "build", "sim-out", "node_modules"}


def _not_sources(folder: str, names: list[str]) -> set[str]:
    """What the copy of the checkout leaves out: VCS data, environments, build output."""
    at_top = Path(folder) == REPO
    return {
        n
        for n in names
        if n in _GENERATED
        or n.endswith(".egg-info")
        or (n.startswith(".") and n not in (".ci", ".gitignore"))
        or (at_top and n.startswith(".venv"))
        or (Path(folder).name == "bench" and n == "results")
    }


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """``python -m build``: the sdist, then the wheel built from the sdist.

    No isolation: setuptools and build come from the test extra, so no
    network is needed. It builds a copy of the checkout, as setuptools
    writes its egg-info next to the sources.
    """
    tree = tmp_path_factory.mktemp("tree") / "looming"
    shutil.copytree(REPO, tree, ignore=_not_sources)
    out = tmp_path_factory.mktemp("dist")
    run_checked(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, tree)
    (sdist,) = out.glob("looming-*.tar.gz")
    (wheel,) = out.glob("looming-*-py3-none-any.whl")
    return Dist(sdist, wheel)


def _copy_installed(distribution: str, site_packages: Path) -> None:
    """Install ``distribution`` by copying the files its RECORD lists."""
    dist = importlib.metadata.distribution(distribution)
    files = dist.files or []
    base = Path(str(dist.locate_file("")))
    for file in files:
        source = Path(str(dist.locate_file(file)))
        if file.parts[0] == ".." or "__pycache__" in file.parts or not source.is_file():
            continue  # scripts outside site-packages, caches
        target = site_packages / source.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def requirements_closure(names: Iterable[str]) -> list[str]:
    """The installed distributions ``names`` need, themselves included (no extras)."""
    from packaging.requirements import Requirement

    seen: dict[str, str] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        dist = importlib.metadata.distribution(name)
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist.metadata["Name"]
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                pending.append(req.name)
    return sorted(seen.values())


def make_env(root: Path, wheel: Path, extra_dists: Iterable[str]) -> FreshEnv:
    """A venv (no pip, no system site-packages) with the wheel and ``extra_dists``."""
    run_checked(sys.executable, "-m", "venv", "--without-pip", root)
    python = root / "bin" / "python"
    purelib = run_checked(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    site_packages = Path(purelib.strip())
    run_checked(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        "--no-compile",
        wheel,
    )
    for name in requirements_closure(extra_dists):
        _copy_installed(name, site_packages)
    return FreshEnv(root, python, root / "bin" / "looming", site_packages)


@pytest.fixture(scope="session")
def core_env(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> FreshEnv:
    """``pip install looming``: the wheel and h11, nothing else."""
    return make_env(tmp_path_factory.mktemp("core-env") / "venv", dist.wheel, ["h11"])


@pytest.fixture
def app_copy(tmp_path: Path) -> Path:
    """A folder to copy examples into, away from the checkout."""
    folder = tmp_path / "apps"
    folder.mkdir()
    return folder


def copy_example(name: str, into: Path) -> Path:
    target = into / name
    shutil.copytree(
        EXAMPLES / name, target, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__")
    )
    return target
