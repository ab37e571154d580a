"""The host socket stack on IPv6 and both families, with the kernel's own
sockets (Python's socket module) as the peer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any

import pytest

from looming.devices import Stack, TcpFlow
from looming.devices.stack import Datagram
from looming.errors import AddressInUse, ConnectionRefused, HostUnreachable, NetworkError
from looming.unix.socket_stack import SocketStack, listening_socket


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


async def tell_peer(flow: TcpFlow) -> None:
    """Answer with the addresses the flow reports, then echo."""
    (rhost, rport), (lhost, lport) = flow.remote_address, flow.local_address
    await flow.write(f"{rhost} {rport} {lhost} {lport}\n".encode())
    while data := await flow.read():
        await flow.write(data)


async def kernel_client(
    host: str, port: int, payload: bytes
) -> tuple[list[str], bytes, tuple[Any, ...]]:
    """Connect with a kernel socket of ``host``'s family, send, half-close,
    read all; what the server said it saw, the echo and our own address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
        own = sock.getsockname()
        await loop.sock_sendall(sock, payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := await loop.sock_recv(sock, 65536):
            chunks.append(chunk)
    finally:
        sock.close()
    head, _, rest = b"".join(chunks).partition(b"\n")
    return head.decode().split(), rest, own


def test_dual_stack_listener_takes_ipv4_and_ipv6_clients() -> None:
    async def scenario() -> None:
        stack = SocketStack("::")
        assert isinstance(stack, Stack)
        assert stack.addresses() == [IPv6Interface("::/0"), IPv4Interface("0.0.0.0/0")]
        listener = await stack.tcp.listen(0, tell_peer)
        payload = bytes(range(256)) * 1024
        try:
            for client in ("127.0.0.1", "::1"):
                seen, echoed, own = await kernel_client(client, listener.port, payload)
                assert echoed == payload
                # The IPv4 client is shown as the IPv4 address, not ::ffff:127.0.0.1.
                assert seen == [client, str(own[1]), client, str(listener.port)]
        finally:
            await stack.disconnect()

    run(scenario())


def test_ipv6_only_refuses_ipv4_on_the_ipv6_socket() -> None:
    async def scenario() -> None:
        stack = SocketStack("::1", ipv6_only=True)
        assert stack.addresses() == [IPv6Interface("::1/128")]
        listener = await stack.tcp.listen(0, tell_peer)
        try:
            seen, _, _ = await kernel_client("::1", listener.port, b"x")
            assert seen[0] == "::1"
            with pytest.raises(ConnectionRefusedError):
                await kernel_client("127.0.0.1", listener.port, b"x")
            # IPV6_V6ONLY on `::`: the port is free on IPv4 for someone else.
            only = SocketStack("::", ipv6_only=True)
            wide = await only.tcp.listen(0, tell_peer)
            other = socket.socket(socket.AF_INET)
            other.bind(("127.0.0.1", wide.port))
            other.close()
            await only.disconnect()
        finally:
            await stack.disconnect()

    run(scenario())


def test_dual_stack_without_v6only_holds_the_ipv4_port_too() -> None:
    async def scenario() -> None:
        stack = SocketStack("::")
        listener = await stack.tcp.listen(0, tell_peer)
        try:
            other = socket.socket(socket.AF_INET)
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", listener.port))
            other.close()
            with pytest.raises(AddressInUse):
                await SocketStack("127.0.0.1").tcp.listen(listener.port, tell_peer)
        finally:
            await stack.disconnect()

    run(scenario())


def test_both_loopbacks_on_one_listener_and_one_port() -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1", ipv6="::1")
        assert stack.addresses() == [IPv6Interface("::1/128"), IPv4Interface("127.0.0.1/32")]
        listener = await stack.tcp.listen(0, tell_peer)
        try:
            for client in ("::1", "127.0.0.1"):
                seen, echoed, _ = await kernel_client(client, listener.port, b"both")
                assert (seen[0], echoed) == (client, b"both")
        finally:
            await stack.disconnect()
        # Closed: both sockets are gone.
        for client in ("::1", "127.0.0.1"):
            with pytest.raises(ConnectionRefusedError):
                await kernel_client(client, listener.port, b"")

    run(scenario())


def test_connect_to_ipv6_literals_reports_ipv6_addresses() -> None:
    async def scenario() -> None:
        server = listening_socket("::1", 0)
        port = server.getsockname()[1]
        loop = asyncio.get_running_loop()
        server.setblocking(False)
        stack = SocketStack("::1")
        try:
            for target in ("::1", "[::1]"):
                connecting = asyncio.ensure_future(stack.tcp.connect(target, port, timeout=5))
                peer, address = await loop.sock_accept(server)
                flow = await connecting
                assert flow.remote_address == ("::1", port)
                assert flow.local_address == ("::1", address[1])
                await flow.write(b"hello")
                assert await loop.sock_recv(peer, 5) == b"hello"
                peer.close()
                await flow.close()
        finally:
            server.close()
            await stack.disconnect()

    run(scenario())


def test_connect_errors_name_the_bracketed_endpoint() -> None:
    async def scenario() -> None:
        stack = SocketStack("::1")
        port = listening_socket("::1", 0)
        free = port.getsockname()[1]
        port.close()
        with pytest.raises(ConnectionRefused, match=rf"\[::1\]:{free} refused"):
            await stack.tcp.connect("::1", free, timeout=5)
        with pytest.raises(HostUnreachable, match="cannot resolve"):
            await stack.tcp.connect("no-such-host.invalid", 80, timeout=5)
        with pytest.raises(NetworkError, match="no interface of this host has that address"):
            await SocketStack("2001:db8::99").tcp.listen(0, tell_peer)
        with pytest.raises(NetworkError, match="no interface 'nowhere0'"):
            await SocketStack("fe80::1%nowhere0").tcp.listen(0, tell_peer)
        await stack.disconnect()

    run(scenario())


def test_udp_over_ipv6_and_from_a_dual_stack_port() -> None:
    async def scenario() -> None:
        stack = SocketStack("::")
        got: asyncio.Queue[Datagram] = asyncio.Queue()
        bound = await stack.udp.bind(0, got.put_nowait)
        try:
            for family, client in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")):
                peer = socket.socket(family, socket.SOCK_DGRAM)
                peer.bind((client, 0))
                peer.settimeout(5)
                peer.sendto(b"ping", (client, bound.port))
                datagram = await asyncio.wait_for(got.get(), 5)
                assert (datagram.source, datagram.source_port) == (client, peer.getsockname()[1])
                assert datagram.data == b"ping"
                # Replies from the bound dual-stack port reach both families.
                await stack.udp.send(client, datagram.source_port, b"pong", source_port=bound.port)
                data, sender = await asyncio.to_thread(peer.recvfrom, 100)
                assert (data, sender[1]) == (b"pong", bound.port)
                # And from an ephemeral port of the right family.
                await stack.udp.send(client, datagram.source_port, b"eph")
                data, _ = await asyncio.to_thread(peer.recvfrom, 100)
                assert data == b"eph"
                peer.close()
        finally:
            await bound.close()
            await stack.disconnect()

    run(scenario())


def test_an_ipv4_bound_udp_port_refuses_ipv6_destinations_plainly() -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1")
        bound = await stack.udp.bind(0, lambda datagram: None)
        with pytest.raises(NetworkError, match="bind it on :: for both families"):
            await stack.udp.send("::1", 9, b"x", source_port=bound.port)
        await stack.disconnect()

    run(scenario())


def test_udp_port_on_both_loopbacks_answers_each_family_from_its_own_socket() -> None:
    async def scenario() -> None:
        stack = SocketStack("127.0.0.1", ipv6="::1")
        got: asyncio.Queue[Datagram] = asyncio.Queue()
        bound = await stack.udp.bind(0, got.put_nowait)
        try:
            for family, client in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")):
                with socket.socket(family, socket.SOCK_DGRAM) as peer:
                    peer.bind((client, 0))
                    peer.settimeout(5)
                    peer.sendto(b"ping", (client, bound.port))
                    datagram = await asyncio.wait_for(got.get(), 5)
                    assert (datagram.source, datagram.destination) == (client, client)
                    await stack.udp.send(
                        client, datagram.source_port, b"pong", source_port=bound.port
                    )
                    data, sender = await asyncio.to_thread(peer.recvfrom, 100)
                    assert (data, sender[0], sender[1]) == (b"pong", client, bound.port)
        finally:
            await bound.close()
            await stack.disconnect()
        # Closed: the port is free on both families again.
        for family, client in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")):
            with socket.socket(family, socket.SOCK_DGRAM) as again:
                again.bind((client, bound.port))

    run(scenario())
