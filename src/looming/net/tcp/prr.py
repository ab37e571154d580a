"""Proportional Rate Reduction (RFC 6937), without I/O.

During fast recovery PRR decides how much may be sent on each ACK so that
the amount in flight falls smoothly to the new slow-start threshold: in
proportion to what the receiver reports delivered while the pipe is above
ssthresh, and with slow-start-like growth back to it (PRR-SSRB) when losses
took the pipe below.
"""

from __future__ import annotations


class ProportionalRateReduction:
    """The PRR counters of one recovery episode; amounts are bytes."""

    __slots__ = ("delivered", "mss", "out", "recover_fs", "ssthresh")

    def __init__(self, ssthresh: int, flight: int, mss: int) -> None:
        self.ssthresh = ssthresh
        self.recover_fs = max(flight, 1)  # RecoverFS: what was in flight at the start
        self.mss = mss
        self.delivered = 0  # prr_delivered
        self.out = 0  # prr_out

    def on_ack(self, delivered: int, pipe: int) -> int:
        """Bytes that may be sent now, after an ACK that reports
        ``delivered`` newly delivered bytes (RFC 6937 section 3.1)."""
        self.delivered += delivered
        if pipe > self.ssthresh:
            # Proportional part: ceil(prr_delivered * ssthresh / RecoverFS) - prr_out.
            allowed = -(-self.delivered * self.ssthresh // self.recover_fs) - self.out
        else:
            # PRR-SSRB: catch up to ssthresh, at most one MSS beyond what was delivered.
            limit = max(self.delivered - self.out, delivered) + self.mss
            allowed = min(self.ssthresh - pipe, limit)
        if 0 < allowed < self.mss:
            # Only whole segments leave: a part of one counts as one, as in
            # Linux's PRR, which counts packets. Kept, the part would wait
            # for an ACK that, with the flight this small, may never come.
            allowed = self.mss
        if allowed <= 0 and self.out == 0:
            # Until the first retransmission has gone, every ACK lets it out
            # (RFC 6675 5 step 4.2), even one that delivered nothing new.
            allowed = self.mss
        return max(allowed, 0)

    def on_sent(self, length: int) -> None:
        self.out += length
