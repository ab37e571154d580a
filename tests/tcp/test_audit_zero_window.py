"""A peer that shuts its window and then vanishes: the persist timer's
window probes get no answer, and after ``data_retries`` of them in a row
the connection is aborted (RFC 9293's R2, as Linux's tcp_retries2). A peer
that keeps answering with a zero window is kept however long it takes
(RFC 1122 4.2.2.17). Virtual time: the cores alone, driven by deadlines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.net.tcp.config import SECOND, TcpConfig, TcpStats
from looming.net.tcp.connection import Event, State, TcpConnection
from looming.net.wire.tcp import RST

CONFIG = TcpConfig(
    send_buffer=8000,
    receive_buffer=4000,
    sack=False,
    timestamps=False,
    data_retries=3,
    persist_max_ns=2 * SECOND,
)


class Pair:
    """A sender whose peer never reads, so its window shuts."""

    def __init__(self) -> None:
        self.now = 0
        self.stats = TcpStats()
        self.sender = TcpConnection.connect(
            CONFIG, self.stats, local_port=40000, remote_port=80, iss=1,
            path_mss=1460, timestamp_offset=0, now=0,
        )  # fmt: skip
        ((syn, _),) = self.sender.take_outbox()
        self.receiver = TcpConnection.accept_syn(
            CONFIG, TcpStats(), syn, iss=7, path_mss=1460, timestamp_offset=5, now=0
        )
        self.peer_gone = False
        self.to_receiver: list[int] = []  # flags of what the sender sent
        self.events: list[Event] = []  # the sender's
        self.exchange()

    def exchange(self) -> None:
        sides = (self.sender, self.receiver)
        for _ in range(100):
            moved = False
            for index, conn in enumerate(sides):
                events = conn.take_events()
                if conn is self.sender:
                    self.events += events
                if Event.ACK_DUE in events:
                    conn.flush_ack(self.now)
                peer = sides[1 - index]
                for header, payload in conn.take_outbox():
                    moved = True
                    if conn is self.sender:
                        self.to_receiver.append(header.flags)
                    if not self.peer_gone:
                        peer.input(header, bytes(payload), self.now)
            if not moved:
                return

    def run_timers(self, until: int) -> None:
        for _ in range(1000):
            deadlines = [c.next_deadline() for c in (self.sender, self.receiver)]
            due = [d for d in deadlines if d is not None and d <= until]
            if not due:
                break
            self.now = max(self.now, min(due))
            for conn in (self.sender, self.receiver):
                conn.on_timer(self.now)
            self.exchange()
        self.now = until

    def shut_window(self) -> None:
        assert self.sender.state is State.ESTABLISHED
        assert self.sender.send(bytes(8000), self.now) == 8000
        self.exchange()
        self.run_timers(self.now + SECOND)
        assert self.sender.snd_wnd == 0
        assert self.sender.bytes_in_flight == 0
        assert self.sender.persist_at is not None


def test_probes_that_get_no_answer_abort_the_connection() -> None:
    pair = Pair()
    pair.shut_window()
    pair.peer_gone = True
    pair.events.clear()
    sent_before = len(pair.to_receiver)
    pair.run_timers(pair.now + 60 * SECOND)
    assert pair.sender.state is State.CLOSED
    assert Event.TIMED_OUT in pair.events
    assert pair.stats.window_probe_timeouts == 1
    # The first probe the peer missed, data_retries more, then the reset.
    sent_after_gone = pair.to_receiver[sent_before:]
    assert len(sent_after_gone) == CONFIG.data_retries + 2
    assert [bool(flags & RST) for flags in sent_after_gone] == [False] * 4 + [True]


def test_a_peer_that_answers_with_a_zero_window_is_kept() -> None:
    pair = Pair()
    pair.shut_window()
    probes_before = len(pair.to_receiver)
    pair.run_timers(pair.now + 600 * SECOND)
    assert pair.sender.state is State.ESTABLISHED
    assert pair.stats.window_probe_timeouts == 0
    # The probes went on all along: about one per persist_max_ns.
    assert len(pair.to_receiver) - probes_before > 250
    # The receiver reads at last: the rest of the data arrives.
    received = pair.receiver.receive(pair.now, None)
    pair.exchange()
    pair.run_timers(pair.now + 10 * SECOND)
    received += pair.receiver.receive(pair.now, None)
    assert len(received) == 8000


def test_a_peer_that_comes_back_before_the_limit_resets_the_count() -> None:
    pair = Pair()
    pair.shut_window()
    for _ in range(5):
        pair.peer_gone = True  # silent for all but one of the allowed probes
        pair.run_timers(pair.now + CONFIG.data_retries * 2 * SECOND - SECOND)
        assert pair.sender.state is State.ESTABLISHED
        pair.peer_gone = False
        pair.run_timers(pair.now + 2 * SECOND)
    assert pair.sender.state is State.ESTABLISHED
    assert pair.stats.window_probe_timeouts == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=24))
def test_aborted_exactly_when_data_retries_plus_one_probes_in_a_row_go_unanswered(
    answers: list[bool],
) -> None:
    """Whether the peer answers each probe, at random: the connection ends
    at the first persist timeout that follows ``data_retries + 1``
    unanswered probes in a row, and never otherwise."""
    pair = Pair()
    pair.shut_window()
    limit = CONFIG.data_retries + 1
    run = 0
    expected_abort: int | None = None  # the index of the probe that is not sent
    for index, answered in enumerate(answers):
        if run >= limit:
            expected_abort = index
            break
        run = 0 if answered else run + 1
    for index, answered in enumerate(answers):
        persist_at = pair.sender.persist_at
        if persist_at is None:
            break
        pair.peer_gone = not answered
        pair.run_timers(persist_at)
        if pair.sender.state is State.CLOSED:
            assert index == expected_abort, (index, answers)
            assert pair.stats.window_probe_timeouts == 1
            return
    assert expected_abort is None, answers
    assert pair.sender.state is State.ESTABLISHED
