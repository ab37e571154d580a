"""TCP segment headers (RFC 9293 section 3.1) and their options.

Options understood: End of Option List, No-Operation, Maximum Segment Size
(RFC 9293), Window Scale and Timestamps (RFC 7323), SACK-Permitted and SACK
blocks (RFC 2018). Other options are skipped by their length byte. A known
option with the wrong length, or an option that runs past the header, makes
the segment malformed (the stack counts and drops it).

:func:`emit` writes options in one canonical order, so for every header it
can encode, ``parse(emit(h, p)) == (h, p)``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from looming.errors import Malformed
from looming.net.wire.checksum import internet_checksum, ones_complement_sum, pseudo_header_sum

HEADER_LENGTH = 20
MAX_OPTIONS_LENGTH = 40
PROTOCOL_NUMBER = 6

_FIXED = struct.Struct("!HHIIBBHHH")
# The fixed header, then NOP, NOP, timestamps (kind 8, length 10) and their
# two values: what both ends send on every segment when timestamps are on.
_TIMESTAMPED = struct.Struct("!HHIIBBHHHIII")
_TIMESTAMPED_LENGTH = _TIMESTAMPED.size
_NOP_NOP_TIMESTAMPS = 0x0101080A

OPTION_EOL = 0
OPTION_NOP = 1
OPTION_MSS = 2
OPTION_WINDOW_SCALE = 3
OPTION_SACK_PERMITTED = 4
OPTION_SACK = 5
OPTION_TIMESTAMPS = 8

_Buffer = bytes | bytearray | memoryview


class TcpFlags(enum.IntFlag):
    """The control bits of a segment."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


# Plain ints for the hot paths: arithmetic on IntFlag members goes through
# enum machinery on every segment.
FIN = int(TcpFlags.FIN)
SYN = int(TcpFlags.SYN)
RST = int(TcpFlags.RST)
PSH = int(TcpFlags.PSH)
ACK = int(TcpFlags.ACK)


@dataclass(frozen=True, slots=True, init=False)
class TcpHeader:
    """One TCP header with its options decoded.

    ``seq`` and ``ack`` are the 32-bit values on the wire. ``window`` is the
    raw 16-bit field (not yet scaled). ``sack_blocks`` holds (left, right)
    edges. ``timestamps`` is (TSval, TSecr) when the option is present.
    """

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int = 0
    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None

    def __init__(
        self,
        src_port: int,
        dst_port: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        urgent: int = 0,
        mss: int | None = None,
        window_scale: int | None = None,
        sack_permitted: bool = False,
        sack_blocks: tuple[tuple[int, int], ...] = (),
        timestamps: tuple[int, int] | None = None,
    ) -> None:
        # What the generated frozen __init__ does, through the slots' own
        # setters instead of object.__setattr__: two headers a segment
        # are built, and this takes half the time.
        _set_src_port(self, src_port)
        _set_dst_port(self, dst_port)
        _set_seq(self, seq)
        _set_ack(self, ack)
        _set_flags(self, flags)
        _set_window(self, window)
        _set_urgent(self, urgent)
        _set_mss(self, mss)
        _set_window_scale(self, window_scale)
        _set_sack_permitted(self, sack_permitted)
        _set_sack_blocks(self, sack_blocks)
        _set_timestamps(self, timestamps)

    @property
    def syn(self) -> bool:
        return bool(self.flags & SYN)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FIN)

    @property
    def rst(self) -> bool:
        return bool(self.flags & RST)

    @property
    def has_ack(self) -> bool:
        return bool(self.flags & ACK)

    def describe(self) -> str:
        """A short tcpdump-like rendering, for test failures and logs."""
        names = "".join(
            letter
            for bit, letter in zip((SYN, FIN, RST, PSH, ACK), "SFRPA", strict=True)
            if self.flags & bit
        )
        return f"{self.src_port}>{self.dst_port} [{names}] seq={self.seq} ack={self.ack} win={self.window}"


_SLOTS: Any = TcpHeader.__dict__
_set_src_port = _SLOTS["src_port"].__set__
_set_dst_port = _SLOTS["dst_port"].__set__
_set_seq = _SLOTS["seq"].__set__
_set_ack = _SLOTS["ack"].__set__
_set_flags = _SLOTS["flags"].__set__
_set_window = _SLOTS["window"].__set__
_set_urgent = _SLOTS["urgent"].__set__
_set_mss = _SLOTS["mss"].__set__
_set_window_scale = _SLOTS["window_scale"].__set__
_set_sack_permitted = _SLOTS["sack_permitted"].__set__
_set_sack_blocks = _SLOTS["sack_blocks"].__set__
_set_timestamps = _SLOTS["timestamps"].__set__


