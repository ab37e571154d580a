"""Cheap constructors for the address objects every parsed header holds.

Building an ``IPv4Address`` or a validated ``MacAddress`` costs several
hundred nanoseconds, more than the rest of a header's parsing; traffic
carries few distinct addresses, so parsed ones are memoised in a
:class:`looming.bounded.Memo` (emptied when full, so a peer cycling through
addresses costs us time, never memory). A hit is the memo's ``get``, the
dict's own method, bound once here: as cheap as the plain dict it replaced.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from looming.bounded import Memo
from looming.devices.net import MacAddress

_MAX_ENTRIES = 4096
_ipv4: Memo[bytes, IPv4Address] = Memo(_MAX_ENTRIES)
_mac: Memo[bytes, MacAddress] = Memo(_MAX_ENTRIES)
_ipv4_get = _ipv4.get
_ipv4_put = _ipv4.put
_mac_get = _mac.get
_mac_put = _mac.put


def ipv4_address(raw: bytes) -> IPv4Address:
    """The address for 4 bytes in network order."""
    address = _ipv4_get(raw)
    if address is None:
        address = _ipv4_put(raw, IPv4Address(raw))
    return address


def mac_address(raw: bytes) -> MacAddress:
    """The MAC address for 6 bytes."""
    address = _mac_get(raw)
    if address is None:
        address = _mac_put(raw, MacAddress(raw))
    return address
