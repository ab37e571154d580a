"""Waits without a timeout (one blocking eventfd read, a watchdog thread
for the peer's death and lost kicks) and the spin's back-off."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

import pytest

from looming.errors import Closed, ConnectionReset
from looming.unix.time import UnixTime
from looming.vchan import endpoint
from looming.vchan import listener as ports
from looming.vchan.endpoint import Endpoint
from tests.vchan.helpers import connected_pair, fork_child, kill_child, wait_child

# Generous: a blocked call that works returns within milliseconds.
JOIN_S = 20.0


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``call`` in a daemon thread; its result or exception lands in the list."""
    outcome: list[object] = []

    def body() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def wait_until_sleeping(channel: Endpoint, thread: threading.Thread, outcome: list[object]) -> None:
    """Until ``channel``'s waiter sits in its blocking read (the watchdog is up)."""
    ready = threading.Event()
    while not (channel._sleeping and channel._watchdog is not None):
        assert thread.is_alive(), f"the waiting call returned before it slept: {outcome}"
        ready.wait(0.001)


def test_a_reader_blocked_without_timeout_hears_the_writer_die() -> None:
    listener = ports.listen("victim", "silent", read_min=4096, write_min=4096, time=UnixTime())

    def writer() -> None:
        channel = ports.connect("victim", "silent", time=UnixTime())
        channel.write(b"hello")
        os.kill(os.getpid(), signal.SIGSTOP)  # wait to be killed, holding the channel

    pid = fork_child(writer)
    try:
        with listener.accept(timeout=10) as reader:
            assert reader.read(timeout=10) == b"hello"
            thread, outcome = in_thread(reader.read)
            wait_until_sleeping(reader, thread, outcome)
            os.kill(pid, signal.SIGKILL)
            thread.join(JOIN_S)
            assert not thread.is_alive()
            assert len(outcome) == 1 and isinstance(outcome[0], ConnectionReset)
            assert "died" in str(outcome[0])
    finally:
        kill_child(pid)
        assert wait_child(pid) == -signal.SIGKILL


def test_a_writer_blocked_without_timeout_hears_the_reader_die() -> None:
    listener = ports.listen("victim", "full", read_min=1024, write_min=4096, time=UnixTime())

    def reader() -> None:
        channel = ports.connect("victim", "full", time=UnixTime())
        os.kill(os.getpid(), signal.SIGSTOP)  # never reads
        channel.close()

    pid = fork_child(reader)
    try:
        with listener.accept(timeout=10) as writer:
            payload = b"z" * (writer.write_size + 1)
            thread, outcome = in_thread(lambda: writer.write(payload))
            wait_until_sleeping(writer, thread, outcome)
            os.kill(pid, signal.SIGKILL)
            thread.join(JOIN_S)
            assert not thread.is_alive()
            assert len(outcome) == 1 and isinstance(outcome[0], ConnectionReset)
    finally:
        kill_child(pid)
        assert wait_child(pid) == -signal.SIGKILL


def test_data_written_without_a_kick_still_wakes_a_blocked_reader() -> None:
    # A request lost to the non-atomic notify byte looks like this: the
    # data arrives and no kick follows. The watchdog's periodic re-wake
    # bounds the delay (SAFETY_RECHECK_MS).
    server, client = connected_pair()
    with server, client:
        thread, outcome = in_thread(lambda: server.recv(5))
        wait_until_sleeping(server, thread, outcome)
        sent, kick = client._ring.send(b"quiet")
        assert sent and kick  # the reader did ask; we drop the kick on purpose
        thread.join(JOIN_S)
        assert not thread.is_alive()
        assert outcome == [b"quiet"]


def test_closing_stops_the_watchdog() -> None:
    server, client = connected_pair()
    with client:
        thread, outcome = in_thread(lambda: server.recv(3))
        wait_until_sleeping(server, thread, outcome)
        client.send(b"abc")
        thread.join(JOIN_S)
        assert outcome == [b"abc"]
        watchdog = server._watchdog
        assert watchdog is not None and watchdog.is_alive()
        server.close()
        assert not watchdog.is_alive()


def test_closing_wakes_our_own_thread_blocked_without_timeout() -> None:
    server, client = connected_pair()
    with client:
        thread, outcome = in_thread(lambda: server.recv(8))
        wait_until_sleeping(server, thread, outcome)
        server.close()
        thread.join(JOIN_S)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], Closed)


def test_a_peer_closing_wakes_a_blocked_reader_with_end_of_stream() -> None:
    server, client = connected_pair()
    with server:
        thread, outcome = in_thread(server.read)
        wait_until_sleeping(server, thread, outcome)
        client.close()
        thread.join(JOIN_S)
        assert outcome == [b""]


@pytest.mark.parametrize("spin", [1, 8])
def test_failed_spins_back_off_and_a_success_resets(spin: int) -> None:
    server, client = connected_pair(spin=spin)
    with server, client:
        checks = 0

        def never() -> bool:
            nonlocal checks
            checks += 1
            return False

        # Each failed spin doubles the waits that skip spinning: 1, 3, 7, ...
        pattern = []
        for _ in range(1 + 1 + 1 + 3 + 1 + 7 + 1):
            before = checks
            assert not server.spin_succeeded(never)
            pattern.append((checks - before) // spin)
        assert pattern == [1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
        skips = 0
        while not server.spin_succeeded(lambda: True):
            skips += 1
        assert skips == 15  # the skips left after the last failure
        before = checks
        assert not server.spin_succeeded(never)
        assert checks - before == spin  # after a success, the next wait spins again


def test_the_back_off_is_bounded() -> None:
    server, client = connected_pair(spin=2)
    with server, client:
        for _ in range(5000):
            server.spin_succeeded(lambda: False)
        spins = 0
        for _ in range(10 * (endpoint.SPIN_RETRY_AFTER + 1)):
            calls = 0

            def never() -> bool:
                nonlocal calls
                calls += 1
                return False

            server.spin_succeeded(never)
            spins += calls > 0
        assert spins == 10


def test_no_spin_never_checks() -> None:
    server, client = connected_pair(spin=0)
    with server, client:
        assert not server.spin_succeeded(pytest.fail)


@pytest.mark.parametrize("spin", [0, endpoint.DEFAULT_SPIN])
def test_both_directions_at_once_from_two_threads_per_end_without_timeouts(spin: int) -> None:
    # Small rings make every thread wait often; one thread per end sleeps in
    # the eventfd read and wakes the other, whichever direction the kick was for.
    server, client = connected_pair(read_min=1024, write_min=1024, spin=spin)
    client.spin = spin
    total = 1 << 20
    pattern = bytes(range(251)) * 8

    def pump(channel: Endpoint) -> int:
        sent = 0
        while sent < total:
            piece = pattern[: min(len(pattern), total - sent)]
            channel.write(piece)
            sent += len(piece)
        return sent

    def drain(channel: Endpoint) -> bytes:
        digest = bytearray()
        while len(digest) < total:
            digest += channel.read(4096)
        return bytes(digest)

    expected = (pattern * (total // len(pattern) + 1))[:total]
    with server, client:
        threads = [
            in_thread(lambda: pump(server)),
            in_thread(lambda: pump(client)),
            in_thread(lambda: drain(server)),
            in_thread(lambda: drain(client)),
        ]
        for thread, _ in threads:
            thread.join(JOIN_S * 3)
            assert not thread.is_alive()
        outcomes = [outcome for _, outcome in threads]
        assert outcomes == [[total], [total], [expected], [expected]]
