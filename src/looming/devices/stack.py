"""The transport layer an application uses: TCP, UDP and the stack holding them.

The same interfaces are implemented over host sockets (``--net socket``) and
by looming's own TCP/IP stack (``--net direct``), so an application never
knows which one it runs on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Protocol, runtime_checkable

from looming.devices.flow import Flow


@runtime_checkable
class TcpFlow(Flow, Protocol):
    """An established TCP connection."""

    @property
    def local_address(self) -> tuple[str, int]:
        """(address, port) of this end."""
        ...

    @property
    def remote_address(self) -> tuple[str, int]:
        """(address, port) of the peer."""
        ...

    def set_nodelay(self, enabled: bool) -> None:
        """Turn Nagle's algorithm off (``True``) or back on (``False``)."""
        ...

    def set_keepalive(
        self,
        enabled: bool,
        *,
        idle: float | None = None,
        interval: float | None = None,
        probes: int | None = None,
    ) -> None:
        """Probe an idle connection (RFC 9293 3.8.4), so a peer that vanished
        without a word ends it (its reads and writes then fail) instead of
        holding it open forever. Off by default. The first probe goes after
        ``idle`` seconds of silence, the next every ``interval`` seconds, and
        ``probes`` unanswered ones end the connection (None: the stack's own
        settings)."""
        ...


TcpHandler = Callable[[TcpFlow], Awaitable[None]]
"""Serves one accepted connection; the flow is closed when it returns."""


@runtime_checkable
class Listener(Protocol):
    """A bound TCP listener or UDP port; closing it frees the port."""

    @property
    def port(self) -> int:
        """The bound port (the chosen one when 0 was asked for)."""
        ...

    async def close(self) -> None:
        """Stop accepting; established connections are left alone."""
        ...


@runtime_checkable
class Tcp(Protocol):
    """TCP (RFC 9293)."""

    async def listen(
        self, port: int, handler: TcpHandler, *, host: str | None = None, backlog: int = 128
    ) -> Listener:
        """Accept connections on ``port`` (0 picks a free one), each served
        by ``handler`` in its own task. Returns once listening."""
        ...

    async def connect(
        self, host: str | IPv4Address | IPv6Address, port: int, *, timeout: float | None = None
    ) -> TcpFlow:
        """Open a connection to an IPv4 or IPv6 address (or, where the stack
        resolves names, a name). Raises :class:`~looming.errors.ConnectionRefused`
        or :class:`~looming.errors.ConnectionTimeout`."""
        ...


@dataclass(frozen=True, slots=True)
class Datagram:
    """One received UDP datagram."""

    source: str
    source_port: int
    destination: str
    destination_port: int
    data: bytes


UdpHandler = Callable[[Datagram], Awaitable[None] | None]


@runtime_checkable
class Udp(Protocol):
    """UDP (RFC 768)."""

    async def bind(self, port: int, handler: UdpHandler, *, host: str | None = None) -> Listener:
        """Deliver datagrams arriving on ``port`` (0 picks one) to ``handler``."""
        ...

    async def send(
        self,
        destination: str | IPv4Address | IPv6Address,
        port: int,
        data: bytes,
        *,
        source_port: int | None = None,
    ) -> None:
        """Send one datagram; ``source_port`` defaults to an ephemeral one."""
        ...


@runtime_checkable
class Stack(Protocol):
    """A TCP/IP stack: the addresses it holds and its transports."""

    @property
    def tcp(self) -> Tcp: ...

    @property
    def udp(self) -> Udp: ...

    def addresses(self) -> Sequence[IPv4Interface | IPv6Interface]:
        """The addresses (with prefix) this stack holds, IPv4 and IPv6."""
        ...

    async def disconnect(self) -> None:
        """Close every listener and connection and release the network."""
        ...
