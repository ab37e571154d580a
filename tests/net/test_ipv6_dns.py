"""Name lookups of the direct stack over IPv6, against dnsmasq in the
kernel peer's namespace: dnsmasq advertises a prefix and itself as DNS
server (RDNSS, RFC 8106) in its Router Advertisements and answers A and
AAAA queries. looming learns the server from the advertisement alone,
asks it over IPv6, orders the answers by the families it can reach, and
``tcp.connect`` takes the name, trying its addresses in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from looming.devices.stack import TcpFlow
from looming.net.dns import NoSuchName
from looming.net.stack import DirectStack
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.net.dnsmasq_run import dnsmasq_command
from tests.net.kernel import KernelPeer
from tests.net.test_slaac_kernel import PREFIX, ROUTER_ADDRESS, SECRET, make_router

pytestmark = pytest.mark.root

# Accepts one connection on (host, port), prints the client's address.
ACCEPT_ONE = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if family == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind((host, port))
s.listen(4)
print("ready", flush=True)
c, peer = s.accept()
c.sendall(b"hi")
c.close()
print(peer[0].removeprefix("::ffff:"), flush=True)
"""


def dnsmasq_argv(peer: KernelPeer, state: Path) -> list[str]:
    return dnsmasq_command(
        peer,
        state,
        "--log-queries",
        f"--dhcp-leasefile={state / 'leases'}",
        "--enable-ra",
        f"--dhcp-range={PREFIX.network_address},ra-only,64,1h",
        f"--dhcp-option=option6:dns-server,[{ROUTER_ADDRESS}]",
        "--no-resolv",
        "--no-hosts",
        "--local=/lm/",
        f"--host-record=web.lm,{peer.peer_address},{ROUTER_ADDRESS}",
        f"--host-record=six.lm,{ROUTER_ADDRESS}",
    )


@asynccontextmanager
async def dnsmasq_and_stack(
    peer: KernelPeer, state: Path, log: list[str], *, ipv4: bool
) -> AsyncIterator[DirectStack]:
    """dnsmasq routing, advertising and serving DNS on the TAP (running
    before looming solicits), and looming's stack with a SLAAC address."""
    tap = await peer.open_tap()
    make_router(peer)
    server = await peer.exec(*dnsmasq_argv(peer, state))
    assert server.stderr is not None
    stderr = server.stderr

    async def drain() -> None:
        while line := await stderr.readline():
            log.append(line.decode(errors="replace"))

    drainer = asyncio.get_running_loop().create_task(drain())
    stack = None
    try:
        for _ in range(200):  # dnsmasq advertising, within 10 s
            if any("router advertisement on" in line for line in log):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("dnsmasq did not start advertising:\n" + "".join(log))
        address = {"address": peer.stack_address} if ipv4 else {"ipv4": False}
        stack = await DirectStack.connect(
            tap,
            time=UnixTime(),
            clock=UnixClock(),
            random=UnixRandom(7),
            ipv6=True,
            slaac_secret=SECRET,
            **address,
        )
        assert stack.ipv6 is not None
        await stack.ipv6.wait_for_address(15)
        yield stack
    finally:
        server.terminate()
        await server.wait()
        await drainer
        if stack is not None:
            await stack.disconnect()
        else:
            await tap.disconnect()


async def connect_by_name(
    peer: KernelPeer, stack: DirectStack, name: str, listen: str, port: int
) -> str:
    """Connect to ``name`` where the kernel listens on ``listen``; the
    address the kernel saw the connection come from."""
    kernel = await peer.python(ACCEPT_ONE, listen, str(port))
    assert kernel.stdout is not None
    assert (await asyncio.wait_for(kernel.stdout.readline(), 10)).strip() == b"ready"
    flow: TcpFlow = await stack.tcp.connect(name, port, timeout=5)
    assert await flow.read() == b"hi"
    await flow.close()
    out, _ = await asyncio.wait_for(kernel.communicate(), 10)
    return out.decode().strip()


def queries(log: list[str], kind: str, name: str) -> list[str]:
    """The addresses dnsmasq logged ``kind`` queries for ``name`` from."""
    marker = f"query[{kind}] {name} from "
    return [line.split(marker)[1].strip() for line in log if marker in line]


def test_dual_stack_looks_up_aaaa_first_over_ipv6_from_the_rdnss(
    kernel_peer: KernelPeer, tmp_path: Path
) -> None:
    log: list[str] = []

    async def main() -> None:
        async with dnsmasq_and_stack(kernel_peer, tmp_path, log, ipv4=True) as stack:
            assert stack.ipv6 is not None
            ours = await stack.ipv6.wait_for_address(1)
            # No server was configured: the advertisement's RDNSS is the one.
            assert stack.resolver.servers == []
            assert stack.resolver.current_servers() == [ROUTER_ADDRESS]
            web = await stack.resolve("web.lm")
            assert web == [ROUTER_ADDRESS, kernel_peer.peer_address]
            assert queries(log, "AAAA", "web.lm") == [str(ours)]  # asked over IPv6
            assert queries(log, "A", "web.lm") == [str(ours)]
            assert await stack.resolve("six.lm") == [ROUTER_ADDRESS]
            with pytest.raises(NoSuchName):
                await stack.resolve("missing.lm")
            # The first address (IPv6) answers.
            seen = await connect_by_name(kernel_peer, stack, "web.lm", "::", 7301)
            assert IPv6Address(seen) == ours
            # Only IPv4 listens: IPv6 is refused, the next address answers.
            listen4 = str(kernel_peer.peer_address)
            seen = await connect_by_name(kernel_peer, stack, "web.lm", listen4, 7302)
            assert IPv4Address(seen) == kernel_peer.stack_address.ip
            assert stack.counters()["dns.tx_query"] >= 4

    asyncio.run(main())


def test_ipv6_only_asks_for_aaaa_alone(kernel_peer: KernelPeer, tmp_path: Path) -> None:
    log: list[str] = []

    async def main() -> None:
        async with dnsmasq_and_stack(kernel_peer, tmp_path, log, ipv4=False) as stack:
            assert stack.ipv6 is not None and stack.addresses()[0].ip.version == 6
            assert await stack.resolve("web.lm") == [ROUTER_ADDRESS]
            assert queries(log, "A", "web.lm") == []  # no IPv4: not asked
            ours = await stack.ipv6.wait_for_address(1)
            seen = await connect_by_name(kernel_peer, stack, "web.lm", "::", 7303)
            assert IPv6Address(seen) == ours

    asyncio.run(main())
