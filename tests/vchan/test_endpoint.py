"""Endpoints between processes: rendezvous, streaming, packets, death, leaks."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
from pathlib import Path

import pytest

from looming.errors import AddressInUse, Closed, ConnectionRefused, ConnectionReset
from looming.unix.time import UnixTime
from looming.vchan import layout
from looming.vchan import listener as ports
from looming.vchan.endpoint import Endpoint
from looming.vchan.errors import VchanCorrupt, VchanError
from looming.vchan.segment import SEGMENT_PREFIX, shm_dir
from tests.vchan.helpers import connected_pair, fork_child, kill_child, wait_child

GIB = 1 << 30


def shm_names(pid: int | None = None) -> list[str]:
    """Segments made by process ``pid`` (this one by default): other runs on
    the machine may have their own at the same time."""
    prefix = f"{SEGMENT_PREFIX}{pid or os.getpid()}-"
    return sorted(n for n in os.listdir(shm_dir()) if n.startswith(prefix))


def test_rendezvous_publishes_then_unpublishes(vchan_registry: Path) -> None:
    before = shm_names()
    listener = ports.listen("front", "store-1", read_min=1024, write_min=1024, time=UnixTime())
    assert sorted(os.listdir(vchan_registry)) == ["front.store-1.pid", "front.store-1.sock"]
    assert len(shm_names()) == len(before) + 1

    def client() -> None:
        with ports.connect("front", "store-1", time=UnixTime()) as channel:
            channel.write(b"ping")
            assert channel.read() == b"pong"

    pid = fork_child(client)
    server = listener.accept(timeout=10)
    # Connected: nothing is left to find by name, so a crash leaks nothing.
    assert os.listdir(vchan_registry) == []
    assert shm_names() == before
    assert server.read() == b"ping"
    server.write(b"pong")
    assert server.read(timeout=10) == b""  # the client closed: end of stream
    assert not server.is_open()
    server.close()
    assert wait_child(pid) == 0


@pytest.mark.parametrize("notifier", ["eventfd", "pipe"])
def test_stream_both_ways_with_each_notifier(notifier: str) -> None:
    listener = ports.listen(
        "srv", "echo", read_min=2047, write_min=4095, notifier=notifier, time=UnixTime()
    )
    total = 3_000_000

    def client() -> None:
        with ports.connect("srv", "echo", time=UnixTime()) as channel:
            rng = random.Random(7)
            data = rng.randbytes(total)
            done = threading.Event()
            echoed = bytearray()

            def reader() -> None:
                while len(echoed) < total:
                    echoed.extend(channel.read(timeout=30))
                done.set()

            # Stream mode with a reader thread: both rings fill and drain.
            thread = threading.Thread(target=reader)
            thread.start()
            position = 0
            while position < total:
                step = rng.randint(1, 9000)
                channel.write(data[position : position + step], timeout=30)
                position += step
            thread.join()
            assert done.is_set() and bytes(echoed) == data

    pid = fork_child(client)
    with listener.accept(timeout=10) as server:
        assert server.read_size == 2048 and server.write_size == 4096
        received = 0
        while received < total:
            chunk = server.read(timeout=30)
            assert chunk
            server.write(chunk, timeout=30)
            received += len(chunk)
    assert wait_child(pid) == 0


def test_one_gigabyte_between_processes_with_a_hash_check() -> None:
    listener = ports.listen("bulk", "data", read_min=1 << 20, write_min=1024, time=UnixTime())
    block = random.Random(1).randbytes((1 << 20) + 4099)
    sizes = [65536, 4097, 131071, 1, 1 << 20, 30000]

    def sender() -> None:
        with ports.connect("bulk", "data", time=UnixTime()) as channel:
            digest = hashlib.sha256()
            sent = 0
            turn = 0
            view = memoryview(block)
            while sent < GIB:
                size = min(sizes[turn % len(sizes)], GIB - sent)
                start = (turn * 4099) % 4099
                piece = view[start : start + size]
                digest.update(piece)
                channel.write(piece, timeout=60)
                sent += size
                turn += 1
            channel.send(digest.digest(), timeout=60)
            assert channel.read(timeout=60) == b"ok"

    pid = fork_child(sender)
    with listener.accept(timeout=10) as receiver:
        digest = hashlib.sha256()
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        received = 0
        while received < GIB:
            count = receiver.read_into(view[: min(len(buffer), GIB - received)], timeout=60)
            assert count > 0
            digest.update(view[:count])
            received += count
        assert receiver.recv(32, timeout=60) == digest.digest()
        receiver.write(b"ok")
        assert receiver.read(timeout=60) == b""
    assert wait_child(pid) == 0


def test_writer_killed_mid_transfer_is_noticed_by_the_reader() -> None:
    listener = ports.listen("victim", "stream", read_min=65536, write_min=1024, time=UnixTime())

    def writer() -> None:
        channel = ports.connect("victim", "stream", time=UnixTime())
        while True:
            channel.write(b"x" * 4096)

    pid = fork_child(writer)
    try:
        with listener.accept(timeout=10) as reader:
            received = 0
            while received < 5_000_000:
                received += len(reader.read(timeout=30))
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(ConnectionReset, match="died"):
                while True:
                    assert reader.read(timeout=30)
            assert not reader.is_open()
    finally:
        kill_child(pid)
        assert wait_child(pid) == -signal.SIGKILL


def test_reader_killed_mid_transfer_is_noticed_by_a_blocked_writer() -> None:
    listener = ports.listen("victim", "stream", read_min=1024, write_min=65536, time=UnixTime())

    def reader() -> None:
        channel = ports.connect("victim", "stream", time=UnixTime())
        received = 0
        while received < 1_000_000:
            received += len(channel.read(timeout=30))
        os.kill(os.getpid(), signal.SIGKILL)

    pid = fork_child(reader)
    try:
        with listener.accept(timeout=10) as writer, pytest.raises(ConnectionReset):
            while True:
                writer.write(b"y" * 10000, timeout=30)
    finally:
        assert wait_child(pid) == -signal.SIGKILL


def test_packet_mode_and_sizes_in_process() -> None:
    server, client = connected_pair(read_min=1024, write_min=1024)
    with server, client:
        assert client.write_size == 1024 and server.write_size == 2048
        assert client.buffer_space() == 1024
        client.send(b"a" * 1000)
        assert server.data_ready() == 1000
        assert client.buffer_space() == 24
        assert not client.try_send(b"b" * 25)  # all or nothing
        assert client.try_write(b"b" * 25) == 24  # stream mode takes what fits
        assert server.recv(1000) == b"a" * 1000
        assert server.recv(24) == b"b" * 24
        assert server.try_recv(1) is None
        with pytest.raises(ValueError, match="can never fit"):
            client.send(bytes(1025))


def test_close_gives_end_of_stream_after_the_data() -> None:
    server, client = connected_pair()
    client.write(b"last words")
    client.close()
    assert server.read() == b"last words"
    assert server.read() == b""
    assert server.recv(10) == b""
    with pytest.raises(ConnectionReset, match="closed"):
        server.write(b"too late")
    server.close()
    with pytest.raises(Closed):
        client.read()
    client.close()  # idempotent


def test_a_corrupt_index_from_the_peer_closes_the_channel() -> None:
    server, client = connected_pair(read_min=1024, write_min=1024)
    with client:
        # A misbehaving client moves its producer index far past the ring.
        peer_view = client._view
        layout.write_u32(peer_view, layout.LEFT_PROD, 0x7FFFFFFF)
        with pytest.raises(VchanCorrupt, match="more than the 1024-byte ring holds"):
            server.read()
        assert server.closed
        with pytest.raises(VchanError, match="closed after an error"):
            server.read()
        # The client sees the server gone.
        assert client.read(timeout=5) == b""


def test_a_corrupt_header_offered_by_the_server_is_refused() -> None:
    listener = ports.listen("bad", "hdr", read_min=1024, write_min=1024, time=UnixTime())
    layout.write_u32(listener._view, layout.LEFT_ORDER, 31)  # order out of range

    def client() -> None:
        with pytest.raises(VchanCorrupt, match=r"outside 10\.\.20"):
            ports.connect("bad", "hdr", time=UnixTime())

    pid = fork_child(client)
    with pytest.raises(VchanError, match="refused the channel: left ring order 31"):
        listener.accept(timeout=10)
    assert wait_child(pid) == 0


def test_connecting_to_nobody_is_refused() -> None:
    with pytest.raises(ConnectionRefused, match="no vchan server publishes ghost/none"):
        ports.connect("ghost", "none", time=UnixTime())


@pytest.mark.parametrize("name", ["", "a/b", "a.b", "..", "spa ce", "é"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        ports.listen(name, "port", time=UnixTime())
    with pytest.raises(ValueError, match="letters, digits"):
        ports.connect("peer", name, time=UnixTime())


def test_a_port_has_one_live_server() -> None:
    with (
        ports.listen("dup", "p", read_min=1024, write_min=1024, time=UnixTime()),
        pytest.raises(AddressInUse, match="already served by process"),
    ):
        ports.listen("dup", "p", time=UnixTime())


def test_crash_recovery_at_next_start(vchan_registry: Path) -> None:
    def crashing_server() -> None:
        ports.listen("crashy", "p", read_min=1024, write_min=1024, time=UnixTime())
        os.kill(os.getpid(), signal.SIGKILL)

    pid = fork_child(crashing_server)
    assert wait_child(pid) == -signal.SIGKILL
    # The dead server left its entry and its segment behind...
    assert sorted(os.listdir(vchan_registry)) == ["crashy.p.pid", "crashy.p.sock"]
    leftovers = shm_names(pid)
    assert len(leftovers) == 1
    with pytest.raises(ConnectionRefused):
        ports.connect("crashy", "p", time=UnixTime())
    # ...which the next start removes, taking the port over.
    with ports.listen("crashy", "p", read_min=1024, write_min=1024, time=UnixTime()):
        assert shm_names(pid) == []
        assert len(shm_names()) == 1
    assert os.listdir(vchan_registry) == []


def test_closing_a_listener_without_a_client_removes_everything(vchan_registry: Path) -> None:
    before = shm_names()
    listener = ports.listen("lonely", "p", time=UnixTime())
    listener.close()
    listener.close()
    assert os.listdir(vchan_registry) == []
    assert shm_names() == before


def test_received_descriptors_are_not_inherited_by_programs_we_run() -> None:
    server, client = connected_pair()
    with server, client:
        for channel in (server, client):
            assert not os.get_inheritable(channel.wait_fd)
            assert not os.get_inheritable(channel.control_fd)


def test_every_try_method_is_one_reader_or_one_writer() -> None:
    readers = {Endpoint.try_read, Endpoint.try_read_into, Endpoint.try_recv}
    writers = {Endpoint.try_write, Endpoint.try_send}
    assert len({f.__code__ for f in readers}) == 1
    assert len({f.__code__ for f in writers}) == 1
    server, client = connected_pair(read_min=1024, write_min=1024)
    with server:
        buffer = bytearray(8)
        # Nothing yet: None from every reader; a zero-byte packet is there at once.
        assert (server.try_read(8), server.try_read_into(buffer), server.try_recv(4)) == (
            None,
            None,
            None,
        )
        assert server.try_recv(0) == b""
        assert client.try_write(b"abcdef") == 6 and client.try_send(b"gh")
        assert server.try_recv(2) == b"ab"
        assert server.try_read_into(buffer) == 6 and bytes(buffer[:6]) == b"cdefgh"
        client.try_send(b"tail")
        client.close()
        # The data first, then each reader's own end of stream.
        assert server.try_read(2) == b"ta" and server.try_recv(2) == b"il"
        assert (server.try_read(8), server.try_read_into(buffer), server.try_recv(4)) == (
            b"",
            0,
            b"",
        )
        for write in (server.try_write, server.try_send):
            with pytest.raises(ConnectionReset, match="closed"):
                write(b"late")
