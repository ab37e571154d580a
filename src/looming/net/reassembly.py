"""Fragment reassembly (RFC 791 and RFC 815 for IPv4, RFC 8200 4.5 for
IPv6), sans-I/O and bounded.

Datagrams in progress are keyed by (source, destination, protocol,
identification).  Memory is bounded three ways: total bytes held across all
datagrams, the number of datagrams in progress and fragments per datagram.
An incomplete datagram is dropped after a timeout (RFC 791 suggests 15 s; the
Linux default is 30 s).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from looming.net.wire.ipv4 import MAX_PACKET_LENGTH, MIN_HEADER_LENGTH, Ipv4Header

_SECOND_NS = 1_000_000_000

# Addresses as integers (IPv4) or the 16 bytes of the header (IPv6): address
# objects hash slowly. (Objects are still taken from other callers.)
_Address = IPv4Address | IPv6Address | bytes | int
ReassemblyKey = tuple[_Address, _Address, int, int]


@dataclass(slots=True)
class _Partial:
    first_seen_ns: int
    fragments: dict[int, bytes] = field(default_factory=dict)
    held_bytes: int = 0
    # Where the furthest piece held ends.
    held_end: int = 0
    total_length: int | None = None


class Reassembler:
    def __init__(
        self,
        *,
        timeout_ns: int = 30 * _SECOND_NS,
        max_bytes: int = 4 * 1024 * 1024,
        max_datagrams: int = 64,
        max_fragments: int = 128,
    ) -> None:
        self.timeout_ns = timeout_ns
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self.max_fragments = max_fragments
        self._partials: OrderedDict[ReassemblyKey, _Partial] = OrderedDict()
        self.held_bytes = 0
        self.counters: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._partials)

    def next_deadline_ns(self) -> int | None:
        """When the oldest datagram in progress times out."""
        for partial in self._partials.values():
            return partial.first_seen_ns + self.timeout_ns
        return None

    def __contains__(self, key: object) -> bool:
        return key in self._partials

    def expire(self, now_ns: int) -> list[ReassemblyKey]:
        """Drop the datagrams whose time is up; their keys."""
        expired: list[ReassemblyKey] = []
        while self._partials:
            key, partial = next(iter(self._partials.items()))
            if partial.first_seen_ns + self.timeout_ns > now_ns:
                break
            self._drop(key)
            self.counters["timed_out"] += 1
            expired.append(key)
        return expired

    def _drop(self, key: ReassemblyKey) -> None:
        partial = self._partials.pop(key)
        self.held_bytes -= partial.held_bytes

    def add(self, header: Ipv4Header, payload: bytes, now_ns: int) -> bytes | None:
        """Take one IPv4 fragment; the whole payload once every piece has come."""
        # Keyed by the addresses' integers: an address object hashes slowly,
        # and a reassembly's key is hashed several times for each piece.
        key = (
            int(header.source),
            int(header.destination),
            header.protocol,
            header.identification,
        )
        limit = MAX_PACKET_LENGTH - MIN_HEADER_LENGTH
        return self.add_piece(
            key, header.fragment_offset, header.more_fragments, payload, now_ns, limit
        )

    def add_piece(
        self,
        key: ReassemblyKey,
        offset: int,
        more_fragments: bool,
        payload: bytes,
        now_ns: int,
        max_length: int,
    ) -> bytes | None:
        """Take one fragment of the datagram ``key`` names (IPv4's or IPv6's:
        source, destination, protocol, identification), ``offset`` bytes
        into a whole of at most ``max_length`` bytes."""
        self.expire(now_ns)
        end = offset + len(payload)
        if end > max_length:
            self.counters["too_long"] += 1
            return None
        if more_fragments and (len(payload) == 0 or len(payload) % 8):
            self.counters["bad_fragment"] += 1
            if not payload and key in self._partials:
                self._drop(key)  # as Linux: an empty piece spoils its datagram
            return None
        partial = self._partials.get(key)
        if partial is None:
            if len(self._partials) >= self.max_datagrams:
                # Evict the oldest: under a flood new datagrams still get a chance.
                self._drop(next(iter(self._partials)))
                self.counters["evicted"] += 1
            partial = _Partial(first_seen_ns=now_ns)
            self._partials[key] = partial
        if not more_fragments:
            if (partial.total_length is not None and partial.total_length != end) or (
                partial.held_end > end
            ):
                self.counters["inconsistent"] += 1
                self._drop(key)
                return None
            partial.total_length = end
        elif partial.total_length is not None and end > partial.total_length:
            self.counters["inconsistent"] += 1
            self._drop(key)
            return None
        if len(partial.fragments) >= self.max_fragments:
            self.counters["too_many_fragments"] += 1
            self._drop(key)
            return None
        while self.held_bytes + len(payload) > self.max_bytes and self._partials:
            oldest = next(iter(self._partials))
            self._drop(oldest)
            self.counters["evicted"] += 1
            if oldest == key:
                return None
        overlap = _overlap(partial.fragments, offset, payload)
        if overlap == "duplicate":
            self.counters["duplicate"] += 1
            return None
        if overlap == "overlap":
            # RFC 5722 (for IPv6) and Linux for IPv4: an overlap is how
            # fragments are made to mean different things to us and to a
            # firewall in front; the whole datagram goes.
            self.counters["overlap_dropped"] += 1
            self._drop(key)
            return None
        partial.fragments[offset] = payload
        partial.held_bytes += len(payload)
        partial.held_end = max(partial.held_end, end)
        self.held_bytes += len(payload)
        # The pieces held never overlap (an overlap drops the datagram, a
        # duplicate is not kept): they cover the whole exactly when their
        # bytes add up to its length, found without looking at each piece.
        if partial.total_length is None or partial.held_bytes < partial.total_length:
            return None
        return self._complete(key, partial)

    def _complete(self, key: ReassemblyKey, partial: _Partial) -> bytes:
        assert partial.total_length is not None
        buffer = bytearray(partial.total_length)
        for offset in sorted(partial.fragments):
            data = partial.fragments[offset]
            buffer[offset : offset + len(data)] = data
        del buffer[partial.total_length :]
        self._drop(key)
        self.counters["reassembled"] += 1
        return bytes(buffer)


def _overlap(fragments: dict[int, bytes], offset: int, payload: bytes) -> str | None:
    """How a new fragment meets those held: None (no overlap), "duplicate"
    (inside one of them with the same bytes) or "overlap"."""
    end = offset + len(payload)
    for held_offset, held in fragments.items():
        held_end = held_offset + len(held)
        if held_offset >= end or offset >= held_end:
            continue
        if (
            held_offset <= offset
            and end <= held_end
            and held[offset - held_offset : end - held_offset] == payload
        ):
            return "duplicate"
        return "overlap"
    return None
