"""Two sans-I/O TCP connections against a model of two byte streams
(hypothesis, stateful).

The connections talk through an in-memory pipe the rules control: segments
are lost, duplicated, delivered out of order or held back while the fake
clock runs. The applications write random amounts, read slowly (closing
the receive window) and shut down either direction. The model is what each
side wrote and whether it shut down; the checks are that each side only
ever reads a prefix of what the other wrote, that the connections stay
inside their configured buffers, that a FIN is reported once and only
after everything before it, and that once the pipe stops losing and time
runs on, everything written is delivered and the states match the shutdowns.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from looming.net.tcp.config import MS, SECOND, TcpConfig, TcpStats
from looming.net.tcp.connection import Event, State, TcpConnection
from looming.net.wire.tcp import TcpHeader

# What each side writes: a stream without short periods, so any reordering,
# duplication or loss shows up as a mismatch of the prefix.
STREAMS = (random.Random(1).randbytes(1 << 20), random.Random(2).randbytes(1 << 20))
SIDES = (0, 1)
SETTLE_HORIZON = 600 * SECOND


@dataclass
class Side:
    """One application and its connection, with the model of its stream."""

    conn: TcpConnection
    written: int = 0  # bytes the connection accepted from this side
    read: bytearray = field(default_factory=bytearray)  # bytes this side read
    shut: bool = False  # this side shut down its sending direction
    peer_closed: int = 0  # PEER_CLOSED events seen
    events: list[Event] = field(default_factory=list)


class ConnectionPair(RuleBasedStateMachine):
    """Two connections, a lossy pipe and a fake clock; see the module docs."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.sides: list[Side] = []
        # Segments in flight, per direction (index = receiving side).
        self.pipe: tuple[list[tuple[TcpHeader, bytes]], ...] = ([], [])
        self.config = TcpConfig()

    @initialize(
        send_buffer=st.integers(2_000, 40_000),
        receive_buffer=st.integers(2_000, 40_000),
        sack=st.booleans(),
        timestamps=st.booleans(),
        window_scaling=st.booleans(),
        cc=st.sampled_from(["cubic", "newreno"]),
    )
    def open(
        self,
        send_buffer: int,
        receive_buffer: int,
        sack: bool,
        timestamps: bool,
        window_scaling: bool,
        cc: str,
    ) -> None:
        self.config = TcpConfig(
            send_buffer=send_buffer,
            receive_buffer=receive_buffer,
            sack=sack,
            timestamps=timestamps,
            window_scaling=window_scaling,
            congestion_control=cc,
        )
        client = TcpConnection.connect(
            self.config,
            TcpStats(),
            local_port=40000,
            remote_port=80,
            iss=0xFFFF_F000,  # the sequence space wraps during the run
            path_mss=1460,
            timestamp_offset=0,
            now=self.now,
        )
        ((syn, _),) = client.take_outbox()
        server = TcpConnection.accept_syn(
            self.config, TcpStats(), syn, iss=7, path_mss=1460, timestamp_offset=5, now=self.now
        )
        self.sides = [Side(client), Side(server)]
        self._collect()
        self._deliver_all()
        assert client.state is State.ESTABLISHED and server.state is State.ESTABLISHED

    # ------------------------------------------------------------ plumbing

    def _collect(self) -> None:
        """Move every side's segments into the pipe and record its events."""
        for index, side in enumerate(self.sides):
            events = side.conn.take_events()
            if Event.ACK_DUE in events:
                side.conn.flush_ack(self.now)
            side.events.extend(events)
            side.peer_closed += events.count(Event.PEER_CLOSED)
            self.pipe[1 - index].extend(
                (header, bytes(payload)) for header, payload in side.conn.take_outbox()
            )
        for side in self.sides:
            assert Event.RESET not in side.events, "nobody aborted, yet a reset arrived"
            assert Event.TIMED_OUT not in side.events, "the peer answers, yet a timeout"

    def _deliver(self, to: int, index: int, *, keep: bool = False) -> None:
        queue = self.pipe[to]
        header, payload = queue[index] if keep else queue.pop(index)
        self.sides[to].conn.input(header, payload, self.now)
        self._collect()

    def _deliver_all(self) -> None:
        for _ in range(10_000):
            busy = [to for to in SIDES if self.pipe[to]]
            if not busy:
                return
            for to in busy:
                self._deliver(to, 0)
        raise AssertionError("the connections never stopped talking")

    def _advance(self, until: int) -> None:
        """Let time run to ``until``, firing timers in deadline order."""
        for _ in range(10_000):
            deadlines = [
                (d, i)
                for i, s in enumerate(self.sides)
                if (d := s.conn.next_deadline()) is not None
            ]
            due = min((d for d in deadlines if d[0] <= until), default=None)
            if due is None:
                self.now = until
                return
            self.now = max(self.now, due[0])
            self.sides[due[1]].conn.on_timer(self.now)
            self._collect()
        raise AssertionError("a timer keeps firing without moving its deadline")

    def _read(self, index: int, limit: int | None) -> None:
        side = self.sides[index]
        data = side.conn.receive(self.now, limit)
        if limit is not None:
            assert len(data) <= limit
        side.read += data
        self._collect()

    # ------------------------------------------------------------ rules

    @precondition(lambda self: not self.sides[0].shut or not self.sides[1].shut)
    @rule(data=st.data(), size=st.integers(1, 30_000))
    def write(self, data: st.DataObject, size: int) -> None:
        index = data.draw(st.sampled_from([i for i in SIDES if not self.sides[i].shut]))
        side = self.sides[index]
        chunk = STREAMS[index][side.written : side.written + size]
        space = side.conn.send_space
        taken = side.conn.send(chunk, self.now)
        assert taken == min(len(chunk), space), "send takes exactly what fits"
        side.written += taken
        self._collect()

    @rule(index=st.sampled_from(SIDES), limit=st.none() | st.integers(1, 3000))
    def read(self, index: int, limit: int | None) -> None:
        self._read(index, limit)

    @precondition(lambda self: self.pipe[0] or self.pipe[1])
    @rule(data=st.data(), duplicate=st.booleans())
    def deliver(self, data: st.DataObject, duplicate: bool) -> None:
        """Deliver one segment, not necessarily the oldest (reordering)."""
        to = data.draw(st.sampled_from([i for i in SIDES if self.pipe[i]]))
        index = data.draw(st.integers(0, len(self.pipe[to]) - 1))
        self._deliver(to, index, keep=duplicate)

    @precondition(lambda self: self.pipe[0] or self.pipe[1])
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        to = data.draw(st.sampled_from([i for i in SIDES if self.pipe[i]]))
        self.pipe[to].pop(data.draw(st.integers(0, len(self.pipe[to]) - 1)))

    @rule()
    def deliver_in_order(self) -> None:
        self._deliver_all()

    @rule(ms=st.integers(1, 3000))
    def advance(self, ms: int) -> None:
        """Time passes; segments still in the pipe are delayed by it."""
        self._advance(self.now + ms * MS)

    @rule(index=st.sampled_from(SIDES))
    def shutdown(self, index: int) -> None:
        side = self.sides[index]
        side.conn.shutdown(self.now)
        side.shut = True
        self._collect()

    @rule()
    def settle(self) -> None:
        """No more loss: deliver, read and let timers fire until all is quiet;
        then everything written has arrived and the states match the model."""
        horizon = self.now + SETTLE_HORIZON
        for _ in range(5_000):
            self._deliver_all()
            for index in SIDES:
                self._read(index, None)
            if self.pipe[0] or self.pipe[1]:
                continue
            deadline = min(
                (d for s in self.sides if (d := s.conn.next_deadline()) is not None),
                default=None,
            )
            if deadline is None or deadline > horizon:
                break
            self._advance(max(deadline, self.now))
        for index in SIDES:
            side, peer = self.sides[index], self.sides[1 - index]
            assert bytes(side.read) == STREAMS[1 - index][: peer.written], "not all delivered"
            assert side.peer_closed == int(peer.shut), "FIN not reported exactly once"
            assert side.conn.bytes_in_flight == 0
        self._check_states()

    def _check_states(self) -> None:
        for index in SIDES:
            side, peer = self.sides[index], self.sides[1 - index]
            state = side.conn.state
            if side.shut and peer.shut:
                # TIME-WAIT (2 MSL) has run out well inside the horizon.
                assert state is State.CLOSED, state
            elif side.shut:
                assert state is State.FIN_WAIT_2, state
            elif peer.shut:
                assert state is State.CLOSE_WAIT, state
            else:
                assert state is State.ESTABLISHED, state

    # ------------------------------------------------------------ invariants

    @invariant()
    def reads_are_a_prefix_of_the_peers_writes(self) -> None:
        for index, side in enumerate(self.sides):
            peer = self.sides[1 - index]
            assert len(side.read) <= peer.written
            assert bytes(side.read) == STREAMS[1 - index][: len(side.read)]

    @invariant()
    def fin_only_after_all_data(self) -> None:
        for index, side in enumerate(self.sides):
            peer = self.sides[1 - index]
            assert side.peer_closed <= 1, "PEER_CLOSED reported twice"
            if side.peer_closed:
                assert peer.shut, "a FIN nobody sent"
                # Everything the peer wrote before its FIN is read or ready.
                assert len(side.read) + side.conn.readable_bytes == peer.written

    @invariant()
    def memory_stays_inside_the_buffers(self) -> None:
        config = self.config
        for side in self.sides:
            conn = side.conn
            assert len(conn.send_buffer) <= config.send_buffer
            assert conn.readable_bytes <= config.receive_buffer
            assert conn.receive_buffer.charged <= 3 * config.receive_buffer

    def teardown(self) -> None:
        if self.sides:
            self.settle()


TestConnectionPair = ConnectionPair.TestCase
TestConnectionPair.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
