"""Searching the path MTU back up with probes (RFC 4821, RFC 8899), sans-I/O.

When full-sized segments time out again and again and no ICMP error says
why (RFC 2923's black hole), the TCP layer halves the connection's MSS; an
ICMP "fragmentation needed" lowers it too (RFC 1191), and may be stale or
forged. Nothing will tell the connection when the path is whole again:
this search finds out by itself. After ``raise_interval_ns``
(RFC 8899's PMTU_RAISE_TIMER, 600 s by default) one segment of new data
goes out larger than the others, with DF set and not cut by segmentation
offload: the probe. A cumulative ACK covering it without its bytes having
been resent confirms the size, and the connection's MSS rises to it, as
does the path's (:class:`SharedPath`); a retransmission of any of its bytes
marks it lost, and the search looks lower. The ceiling is tried first (the black hole may have been a passing
fault), then sizes halving the interval between the largest size
confirmed and the smallest one that failed (RFC 4821 7.4), until they are
less than :data:`PROBE_THRESHOLD` apart; the search then rests for
another ``raise_interval_ns`` and starts over from the ceiling: the
interface's MTU, the peer's MSS and any path MTU an ICMP error reported.

A probe's bytes are recorded in the scoreboard as segments of the current
size, so a lost probe is resent as ordinary segments, as Linux does with
its MTU probes (``tcp_mtu_probe``); a loss of nothing but the probe's
segments is no sign of congestion (RFC 8899 section 3) and starts no fast
recovery. A probe at the tail of the flight has nothing sent after it to
show RACK its loss: its own timer (:func:`probe_lost_at`, the tail loss
probe's timeout) deems it lost and its bytes are resent at once, rather
than after the retransmission timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol, runtime_checkable

from looming.net.tcp.config import TcpConfig, TcpStats
from looming.net.tcp.rack import probe_timeout
from looming.net.tcp.scoreboard import Scoreboard
from looming.net.tcp.seq import wrap

# Sizes closer than this (bytes of MSS) end a search (Linux: tcp_probe_threshold, 8).
PROBE_THRESHOLD = 16


class Span(Protocol):
    """A stretch of sequence space (a scoreboard segment)."""

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


class SegmentSizes(Protocol):
    """What a probe's size depends on (a connection has these)."""

    @property
    def peer_mss(self) -> int: ...

    @property
    def ts_ok(self) -> bool: ...

    @property
    def send_mss(self) -> int: ...


