"""The Linux kernel as a peer of looming's direct stack, in a network namespace.

Layout of one peer (all names unique per test, cleaned up by name):

    root namespace                         namespace NS ("lm..." prefix)
    looming DirectStack --fd--> TAP device (moved into NS) 10.77.0.1/24
    address 10.77.0.2/24                   the kernel answers here

looming opens TAP ``lmt...`` in the root namespace (creating it), the TAP is
then moved into the fresh namespace, where the kernel side gets
``PEER_ADDRESS``.  The TAP's file descriptor keeps working across the move,
so looming runs in the test process while every kernel-side program runs
under ``ip netns exec NS``.  No address is ever configured in the root
namespace.

Use it through the ``kernel_peer`` fixture in ``tests/net/conftest.py``::

    @pytest.mark.root
    def test_something(kernel_peer: KernelPeer) -> None:
        async def body(stack: DirectStack) -> None:
            await stack.ping(kernel_peer.peer_address)
            out = await kernel_peer.exec_output("ping", "-c1", str(kernel_peer.stack_address.ip))

        kernel_peer.run(body)

``run`` opens the TAP, builds the stack (``DirectStack.connect`` keyword
arguments pass through), awaits ``body(stack)`` in a fresh event loop and
always disconnects the stack.  ``kernel_peer.python(code)`` runs a Python
snippet inside the namespace (for kernel-side sockets).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, TypeVar

from looming.devices.net import Network
from looming.net.netif.pcap import PcapNetwork
from looming.net.netif.tap import TapNetwork
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime

PEER_ADDRESS = IPv4Address("10.77.0.1")
STACK_ADDRESS = IPv4Interface("10.77.0.2/24")

_serial = itertools.count(1)
T = TypeVar("T")


def unique_suffix() -> str:
    return f"{os.getpid() % 100000}x{next(_serial)}"


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result


def have_root() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/net/tun")


@dataclass
class KernelPeer:
    """A network namespace whose kernel is looming's peer over a TAP."""

    namespace: str
    tap_name: str
    peer_address: IPv4Address = PEER_ADDRESS
    stack_address: IPv4Interface = STACK_ADDRESS
    mtu: int = 1500

    # -- running things in the namespace ------------------------------------

    def netns(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def sh(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        """Run a command in the namespace (blocking: not while the stack must answer)."""
        return sh(*self.netns(*argv), check=check, timeout=timeout).stdout

    async def exec(self, *argv: str) -> asyncio.subprocess.Process:
        """Start a command in the namespace while the stack keeps running."""
        return await asyncio.create_subprocess_exec(
            *self.netns(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    async def exec_output(self, *argv: str, timeout: float = 60) -> str:
        """Run a command in the namespace to completion; its stdout.

        Raises RuntimeError with its stderr when it fails.
        """
        process = await self.exec(*argv)
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}): {err.decode()}")
        return out.decode()

    async def python(self, code: str, *args: str) -> asyncio.subprocess.Process:
        """Start ``python -c code args...`` in the namespace (a kernel-side socket)."""
        return await self.exec(sys.executable, "-c", code, *args)

    # -- the looming side ---------------------------------------------------

    async def open_tap(self, *, offload: bool = False) -> TapNetwork:
        """Open the TAP, move it into the namespace and address the kernel side.

        ``offload`` opens it with virtio-net headers, checksum offload and TSO.
        """
        tap = await TapNetwork.connect(self.tap_name, mtu=self.mtu, offload=offload)
        try:
            sh("ip", "link", "set", self.tap_name, "netns", self.namespace)
            self.sh("ip", "link", "set", self.tap_name, "mtu", str(self.mtu))
            self.sh("ip", "addr", "add", f"{self.peer_address}/24", "dev", self.tap_name)
            self.sh("ip", "link", "set", self.tap_name, "up")
        except BaseException:
            await tap.disconnect()
            raise
        return tap

    async def connect_stack(
        self,
        *,
        seed: int = 1,
        pcap: str | None = None,
        offload: bool = False,
        **connect_args: Any,
    ) -> DirectStack:
        """A DirectStack on a fresh TAP (static ``stack_address`` unless
        ``dhcp=True`` or ``address=`` is given)."""
        network: Network = await self.open_tap(offload=offload)
        if pcap is not None:
            network = PcapNetwork(network, pcap, UnixClock())
        if not connect_args.get("dhcp") and "address" not in connect_args:
            connect_args["address"] = self.stack_address
            connect_args.setdefault("gateway", self.peer_address)
        return await DirectStack.connect(
            network, time=UnixTime(), clock=UnixClock(), random=UnixRandom(seed), **connect_args
        )

    def run(
        self,
        body: Callable[[DirectStack], Awaitable[T]],
        **connect_args: Any,
    ) -> T:
        """Build a stack, await ``body(stack)`` and disconnect, in a new loop."""

        async def main() -> T:
            stack = await self.connect_stack(**connect_args)
            try:
                return await body(stack)
            finally:
                await stack.disconnect()

        return asyncio.run(main())


def cleanup(namespace: str, *devices: str) -> None:
    for device in devices:
        sh("ip", "link", "del", device, check=False)
    sh("ip", "netns", "del", namespace, check=False)


@contextmanager
def kernel_peer_namespace(mtu: int = 1500) -> Iterator[KernelPeer]:
    """Create the namespace (and later remove it and the TAP, by name)."""
    suffix = unique_suffix()
    peer = KernelPeer(namespace=f"lmns{suffix}", tap_name=f"lmt{suffix}", mtu=mtu)
    sh("ip", "netns", "add", peer.namespace)
    try:
        sh(*peer.netns("ip", "link", "set", "lo", "up"))
        yield peer
    finally:
        cleanup(peer.namespace, peer.tap_name)
