"""``looming run --dhcp``: the static website gets its address from dnsmasq
(started in the namespace once the TAP is there) and serves on it."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.direct.unikernel import Namespace, OutputLines, build_direct, running_direct

pytestmark = pytest.mark.root


def dnsmasq_argv(ns: Namespace, state: Path) -> list[str]:
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        f"--interface={ns.tap}",
        "--bind-interfaces",
        "--user=root",
        "--no-ping",
        "--log-dhcp",
        "--log-facility=-",
        "--port=0",  # DHCP only
        f"--pid-file={state / 'dnsmasq.pid'}",
        f"--dhcp-leasefile={state / 'leases'}",
        "--dhcp-range=10.79.0.50,10.79.0.99,255.255.255.0,2m",
        f"--dhcp-option=option:router,{ns.peer_address}",
    ]


def test_static_website_serves_on_an_address_from_dnsmasq(
    kernel_namespace: Namespace, tmp_path: Path
) -> None:
    app = build_direct("static_website", tmp_path)
    state = tmp_path / "dnsmasq"
    state.mkdir()
    servers: list[tuple[subprocess.Popen[str], OutputLines]] = []

    def start_dnsmasq() -> None:
        server = subprocess.Popen(
            kernel_namespace.netns(*dnsmasq_argv(kernel_namespace, state)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = OutputLines(server.stderr)
        servers.append((server, lines))
        assert lines.wait_for(r"DHCP, IP range", 10) is not None, lines.text()

    try:
        with running_direct(
            app,
            kernel_namespace,
            "--dhcp",
            "--port",
            "80",
            ready=r"serving http://(\S+):80",
            before_ready=start_dnsmasq,
        ) as unikernel:
            address = IPv4Address(unikernel.ready.group(1))
            assert IPv4Address("10.79.0.50") <= address <= IPv4Address("10.79.0.99")
            leases = (state / "leases").read_text()
            assert f" {address} " in leases
            page = kernel_namespace.run(
                "curl", "--silent", "--show-error", "--max-time", "20", f"http://{address}/"
            )
            assert page == (app / "htdocs" / "index.html").read_bytes()
        assert unikernel.exit_code == 0, unikernel.log
        # The address the lease brought is printed for the user.
        assert f"looming: DHCP: address {address}/24 from {kernel_namespace.peer_address}" in (
            unikernel.log
        ), unikernel.log
    finally:
        for server, _ in servers:
            server.terminate()
            server.wait(timeout=10)
    log = servers[0][1].text()
    assert f"DHCPACK({kernel_namespace.tap}) {address}" in log, log
