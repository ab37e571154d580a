"""`configure -t T --help` lists the target's options and the keys; `run`
warns when the build is older than its configuration or sources; bad key
values at configure time are one line and exit 2."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.config.tooling import copy_example, looming


@pytest.mark.parametrize(("target", "option"), [("unix", "--kv-ro"), ("vm", "--compress")])
def test_configure_help_lists_the_targets_options_and_keys(
    tmp_path: Path, target: str, option: str
) -> None:
    app = copy_example("hello", tmp_path)
    done = looming(app, "configure", "-t", target, "--help")
    assert f"options of the {target} target:" in done.stdout
    assert option in done.stdout
    assert "--greetings INT" in done.stdout
    assert not (app / "_build").exists()


def test_run_warns_when_the_build_is_older_than_its_configuration(tmp_path: Path) -> None:
    app = copy_example("hello", tmp_path)
    looming(app, "configure", "-t", "unix", "--greetings", "1")
    looming(app, "build")
    fresh = looming(app, "run")
    assert "warning" not in fresh.stderr
    time.sleep(0.05)
    looming(app, "configure", "-t", "unix", "--greetings", "2")
    stale = looming(app, "run")
    assert "warning: dist/hello-unix.pyz is older than _build/looming.json" in stale.stderr
    assert "(1/1)" in stale.stdout  # it did run the old build, as it says
    looming(app, "build")
    assert "warning" not in looming(app, "run").stderr
    # A changed source file is named too.
    source = app / "unikernel.py"
    later = time.time() + 5
    os.utime(source, (later, later))
    assert "unikernel.py" in looming(app, "run").stderr


@pytest.mark.parametrize(
    ("example", "argv", "expected"),
    [
        ("asgi", ["--port", "99999"], "--port: 99999 is not a port number"),
        ("hello", ["--greetings", "many"], "--greetings: 'many' is not a valid int"),
    ],
)
def test_bad_key_values_at_configure_are_one_line(
    tmp_path: Path, example: str, argv: list[str], expected: str
) -> None:
    app = copy_example(example, tmp_path)
    done = looming(app, "configure", "-t", "unix", *argv, check=False)
    assert done.returncode == 2
    assert expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