def _options_length(header: TcpHeader) -> int:
    length = 0
    if header.mss is not None:
        length += 4
    if header.sack_permitted:
        length += 2
    if header.timestamps is not None:
        length += 10
    if header.window_scale is not None:
        length += 3
    if header.sack_blocks:
        length += 2 + 8 * len(header.sack_blocks)
    return length


def _emit_options(header: TcpHeader) -> bytes:
    # Laid out as the common stacks do, so that 4-byte fields stay aligned:
    # MSS, then SACK-permitted and timestamps packed behind two NOPs or
    # sharing them, then window scale after one NOP, then SACK blocks.
    out = bytearray()
    if header.mss is not None:
        out += struct.pack("!BBH", OPTION_MSS, 4, header.mss)
    if header.sack_permitted and header.timestamps is not None:
        out += bytes((OPTION_SACK_PERMITTED, 2))
        out += struct.pack("!BBII", OPTION_TIMESTAMPS, 10, *header.timestamps)
    elif header.timestamps is not None:
        out += bytes((OPTION_NOP, OPTION_NOP))
        out += struct.pack("!BBII", OPTION_TIMESTAMPS, 10, *header.timestamps)
    elif header.sack_permitted:
        out += bytes((OPTION_NOP, OPTION_NOP, OPTION_SACK_PERMITTED, 2))
    if header.window_scale is not None:
        out += bytes((OPTION_NOP, OPTION_WINDOW_SCALE, 3, header.window_scale))
    if header.sack_blocks:
        out += bytes((OPTION_NOP, OPTION_NOP, OPTION_SACK, 2 + 8 * len(header.sack_blocks)))
        for left, right in header.sack_blocks:
            out += struct.pack("!II", left, right)
    if len(out) % 4:
        out += bytes(4 - len(out) % 4)  # End of Option List, then zero padding
    return bytes(out)


def emit(
    header: TcpHeader,
    payload: _Buffer = b"",
    *,
    src: IPv4Address | IPv6Address | None = None,
    dst: IPv4Address | IPv6Address | None = None,
    partial_checksum: bool = False,
) -> bytes:
    """The wire form of ``header`` followed by ``payload``.

    With ``src`` and ``dst`` the checksum is computed over the IPv4
    pseudo-header; without them it is left zero (for offload or tests).
    With ``partial_checksum`` too, the field holds only the pseudo-header
    sum, for an interface that finishes it (CHECKSUM_PARTIAL, as segmentation
    offload does; see :func:`finish_checksum`).
    Raises :class:`ValueError` for a header that cannot be encoded (fields
    out of range, or options longer than 40 bytes).
    """
    timestamps = header.timestamps
    if header.mss is None and header.window_scale is None and not header.sack_permitted:
        # A connection's segment after the handshake: one of the layouts
        # below, packed in one call.
        blocks = header.sack_blocks
        if not blocks:
            if timestamps is not None:
                return _emit_timestamped(header, timestamps, payload, src, dst, partial_checksum)
            return _emit_bare(header, payload, src, dst, partial_checksum)
        if len(blocks) <= (3 if timestamps is not None else 4):
            return _emit_sack(header, timestamps, blocks, payload, src, dst, partial_checksum)
    return _emit_general(header, payload, src, dst, partial_checksum)


def _emit_general(
    header: TcpHeader,
    payload: _Buffer,
    src: IPv4Address | IPv6Address | None,
    dst: IPv4Address | IPv6Address | None,
    partial_checksum: bool,
) -> bytes:
    """:func:`emit` for any header, options laid out by :func:`_emit_options`."""
    if _options_length(header) > MAX_OPTIONS_LENGTH:
        raise ValueError("TCP options exceed 40 bytes: send fewer SACK blocks")
    options = _emit_options(header)
    if len(options) > MAX_OPTIONS_LENGTH:
        raise ValueError("TCP options exceed 40 bytes after alignment: send fewer SACK blocks")
    data_offset = (HEADER_LENGTH + len(options)) // 4
    try:
        fixed = _FIXED.pack(
            header.src_port,
            header.dst_port,
            header.seq,
            header.ack,
            data_offset << 4,
            header.flags,
            header.window,
            0,
            header.urgent,
        )
    except struct.error as error:
        raise ValueError(f"TCP header field out of range: {error}") from None
    segment = bytearray(fixed)
    segment += options
    segment += payload
    if src is not None and dst is not None:
        pseudo = pseudo_header_sum(src, dst, PROTOCOL_NUMBER, len(segment))
        checksum = pseudo if partial_checksum else internet_checksum(segment, pseudo)
        segment[16:18] = checksum.to_bytes(2, "big")
    return bytes(segment)


