"""A Linux client that stops reading and then leaves (its address removed,
no FIN, no RST): looming's window probes go unanswered, and after
``data_retries`` of them the connection is aborted, the application's write
raises ConnectionTimeout and the memory the connection held is released."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from looming.devices.stack import TcpFlow
from looming.errors import ConnectionTimeout
from looming.net.stack import DirectStack
from looming.net.tcp.config import SECOND
from tests.net.kernel import KernelPeer

pytestmark = pytest.mark.root

CLIENT = """
import socket, sys, time
c = socket.socket()
c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
c.connect((sys.argv[1], 7200))
c.sendall(b"q" * 20000)
print("sent", flush=True)
time.sleep(60)
"""


def test_a_client_that_vanishes_at_zero_window_is_dropped(kernel_peer: KernelPeer) -> None:
    async def body(stack: DirectStack) -> None:
        tcp = stack.tcp
        tcp.config = replace(tcp.config, data_retries=2, persist_max_ns=SECOND // 2)
        tcp._endpoint.config = tcp.config  # connections take it from here
        ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        async def writer(flow: TcpFlow) -> None:
            try:
                while True:
                    await flow.write(b"w" * 16384)
            except Exception as error:
                ended.set_result(error)

        await tcp.listen(7200, writer)
        client = await kernel_peer.python(CLIENT, str(kernel_peer.stack_address.ip))
        try:
            assert client.stdout is not None
            assert await asyncio.wait_for(client.stdout.readline(), 10) == b"sent\n"
            for _ in range(100):  # until the window is shut and probing begins
                counters = stack.counters()
                if counters["tcp.send_memory"] > 0 and not ended.done():
                    conn = next(iter(tcp._endpoint.connections.values()))
                    if conn.snd_wnd == 0 and conn.persist_at is not None:
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the client's window never shut")
            assert counters["tcp.receive_memory"] > 0
            await asyncio.sleep(1.5)  # the kernel answers the probes: kept
            assert not ended.done()
            await kernel_peer.exec_output(
                "ip", "addr", "del", f"{kernel_peer.peer_address}/24", "dev", kernel_peer.tap_name
            )
            error = await asyncio.wait_for(ended, 15)
            assert isinstance(error, ConnectionTimeout), error
            await asyncio.sleep(0.1)
            counters = stack.counters()
            assert counters["tcp.window_probe_timeouts"] == 1
            assert counters["tcp.send_memory"] == 0
            assert counters["tcp.receive_memory"] == 0
            assert tcp.connection_count == 0
        finally:
            client.kill()
            await client.wait()

    kernel_peer.run(body)
