"""looming's loss recovery against Linux across the loss relay
(tests/tcp/relay.py), with Linux-to-Linux through the same relay as the
reference that the path itself is sound."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from looming.net.netif.af_packet import PacketNetwork
from tests.net.kernel import have_root, unique_suffix
from tests.tcp.lossy import (
    CUBIC_ECHO_PORT,
    linux_echo,
    looming_echo,
    open_looming,
    start_echo_server,
)
from tests.tcp.relay import Impairments, RelayCore, RelayedPath, in_namespace, relayed_path, sh

TEN_MB = 10_000_000


def test_relay_decisions_are_seeded_and_near_the_rates() -> None:
    frame = b"\x00" * 12 + b"\x08\x00" + b"\x45" + b"\x00" * 40
    arp = b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28

    def run(seed: int) -> tuple[list[int], Counter[str]]:
        core = RelayCore()
        core.configure(Impairments(loss=0.05, duplicate=0.02, reorder=0.1, seed=seed))
        shape = [len(core.decide(frame, 0.0)) for _ in range(20_000)]
        assert all(len(core.decide(arp, 0.0)) == 1 for _ in range(1000))  # ARP is spared
        return shape, Counter(core.counters)

    first, counters = run(5)
    again, _ = run(5)
    other, _ = run(6)
    assert first == again and first != other
    assert 800 <= counters["dropped"] <= 1200
    assert 250 <= counters["duplicated"] <= 500
    assert 1700 <= counters["reordered"] <= 2100


@pytest.fixture
def path() -> Iterator[RelayedPath]:
    if not have_root():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root; CI runs as root)")
    with relayed_path(unique_suffix()) as relayed:
        server = start_echo_server(relayed)
        try:
            yield relayed
        finally:
            server.kill()
            server.wait()


def _looming_echo(path: RelayedPath, size: int, *, offload: bool = True):  # type: ignore[no-untyped-def]
    async def body():  # type: ignore[no-untyped-def]
        stack = await open_looming(path, offload=offload)
        try:
            result = await asyncio.wait_for(looming_echo(stack, path, size), 120)
            result.counters["frames_written"] = stack.network.stats().tx_packets
            return result
        finally:
            await stack.disconnect()

    return asyncio.run(body())


@pytest.mark.root
@pytest.mark.parametrize("offload", [False, True])
def test_the_packet_socket_with_and_without_offload(path: RelayedPath, offload: bool) -> None:
    """With virtio-net headers a window of segments leaves in one send that
    the kernel cuts up (and the checksums it finishes are right, or Linux
    would drop the segments); without, one send per segment."""
    path.impair(Impairments(loss=0.01, seed=4))
    result = _looming_echo(path, 2_000_000, offload=offload)
    assert result.intact
    # Full-sized segments on the wire, at least (one TCP packet may hold many).
    segments = result.counters["bytes_out"] // 1460
    writes = result.counters["frames_written"]
    assert segments >= 2_000_000 // 1460
    if offload:
        assert writes * 2 < segments
    else:
        assert writes >= segments


@pytest.mark.root
def test_the_linux_reference_runs_the_congestion_control_it_names(path: RelayedPath) -> None:
    """A new namespace inherits the host's default congestion control (BBR
    on some hosts, which does not slow down for random loss, so a 10 MB
    echo at 5% loss took 0.37 s with it and 2.6 s with CUBIC): the reference
    says which one it ran, and runs CUBIC on both sockets when asked."""
    default = sh(*path.right("sysctl", "-n", "net.ipv4.tcp_congestion_control")).strip()
    plain = linux_echo(path, 200_000)
    assert plain.intact and plain.congestion == default
    cubic = linux_echo(path, 200_000, "cubic")
    assert cubic.intact and cubic.congestion == "cubic"
    path.right_side_kernel(True)
    try:
        client = in_namespace(
            path.right_ns,
            lambda: socket.create_connection((path.left_address, CUBIC_ECHO_PORT), timeout=5),
        )
        try:  # the server's accepted socket, as ss shows it
            shown = sh(
                *path.left(
                    "ss", "-tniH", "state", "established", "sport", "=", f":{CUBIC_ECHO_PORT}"
                )
            )
        finally:
            client.close()
    finally:
        path.right_side_kernel(False)
    assert " cubic " in f" {shown} ", shown


def _linux_counters(path: RelayedPath) -> dict[str, int]:
    """The echo server's namespace's TCP counters, as "TcpExt:Name"."""
    text = subprocess.run(
        path.left("cat", "/proc/net/netstat"), capture_output=True, text=True, check=True
    ).stdout.splitlines()
    counters = {}
    for names, numbers in zip(text[::2], text[1::2], strict=True):
        prefix, *keys = names.split()
        counters.update(
            {f"{prefix}{key}": int(n) for key, n in zip(keys, numbers.split()[1:], strict=True)}
        )
    return counters


@pytest.mark.root
def test_ten_megabytes_at_three_percent_loss_recover_without_timeouts(path: RelayedPath) -> None:
    path.impair(Impairments(loss=0.03, seed=3))
    reference = linux_echo(path, TEN_MB)
    assert reference.intact
    path.impair(Impairments(loss=0.03, seed=3))
    linux_before = _linux_counters(path)
    result = _looming_echo(path, TEN_MB)
    linux = {key: value - linux_before[key] for key, value in _linux_counters(path).items()}
    relay = path.counters()
    assert result.intact
    # Our data segments carried SACK blocks while data was held out of
    # order (RFC 2018 4), and Linux, the sender to us, took every block
    # and recovered by them.
    assert result.counters["data_segments_with_sack"] > 50
    assert linux["TcpExt:TCPSACKDiscard"] == 0
    assert linux["TcpExt:TCPSackRecovery"] > 50
    assert relay["dropped"] > 300  # the loss really happened (about 3% of 17,000 frames)
    counters = result.counters
    assert counters["retransmits"] > 100
    assert counters["fast_retransmits"] > 50
    # Recovery by RACK and fast retransmit, not by waiting for the timer.
    assert counters["timeouts"] * 10 <= counters["fast_retransmits"]
    assert counters["segments_deemed_lost"] >= counters["retransmits"] // 2
    # Runs of Linux's segments came in one burst and were taken merged (as
    # GRO merges them), in order and beyond holes; the echo came back whole.
    assert counters["segments_merged"] > 500


@pytest.mark.root
def test_reordering_and_duplicates_are_told_apart_from_loss(path: RelayedPath) -> None:
    path.impair(Impairments(reorder=0.03, reorder_ms=3, duplicate=0.02, seed=8))
    result = _looming_echo(path, 4_000_000)
    assert result.intact
    counters = result.counters
    # Linux reports the duplicated segments (D-SACK) ...
    assert counters["dsacks_received"] > 10
    # ... so the recoveries that reordering (3 ms, beyond RACK's window of
    # at most one SRTT) set off are found spurious and undone.
    assert counters["timeouts"] <= 2
    undone = counters["spurious_recoveries_undone"] + counters["spurious_timeouts_undone"]
    assert counters["fast_retransmits"] > 0
    assert undone * 2 >= counters["fast_retransmits"]


@pytest.mark.root
def test_a_window_sized_burst_is_queued_whole_on_the_packet_socket() -> None:
    """The default queue of an AF_PACKET socket holds about 100 frames: a
    peer's 512 KB window sent while looming is busy overflowed it, and the
    drops (14% of Linux's frames in a clean 10 MB echo) cost as much as
    the relay's loss. 600 full frames must all wait to be read."""
    if not have_root():
        pytest.fail("this test needs root (it is marked root; CI runs as root)")
    namespace = f"lmpq{unique_suffix()}"
    ours, theirs = f"lmqa{namespace[4:]}", f"lmqb{namespace[4:]}"
    sh("ip", "netns", "add", namespace)
    try:
        run = ["ip", "netns", "exec", namespace]
        sh(*run, "ip", "link", "add", ours, "type", "veth", "peer", "name", theirs)
        for device in (ours, theirs):
            sh(*run, "ip", "link", "set", device, "up")
        network = in_namespace(namespace, lambda: asyncio.run(PacketNetwork.connect(ours)))
        sender = in_namespace(namespace, lambda: _raw_socket(theirs))
        try:
            frame = b"\xff" * 6 + b"\x02" + b"\x00" * 5 + b"\x88\xb5" + bytes(1486)
            for _ in range(600):
                sender.send(frame)
            # The veth hands frames over from a per-CPU backlog, which a
            # loaded host may drain a little later: wait up to 2 s for them.
            received, deadline = 0, time.monotonic() + 2.0
            while received < 600 and time.monotonic() < deadline:
                try:
                    network._receive()
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                received += 1
            assert received == 600
        finally:
            sender.close()
            network._release()
    finally:
        sh("ip", "netns", "del", namespace, check=False)


def _raw_socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((interface, 0))
    return sock
