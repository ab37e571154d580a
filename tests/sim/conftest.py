"""Fixtures for the simulator's tests: example applications copied to a
temporary folder, so building them for the sim target leaves the
repository's examples alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
APPS = Path(__file__).resolve().parent / "apps"
LOOMING = [sys.executable, "-m", "looming.cli"]


@pytest.fixture(scope="session")
def app_copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/ and tests/sim/apps/ copied once, without build output."""
    root = tmp_path_factory.mktemp("sim-apps")
    ignore = shutil.ignore_patterns("_build", "dist", "__pycache__")
    shutil.copytree(EXAMPLES, root / "examples", ignore=ignore)
    for app in APPS.iterdir():
        shutil.copytree(app, root / "examples" / app.name, ignore=ignore)
    return root / "examples"


def run_looming(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LOOMING, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


RunLooming = Callable[..., subprocess.CompletedProcess[str]]
