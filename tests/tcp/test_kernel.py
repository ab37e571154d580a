"""looming's TCP against the Linux kernel, over a TAP device in a namespace.

The kernel side runs small Python socket programs under ``ip netns exec``;
looming runs in the test process on the direct stack (see tests/net/kernel.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import sys
from ipaddress import IPv4Address
from typing import Any

import pytest

from looming.devices.net import IpProtocol, ReceivedPacket
from looming.errors import ConnectionRefused, ConnectionReset
from looming.net.netif.tap import TapNetwork
from looming.net.stack import DirectStack
from looming.net.tcp import State, TcpConfig, TcpLayer, TcpStream
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import TcpHeader
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.kernel import KernelPeer, sh

pytestmark = pytest.mark.root

PAYLOAD_SIZE = 4 * 1024 * 1024


def _payload(seed: int, size: int = PAYLOAD_SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


# A kernel server: accept one connection, read to EOF while hashing, send the
# hex digest and then SIZE bytes of seeded data, then close.
KERNEL_SERVER = r"""
import hashlib, random, socket, sys
port, size, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("10.77.0.1", port))
listener.listen(4)
print("listening", flush=True)
conn, _ = listener.accept()
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(1 << 16):
    digest.update(chunk)
    total += len(chunk)
conn.sendall(digest.hexdigest().encode() + b"\n")
conn.sendall(random.Random(seed).randbytes(size))
conn.close()
print("received", total, flush=True)
"""

# A kernel client: connect, send SIZE seeded bytes, shut down, read to EOF
# while hashing, print the digest of what came back.
KERNEL_CLIENT = r"""
import hashlib, random, socket, sys
port, size, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conn = socket.create_connection(("10.77.0.2", port), timeout=60)
conn.sendall(random.Random(seed).randbytes(size))
conn.shutdown(socket.SHUT_WR)
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(1 << 16):
    digest.update(chunk)
    total += len(chunk)