@dataclass(slots=True)
class MtuSearch:
    """One connection's search for a larger path MSS (the MTU less 40)."""

    low: int  # the largest path MSS known to get through
    ceiling: int  # the largest worth trying
    raise_interval_ns: int
    next_at: int  # no probe before this time
    stats: TcpStats
    high: int = 0  # the largest still believed possible in this search
    probe_mss: int = 0  # the path MSS on trial (0: no probe out)
    probe_start: int = 0  # its sequence range, unwrapped
    probe_end: int = 0
    probe_wire_seq: int = -1  # its sequence number as the segment carries it
    ceiling_tried: bool = False  # in this search
    probe_sent_at: int | None = None  # while its loss timer runs
    # Told each path MSS a probe confirms (the path's, not this connection's
    # alone: see :class:`SharedPath`).
    on_confirmed: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        if self.high == 0:
            self.high = self.ceiling

    @property
    def searching(self) -> bool:
        return self.low < self.ceiling

    def candidate(self, now: int) -> int:
        """The path MSS to try now; 0 when no probe is due."""
        if self.probe_mss or now < self.next_at or not self.searching:
            return 0
        if not self.ceiling_tried and self.high == self.ceiling:
            # The path may be whole again (the black hole was a passing
            # fault): then one probe restores the full size.
            return self.ceiling
        if self.high - self.low < PROBE_THRESHOLD:
            # Converged: rest, then look again as far up as the ceiling.
            self.next_at = now + self.raise_interval_ns
            self.high = self.ceiling
            self.ceiling_tried = False
            return 0
        return (self.low + self.high + 1) // 2

    def take(self, now: int, seq: int, available: int, room: int, sizes: SegmentSizes) -> int:
        """The payload of a probe to send now at ``seq`` (0: send as usual),
        given the unsent bytes ``available`` and the ``room`` the windows
        leave; a probe taken is recorded as sent."""
        path_mss = self.candidate(now)
        if not path_mss:
            return 0
        payload = probe_payload(path_mss, sizes.peer_mss, sizes.ts_ok)
        if payload <= sizes.send_mss:
            # The peer's MSS, not the path, is the limit: nothing to find.
            self.ceiling = self.high = self.low
            return 0
        if available < payload or room < payload:
            return 0  # too little to send, or too little room: a later segment
        self.sent(path_mss, seq, seq + payload, wrap(seq), now)
        return payload

    def sent(
        self, path_mss: int, start: int, end: int, wire_seq: int, now: int | None = None
    ) -> None:
        self.probe_mss = path_mss
        self.probe_sent_at = now
        self.probe_start, self.probe_end = start, end
        self.probe_wire_seq = wire_seq
        self.ceiling_tried |= path_mss == self.ceiling
        self.stats.pmtu_probes += 1

    def acknowledged(self, ack: int, path_mss: int) -> int:
        """The cumulative ACK reached ``ack``: the connection's path MSS
        from now on (``path_mss`` unless a probe was just confirmed)."""
        if not self.probe_mss or ack < self.probe_end:
            return path_mss
        confirmed = self.probe_mss
        self._clear()
        self.stats.pmtu_probes_acked += 1
        if confirmed <= path_mss:
            return path_mss
        self.learned(confirmed)
        if self.on_confirmed is not None:
            self.on_confirmed(confirmed)
        return confirmed

    def learned(self, path_mss: int) -> None:
        """``path_mss`` is known to get through (this search's probe, or
        another connection's to the same destination): search above it."""
        if path_mss > self.low:
            self.low = path_mss
        if self.high < self.low:
            self.high = self.low

    def resent(self, start: int, end: int) -> None:
        """Bytes [start, end) go out again: if any were the probe's, it was lost."""
        if self.probe_mss and start < self.probe_end and end > self.probe_start:
            self.lost()

    def lost(self) -> None:
        """The probe out was lost: search below it."""
        self.high = max(self.probe_mss - 1, self.low)
        self._clear()
        self.stats.pmtu_probes_lost += 1

    def holds_only(self, segments: Sequence[Span]) -> bool:
        """Whether every one of ``segments`` lies within the probe out."""
        start, end = self.probe_start, self.probe_end
        return bool(self.probe_mss) and all(
            start <= segment.start and segment.end <= end for segment in segments
        )

    def cap(self, path_mss: int) -> None:
        """An ICMP error reported a path MSS of ``path_mss``: search no higher."""
        self.ceiling = min(self.ceiling, path_mss)
        self.low = min(self.low, path_mss)
        self.high = min(self.high, self.ceiling)

    def _clear(self) -> None:
        self.probe_mss = 0
        self.probe_wire_seq = -1
        self.probe_sent_at = None


def probe_payload(path_mss: int, peer_mss: int, timestamps: bool) -> int:
    """Payload bytes of a full segment at ``path_mss`` (as ``send_mss``)."""
    mss = min(path_mss, peer_mss) - (12 if timestamps else 0)
    return max(mss, 64)


@runtime_checkable
class PathMtuTable(Protocol):
    """An IP layer's path MTUs that probes may raise (RFC 1191's table,
    ``Ipv4Layer``)."""

    def raise_path_mtu(self, destination: IPv4Address, mtu: int) -> int | None: ...


