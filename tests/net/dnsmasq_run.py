"""dnsmasq as the tests run it on a kernel peer's TAP (DHCP, RA, DHCPv6, DNS)."""

from __future__ import annotations

from pathlib import Path

from tests.net.kernel import KernelPeer


def dnsmasq_command(peer: KernelPeer, state: Path, *options: str) -> list[str]:
    """dnsmasq in the foreground on the peer's TAP alone, logging to stderr,
    its pid file in ``state``, with the test's own ``options``."""
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        f"--interface={peer.tap_name}",
        "--bind-interfaces",
        "--user=root",
        "--log-facility=-",
        f"--pid-file={state / 'dnsmasq.pid'}",
        *options,
    ]
