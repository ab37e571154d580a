"""Checks of the direct stack's settings, made before anything is opened.

:meth:`looming.net.stack.DirectStack.connect` runs them on its arguments;
the code ``looming configure`` generates runs :func:`check_direct_keys` on
the key values before it opens any device, so a bad value is reported as
itself (exit 2), never masked by a device that failed to open (a TAP in
use). Each error names the key and says what to give instead.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from looming.errors import UsageError
from looming.net.limits import check_stack_limits


def check_direct_keys(
    *,
    address: IPv4Interface | None,
    gateway: IPv4Address | None,
    dhcp: bool,
    max_connections: int | None,
    memory_limit: int | None,
    congestion_control: str,
    ipv6: bool,
    ipv4: bool,
    ipv6_address: IPv6Interface | None,
    ipv6_gateway: IPv6Address | None,
    slaac: bool,
    slaac_secret: str | None,
) -> None:
    """Every check :meth:`DirectStack.connect` makes on these keys, and
    those only a command line needs: an address given without its prefix
    length (read as a /32 or /128: nobody on the link could be reached)
    and a gateway's zone naming no interface."""
    check_ipv6(ipv6, ipv6_address, ipv6_gateway)
    if slaac_secret:
        secret_from_hex(slaac_secret)
    check_stack_limits(max_connections, memory_limit, congestion_control)
    check_ipv4(address, dhcp, ipv4=ipv4, ipv6=ipv6)
    check_ipv4_values(address, gateway)
    check_prefixes(address, ipv6_address, ipv6_gateway)
    check_zone(ipv6_gateway)


def check_prefixes(
    address: IPv4Interface | None,
    ipv6_address: IPv6Interface | None,
    ipv6_gateway: IPv6Address | None,
) -> None:
    """A static address must come with its prefix length: the prefix says
    which hosts are on the link (a bare address is a /32 or /128)."""
    if address is not None and address.network.prefixlen == 32:
        raise UsageError(
            f"--ipv4 {address.ip}: give the prefix length too, e.g. --ipv4 "
            f"{address.ip}/24 (as a /32 it reaches no other host on the link)"
        )
    if ipv6_address is not None and ipv6_address.network.prefixlen == 128 and ipv6_gateway is None:
        raise UsageError(
            f"--ipv6-address {ipv6_address.ip}: give the prefix length too, e.g. "
            f"--ipv6-address {ipv6_address.ip}/64 (as a /128 it reaches no other host "
            "on the link), or a --ipv6-gateway"
        )


def check_zone(gateway: IPv6Address | None) -> None:
    """A zone (``fe80::1%eth0``) must name an interface of this host."""
    zone = gateway.scope_id if gateway is not None else None
    if not zone:
        return
    try:
        if zone.isdigit():
            socket.if_indextoname(int(zone))
        else:
            socket.if_nametoindex(zone)
    except OSError:
        raise UsageError(
            f"--ipv6-gateway {gateway}: no interface {zone!r} on this host; "
            "give the router's address without the zone (the stack has one link)"
        ) from None


def secret_from_hex(text: str) -> bytes:
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"--slaac-secret {text!r}: not hex digits") from None
    if len(secret) < 16:
        raise UsageError(
            f"--slaac-secret: {len(secret) * 8} bits; give at least 128 (32 hex digits)"
        )
    return secret


def check_ipv4(
    address: IPv4Interface | None,
    dhcp: bool,
    *,
    ipv4: bool = True,
    ipv6: bool = False,
) -> None:
    if not ipv4:
        if not ipv6:
            raise UsageError("IPv6 only (--ipv6-only) needs IPv6: give --ipv6 on or drop it")
        if dhcp or address is not None:
            raise UsageError("IPv6 only (--ipv6-only) takes no IPv4 address and no --dhcp")
        return
    if dhcp and address is not None:
        raise ValueError("give either a static address or dhcp=True, not both")
    if not dhcp and address is None:
        raise ValueError("a direct stack needs an address (or dhcp=True)")


def check_ipv4_values(address: IPv4Interface | None, gateway: IPv4Address | None) -> None:
    """Refuse a static IPv4 address or gateway that cannot work, naming the key."""
    if address is None:
        return
    ip, network = address.ip, address.network
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_reserved:
        raise UsageError(f"--ipv4 {address}: not an address an interface can hold")
    if network.prefixlen < 31 and ip in (network.network_address, network.broadcast_address):
        raise UsageError(
            f"--ipv4 {address}: the network's own or broadcast address; give a host address"
        )
    if gateway is not None and (gateway not in network or gateway == ip):
        raise UsageError(
            f"--ipv4-gateway {gateway}: not another address inside {network} (--ipv4 "
            f"{address}); give a gateway on that network, or a wider prefix"
        )


def check_ipv6(ipv6: bool, address: IPv6Interface | None, gateway: IPv6Address | None) -> None:
    """Refuse IPv6 settings that cannot work, saying which key to fix."""
    if not ipv6 and (address is not None or gateway is not None):
        raise UsageError("an IPv6 address or gateway needs IPv6 turned on (--ipv6)")
    if address is not None:
        ip = address.ip
        if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
            raise UsageError(f"--ipv6-address {address}: not an address an interface can hold")
        if address.network.prefixlen == 128 and gateway is not None and not gateway.is_link_local:
            raise UsageError(
                f"--ipv6-gateway {gateway} cannot be reached from {address}: give the "
                "address with its prefix (e.g. /64) or a link-local gateway (fe80::...)"
            )
    if gateway is None:
        return
    if gateway.is_multicast or gateway.is_unspecified or gateway.is_loopback:
        raise UsageError(f"--ipv6-gateway {gateway}: not a router's address")
    if not gateway.is_link_local and (address is None or gateway not in address.network):
        raise UsageError(
            f"--ipv6-gateway {gateway} is neither link-local nor inside the prefix of "
            "--ipv6-address: the router must be on the link"
        )
