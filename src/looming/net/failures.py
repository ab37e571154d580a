"""Negative caching of address resolution, shared by ARP (``net/arp.py``)
and IPv6 Neighbor Discovery (``net/neighbours.py``), without I/O.

A neighbour that never answered its solicitations is remembered as failed
for a while, so that traffic to it starts a single request (not a full
round of three) at most once a second (RFC 1122 2.3.2.1): a flood of
packets for one unresolvable source costs one broadcast a second, and a
host that has just arrived at that address still gets its answer within a
second. Any packet from the address clears the mark. The table is bounded;
the oldest failure gives way.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

_SECOND_NS = 1_000_000_000
FAILED_LIFETIME_NS = 20 * _SECOND_NS  # as long as ARP has always remembered
MAX_FAILED = 1024

A = TypeVar("A", bound=Hashable)


class FailedNeighbours(Generic[A]):
    """Addresses whose resolution failed, each until its time runs out."""

    def __init__(
        self, lifetime_ns: int = FAILED_LIFETIME_NS, max_entries: int = MAX_FAILED
    ) -> None:
        self.lifetime_ns = lifetime_ns
        self.max_entries = max_entries
        self._until: OrderedDict[A, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, address: object) -> bool:
        return address in self._until

    def has_failed(self, address: A, now_ns: int) -> bool:
        """Whether ``address`` failed less than ``lifetime_ns`` ago."""
        until = self._until.get(address)
        if until is None:
            return False
        if now_ns >= until:
            del self._until[address]
            return False
        return True

    def failed(self, address: A, now_ns: int) -> None:
        """``address`` did not answer: remember it (the oldest give way)."""
        until = self._until
        until.pop(address, None)
        until[address] = now_ns + self.lifetime_ns
        while len(until) > self.max_entries:
            until.popitem(last=False)

    def forget(self, address: A) -> None:
        """``address`` answered after all."""
        self._until.pop(address, None)
