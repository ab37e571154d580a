"""A connection whose full-sized segments vanish (three timeouts in a row)
lowers its own MSS, as Linux's tcp_mtu_probing does, and nobody else's: a
silent peer is no evidence about the path, so the host's path-MTU entry
(which only ICMP reports lower) stays, and another connection to the same
Linux peer keeps its segment size, as does one opened afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import pytest

from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer
from tests.net.test_hostile import kernel_program
from tests.net.test_plpmtud import eventually

pytestmark = pytest.mark.root

# Accepts connections on port 9200; for each, once it ends, prints the
# bytes received and their SHA-256.
SINK = r"""
import hashlib, socket, sys, threading
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 9200))
server.listen()
print("ready", flush=True)
def drain(conn):
    digest, total = hashlib.sha256(), 0
    while data := conn.recv(1 << 16):
        digest.update(data)
        total += len(data)
    print(total, digest.hexdigest(), flush=True)
    conn.close()
while True:
    conn, _ = server.accept()
    threading.Thread(target=drain, args=(conn,)).start()
"""


class PortHole:
    """Frames over 200 bytes from local TCP port ``port`` vanish while
    ``on``: one connection's data meets a black hole, nothing else does."""

    def __init__(self, network: Any) -> None:
        self.on = True
        self.port = -1
        self.dropped = 0
        send = network.write

        async def path(frame: bytes) -> None:
            if self.on and len(frame) > 200 and frame[12:14] == b"\x08\x00" and frame[23] == 6:
                start = 14 + (frame[14] & 0x0F) * 4
                if int.from_bytes(frame[start : start + 2], "big") == self.port:
                    self.dropped += 1
                    return
            await send(frame)

        network.write = path


def test_a_black_hole_lowers_only_the_connection_that_met_it(kernel_peer: KernelPeer) -> None:
    data = random.Random(12).randbytes(400_000)

    async def body(stack: DirectStack) -> None:
        peer = kernel_peer.peer_address
        sink = await kernel_program(kernel_peer, SINK, peer)
        assert sink.stdout is not None
        try:
            assert (await asyncio.wait_for(sink.stdout.readline(), 10)).strip() == b"ready"
            hole = PortHole(stack.network)
            silent = await stack.tcp.connect(peer, 9200, timeout=5)
            other = await stack.tcp.connect(peer, 9200, timeout=5)
            silent_conn = silent.connection  # type: ignore[attr-defined]
            other_conn = other.connection  # type: ignore[attr-defined]
            assert silent_conn.path_mss == other_conn.path_mss == 1460
            hole.port = silent_conn.local_port
            writer = asyncio.create_task(silent.write(data))
            await eventually(lambda: silent_conn.mtu_search is not None, 20)
            assert silent_conn.path_mss < 1460  # halved, for this connection
            await other.write(data)
            assert other_conn.path_mss == 1460 and other_conn.send_mss == 1448
            assert stack.ipv4.mtu(peer) == 1480  # the host's entry: the link's
            fresh = await stack.tcp.connect(peer, 9200, timeout=5)
            assert fresh.connection.path_mss == 1460  # type: ignore[attr-defined]
            await fresh.write(data[:100_000])
            hole.on = False
            await writer
            for flow in (silent, other, fresh):
                await flow.close()
            sums = []
            for _ in range(3):
                sums.append((await asyncio.wait_for(sink.stdout.readline(), 20)).split())
            sums.sort()
            expected = sorted(
                [str(len(d)).encode(), hashlib.sha256(d).hexdigest().encode()]
                for d in (data, data, data[:100_000])
            )
            assert sums == expected
            counters = stack.counters()
            assert counters["tcp.black_hole_mss_lowered"] == 1
            assert counters.get("ipv4.pmtu_lowered", 0) == 0
            assert hole.dropped >= 3
        finally:
            sink.kill()
            await sink.wait()

    kernel_peer.run(body)