conn.close()
print(total, digest.hexdigest(), flush=True)
"""


async def _read_all(flow: TcpStream) -> bytes:
    parts = []
    while chunk := await flow.read():
        parts.append(chunk)
    return b"".join(parts)


def _tcp(stack: DirectStack) -> TcpLayer:
    layer = stack.tcp
    assert isinstance(layer, TcpLayer)
    return layer


async def _ss(peer: KernelPeer) -> str:
    return await peer.exec_output("ss", "-tin")


@pytest.mark.slow
def test_looming_client_to_kernel_server(kernel_peer: KernelPeer) -> None:
    upload = _payload(1)

    async def body(stack: DirectStack) -> None:
        server = await kernel_peer.python(KERNEL_SERVER, "5001", str(PAYLOAD_SIZE), "2")
        assert server.stdout is not None
        assert (await server.stdout.readline()).strip() == b"listening"
        tcp = _tcp(stack)
        syn_acks: list[TcpHeader] = []
        deliver = tcp.input

        def watch(packet: ReceivedPacket[IPv4Address], payload: bytes) -> None:
            header, _ = wire.parse(payload)
            if header.syn:
                syn_acks.append(header)
            deliver(packet, payload)

        stack.ipv4.register(IpProtocol.TCP, watch)
        flow = await tcp.connect(kernel_peer.peer_address, 5001, timeout=10)
        # The kernel's SYN-ACK accepts every option we offered...
        (syn_ack,) = syn_acks
        assert syn_ack.timestamps is not None and syn_ack.timestamps[1] != 0
        assert syn_ack.sack_permitted
        assert syn_ack.window_scale is not None
        assert syn_ack.mss == 1460
        # ...and it reports our scale (4 for 512 KiB) and an MSS that leaves
        # room for the timestamp option: 1500 - 20 - 20 - 12.
        info = await _ss(kernel_peer)
        assert re.search(rf"wscale:4,{syn_ack.window_scale}\b", info), info
        assert re.search(r"\bmss:1448\b", info), info
        conn = flow.connection
        assert conn.ts_ok and conn.sack_ok and conn.ws_ok
        assert conn.peer_mss == 1460
        await flow.write(upload)
        await flow.shutdown()
        reply = await _read_all(flow)
        digest, _, data = reply.partition(b"\n")
        assert digest.decode() == hashlib.sha256(upload).hexdigest()
        assert hashlib.sha256(data).digest() == hashlib.sha256(_payload(2)).digest()
        await flow.close()
        out, _ = await server.communicate()
        assert f"received {PAYLOAD_SIZE}" in out.decode()
        assert server.returncode == 0
        # Both FINs went across and were acknowledged: we closed first, so we
        # hold TIME-WAIT (one timer left) and the kernel has let go.
        for _ in range(500):
            if flow.state is State.TIME_WAIT:
                break
            await asyncio.sleep(0.02)
        assert flow.state is State.TIME_WAIT
        assert tcp.timer_count == 1
        assert "10.77.0.2" not in await kernel_peer.exec_output("ss", "-tan")

    kernel_peer.run(body)


@pytest.mark.slow
def test_kernel_client_to_looming_server(kernel_peer: KernelPeer) -> None:
    download = _payload(4)
    received: list[bytes] = []

    async def body(stack: DirectStack) -> None:
        async def serve(flow: TcpStream) -> None:
            received.append(await _read_all(flow))
            await flow.write(download)
            await flow.shutdown()

        listener = await _tcp(stack).listen(6001, serve)
        client = await kernel_peer.python(KERNEL_CLIENT, "6001", str(PAYLOAD_SIZE), "3")
        out, err = await asyncio.wait_for(client.communicate(), 120)
        assert client.returncode == 0, err.decode()
        total, digest = out.decode().split()
        assert int(total) == PAYLOAD_SIZE
        assert digest == hashlib.sha256(download).hexdigest()
        assert received and hashlib.sha256(received[0]).digest() == (
            hashlib.sha256(_payload(3)).digest()
        )
        await listener.close()
        # The kernel closed first (it shut down after sending), so it holds
        # TIME-WAIT and looming, through LAST-ACK, has let go of everything.
        tcp = _tcp(stack)
        for _ in range(500):
            if tcp.connection_count == 0:
                break
            await asyncio.sleep(0.02)
        assert tcp.connection_count == 0
        assert tcp.timer_count == 0
        time_wait = await kernel_peer.exec_output("ss", "-tan", "state", "time-wait")
        assert "10.77.0.2:6001" in time_wait

    kernel_peer.run(body)


def test_kernel_refuses_a_closed_port(kernel_peer: KernelPeer) -> None:
    async def body(stack: DirectStack) -> None:
        with pytest.raises(ConnectionRefused):
            await _tcp(stack).connect(kernel_peer.peer_address, 5999, timeout=10)
        assert _tcp(stack).connection_count == 0
        assert _tcp(stack).timer_count == 0

    kernel_peer.run(body)


# The kernel accepts, reads a line, then aborts with SO_LINGER 0 (a RST).
KERNEL_RESETTER = r"""
import socket, struct
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("10.77.0.1", 5002))
listener.listen(1)
print("listening", flush=True)
conn, _ = listener.accept()
conn.recv(100)
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
conn.close()
"""


def test_reset_from_kernel(kernel_peer: KernelPeer) -> None:
    async def body(stack: DirectStack) -> None:
        server = await kernel_peer.python(KERNEL_RESETTER)
        assert server.stdout is not None
        await server.stdout.readline()
        flow = await _tcp(stack).connect(kernel_peer.peer_address, 5002, timeout=10)
        await flow.write(b"hello\n")
        with pytest.raises(ConnectionReset):
            await asyncio.wait_for(flow.read(), 10)
        await server.wait()
        assert flow.state is State.CLOSED
        assert _tcp(stack).stats.resets_received == 1
        assert _tcp(stack).stats.resets_sent == 0  # a RST is never answered

    kernel_peer.run(body)


# The kernel accepts a first connection and holds it open, silent; then a
# second, whose line it echoes.
KERNEL_HOLDER = r"""
import socket
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("10.77.0.1", 5005))
listener.listen(4)
print("listening", flush=True)
first, _ = listener.accept()
print("first", flush=True)
second, _ = listener.accept()
print("second", flush=True)
second.sendall(second.recv(100))
second.close()
"""


def test_connect_over_a_connection_the_kernel_still_holds(kernel_peer: KernelPeer) -> None:
    """A unikernel restarted while the kernel still held its connection
    (nothing reached the kernel at the end) connects again from the same
    port: the kernel answers the SYN with a challenge ACK (RFC 5961 4.2),
    looming's reset ends the old connection, and the SYN goes again at
    once rather than after the 1 s initial timeout."""

    async def body() -> None:
        first = await kernel_peer.connect_stack(seed=5)  # (the kernel's address comes with it)
        server = await kernel_peer.python(KERNEL_HOLDER)
        assert server.stdout is not None
        try:
            assert (await server.stdout.readline()).strip() == b"listening"
            old = await _tcp(first).connect(kernel_peer.peer_address, 5005, timeout=10)
            assert (await server.stdout.readline()).strip() == b"first"
            # The link goes down under the first stack: its reset at
            # shutdown never reaches the kernel.
            await kernel_peer.exec_output("ip", "link", "set", kernel_peer.tap_name, "down")
        finally:
            await first.disconnect()
        second = await kernel_peer.connect_stack(seed=5)  # the same first local port
        try:
            held = await kernel_peer.exec_output("ss", "-tn", "state", "established")
            assert f"10.77.0.2:{old.connection.local_port}" in held, held
            started = asyncio.get_running_loop().time()
            flow = await _tcp(second).connect(kernel_peer.peer_address, 5005, timeout=10)
            elapsed = asyncio.get_running_loop().time() - started
            assert flow.connection.local_port == old.connection.local_port
            assert (await server.stdout.readline()).strip() == b"second"
            await flow.write(b"hello again\n")
            assert await asyncio.wait_for(_read_all(flow), 10) == b"hello again\n"
            await flow.close()
            assert _tcp(second).stats.resets_sent == 1  # the answer to the challenge ACK
            assert elapsed < 0.5, f"the SYN waited {elapsed:.2f} s to go again"
        finally:
            await second.disconnect()
            server.kill()
            await server.wait()

    asyncio.run(body())


def test_kernel_gets_reset_for_no_connection(kernel_peer: KernelPeer) -> None:
    code = r"""
