"""A TCP packet of several segments that no interface cuts is cut by the
IP layer as Linux's GSO would: pieces of at most the segment size, in
sequence, each with a valid checksum, FIN and PSH on the last only, CWR on
the first only; the pieces' payloads make up the packet's."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import given
from hypothesis import strategies as st

from looming.net.ipv4 import cut_tcp_burst
from looming.net.wire import tcp

ENDS = st.sampled_from(
    [
        (IPv4Address("10.0.0.2"), IPv4Address("10.0.0.1")),
        (IPv6Address("fe80::2"), IPv6Address("fd00::1")),
    ]
)


@given(
    ENDS,
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFF),
    st.binary(min_size=0, max_size=5000),
    st.integers(1, 1500),
    st.booleans(),
    st.booleans(),
)
def test_a_burst_is_cut_into_valid_segments(
    ends: tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address],
    seq: int,
    flags: int,
    payload: bytes,
    segment_size: int,
    timestamps: bool,
    partial: bool,
) -> None:
    source, destination = ends
    flags = (flags | tcp.ACK) & ~(tcp.SYN | tcp.RST)
    header = tcp.TcpHeader(4000, 80, seq, 77, flags, 512, timestamps=(5, 6) if timestamps else None)
    burst = tcp.emit(header, payload, src=source, dst=destination, partial_checksum=partial)
    pieces = cut_tcp_burst(burst, segment_size, source, destination)
    assert len(pieces) == max(1, -(-len(payload) // segment_size))
    data = b""
    for index, piece in enumerate(pieces):
        assert tcp.checksum_ok(piece, source, destination)
        parsed, body = tcp.parse(piece)
        assert len(body) <= segment_size
        assert parsed.seq == (seq + len(data)) % 2**32
        last, first = index == len(pieces) - 1, index == 0
        kept = ~((0 if last else tcp.FIN | tcp.PSH) | (0 if first else int(tcp.TcpFlags.CWR)))
        assert parsed.flags == flags & kept
        assert parsed.timestamps == header.timestamps and parsed.ack == 77
        data += bytes(body)
    assert data == payload
