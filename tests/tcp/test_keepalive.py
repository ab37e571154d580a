"""Keepalive through the TcpFlow interface, with the Linux kernel as the peer."""

from __future__ import annotations

import asyncio

import pytest

from looming.errors import ConnectionTimeout
from looming.net.stack import DirectStack
from looming.net.tcp import State
from tests.net.kernel import KernelPeer

pytestmark = pytest.mark.root

# Accept one connection and hold it, reading, until the test ends.
HOLDER = r"""
import socket
listener = socket.socket()
listener.bind(("10.77.0.1", 7100))
listener.listen(1)
print("listening", flush=True)
conn, _ = listener.accept()
while conn.recv(4096):
    pass
"""


def test_keepalive_keeps_a_live_peer_and_ends_a_vanished_one(kernel_peer: KernelPeer) -> None:
    async def body(stack: DirectStack) -> None:
        holder = await kernel_peer.python(HOLDER)
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"listening"
        flow = await stack.tcp.connect("10.77.0.1", 7100, timeout=5)
        flow.set_nodelay(True)
        # (Linux answers at most one out-of-window segment per 500 ms,
        # tcp_invalid_ratelimit: probes closer than that go unanswered.)
        flow.set_keepalive(True, idle=0.3, interval=0.6, probes=3)
        with pytest.raises(ValueError, match="positive"):
            flow.set_keepalive(True, idle=0)
        sent = stack.tcp.stats.segments_out
        await asyncio.sleep(2.5)
        # Probes went out (no data did) and Linux answered them.
        assert stack.tcp.stats.segments_out - sent >= 3
        assert flow.state is State.ESTABLISHED
        # The peer vanishes without a word: its link goes down.
        await kernel_peer.exec_output("ip", "link", "set", kernel_peer.tap_name, "down")
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionTimeout):
            await asyncio.wait_for(flow.read(), 5)
        # at most idle + probes x interval, give or take the timers' slack
        assert asyncio.get_running_loop().time() - started < 0.3 + 3 * 0.6 + 0.3
        holder.kill()
        await holder.wait()

    kernel_peer.run(body)
