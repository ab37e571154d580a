"""A persistent TAP keeps the offloads an earlier open set on it; opening
it without vnet headers must turn them off, or the kernel hands over TCP
segments whose checksum is only partial and every one is dropped."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import sys
from typing import Any

import pytest

from looming.devices.stack import TcpFlow
from looming.errors import DeviceError, UsageError
from looming.net.netif import tap as tap_module
from looming.net.netif.tap import OffloadsKept, TapNetwork
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


def test_offloads_that_cannot_be_cleared_stop_with_bad_input(
    kernel_peer: KernelPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the kernel refuses TUNSETOFFLOAD 0, the TAP is not used (its
    frames would all be dropped) and the error is bad input: exit code 2."""
    real_ioctl = fcntl.ioctl
    opened: list[int] = []

    def ioctl(fd: int, request: int, arg: Any = 0, *rest: Any) -> Any:
        if request == tap_module.TUNSETOFFLOAD and arg == 0:
            opened.append(fd)
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        return real_ioctl(fd, request, arg, *rest)

    monkeypatch.setattr(tap_module.fcntl, "ioctl", ioctl)
    assert tun_files() == []
    with pytest.raises(OffloadsKept) as refused:
        asyncio.run(TapNetwork.connect(kernel_peer.tap_name, offload=False))
    assert isinstance(refused.value, UsageError) and isinstance(refused.value, DeviceError)
    message = str(refused.value)
    assert "\n" not in message and "--offload true" in message, message
    assert len(opened) == 1
    assert tun_files() == []  # the device's file was closed


def tun_files() -> list[int]:
    """This process's file descriptors open on /dev/net/tun."""
    found = []
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}") == "/dev/net/tun":
                found.append(int(entry))
        except OSError:
            continue  # (closed meanwhile)
    return found
