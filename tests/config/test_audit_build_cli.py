"""A mistake on `looming`'s command line is one line on stderr and exit 2;
--help still prints the usage, exit 0."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.config.tooling import looming

CONFIG = """\
    from looming.config import console, main, register
    register("app", [main("unikernel:App", [console()])])
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "config.py").write_text(textwrap.dedent(CONFIG))
    (folder / "unikernel.py").write_text(
        "class App:\n    def __init__(self, console):\n        pass\n"
    )
    return folder


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("configure", "-t", "unix", "--net", "bogus"), "invalid choice: 'bogus'"),
        (("frob",), "invalid choice: 'frob'"),
        (("build", "--nosuchflag"), "unrecognized arguments: --nosuchflag"),
        (("--app",), "expected one argument"),
        (("clean", "extra"), "unrecognized arguments: extra"),
    ],
)
def test_a_mistake_is_one_line_exit_2(app: Path, argv: tuple[str, ...], says: str) -> None:
    proc = looming(app, *argv, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert lines[0].startswith("looming") and "--help" in lines[0]
    assert proc.stdout == "" and not (app / "_build").exists()


@pytest.mark.parametrize("argv", [("--help",), ("build", "--help"), ("configure", "--help")])
def test_help_still_prints_the_usage(app: Path, argv: tuple[str, ...]) -> None:
    proc = looming(app, *argv, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "usage: looming" in proc.stdout and proc.stderr == ""
