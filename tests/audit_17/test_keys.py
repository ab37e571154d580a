"""Key values of an HTTP service: what configure and run accept, and the
one-line errors (exit 2) for the rest."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from looming.errors import UsageError
from looming.http.service import HttpSettings
from looming.runtime import KeySpec, parse_keys
from looming.runtime import UsageError as RuntimeUsage
from tests.config.tooling import copy_example, looming


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_shutdown_timeout_that_is_not_finite_is_refused(value: float) -> None:
    """nan passed the check (nan < 0 is false) and crashed SIGTERM's
    handling; inf would have the stop wait for ever."""
    with pytest.raises(UsageError, match=r"^--shutdown-timeout: .*finite"):
        HttpSettings.from_keys(shutdown_timeout=value)


def test_finite_shutdown_timeouts_are_taken() -> None:
    assert HttpSettings.from_keys(shutdown_timeout=0.0).shutdown_timeout == 0.0
    assert HttpSettings.from_keys(shutdown_timeout=2.5).shutdown_timeout == 2.5


BAD_VALUES = [
    ("--access-log", "xml"),
    ("--http-parser", "foo"),
    ("--metrics", "nolead"),
    ("--loop", "trio"),
    ("--shutdown-timeout", "-3"),
    ("--shutdown-timeout", "nan"),
    ("--max-connections", "-1"),
    ("--ws-max-size", "-1"),
]


def test_configure_refuses_what_run_refuses(tmp_path: Path) -> None:
    """Each value ``run`` refuses is refused by ``configure`` already: one
    line naming the key, exit 2, and no build configured."""
    app = copy_example("asgi", tmp_path)
    for option, value in BAD_VALUES:
        proc = looming(app, "configure", "-t", "unix", option, value, check=False)
        assert proc.returncode == 2, (option, value, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"looming: {option}: "), (option, lines)
        assert not (app / "_build").exists(), (option, value)
    looming(app, "configure", "-t", "unix", "--access-log", "json", "--loop", "asyncio")


def test_the_same_rules_hold_for_keys_from_the_environment() -> None:
    """A bad value in ``LOOMING_*`` is named by its variable."""
    specs = [
        KeySpec(name, "str", "auto" if name != "access_log" else "off", "")
        for name in ("access_log", "loop", "http_parser")
    ]
    with pytest.raises(RuntimeUsage, match=r"^LOOMING_ACCESS_LOG: 'JSON' is not one of"):
        parse_keys(specs, [], {"LOOMING_ACCESS_LOG": "JSON"})
    with pytest.raises(RuntimeUsage, match=r"^--loop: 'trio' is not one of"):
        parse_keys(specs, ["--loop", "trio"], {})
    assert parse_keys(specs, [], {"LOOMING_ACCESS_LOG": "json"}).access_log == "json"
