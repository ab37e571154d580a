"""Every way of configuring the socket stack's addresses, against a model of
which loopback clients each must reach (and which it must not), for TCP and
UDP, with kernel sockets as the clients."""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest

from looming.devices import TcpFlow
from looming.devices.stack import Datagram
from looming.unix.socket_stack import SocketStack

CONFIGS = [
    (host, ipv6, ipv6_only)
    for host, ipv6, ipv6_only in itertools.product(
        ["127.0.0.1", "0.0.0.0", "::1", "::"], [None, "::1", "::"], [False, True]
    )
    if ipv6 is None or ":" not in host  # an IPv6 host and an IPv6 key: not a config
]


def expected(host: str, ipv6: str | None, ipv6_only: bool) -> set[str]:
    """The model: an IPv6 address (::1 or ::) serves ::1; an IPv4 one serves
    127.0.0.1; a dual-stack :: serves 127.0.0.1 too; IPv6-only serves no
    IPv4 client (with no IPv6 address given, on ::1)."""
    v6 = ipv6 if ipv6 is not None else (host if ":" in host else None)
    if v6 is None and ipv6_only:
        v6 = "::1"
    v4 = None if ":" in host or ipv6_only else host
    reach = set()
    if v6 is not None:
        reach.add("::1")
    if v4 is not None or (v6 == "::" and not ipv6_only):
        reach.add("127.0.0.1")
    return reach


async def tcp_reaches(client: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in client else socket.AF_INET
    loop = asyncio.get_running_loop()
    with socket.socket(family) as sock:
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (client, port))
        except ConnectionRefusedError:
            return False
        return await asyncio.wait_for(loop.sock_recv(sock, 10), 5) == b"hi"


async def udp_reaches(client: str, port: int, got: asyncio.Queue[Datagram]) -> bool:
    family = socket.AF_INET6 if ":" in client else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(client.encode(), (client, port))
        try:
            datagram = await asyncio.wait_for(got.get(), 0.2)  # loopback: microseconds
        except TimeoutError:
            return False
    return datagram.data == client.encode() and datagram.source == client


@pytest.mark.parametrize(("host", "ipv6", "ipv6_only"), CONFIGS)
def test_who_is_served(host: str, ipv6: str | None, ipv6_only: bool) -> None:
    async def hello(flow: TcpFlow) -> None:
        await flow.write(b"hi")

    async def scenario() -> tuple[set[str], set[str], list[str]]:
        stack = SocketStack(host, ipv6=ipv6, ipv6_only=ipv6_only)
        listener = await stack.tcp.listen(0, hello)
        got: asyncio.Queue[Datagram] = asyncio.Queue()
        bound = await stack.udp.bind(0, got.put_nowait)
        try:
            clients = ["127.0.0.1", "::1"]
            tcp = {c for c in clients if await tcp_reaches(c, listener.port)}
            udp = {c for c in clients if await udp_reaches(c, bound.port, got)}
            return tcp, udp, [str(a.ip) for a in stack.addresses()]
        finally:
            await stack.disconnect()

    tcp, udp, addresses = asyncio.run(asyncio.wait_for(scenario(), 20))
    model = expected(host, ipv6, ipv6_only)
    assert tcp == model
    assert udp == model
    # What addresses() reports covers what is served: IPv6 first when there is one.
    assert ("::1" in model) == any(":" in a for a in addresses)
    assert ("127.0.0.1" in model) == any(":" not in a for a in addresses)
    assert ":" in addresses[0] or "::1" not in model