import socket
try:
    socket.create_connection(("10.77.0.2", 7777), timeout=10)
except ConnectionRefusedError:
    print("refused")
"""

    async def body(stack: DirectStack) -> None:
        client = await kernel_peer.python(code)
        out, _ = await asyncio.wait_for(client.communicate(), 30)
        assert out.decode().strip() == "refused"
        assert _tcp(stack).stats.no_connection >= 1

    kernel_peer.run(body)


@pytest.mark.slow
def test_bulk_under_loss_on_loomings_side(kernel_peer: KernelPeer) -> None:
    """3% of the segments arriving at looming, and 3% of those it sends, are lost."""
    upload = _payload(7, 2 * 1024 * 1024)
    rng = random.Random(11)

    async def body(stack: DirectStack) -> None:
        tcp = _tcp(stack)
        ipv4 = stack.ipv4
        deliver = tcp.input
        dropped = {"in": 0, "out": 0}

        def lossy_input(packet: ReceivedPacket[IPv4Address], payload: bytes) -> None:
            if rng.random() >= 0.03:
                deliver(packet, payload)
            else:
                dropped["in"] += 1

        ipv4.register(IpProtocol.TCP, lossy_input)
        original_write = ipv4.write

        async def lossy_write(
            destination: IPv4Address, protocol: int, payload: bytes, **kwargs: Any
        ) -> None:
            if protocol == IpProtocol.TCP and rng.random() < 0.03:
                dropped["out"] += 1
                return
            await original_write(destination, protocol, payload, **kwargs)

        # Loss on looming's side of the link, in both directions.
        ipv4.write = lossy_write  # type: ignore[method-assign]  # a test-only wrapper
        server = await kernel_peer.python(KERNEL_SERVER, "5003", str(len(upload)), "8")
        assert server.stdout is not None
        await server.stdout.readline()
        flow = await tcp.connect(kernel_peer.peer_address, 5003, timeout=10)
        await flow.write(upload)
        await flow.shutdown()
        reply = await asyncio.wait_for(_read_all(flow), 120)
        digest, _, data = reply.partition(b"\n")
        assert digest.decode() == hashlib.sha256(upload).hexdigest()
        assert data == _payload(8, len(upload))
        await flow.close()
        await server.wait()
        # Both hooks saw TCP and dropped some of it (a path around them, such
        # as a faster one per frame, would leave this test without loss).
        assert dropped["in"] > 0 and dropped["out"] > 0, dropped
        assert tcp.stats.retransmits > 0
        assert tcp.stats.fast_retransmits > 0

    kernel_peer.run(body)


# The kernel accepts with a small receive buffer and reads nothing until it
# is told to on stdin; then it reads to EOF and prints the digest.
KERNEL_STALLED_READER = r"""
import hashlib, socket, sys
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
listener.bind(("10.77.0.1", 5004))
listener.listen(1)
print("listening", flush=True)
conn, _ = listener.accept()
sys.stdin.readline()
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(1 << 16):
    digest.update(chunk)
    total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""