class PathUser(Protocol):
    """A connection, as far as the path it shares matters."""

    path_mss: int
    mtu_search: MtuSearch | None


# IPv4 and TCP headers without options: a path MSS is the path MTU less these.
_IPV4_TCP_HEADERS = 40


@dataclass(slots=True)
class SharedPath:
    """What a confirmed probe tells everyone sending to ``remote``: the
    path carries segments of that size. The IP layer's path MTU rises
    (RFC 8899 5.1.4: the PLPMTU is the path's, not one connection's), so
    connections opened later start there rather than at the size an ICMP
    error left until the entry lapses; and every open
    connection to ``remote`` sending smaller segments takes the size too."""

    remote: IPv4Address | IPv6Address
    table: object  # the IPv4 layer: raised when it is a PathMtuTable
    connections: Callable[[], Iterable[tuple[IPv4Address | IPv6Address, PathUser]]]

    def __call__(self, path_mss: int) -> None:
        if isinstance(self.remote, IPv4Address) and isinstance(self.table, PathMtuTable):
            self.table.raise_path_mtu(self.remote, path_mss + _IPV4_TCP_HEADERS)
        for remote, conn in self.connections():
            if remote != self.remote:
                continue
            if conn.path_mss < path_mss:
                conn.path_mss = path_mss
            if conn.mtu_search is not None:
                conn.mtu_search.learned(path_mss)


class RoundTrip(Protocol):
    @property
    def srtt(self) -> int | None: ...

    @property
    def rto(self) -> int: ...


class ProbingSender(Protocol):
    """A connection's sending side, as the probe's loss timer reads it."""

    @property
    def mtu_search(self) -> MtuSearch | None: ...

    @property
    def rtt(self) -> RoundTrip: ...

    @property
    def config(self) -> TcpConfig: ...

    @property
    def board(self) -> Scoreboard: ...


def probe_lost_at(conn: ProbingSender) -> int | None:
    """When the probe out, the tail of the flight, counts as lost if no
    ACK has covered it: the tail loss probe's timeout after it left (2
    SRTT, the delayed-ACK time more for a lone segment, RFC 8985 7.2), not
    the RTO. Nothing sent later can be SACKed to show RACK its loss, and a
    tail loss probe resending its last bytes shows nothing either (the ACK
    for a resend sooner than min_RTT is taken for the original's)."""
    search = conn.mtu_search
    if search is None or search.probe_sent_at is None:
        return None
    board = conn.board
    if not board or board.segments[-1].end > search.probe_end:
        # Data sent after it: its SACKs show RACK a lost probe, and a
        # timer would take a probe merely ACKed late (a busy receiver)
        # for a lost one, and search lower for nothing.
        return None
    rtt = conn.rtt
    # As the tail loss probe's timer reckons it (segments, not packets), so
    # that this one comes first: a tail loss probe resending the probe's
    # last bytes would hide its loss until the RTO.
    wait = probe_timeout(rtt.srtt, len(board), conn.config.delayed_ack_ns, rtt.rto)
    return search.probe_sent_at + wait


def expire_probe(conn: ProbingSender, now: int) -> bool:
    """At :func:`probe_lost_at`: deem the probe's segments not SACKed lost,
    so that the sender resends them at once at the current size, and
    search lower. No congestion signal (RFC 8899 section 3): the window
    stays and no recovery starts. True when there is something to resend."""
    deadline = probe_lost_at(conn)
    if deadline is None or now < deadline:
        return False
    search = conn.mtu_search
    assert search is not None
    start, end = search.probe_start, search.probe_end
    board = conn.board
    pending = [
        segment
        for segment in board.segments
        if start <= segment.start and segment.end <= end and not segment.sacked
    ]
    if not pending:
        search.probe_sent_at = None  # it arrived: the cumulative ACK will confirm it
        return False
    search.stats.segments_deemed_lost += sum(board.mark_lost(segment) for segment in pending)
    search.lost()
    return True
