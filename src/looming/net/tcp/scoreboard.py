"""What the sender knows of every segment it has sent and not yet had
cumulatively acknowledged: when it last left, whether the receiver SACKed
it (RFC 2018), whether it is deemed lost, whether a retransmission of it is
in flight (RFC 6675 section 3's scoreboard, kept per segment as Linux does).

Segments keep the boundaries they were first sent with; a retransmission
resends one whole segment. The byte totals of SACKed, lost and
retransmitted data are kept up to date, so the amount in the network (the
RFC 6675 "pipe") costs nothing to ask. Sequence numbers are unwrapped.
"""

from __future__ import annotations

import bisect


class Segment:
    """One segment sent: [start, end) of sequence space (a FIN counts one)."""

    __slots__ = ("end", "ever_retransmitted", "lost", "retransmitted", "sacked", "sent_at", "start")

    def __init__(self, start: int, end: int, sent_at: int) -> None:
        self.start = start
        self.end = end
        self.sent_at = sent_at
        self.sacked = False
        self.lost = False
        self.retransmitted = False  # a retransmission of it is in flight
        self.ever_retransmitted = False

    @property
    def length(self) -> int:
        return self.end - self.start

    def __repr__(self) -> str:
        flags = "".join(
            letter
            for letter, on in (
                ("S", self.sacked),
                ("L", self.lost),
                ("R", self.retransmitted),
                ("E", self.ever_retransmitted),
            )
            if on
        )
        return f"Segment({self.start}:{self.end} at {self.sent_at} {flags})"


