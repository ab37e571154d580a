"""The echo example built with ``--net direct`` and run with the IPv6 keys,
reached by the Linux kernel over IPv6: once by an address SLAAC gave it
from dnsmasq's Router Advertisements, once by a static ``--ipv6-address``.
Also: ``looming configure --net direct --help`` lists the keys and bad
values stop the unikernel with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv6Address, IPv6Interface
from pathlib import Path

import pytest

from looming.net.slaac import stable_interface_id
from tests.config.tooling import looming
from tests.direct.unikernel import (
    UNIKERNEL_ADDRESS,
    Namespace,
    OutputLines,
    build_direct,
    namespace,
    running_direct,
)
from tests.net.kernel import have_root, unique_suffix


@pytest.fixture
def kernel_namespace() -> Iterator[Namespace]:
    if not have_root():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root; CI runs as root)")
    with namespace() as ns:
        yield ns


ROUTER = IPv6Interface("fd77:0:0:2::1/64")
STATIC = IPv6Interface("fd77:0:0:3::2/64")
SECRET = bytes(range(100, 132))

ECHO_CLIENT = r"""
import hashlib, socket, sys
c = socket.create_connection((sys.argv[1], 7), timeout=10)
data = bytes(i % 247 for i in range(200_000))
c.sendall(data)
c.shutdown(socket.SHUT_WR)
back = b""
while chunk := c.recv(65536):
    back += chunk
print(hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest())
"""


def no_kernel_dad(ns: Namespace) -> None:
    """The kernel's addresses on the TAP usable at once (set before it moves in)."""
    for scope in ("all", "default"):
        ns.run("sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0")


def reach_over_ipv6(ns: Namespace, address: IPv6Address) -> None:
    out = ns.run("ping", "-6", "-c", "2", "-i", "0.2", "-W", "3", str(address)).decode()
    assert "2 received" in out, out
    assert ns.run(sys.executable, "-c", ECHO_CLIENT, str(address)).split() == [b"True"]


@pytest.mark.root
def test_echo_unikernel_gets_a_slaac_address_and_the_kernel_reaches_it(
    kernel_namespace: Namespace, tmp_path: Path
) -> None:
    app = build_direct("echo", tmp_path)
    no_kernel_dad(kernel_namespace)
    servers: list[subprocess.Popen[str]] = []

    def start_router() -> None:
        tap = kernel_namespace.tap
        kernel_namespace.run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        kernel_namespace.run("ip", "-6", "addr", "add", str(ROUTER), "dev", tap, "nodad")
        argv = [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            f"--interface={tap}",
            "--bind-interfaces",
            "--user=root",
            "--port=0",
            "--log-facility=-",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}",
            f"--dhcp-leasefile={tmp_path / 'leases'}",
            "--enable-ra",
            f"--dhcp-range={ROUTER.network.network_address},ra-only,64,1h",
        ]
        server = subprocess.Popen(
            kernel_namespace.netns(*argv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        servers.append(server)
        assert OutputLines(server.stderr).wait_for("router advertisement", 10) is not None

    try:
        with running_direct(
            app,
            kernel_namespace,
            "--ipv4", str(UNIKERNEL_ADDRESS), "--ipv6", "--port", "7", "--seed", "3",
            "--slaac-secret", SECRET.hex(),
            ready=r"echo listening on port 7",
            before_ready=start_router,
        ) as unikernel:  # fmt: skip
            assigned = unikernel.stderr.wait_for(r"IPv6: address (\S+) assigned by SLAAC", 20)
            assert assigned is not None
            address = IPv6Address(assigned.group(1))
            assert address in ROUTER.network
            reach_over_ipv6(kernel_namespace, address)
            # RFC 7217 from the prefix, the MAC the kernel learned and the secret.
            neighbour = kernel_namespace.run("ip", "-6", "neigh", "show", str(address)).split()
            mac = bytes.fromhex(neighbour[neighbour.index(b"lladdr") + 1].decode().replace(":", ""))
            interface_id = stable_interface_id(ROUTER.network, mac, b"", 0, SECRET)
            assert address == IPv6Address(int(ROUTER.network.network_address) | interface_id)
        assert unikernel.exit_code == 0, unikernel.log
        assert "Traceback" not in unikernel.log
    finally:
        for server in servers:
            server.terminate()
            server.wait()


@pytest.mark.root
def test_echo_unikernel_on_a_static_ipv6_address(
    kernel_namespace: Namespace, tmp_path: Path
) -> None:
    app = build_direct("echo", tmp_path)
    no_kernel_dad(kernel_namespace)

    def address_the_kernel() -> None:
        peer = f"{STATIC.network.network_address + 1}/64"
        kernel_namespace.run("ip", "-6", "addr", "add", peer, "dev", kernel_namespace.tap)

    with running_direct(
        app,
        kernel_namespace,
        "--ipv4", str(UNIKERNEL_ADDRESS), "--ipv6-address", str(STATIC), "--slaac", "off",
        "--port", "7",
        ready=r"echo listening on port 7",
        before_ready=address_the_kernel,
    ) as unikernel:  # fmt: skip
        printed = unikernel.stderr.wait_for(r"IPv6: link-local address (\S+)", 5)
        assert printed is not None
        link_local = f"{printed.group(1)}%{kernel_namespace.tap}"
        out = kernel_namespace.run("ping", "-6", "-c", "1", "-W", "3", link_local).decode()
        assert "1 received" in out, out
        # Usable once duplicate address detection has found no other holder.
        assert unikernel.stderr.wait_for(rf"IPv6: address {STATIC.ip} assigned \(static", 5)
        reach_over_ipv6(kernel_namespace, STATIC.ip)
    assert unikernel.exit_code == 0, unikernel.log
    assert "SLAAC" not in unikernel.log


@pytest.mark.root  # the TAP opens before the stack checks its keys
def test_configure_lists_the_ipv6_keys_and_bad_values_exit_2(tmp_path: Path) -> None:
    app = build_direct("echo", tmp_path)
    shown = looming(app, "configure", "--net", "direct", "--help").stdout
    for option in ("--ipv6 BOOL", "--ipv6-address IPV6_INTERFACE", "--ipv6-gateway", "--slaac"):
        assert option in shown, shown
    bad = {
        ("--ipv6-address", "ff02::1/64"): "not an address an interface can hold",
        ("--ipv6-address", "fd00::zz/64"): "is not a valid ipv6_interface",
        ("--ipv6-gateway", "fd99::1"): "neither link-local nor inside the prefix",
        ("--slaac", "maybe"): "expected true or false",
        ("--slaac-secret", "xyz"): "not hex digits",
        ("--slaac-secret", "00ff"): "give at least 128",
    }
    for (key, value), message in bad.items():
        tap = f"lmq{unique_suffix()}"
        result = subprocess.run(
            [sys.executable, "-m", "looming.cli", "run", key, value, "--interface", tap],
            cwd=app,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (key, value, result.stderr)
        assert message in result.stderr, (key, value, result.stderr)
        assert "Traceback" not in result.stderr
