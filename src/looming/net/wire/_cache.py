"""Cheap constructors for the address objects every parsed header holds.

Building an ``IPv4Address`` or a validated ``MacAddress`` costs several
hundred nanoseconds, more than the rest of a header's parsing; traffic
carries few distinct addresses, so parsed ones are memoised (bounded: the
memo is simply emptied when full, so a peer cycling through addresses costs
us time, never memory).
"""

from __future__ import annotations

from ipaddress import IPv4Address

from looming.devices.net import MacAddress

_MAX_ENTRIES = 4096
_ipv4: dict[bytes, IPv4Address] = {}
_mac: dict[bytes, MacAddress] = {}


def ipv4_address(raw: bytes) -> IPv4Address:
    """The address for 4 bytes in network order."""
    address = _ipv4.get(raw)
    if address is None:
        if len(_ipv4) >= _MAX_ENTRIES:
            _ipv4.clear()
        address = _ipv4[raw] = IPv4Address(raw)
    return address


def mac_address(raw: bytes) -> MacAddress:
    """The MAC address for 6 bytes."""
    address = _mac.get(raw)
    if address is None:
        if len(_mac) >= _MAX_ENTRIES:
            _mac.clear()
        address = _mac[raw] = MacAddress(raw)
    return address