def _emit_timestamped(
    header: TcpHeader,
    timestamps: tuple[int, int],
    payload: _Buffer,
    src: IPv4Address | IPv6Address | None,
    dst: IPv4Address | IPv6Address | None,
    partial_checksum: bool,
) -> bytes:
    """:func:`emit` for a header whose only option is the timestamps (the
    usual segment once connected): packed in one call, and summed without
    first copying the payload behind the header."""
    checksum = 0
    if src is not None and dst is not None:
        checksum = pseudo_header_sum(src, dst, PROTOCOL_NUMBER, _TIMESTAMPED_LENGTH + len(payload))
        if not partial_checksum:
            # The header's 16-bit words, added as numbers: a 32-bit field is
            # congruent to the sum of its two halves modulo 0xFFFF.
            words = (
                _header_words(header, _TIMESTAMPED_LENGTH)
                + _NOP_NOP_TIMESTAMPS
                + timestamps[0]
                + timestamps[1]
            )
            checksum = internet_checksum(payload, checksum + words)
    fixed = _packed(
        _TIMESTAMPED,
        header,
        _TIMESTAMPED_LENGTH,
        checksum,
        _NOP_NOP_TIMESTAMPS,
        timestamps[0],
        timestamps[1],
    )
    return fixed + payload


def _packed(
    layout: struct.Struct, header: TcpHeader, length: int, checksum: int, *options: int
) -> bytes:
    """The header of ``length`` bytes in ``layout``: the fixed fields, then
    ``options`` (32-bit words)."""
    try:
        return layout.pack(
            header.src_port,
            header.dst_port,
            header.seq,
            header.ack,
            length << 2,
            header.flags,
            header.window,
            checksum,
            header.urgent,
            *options,
        )
    except struct.error as error:
        raise ValueError(f"TCP header field out of range: {error}") from None


def _header_words(header: TcpHeader, length: int) -> int:
    """The fixed header's 16-bit words but the checksum, added as numbers
    (a 32-bit field is congruent to the sum of its halves modulo 0xFFFF),
    for a header of ``length`` bytes."""
    return (
        header.src_port
        + header.dst_port
        + header.seq
        + header.ack
        + (length << 10 | header.flags)
        + header.window
        + header.urgent
    )


def _segment_checksum(
    words: int,
    payload: _Buffer,
    src: IPv4Address | IPv6Address,
    dst: IPv4Address | IPv6Address,
    length: int,
    partial_checksum: bool,
) -> int:
    """The checksum field of a segment of ``length`` bytes whose header
    words (but the checksum) add up to ``words``, summed without first
    copying the payload behind the header."""
    pseudo = pseudo_header_sum(src, dst, PROTOCOL_NUMBER, length)
    if partial_checksum:
        return pseudo
    return internet_checksum(payload, pseudo + words)


def _emit_bare(
    header: TcpHeader,
    payload: _Buffer,
    src: IPv4Address | IPv6Address | None,
    dst: IPv4Address | IPv6Address | None,
    partial_checksum: bool,
) -> bytes:
    """:func:`emit` for a header without options (a pure ACK of a
    connection without timestamps, most often)."""
    checksum = 0
    if src is not None and dst is not None:
        words = _header_words(header, HEADER_LENGTH)
        length = HEADER_LENGTH + len(payload)
        checksum = _segment_checksum(words, payload, src, dst, length, partial_checksum)
    return _packed(_FIXED, header, HEADER_LENGTH, checksum) + payload


# The SACK option's layouts: the fixed header, timestamps behind two NOPs
# (or not), then two NOPs, kind 5 and its length, then the blocks.
_SACK_LAYOUTS = {
    (stamped, count): struct.Struct("!HHIIBBHHH" + ("III" if stamped else "") + "I" + "II" * count)
    for stamped in (False, True)
    for count in range(1, 5)
}


def _emit_sack(
    header: TcpHeader,
    timestamps: tuple[int, int] | None,
    blocks: tuple[tuple[int, int], ...],
    payload: _Buffer,
    src: IPv4Address | IPv6Address | None,
    dst: IPv4Address | IPv6Address | None,
    partial_checksum: bool,
) -> bytes:
    """:func:`emit` for a header whose options are SACK blocks (that fit),
    behind the timestamps or not: what a receiver sends while a hole is open."""
    options: list[int] = []
    if timestamps is not None:
        options += (_NOP_NOP_TIMESTAMPS, timestamps[0], timestamps[1])
    options.append(0x01010500 | (2 + 8 * len(blocks)))
    for left, right in blocks:
        options += (left, right)
    layout = _SACK_LAYOUTS[timestamps is not None, len(blocks)]
    length = layout.size
    checksum = 0
    if src is not None and dst is not None:
        words = _header_words(header, length) + sum(options)
        checksum = _segment_checksum(
            words, payload, src, dst, length + len(payload), partial_checksum
        )
    return _packed(layout, header, length, checksum, *options) + payload


