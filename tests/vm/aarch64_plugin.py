"""pytest plugin for the suites run under qemu user emulation (tests/vm/test_aarch64_suites.py).

Loaded with ``-p tests.vm.aarch64_plugin`` by the emulated pytest. It loads
the hypothesis profile ``aarch64`` (fewer examples: the emulated CPU is
some ten times slower; no deadline and no too-slow health check, which
would measure the emulation), gives each state machine a tenth of its own
example count, and writes what ran where to the JSON file named by
``LOOMING_AARCH64_REPORT``: the machine and byte order the tests saw, each
test's outcome and the compiled extension modules loaded, so the caller
checks that it ran on aarch64, with aarch64 builds, and which tests passed.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

REPORT_ENV = "LOOMING_AARCH64_REPORT"
settings.register_profile(
    "aarch64",
    max_examples=10,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_outcomes: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("aarch64")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for cls in {getattr(item, "cls", None) for item in items}:
        _fewer_stateful_examples(cls)


def _fewer_stateful_examples(cls: Any) -> None:
    """A state machine that sets its own count keeps a tenth of it (at least 5)."""
    if not (isinstance(cls, type) and cls.__qualname__.endswith(".TestCase")):
        return
    own = getattr(cls, "settings", None)
    if isinstance(own, settings) and own.max_examples > 5:
        fewer = settings(
            own,
            max_examples=max(5, own.max_examples // 10),
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        setattr(cls, "settings", fewer)  # noqa: B010 (a class made at run time)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A test's outcome: its call's, or the first setup or teardown that did not pass."""
    first = _outcomes.get(report.nodeid) in (None, "passed")
    if first and (report.when == "call" or report.outcome != "passed"):
        _outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    report = {
        "machine": platform.machine(),
        "byteorder": sys.byteorder,
        "exitstatus": int(exitstatus),
        "outcomes": _outcomes,
        "extensions": sorted(
            str(getattr(module, "__file__", None))
            for module in list(sys.modules.values())
            if str(getattr(module, "__file__", None)).endswith(".so")
        ),
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=1, sort_keys=True)
