"""One end of a vchan as pure code over the shared segment.

:class:`RingEnd` does the index arithmetic, the copying in and out of the
two rings and the notification bookkeeping; it opens no file, makes no
system call and never blocks. Each operation that moves an index says
whether the peer asked to hear about it (the ``kick`` result); the shell
then signals the peer's event. Waiting follows libxenvchan: ask the peer to
notify (set a bit in *its* notify byte), then re-check the indices, and
only block when they still show nothing to do.

Safety against a misbehaving peer: the ring geometry is read once (and
validated) when the channel is set up and never again, our own indices are
kept privately and only published, and every index the peer controls is
checked to be within a ring's size of ours before use. A violation raises
:class:`VchanCorrupt`; offsets are always masked into the ring, and every
access goes through bounds-checked memoryview slices, so nothing outside
the segment is ever touched.
"""

from __future__ import annotations

from looming.vchan import layout
from looming.vchan.errors import VchanCorrupt

_MASK32 = 0xFFFFFFFF
_CLEAR_WRITE = 0xFF & ~layout.NOTIFY_WRITE
_CLEAR_READ = 0xFF & ~layout.NOTIFY_READ


class RingEnd:
    """The server's or the client's view of a shared segment."""

    __slots__ = (
        "_own_live",
        "_own_notify",
        "_peer_cons_word",
        "_peer_live",
        "_peer_notify",
        "_peer_prod_word",
        "_read_cons",
        "_read_cons_word",
        "_read_ring",
        "_read_size",
        "_segment",
        "_words",
        "_write_prod",
        "_write_prod_word",
        "_write_ring",
        "_write_size",
        "geometry",
        "is_server",
    )

    def __init__(self, segment: memoryview, geometry: layout.Geometry, *, is_server: bool) -> None:
        if len(segment) < geometry.segment_size:
            raise VchanCorrupt(f"segment of {len(segment)} bytes is smaller than {geometry}")
        self._segment = segment
        self.geometry = geometry
        self.is_server = is_server
        # Native 32-bit words: aligned loads and stores of one index each.
        self._words = segment[0:16].cast("I")
        left = segment[geometry.left_offset : geometry.left_offset + geometry.left_size]
        right = segment[geometry.right_offset : geometry.right_offset + geometry.right_size]
        if is_server:
            # The server reads the left ring and writes the right one.
            self._read_ring, self._write_ring = left, right
            self._read_cons_word, self._peer_prod_word = 0, 1
            self._peer_cons_word, self._write_prod_word = 2, 3
            self._own_live, self._peer_live = layout.SRV_LIVE, layout.CLI_LIVE
            self._own_notify, self._peer_notify = layout.SRV_NOTIFY, layout.CLI_NOTIFY
        else:
            self._read_ring, self._write_ring = right, left
            self._read_cons_word, self._peer_prod_word = 2, 3
            self._peer_cons_word, self._write_prod_word = 0, 1
            self._own_live, self._peer_live = layout.CLI_LIVE, layout.SRV_LIVE
            self._own_notify, self._peer_notify = layout.CLI_NOTIFY, layout.SRV_NOTIFY
        self._read_size = len(self._read_ring)
        self._write_size = len(self._write_ring)
        self._read_cons = self._words[self._read_cons_word]
        self._write_prod = self._words[self._write_prod_word]
        # Starting indices come from the header; they must already make sense.
        self.data_ready()
        self.buffer_space()

    # -- sizes ---------------------------------------------------------------

    @property
    def read_size(self) -> int:
        """Capacity in bytes of the ring this end reads."""
        return self._read_size

    @property
    def write_size(self) -> int:
        """Capacity in bytes of the ring this end writes."""
        return self._write_size

    def data_ready(self) -> int:
        """Bytes the peer has written that this end has not read yet."""
        prod = self._words[self._peer_prod_word]
        ready = (prod - self._read_cons) & _MASK32
        if ready > self._read_size:
            raise VchanCorrupt(
                f"peer's producer index {prod} is {ready} bytes ahead of our consumer "
                f"index {self._read_cons}, more than the {self._read_size}-byte ring holds"
            )
        return ready

    def buffer_space(self) -> int:
        """Bytes this end may write before the ring is full."""
        cons = self._words[self._peer_cons_word]
        used = (self._write_prod - cons) & _MASK32
        if used > self._write_size:
            raise VchanCorrupt(
                f"peer's consumer index {cons} is {(cons - self._write_prod) & _MASK32} "
                f"bytes past our producer index {self._write_prod} "
                f"(ring of {self._write_size} bytes)"
            )
        return self._write_size - used

    # -- notification ----------------------------------------------------------

    def request_data_notify(self) -> None:
        """Ask the peer to kick us when it writes (we are about to wait for data)."""
        seg = self._segment
        seg[self._peer_notify] = seg[self._peer_notify] | layout.NOTIFY_WRITE

    def request_space_notify(self) -> None:
        """Ask the peer to kick us when it reads (we are about to wait for space)."""
        seg = self._segment
        seg[self._peer_notify] = seg[self._peer_notify] | layout.NOTIFY_READ

    def want_data(self, count: int) -> bool:
        """Ask the peer to kick us when it writes, then look again: whether
        ``count`` bytes are there after all (the vchan discipline, in one call)."""
        seg = self._segment
        seg[self._peer_notify] = seg[self._peer_notify] | layout.NOTIFY_WRITE
        return self._ready() >= count

    def want_space(self, count: int) -> bool:
        """Ask the peer to kick us when it reads, then look again: whether
        ``count`` bytes fit after all."""
        seg = self._segment
        seg[self._peer_notify] = seg[self._peer_notify] | layout.NOTIFY_READ
        return self._space() >= count

    # -- stream and packet mode ---------------------------------------------------
    # One copy in (send) and one copy out to bytes (recv) serve both modes:
    # write and read take what there is room or data for and hand it to them.
    # The index checks are inline on these paths (each Python call costs
    # about as much as copying a 64-byte message); the explaining
    # buffer_space()/data_ready() run only when an index is out of range.

    def _space(self) -> int:
        cons = self._words[self._peer_cons_word]
        used = (self._write_prod - cons) & _MASK32
        if used > self._write_size:
            self.buffer_space()  # raises with the full explanation
        return self._write_size - used

    def _ready(self) -> int:
        ready = (self._words[self._peer_prod_word] - self._read_cons) & _MASK32
        if ready > self._read_size:
            self.data_ready()  # raises with the full explanation
        return ready

    def write(self, data: bytes | bytearray | memoryview) -> tuple[int, bool]:
        """Copy as much of ``data`` as fits; returns (bytes written, kick peer)."""
        count = min(len(data), self._space())
        if count == 0:
            return 0, False
        return count, self.send(data if count == len(data) else memoryview(data)[:count])[1]

    def read(self, limit: int) -> tuple[bytes, bool]:
        """Up to ``limit`` available bytes; returns (data, kick peer)."""
        count = min(limit, self._ready())
        if count <= 0:
            return b"", False
        return self.recv(count)  # type: ignore[return-value]  # count bytes are there

    def read_into(self, buffer: bytearray | memoryview) -> tuple[int, bool]:
        """Fill ``buffer`` with up to ``len(buffer)`` bytes; (count, kick peer)."""
        count = min(len(buffer), self._ready())
        if count <= 0:
            return 0, False
        ring, size = self._read_ring, self._read_size
        start = self._read_cons & (size - 1)
        first = min(count, size - start)
        target = memoryview(buffer)
        target[:first] = ring[start : start + first]
        if first < count:
            target[first:count] = ring[0 : count - first]
        return count, self._consume(count)

    def send(self, data: bytes | bytearray | memoryview) -> tuple[bool, bool]:
        """Write all of ``data`` or nothing; returns (sent, kick peer)."""
        count = len(data)
        size = self._write_size
        prod = self._write_prod
        used = (prod - self._words[self._peer_cons_word]) & _MASK32
        if used > size:
            self.buffer_space()  # raises with the full explanation
        if count > size - used:
            if count > size:
                raise ValueError(
                    f"a {count}-byte packet can never fit the {size}-byte ring; "
                    "use stream mode or a larger ring"
                )
            return False, False
        if not count:
            return True, False
        start = prod & (size - 1)
        end = start + count
        ring = self._write_ring
        if end <= size:
            ring[start:end] = data
        else:
            first = size - start
            view = memoryview(data)
            ring[start:size] = view[:first]
            ring[0 : count - first] = view[first:]
        prod = (prod + count) & _MASK32
        self._write_prod = prod
        # Publish the data before the index (stores are ordered on x86 and
        # the interpreter gives no reordering of its own between statements).
        self._words[self._write_prod_word] = prod
        # Clear the bit only when set, so the common case (the peer is not
        # waiting) writes nothing and cannot overwrite a concurrent request.
        segment, own = self._segment, self._own_notify
        bits = segment[own]
        if bits & layout.NOTIFY_WRITE:
            segment[own] = bits & _CLEAR_WRITE
            return True, True
        return True, False

    def recv(self, count: int) -> tuple[bytes | None, bool]:
        """Exactly ``count`` bytes, or ``None`` while fewer are available."""
        size = self._read_size
        cons = self._read_cons
        ready = (self._words[self._peer_prod_word] - cons) & _MASK32
        if ready > size:
            self.data_ready()  # raises with the full explanation
        if ready < count:
            if count > size:
                raise ValueError(
                    f"a {count}-byte packet can never fit the {size}-byte ring; "
                    "use stream mode or a larger ring"
                )
            return None, False
        if count <= 0:
            return b"", False
        start = cons & (size - 1)
        end = start + count
        ring = self._read_ring
        if end <= size:
            data = ring[start:end].tobytes()
        else:
            data = ring[start:size].tobytes() + ring[0 : end - size].tobytes()
        return data, self._consume(count)

    def _consume(self, count: int) -> bool:
        """Publish the consumer index; whether to kick the peer."""
        cons = (self._read_cons + count) & _MASK32
        self._read_cons = cons
        self._words[self._read_cons_word] = cons
        segment, own = self._segment, self._own_notify
        bits = segment[own]
        if bits & layout.NOTIFY_READ:
            segment[own] = bits & _CLEAR_READ
            return True
        return False

    # -- liveness --------------------------------------------------------------------

    def peer_state(self) -> int:
        """The peer's liveness byte: 0 exited, 1 connected, 2 not yet connected."""
        state = self._segment[self._peer_live]
        if state > layout.LIVE_WAITING:
            raise VchanCorrupt(f"peer's liveness byte holds {state}, not 0, 1 or 2")
        if state == layout.LIVE_WAITING and self.is_server is False:
            raise VchanCorrupt("the server's liveness byte says 'not yet connected'")
        return int(state)

    def set_state(self, state: int) -> None:
        """Publish this end's liveness (see the ``LIVE_*`` constants)."""
        self._segment[self._own_live] = state

    def release(self) -> None:
        """Drop every view of the segment so its mapping can be closed."""
        for view in (self._words, self._read_ring, self._write_ring):
            view.release()