def finish_checksum(segment: bytes) -> bytes:
    """``segment`` emitted with ``partial_checksum``, with its checksum
    finished: summing the segment with the pseudo-header sum in the field
    gives the checksum proper."""
    if len(segment) < 18:
        return segment
    checksum = internet_checksum(segment) or 0xFFFF
    return segment[:16] + checksum.to_bytes(2, "big") + segment[18:]


@dataclass(slots=True)
class _Options:
    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    timestamps: tuple[int, int] | None = None


def _parse_options(options: memoryview) -> _Options:
    found = _Options()
    index = 0
    end = len(options)
    while index < end:
        kind = options[index]
        if kind == OPTION_EOL:
            break
        if kind == OPTION_NOP:
            index += 1
            continue
        if index + 1 >= end:
            raise Malformed(f"TCP option {kind} has no length byte")
        length = options[index + 1]
        if length < 2 or index + length > end:
            raise Malformed(f"TCP option {kind} has bad length {length}")
        body = options[index + 2 : index + length]
        if kind == OPTION_MSS:
            if length != 4:
                raise Malformed(f"TCP MSS option has length {length}, not 4")
            found.mss = int.from_bytes(body, "big")
        elif kind == OPTION_WINDOW_SCALE:
            if length != 3:
                raise Malformed(f"TCP window scale option has length {length}, not 3")
            found.window_scale = body[0]
        elif kind == OPTION_SACK_PERMITTED:
            if length != 2:
                raise Malformed(f"TCP SACK-permitted option has length {length}, not 2")
            found.sack_permitted = True
        elif kind == OPTION_SACK:
            found.sack_blocks = _sack_blocks(body, length)
        elif kind == OPTION_TIMESTAMPS:
            if length != 10:
                raise Malformed(f"TCP timestamps option has length {length}, not 10")
            found.timestamps = (
                int.from_bytes(body[0:4], "big"),
                int.from_bytes(body[4:8], "big"),
            )
        # Unknown kinds are skipped by their length, as RFC 9293 requires.
        index += length
    return found


def _sack_blocks(body: memoryview, length: int) -> tuple[tuple[int, int], ...]:
    """The (left, right) edges of a SACK option of ``length`` bytes."""
    if (length - 2) % 8 or length == 2:
        raise Malformed(f"TCP SACK option has length {length}, not 2 + 8n")
    return tuple(
        (
            int.from_bytes(body[i : i + 4], "big"),
            int.from_bytes(body[i + 4 : i + 8], "big"),
        )
        for i in range(0, length - 2, 8)
    )


def parse(buf: _Buffer) -> tuple[TcpHeader, memoryview]:
    """Split a segment into its header and payload (a view into ``buf``).

    The checksum is not checked here (it needs the IP addresses): use
    :func:`checksum_ok`. Raises only :class:`~looming.errors.Malformed`.
    """
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    if len(view) < HEADER_LENGTH:
        raise Malformed(f"TCP segment of {len(view)} bytes is shorter than its 20-byte header")
    src_port, dst_port, seq, ack, offset_byte, flags, window, _checksum, urgent = (
        _FIXED.unpack_from(view)
    )
    header_length = (offset_byte >> 4) * 4
    if header_length < HEADER_LENGTH or header_length > len(view):
        raise Malformed(f"TCP data offset {header_length} is outside the {len(view)}-byte segment")
    if header_length == _TIMESTAMPED_LENGTH:
        # The usual layout of a segment once connected: two NOPs and the
        # timestamps, read in one go.
        fields = _TIMESTAMPED.unpack_from(view)
        if fields[9] == _NOP_NOP_TIMESTAMPS:
            header = TcpHeader(
                src_port, dst_port, seq, ack, flags, window, urgent, timestamps=fields[10:]
            )
            return header, view[header_length:]
    elif header_length == HEADER_LENGTH:
        # No options: the defaults (positional arguments cost less than keywords).
        return TcpHeader(src_port, dst_port, seq, ack, flags, window, urgent), view[header_length:]
    options = _parse_options(view[HEADER_LENGTH:header_length])
    header = TcpHeader(
        src_port=src_port,
        dst_port=dst_port,
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        urgent=urgent,
        mss=options.mss,
        window_scale=options.window_scale,
        sack_permitted=options.sack_permitted,
        sack_blocks=options.sack_blocks,
        timestamps=options.timestamps,
    )
    return header, view[header_length:]


def checksum_ok(
    segment: _Buffer, src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address
) -> bool:
    """Whether the checksum of a received ``segment`` from ``src`` to ``dst`` is right."""
    initial = pseudo_header_sum(src, dst, PROTOCOL_NUMBER, len(segment))
    # internet_checksum(...) == 0, one call fewer a segment.
    return ones_complement_sum(segment, initial) == 0xFFFF
