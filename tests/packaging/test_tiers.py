"""The fast tier leaves out exactly the tests that run peers, qemu, need
root or are slow (tests/tiers.py), whichever way they reach the peer."""

from __future__ import annotations

import pytest

CONFTEST = """
import subprocess

import pytest


def run_git(*args):
    return subprocess.run(["git", *args], check=False)


@pytest.fixture
def git():
    return run_git
"""

HELPER = """
import subprocess

def curl(url):
    return subprocess.run(["curl", url], check=False)
"""

USES_HELPER = """
from helper_peer import curl

def test_fetches():
    assert curl is not None

def test_does_not_fetch_but_shares_the_module():
    pass
"""

TESTS = """
import shutil
import subprocess

import pytest


def test_pure():
    assert 1 + 1 == 2


def test_uses_a_fixture_that_runs_git(git):
    assert git is not None


@pytest.mark.root
def test_needs_root():
    pass


@pytest.mark.slow
def test_is_slow():
    pass
"""

DIRECT = """
import subprocess

def test_runs_openssl():
    subprocess.run(["openssl", "version"], check=False)

def test_boots(tmp_path):
    assert "qemu-system-x86_64"
"""


def test_fast_selects_only_what_needs_nothing_else(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        helper_peer=HELPER, test_mixed=TESTS, test_direct=DIRECT, test_helper=USES_HELPER
    )
    pytester.syspathinsert()
    fast = pytester.runpytest("-p", "tests.tiers", "--fast", "-v")
    fast.assert_outcomes(passed=1, deselected=7)
    fast.stdout.fnmatch_lines(["*test_mixed.py::test_pure PASSED*"])
    # The marks are set before -m filters, so they select too.
    peers = pytester.runpytest("-p", "tests.tiers", "-m", "peer", "--co", "-q")
    peers.stdout.fnmatch_lines(
        [
            "test_direct.py::test_runs_openssl",
            "test_direct.py::test_boots",
            # A module importing a helper that runs a peer: all its tests.
            "test_helper.py::test_fetches",
            "test_helper.py::test_does_not_fetch_but_shares_the_module",
            # A fixture (here from conftest.py) that runs one: the tests using it.
            "test_mixed.py::test_uses_a_fixture_that_runs_git",
            "*5/8 tests collected*",
        ]
    )
    # Marks from a module's source are the module's: both tests of test_direct.
    qemu = pytester.runpytest("-p", "tests.tiers", "-m", "qemu", "--co", "-q")
    qemu.stdout.fnmatch_lines(
        ["test_direct.py::test_runs_openssl", "test_direct.py::test_boots", "*2/8 tests collected*"]
    )
