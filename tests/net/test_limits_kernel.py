"""The stack-wide limits with Linux as the peer: a SYN flood from
unresolvable on-link sources against a small connection limit, and peers
that never read against a small memory limit."""

from __future__ import annotations

import asyncio
import json
from ipaddress import IPv4Interface

import pytest

from looming.devices.stack import TcpFlow
from looming.net.stack import DirectStack
from tests.net.hostile import SYN_FLOOD
from tests.net.kernel import KernelPeer
from tests.net.test_hostile import kernel_program

pytestmark = pytest.mark.root

WIDE = IPv4Interface("10.77.0.2/16")  # the flood's sources are on-link

# Connect COUNT times to HOST:PORT, echo "hello" on each (kept open); print
# the outcome of each as JSON.
CLIENTS = r"""
import json, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held, results = [], []
for _ in range(count):
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.settimeout(3)
        s.sendall(b"hello")
        results.append("ok" if s.recv(10) == b"hello" else "bad")
        held.append(s)
    except OSError as error:
        results.append(type(error).__name__)
print(json.dumps(results), flush=True)
"""

# COUNT connections that send without reading for SECONDS, then one that
# echoes SIZE bytes: prints the bytes it got back and the time it took.
HOGS_THEN_ECHO = r"""
import json, socket, sys, threading, time
host, port, count, seconds, size = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
hogs = []
for _ in range(count):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    hogs.append(s)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for s in hogs:
        try:
            s.send(b"h" * 65536)
        except BlockingIOError:
            pass
    time.sleep(0.01)
conn = socket.create_connection((host, port), timeout=10)
conn.settimeout(10)
started = time.monotonic()
sender = threading.Thread(target=conn.sendall, args=(b"e" * size,), daemon=True)
sender.start()
got = 0
try:
    while got < size:
        data = conn.recv(65536)
        if not data:
            break
        got += len(data)
except OSError:
    pass
print(json.dumps({"got": got, "seconds": round(time.monotonic() - started, 2)}), flush=True)
"""


async def echo(flow: TcpFlow) -> None:
    while data := await flow.read():
        await flow.write(data)


def test_a_syn_flood_does_not_lock_linux_clients_out(kernel_peer: KernelPeer) -> None:
    """1,000 SYNs from unresolvable sources against a limit of 5
    connections: Linux clients still get in at once (they timed out for a
    minute while half-open connections counted)."""

    async def body(stack: DirectStack) -> None:
        await stack.tcp.listen(7, echo)
        flood = await kernel_program(
            kernel_peer, SYN_FLOOD, kernel_peer.tap_name, stack.ethernet.mac.hex(),
            "10.77.0.2", "7", 1000, 50,
        )  # fmt: skip
        assert flood.stdin is not None and flood.stdout is not None
        assert (await asyncio.wait_for(flood.stdout.readline(), 30)).startswith(b"ready")
        flood.stdin.write(b"go\n")
        await flood.stdin.drain()
        assert (await asyncio.wait_for(flood.stdout.readline(), 30)).startswith(b"sent")
        await flood.wait()
        clients = await kernel_program(kernel_peer, CLIENTS, "10.77.0.2", 7, 3)
        out, err = await asyncio.wait_for(clients.communicate(), 30)
        assert json.loads(out) == ["ok"] * 3, err.decode()
        counters = stack.counters()
        assert counters["tcp.cookies_sent"] > 0  # the backlog filled
        assert counters["tcp.connection_limit_dropped"] == 0

    kernel_peer.run(body, address=WIDE, max_connections=5)


def test_peers_that_never_read_leave_room_for_a_linux_echo(kernel_peer: KernelPeer) -> None:
    """24 Linux connections send and never read the echo, on a 4 MB limit;
    a new connection's 512 KB echo still completes (it got nothing back)."""

    async def body(stack: DirectStack) -> None:
        await stack.tcp.listen(7, echo)
        client = await kernel_program(
            kernel_peer, HOGS_THEN_ECHO, "10.77.0.2", 7, 24, 3, 512 * 1024
        )
        out, err = await asyncio.wait_for(client.communicate(), 60)
        result = json.loads(out)
        assert result["got"] == 512 * 1024, (result, err.decode())
        counters = stack.counters()
        assert (
            counters["tcp.receive_memory"] + counters["tcp.send_memory"]
            <= 4_000_000 + 25 * 32 * 1024
        )

    kernel_peer.run(body, memory_limit=4_000_000)