class Scoreboard:
    """Segments above the cumulative ACK, in sequence order."""

    __slots__ = (
        "_last_sent",
        "_sacked_runs",
        "_starts",
        "in_order_from",
        "lost_bytes",
        "retransmitted_bytes",
        "sacked_bytes",
        "segments",
    )

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self._starts: list[int] = []
        # Ranges recently SACKed: every segment wholly inside one is SACKed,
        # so a SACK block that grows from the right (as the peer's holds do
        # while data beyond a hole arrives) is walked only where it grew.
        self._sacked_runs: list[tuple[int, int]] = []
        # Segments that begin at or above this were each sent once, in
        # sequence and time order (none resent, the clock never went back):
        # RACK stops at the first of them sent after the one it follows.
        self.in_order_from = 0
        self._last_sent = 0
        self.sacked_bytes = 0
        self.lost_bytes = 0
        self.retransmitted_bytes = 0

    def __len__(self) -> int:
        return len(self.segments)

    def __bool__(self) -> bool:
        return bool(self.segments)

    @property
    def end(self) -> int | None:
        return self.segments[-1].end if self.segments else None

    def pipe(self, flight: int) -> int:
        """Bytes believed in the network (RFC 6675 SetPipe, in Linux's form)."""
        return max(flight - self.sacked_bytes - self.lost_bytes + self.retransmitted_bytes, 0)

    @property
    def has_lost_to_send(self) -> bool:
        return self.lost_bytes > self.retransmitted_bytes

    def sent(self, start: int, end: int, now: int) -> Segment:
        """Record a new segment at the top of the sequence space."""
        segment = Segment(start, end, now)
        self.segments.append(segment)
        self._starts.append(start)
        if now < self._last_sent:
            self.in_order_from = end
        self._last_sent = now
        return segment

    def retransmitted(self, segment: Segment, now: int) -> None:
        """A retransmission of ``segment`` left at ``now``."""
        if not segment.retransmitted and not segment.sacked:
            segment.retransmitted = True
            self.retransmitted_bytes += segment.length
        segment.ever_retransmitted = True
        segment.sent_at = now
        if segment.end > self.in_order_from:
            self.in_order_from = segment.end

    def mark_lost(self, segment: Segment) -> bool:
        """Deem ``segment`` lost (with any retransmission of it); False if
        it was SACKed or already deemed lost with nothing resent since."""
        if segment.sacked or (segment.lost and not segment.retransmitted):
            return False
        if segment.retransmitted:
            segment.retransmitted = False
            self.retransmitted_bytes -= segment.length
        if not segment.lost:
            segment.lost = True
            self.lost_bytes += segment.length
        return True

    def mark_all_lost(self) -> None:
        """After a retransmission timeout: everything not SACKed is lost."""
        for segment in self.segments:
            self.mark_lost(segment)

    def unmark_lost(self) -> None:
        """Undo: nothing is deemed lost after all (a spurious timeout)."""
        for segment in self.segments:
            if segment.lost and not segment.retransmitted:
                segment.lost = False
                self.lost_bytes -= segment.length

    def forget_sacks(self) -> None:
        """The receiver may have reneged on what it SACKed (RFC 2018 section 8)."""
        for segment in self.segments:
            segment.sacked = False
        self.sacked_bytes = 0
        self._sacked_runs = []

    def _drop(self, segment: Segment) -> None:
        if segment.sacked:
            self.sacked_bytes -= segment.length
        if segment.lost:
            self.lost_bytes -= segment.length
        if segment.retransmitted:
            self.retransmitted_bytes -= segment.length

    def acknowledge(self, ack: int) -> tuple[list[Segment], int]:
        """Remove what the cumulative ACK covers; returns the segments that
        left, and how many of their bytes had not been SACKed before."""
        segments = self.segments
        count = bisect.bisect_right(self._starts, ack)
        if count and segments[count - 1].end > ack:
            count -= 1  # the last one is only partly acknowledged
        gone = segments[:count]
        fresh = 0
        for segment in gone:
            if not segment.sacked:
                fresh += segment.end - segment.start
            if segment.sacked or segment.lost or segment.retransmitted:
                self._drop(segment)  # (with nothing marked, it changes nothing)
        del segments[:count]
        del self._starts[:count]
        if segments and segments[0].start < ack:
            head = segments[0]
            self._drop(head)
            if not head.sacked:
                fresh += ack - head.start
            head.start = ack
            self._starts[0] = ack
            self._restore(head)
            self._sacked_runs = []  # the cut head may lie wholly inside a run now
        return gone, fresh

    def _restore(self, segment: Segment) -> None:
        if segment.sacked:
            self.sacked_bytes += segment.length
        if segment.lost:
            self.lost_bytes += segment.length
        if segment.retransmitted:
            self.retransmitted_bytes += segment.length

    def sack(self, left: int, right: int) -> list[Segment]:
        """Mark the segments wholly inside [left, right) SACKed; returns
        those that were not before."""
        starts = self._starts
        i = bisect.bisect_left(starts, left)
        runs = self._sacked_runs
        start = left
        for run_left, run_right in runs:
            if run_left <= left < run_right and run_right > start:
                start = run_right
        if start > left:
            # What lies wholly inside [left, start) is SACKed already: on
            # from the last segment that begins at or before ``start``.
            i = max(i, bisect.bisect_right(starts, start) - 1)
        newly: list[Segment] = []
        segments = self.segments
        count = len(segments)
        if count:  # (only up to what was sent: more may be sent into a block)
            right_sent = min(right, segments[-1].end)
            runs[:] = [(left, right_sent)] + [
                run for run in runs[:3] if not (left <= run[0] and run[1] <= right_sent)
            ]
        while i < count and segments[i].end <= right:
            segment = segments[i]
            if not segment.sacked:
                self._drop(segment)
                segment.sacked = True
                segment.lost = segment.retransmitted = False
                self.sacked_bytes += segment.length
                newly.append(segment)
            i += 1
        return newly

    def first_lost_to_send(self) -> Segment | None:
        """The lowest segment deemed lost and not yet resent (RFC 6675 NextSeg rule 1)."""
        if not self.has_lost_to_send:
            return None
        for segment in self.segments:
            if segment.lost and not segment.retransmitted:
                return segment
        return None

    def find(self, seq: int) -> Segment | None:
        """The segment holding ``seq``."""
        i = bisect.bisect_right(self._starts, seq) - 1
        if i >= 0 and seq < self.segments[i].end:
            return self.segments[i]
        return None

    def sacked_ranges(self) -> list[tuple[int, int]]:
        """SACKed data as merged [left, right) ranges (for tests and logs)."""
        ranges: list[tuple[int, int]] = []
        for segment in self.segments:
            if not segment.sacked:
                continue
            if ranges and ranges[-1][1] == segment.start:
                ranges[-1] = (ranges[-1][0], segment.end)
            else:
                ranges.append((segment.start, segment.end))
        return ranges
