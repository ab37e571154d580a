"""The same seed gives the same simulation on every supported Python.

Each scenario runs under CPython 3.11, 3.12 and 3.13 (those installed here,
found as ``make test-all-pythons`` finds them) with a different hash seed
each; the summaries (trace digest, link counters, the failure if the seed
fails) must be equal. The simulator reaches only looming
and h11, so a bare interpreter with ``src`` and h11 on its path is enough.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.conftest import EXAMPLES, REPO

VERSIONS = ("3.11", "3.12", "3.13")
# Three interpreters: once per suite, not in each interpreter's fast tier.
pytestmark = pytest.mark.slow
RUNS = [("website.py", "21"), ("website.py", "4"), ("echo_crash.py", "3")]


def interpreters() -> dict[str, str]:
    found = {}
    for version in VERSIONS:
        done = subprocess.run(
            ["sh", str(REPO / "scripts" / "find-python.sh"), version],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            found[version] = done.stdout.strip()
    return found


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The examples copied, so each interpreter builds its artifacts away from the checkout."""
    root = tmp_path_factory.mktemp("pythons")
    ignore = shutil.ignore_patterns("_build", "dist", "__pycache__")
    for name in ("scenarios", "static_website", "echo"):
        shutil.copytree(EXAMPLES / name, root / name, ignore=ignore)
    return root / "scenarios"


def test_a_seed_gives_the_same_digest_on_every_python(scenarios: Path, tmp_path: Path) -> None:
    import h11

    found = interpreters()
    here = "{}.{}".format(*sys.version_info[:2])
    assert here in found, f"this interpreter's version {here} is not one of {VERSIONS}"
    if len(found) < 2:
        pytest.skip(f"only Python {here} is installed: nothing to compare with")
    (tmp_path / "h11").symlink_to(Path(h11.__file__).parent)
    path = f"{REPO / 'src'}:{tmp_path}"
    outputs: dict[tuple[str, str], dict[str, tuple[int, str]]] = {}
    for number, (version, python) in enumerate(sorted(found.items())):
        for scenario, seed in RUNS:
            options = ["--seed", seed, "--no-pcap"]
            done = subprocess.run(
                [python, "-m", "looming.cli", "sim", "run", str(scenarios / scenario), *options],
                env={**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": str(number + 7)},
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            # A failing seed fails the same way everywhere: compare it too.
            assert done.returncode in (0, 1), f"{version} {scenario}: {done.stdout}{done.stderr}"
            assert re.search(r"^digest:\s+[0-9a-f]{64}$", done.stdout, re.M), done.stdout
            # Everything but the wall-clock time the run took.
            summary = re.sub(r"^time: .*$", "", done.stdout, flags=re.M)
            outputs.setdefault((scenario, seed), {})[version] = (done.returncode, summary)
    assert len(outputs) == len(RUNS)
    for run, by_version in outputs.items():
        assert len(by_version) == len(found)
        assert len(set(by_version.values())) == 1, f"{run}: {by_version}"
    # Different seeds are different runs: the comparison is not of empty output.
    assert len({next(iter(d.values())) for d in outputs.values()}) == len(RUNS)
