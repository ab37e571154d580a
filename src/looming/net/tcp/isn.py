"""Initial sequence numbers (RFC 6528), timestamp offsets and SYN cookies.

Both use a keyed BLAKE2s hash of the connection's 4-tuple with a secret from
the Random device, so they are unpredictable off-path yet reproducible in a
seeded simulation.
"""

from __future__ import annotations

import hashlib
from ipaddress import IPv4Address, IPv6Address

from looming.net.tcp.seq import MASK

FourTuple = tuple[IPv4Address | IPv6Address, int, IPv4Address | IPv6Address, int]
"""(local address, local port, remote address, remote port)."""

# MSS values a cookie can carry in 3 bits (those common on real paths).
COOKIE_MSS_TABLE = (536, 1200, 1360, 1400, 1440, 1452, 1460, 8960)
COOKIE_PERIOD_NS = 64 * 1_000_000_000
COOKIE_MAX_AGE_PERIODS = 2


def _tuple_bytes(four_tuple: FourTuple) -> bytes:
    local_ip, local_port, remote_ip, remote_port = four_tuple
    return (
        local_ip.packed
        + local_port.to_bytes(2, "big")
        + remote_ip.packed
        + remote_port.to_bytes(2, "big")
    )


class IsnGenerator:
    """ISN = M + F(4-tuple, secret), M a 4 microsecond clock (RFC 6528 section 3)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the ISN secret must have at least 16 bytes")
        self._secret = secret[:32]

    def _hash32(self, label: bytes, data: bytes) -> int:
        digest = hashlib.blake2s(label + data, key=self._secret, digest_size=4).digest()
        return int.from_bytes(digest, "big")

    def isn(self, four_tuple: FourTuple, now_ns: int) -> int:
        return (now_ns // 4000 + self._hash32(b"isn", _tuple_bytes(four_tuple))) & MASK

    def timestamp_offset(self, four_tuple: FourTuple) -> int:
        """A per-connection offset for TSval (RFC 7323 section 7.1)."""
        return self._hash32(b"tso", _tuple_bytes(four_tuple))


class SynCookies:
    """Stateless SYN-ACK sequence numbers that remember the SYN's MSS.

    Layout of the 32-bit cookie: 5 bits of a 64-second counter, 3 bits of
    MSS index, 24 bits of keyed hash over the 4-tuple, the peer's ISN, the
    counter and the MSS index. Window scale and SACK-permitted ride in the
    low 6 bits of our SYN-ACK's TSval, echoed back in TSecr, when the peer
    uses timestamps (otherwise the connection goes without them).
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret[:32]

    def _mac(self, four_tuple: FourTuple, peer_isn: int, counter: int, mss_index: int) -> int:
        data = (
            _tuple_bytes(four_tuple)
            + peer_isn.to_bytes(4, "big")
            + counter.to_bytes(8, "big")
            + bytes((mss_index,))
        )
        digest = hashlib.blake2s(b"cookie" + data, key=self._secret, digest_size=3).digest()
        return int.from_bytes(digest, "big")

    @staticmethod
    def mss_index(mss: int) -> int:
        index = 0
        for i, value in enumerate(COOKIE_MSS_TABLE):
            if value <= mss:
                index = i
        return index

    def make(self, four_tuple: FourTuple, peer_isn: int, mss: int, now_ns: int) -> int:
        counter = now_ns // COOKIE_PERIOD_NS
        index = self.mss_index(mss)
        return (
            ((counter & 0x1F) << 27)
            | (index << 24)
            | self._mac(four_tuple, peer_isn, counter, index)
        )

    def check(self, four_tuple: FourTuple, peer_isn: int, cookie: int, now_ns: int) -> int | None:
        """The MSS the cookie carries, or None when it is forged or too old."""
        now_counter = now_ns // COOKIE_PERIOD_NS
        stamp = cookie >> 27
        index = (cookie >> 24) & 0x7
        for age in range(COOKIE_MAX_AGE_PERIODS + 1):
            counter = now_counter - age
            if counter < 0 or (counter & 0x1F) != stamp:
                continue
            if self._mac(four_tuple, peer_isn, counter, index) == cookie & 0xFFFFFF:
                return COOKIE_MSS_TABLE[index]
        return None

    @staticmethod
    def encode_options(window_scale: int | None, sack_permitted: bool) -> int:
        """Six bits for the low end of TSval: 4 for scale (15 = none), 1 for SACK."""
        scale = 15 if window_scale is None else min(window_scale, 14)
        return scale | (0x10 if sack_permitted else 0)

    @staticmethod
    def decode_options(bits: int) -> tuple[int | None, bool]:
        scale = bits & 0xF
        return (None if scale == 15 else scale), bool(bits & 0x10)
