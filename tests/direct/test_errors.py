"""``looming run`` of a ``--net direct`` unikernel whose TAP cannot be
opened stops at once and says why and what to do."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from looming.net.netif.tap import TapNetwork
from tests.direct.conftest import need_root
from tests.direct.unikernel import build_direct
from tests.net.kernel import sh, unique_suffix


def run_website(
    app: Path, *argv: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "looming.cli", "run", *argv],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
    )


def stops_with(result: subprocess.CompletedProcess[str], message: str) -> None:
    """The unikernel failed, and the last thing it printed is ``message``."""
    assert result.returncode != 0
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert message in last, result.stderr


@pytest.fixture(scope="module")
def website(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_direct("static_website", tmp_path_factory.mktemp("direct-errors"))


def test_bad_interface_names_are_refused_with_the_rule(website: Path) -> None:
    too_long = run_website(website, "--interface", "lm" + "x" * 20)
    stops_with(too_long, "must have 1 to 15 bytes")
    for name in ("lm/bad", "lm:bad", "lm bad", ".."):
        stops_with(run_website(website, "--interface", name), "is not a valid interface name")


@pytest.mark.root
def test_without_cap_net_admin_the_error_says_what_is_missing(website: Path) -> None:
    need_root()
    name = f"lmdt{unique_suffix()}"
    try:
        # Root without CAP_NET_ADMIN (dropped from the bounding set, so the
        # unikernel never has it): it may not create a TAP.
        result = run_website(
            website,
            "--interface",
            name,
            prefix=("setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"),
        )
        stops_with(result, f"not allowed to create TAP device {name!r}")
        assert "CAP_NET_ADMIN" in result.stderr
        assert f"ip tuntap add dev {name} mode tap" in result.stderr
        assert sh("ip", "link", "show", "dev", name, check=False).returncode != 0
    finally:
        sh("ip", "link", "del", name, check=False)


@pytest.mark.root
def test_a_tap_held_by_another_process_is_reported_busy(website: Path) -> None:
    need_root()
    name = f"lmdt{unique_suffix()}"
    try:
        holder = asyncio.run(TapNetwork.connect(name))
        try:
            result = run_website(website, "--interface", name)
            stops_with(result, f"TAP device {name!r} is busy")
        finally:
            asyncio.run(holder.disconnect())
    finally:
        sh("ip", "link", "del", name, check=False)


@pytest.mark.root
def test_an_interface_that_is_not_a_tap_is_named(website: Path) -> None:
    need_root()
    stops_with(run_website(website, "--interface", "lo"), "is not a TAP device")
