"""A persistent TAP keeps the offloads an earlier open set on it; opening
it without vnet headers must turn them off, or the kernel hands over TCP
segments whose checksum is only partial and every one is dropped."""

from __future__ import annotations

import asyncio
import sys

import pytest

from looming.devices.stack import TcpFlow
from looming.net.netif.tap import TapNetwork
from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer, sh

pytestmark = pytest.mark.root

CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 7100), timeout=5)
data = bytes(range(256)) * 64
c.sendall(data)
got = b""
while len(got) < len(data):
    chunk = c.recv(65536)
    assert chunk, "closed early"
    got += chunk
assert got == data
print("echo ok", flush=True)
"""


def test_reopened_tap_without_offload_clears_the_kernels_offloads(
    kernel_peer: KernelPeer,
) -> None:
    sh("ip", "tuntap", "add", "dev", kernel_peer.tap_name, "mode", "tap")
    try:

        async def with_offloads() -> None:
            tap = await TapNetwork.connect(kernel_peer.tap_name, offload=True)
            assert tap.offload
            await tap.disconnect()

        asyncio.run(with_offloads())

        async def body(stack: DirectStack) -> None:
            async def echo(flow: TcpFlow) -> None:
                while data := await flow.read():
                    await flow.write(data)
                await flow.close()

            await stack.tcp.listen(7100, echo)
            features = kernel_peer.sh("ethtool", "-k", kernel_peer.tap_name)
            assert "tx-checksumming: off" in features
            out = await kernel_peer.exec_output(
                sys.executable, "-c", CLIENT, str(kernel_peer.stack_address.ip), timeout=20
            )
            assert out.strip() == "echo ok"
            assert stack.counters().get("tcp.checksum_errors", 0) == 0

        kernel_peer.run(body, offload=False)
    finally:
        kernel_peer.sh("ip", "link", "del", kernel_peer.tap_name, check=False)
