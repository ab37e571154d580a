"""The per-segment fast paths give what the general code gives.

Each shortcut taken for the common segment (a datagram without options, a
frame without a VLAN tag, the usual TCP option layout, long checksums) is
checked against the general code it stands in for, on generated input.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from looming.net.wire import ipv4

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
addresses = st.integers(0, 0xFFFFFFFF).map(IPv4Address)


@given(addresses, addresses, u8, u8, u16, st.booleans(), u8, st.binary(max_size=1600))
def test_plain_ipv4_emit_is_the_general_emit(
    source: IPv4Address,
    destination: IPv4Address,
    protocol: int,
    ttl: int,
    identification: int,
    dont_fragment: bool,
    tos: int,
    payload: bytes,
) -> None:
    header = ipv4.Ipv4Header(
        source=source,
        destination=destination,
        protocol=protocol,
        ttl=ttl,
        identification=identification,
        dont_fragment=dont_fragment,
        tos=tos,
    )
    plain = ipv4.emit_plain(
        source.packed,
        destination.packed,
        int(source) + int(destination),
        protocol,
        ttl,
        identification,
        dont_fragment,
        tos,
        payload,
    )
    assert plain == ipv4.emit(header, payload)
    assert ipv4.parse(plain)[0] == header