def test_zero_window_from_the_kernel_is_probed_until_it_opens(kernel_peer: KernelPeer) -> None:
    data = _payload(21, 2_000_000)  # more than our 512 KiB send buffer holds

    async def body(stack: DirectStack) -> None:
        tcp = _tcp(stack)
        process = await asyncio.create_subprocess_exec(
            *kernel_peer.netns(sys.executable, "-c", KERNEL_STALLED_READER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None and process.stdin is not None
        await process.stdout.readline()
        flow = await tcp.connect(kernel_peer.peer_address, 5004, timeout=10)
        writer = asyncio.create_task(flow.write(data))
        # The kernel's small buffer fills: its window closes and we probe it.
        conn = flow.connection
        for _ in range(200):
            if conn.snd_wnd == 0 and conn.persist_backoff >= 2:
                break
            await asyncio.sleep(0.05)
        assert conn.snd_wnd == 0
        assert conn.persist_backoff >= 2  # probes went out, and were answered
        assert not writer.done()
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        await asyncio.wait_for(writer, 30)
        await flow.shutdown()
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        total, digest = out.decode().split()
        assert int(total) == len(data)
        assert digest == hashlib.sha256(data).hexdigest()
        assert tcp.stats.resets_received == 0

    kernel_peer.run(body)


def test_looming_zero_window_holds_the_kernel_sender(kernel_peer: KernelPeer) -> None:
    config_size = 300_000

    async def body(stack: DirectStack) -> None:
        tcp = _tcp(stack)
        accepted: asyncio.Queue[TcpStream] = asyncio.Queue()
        release = asyncio.Event()

        async def stalled(flow: TcpStream) -> None:
            await accepted.put(flow)
            await release.wait()
            received.append(await _read_all(flow))

        received: list[bytes] = []
        # A small receive buffer so the window closes quickly.
        tcp.config = TcpConfig(receive_buffer=16 * 1024)
        tcp._endpoint.config = tcp.config
        listener = await tcp.listen(6002, stalled)
        client = await kernel_peer.python(KERNEL_CLIENT, "6002", str(config_size), "22")
        flow = await asyncio.wait_for(accepted.get(), 10)
        conn = flow.connection
        for _ in range(100):
            if conn.rcv_adv == conn.rcv_nxt and conn.readable_bytes > 0:
                break
            await asyncio.sleep(0.05)
        assert conn.rcv_adv == conn.rcv_nxt  # we advertise a zero window...
        held = conn.readable_bytes
        await asyncio.sleep(0.6)  # ...and the kernel probes it, sending nothing more
        assert conn.readable_bytes == held
        release.set()
        out, _ = await asyncio.wait_for(client.communicate(), 30)
        assert client.returncode == 0
        assert received and received[0] == _payload(22, config_size)
        assert out.split()[0] == b"0"  # the server sent nothing back
        await listener.close()

    kernel_peer.run(body)


@pytest.mark.slow
def test_bulk_over_an_offloading_tap(kernel_peer: KernelPeer) -> None:
    """With a vnet TAP, looming sends packets of many segments for the kernel
    to cut up (TSO) and receives the kernel's 64 KB ones: hashes both ways."""
    upload = _payload(31, 8 * 1024 * 1024)

    async def main() -> None:
        tap = await TapNetwork.connect(kernel_peer.tap_name, mtu=kernel_peer.mtu, offload=True)
        sh("ip", "link", "set", kernel_peer.tap_name, "netns", kernel_peer.namespace)
        kernel_peer.sh(
            "ip", "addr", "add", f"{kernel_peer.peer_address}/24", "dev", kernel_peer.tap_name
        )
        kernel_peer.sh("ip", "link", "set", kernel_peer.tap_name, "up")
        stack = await DirectStack.connect(
            tap,
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(5),
            address=kernel_peer.stack_address,
            gateway=kernel_peer.peer_address,
        )
        try:
            tcp = _tcp(stack)
            server = await kernel_peer.python(KERNEL_SERVER, "5005", str(len(upload)), "32")
            assert server.stdout is not None
            await server.stdout.readline()
            flow = await tcp.connect(kernel_peer.peer_address, 5005, timeout=10)
            assert flow.connection.burst_bytes > 40 * flow.connection.send_mss
            await flow.write(upload)
            await flow.shutdown()
            reply = await asyncio.wait_for(_read_all(flow), 120)
            digest, _, data = reply.partition(b"\n")
            assert digest.decode() == hashlib.sha256(upload).hexdigest()
            assert data == _payload(32, len(upload))
            await flow.close()
            await server.wait()
            assert stack.ipv4.counters["tx_offloaded"] > 0
        finally:
            await stack.disconnect()

    asyncio.run(main())
