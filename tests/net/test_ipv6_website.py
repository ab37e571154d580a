"""The static website example built with ``--net direct`` and fetched by
the Linux kernel's curl over IPv6 (``curl -g 'http://[ADDR]:PORT/'``):
once with ``--ipv6-only`` (no IPv4 address at all: IPv4 goes unanswered),
once dual-stack (the same pages over IPv4 and IPv6)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv6Interface
from pathlib import Path

import pytest

from tests.direct.unikernel import (
    UNIKERNEL_ADDRESS,
    Namespace,
    build_direct,
    namespace,
    running_direct,
)
from tests.net.kernel import have_root, unique_suffix

pytestmark = pytest.mark.root

OURS = IPv6Interface("fd77:0:0:5::2/64")
KERNEL = IPv6Interface("fd77:0:0:5::1/64")


@pytest.fixture(scope="module")
def website(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not have_root():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root; CI runs as root)")
    return build_direct("static_website", tmp_path_factory.mktemp("ipv6-website"))


@pytest.fixture
def kernel_namespace() -> Iterator[Namespace]:
    with namespace() as ns:
        for scope in ("all", "default"):  # the kernel's address usable at once
            ns.run("sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0")
        yield ns


def curl(ns: Namespace, url: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ns.netns("curl", "-g", "--silent", "--show-error", "--max-time", "5", url),
        capture_output=True,
        timeout=30,
    )


def fetched(ns: Namespace, url: str) -> bytes:
    result = curl(ns, url)
    assert result.returncode == 0, (url, result.stderr)
    return result.stdout


def address_the_kernel(ns: Namespace) -> None:
    ns.run("ip", "-6", "addr", "add", str(KERNEL), "dev", ns.tap)


def test_ipv6_only_serves_over_ipv6_and_not_ipv4(
    website: Path, kernel_namespace: Namespace
) -> None:
    ns = kernel_namespace
    index = (website / "htdocs" / "index.html").read_bytes()
    with running_direct(
        website, ns, "--ipv6-only", "on", "--ipv6-address", str(OURS), "--slaac", "off",
        "--port", "8080",
        ready=r"serving (http://\S+)",
        before_ready=lambda: address_the_kernel(ns),
    ) as unikernel:  # fmt: skip
        # The served URL names the IPv6 address, bracketed: there is no other.
        assert unikernel.ready.group(1) == f"http://[{OURS.ip}]:8080"
        for page in ("", "index.html"):
            assert fetched(ns, f"http://[{OURS.ip}]:8080/{page}") == index
        printed = unikernel.stderr.wait_for(r"IPv6: link-local address (\S+)", 5)
        assert printed is not None
        link_local = f"http://[{printed.group(1)}%25{ns.tap}]:8080/"
        assert fetched(ns, link_local) == index
        # IPv4: no address, so no ARP answer and no connection.
        refused = curl(ns, f"http://{UNIKERNEL_ADDRESS.ip}:8080/")
        assert refused.returncode != 0, refused.stdout
        neighbour = ns.run("ip", "-4", "neigh", "show", str(UNIKERNEL_ADDRESS.ip), "dev", ns.tap)
        assert b"lladdr" not in neighbour, neighbour
    assert unikernel.exit_code == 0, unikernel.log
    assert "Traceback" not in unikernel.log, unikernel.log


def test_dual_stack_serves_the_same_pages_over_both(
    website: Path, kernel_namespace: Namespace
) -> None:
    ns = kernel_namespace
    index = (website / "htdocs" / "index.html").read_bytes()
    with running_direct(
        website, ns, "--ipv4", str(UNIKERNEL_ADDRESS), "--ipv6-address", str(OURS),
        "--slaac", "off", "--port", "80",
        ready=r"serving (http://\S+)",
        before_ready=lambda: address_the_kernel(ns),
    ) as unikernel:  # fmt: skip
        assert unikernel.ready.group(1) == f"http://{UNIKERNEL_ADDRESS.ip}:80"
        assert unikernel.stderr.wait_for(rf"IPv6: address {OURS.ip} assigned \(static", 5)
        for _ in range(2):  # alternating, each on a fresh connection
            assert fetched(ns, f"http://{UNIKERNEL_ADDRESS.ip}/") == index
            assert fetched(ns, f"http://[{OURS.ip}]/") == index
    assert unikernel.exit_code == 0, unikernel.log
    assert "Traceback" not in unikernel.log, unikernel.log


def test_ipv6_only_with_dhcp_exits_2(website: Path) -> None:
    keys = ["--ipv6-only", "on", "--dhcp", "on", "--interface", f"lmq{unique_suffix()}"]
    result = subprocess.run(
        [sys.executable, "-m", "looming.cli", "run", *keys],
        cwd=website,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "takes no IPv4 address and no --dhcp" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
