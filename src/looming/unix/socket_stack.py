"""The ``--net socket`` stack: looming's Stack, Tcp, Udp and Flow over host sockets.

Each TCP connection is an :class:`asyncio.Protocol` feeding a small receive
buffer (a list of the chunks the kernel handed over, joined only when more
than one is waiting) and honouring the transport's write back-pressure
(``pause_writing``/``resume_writing``). This is the hot path of every
unikernel on the unix target, so it avoids per-read allocations beyond the
chunk itself and never copies a single pending chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any, ClassVar, cast

from looming.addresses import format_endpoint, is_ipv6, unmapped
from looming.devices.stack import Datagram, TcpHandler, UdpHandler
from looming.errors import (
    AddressInUse,
    Closed,
    ConnectionRefused,
    ConnectionReset,
    ConnectionTimeout,
    HostUnreachable,
    NetworkError,
)

tcp_log = logging.getLogger("looming.tcp")
udp_log = logging.getLogger("looming.udp")

# Stop reading from the socket while this much received data waits for the
# application: the kernel's window then pushes back on the sender.
RECEIVE_HIGH_WATER = 256 * 1024
# Transport write buffer limits: write() blocks above the high mark until the
# buffer drains below the low mark.
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
# How long a closed connection may take to hand its last bytes to a slow peer.
CLOSE_FLUSH_TIMEOUT = 30.0


_STREAM_METHODS = (
    "write",
    "write_eof",
    "close",
    "abort",
    "is_closing",
    "pause_reading",
    "resume_reading",
    "set_write_buffer_limits",
    "get_write_buffer_size",
    "get_extra_info",
)
"""What a connection uses of its transport (asyncio's or uvloop's)."""


class SocketTcpFlow(asyncio.Protocol):
    """One TCP connection; both the asyncio protocol and the looming TcpFlow."""

    reset_before_served: ClassVar[int] = 0
    """Accepted connections the peer had already reset (closed, not served)."""

    __slots__ = (
        "__weakref__",
        "_buffered",
        "_chunks",
        "_closed",
        "_drain_waiter",
        "_eof",
        "_error",
        "_local",
        "_lost",
        "_on_lost",
        "_on_made",
        "_read_waiter",
        "_reading_paused",
        "_remote",
        "_shut",
        "_transport",
        "_write_paused",
    )

    def __init__(self, on_made: Any = None) -> None:
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._reading_paused = False
        self._closed = False
        self._shut = False
        self._lost = False
        self._transport: asyncio.Transport | None = None
        self._local: tuple[str, int] = ("0.0.0.0", 0)
        self._remote: tuple[str, int] = ("0.0.0.0", 0)
        self._on_made = on_made
        self._on_lost: Any = None

    # --- asyncio.Protocol callbacks -------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Any stream transport will do: uvloop's do not subclass asyncio's
        # classes, so the methods used here are checked instead.
        missing = [name for name in _STREAM_METHODS if not hasattr(transport, name)]
        if missing:
            raise TypeError(f"{type(transport).__name__} is not a stream transport: no {missing}")
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; the
            # application sees the IPv4 address they are.
            try:
                local = sock.getsockname()
                remote = sock.getpeername()
            except OSError:
                # Reset before it was served (ENOTCONN): nothing to serve.
                SocketTcpFlow.reset_before_served += 1
                self._on_made = None
                transport.abort()
                return
            self._local = (unmapped(str(local[0])), int(local[1]))
            self._remote = (unmapped(str(remote[0])), int(remote[1]))
        if self._on_made is not None:
            on_made = self._on_made
            self._on_made = None
            on_made(self)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > RECEIVE_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()
        waiter = self._read_waiter
        if waiter is not None:
            self._read_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        # Keep the transport open so this side can still write (half close).
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is not None and self._error is None:
            self._error = exc
        self._eof = True
        self._wake_reader()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._on_lost is not None:
            on_lost, self._on_lost = self._on_lost, None
            on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None:
            self._read_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # --- lending the transport to a faster consumer ----------------------

    def lend_transport(self, protocol: asyncio.BaseProtocol) -> asyncio.Transport:
        """Hand the transport's callbacks to ``protocol``, which serves the
        connection from them (an HTTP server's fast path) until it calls
        :meth:`take_back`; it tells this flow of the connection's loss."""
        transport = self._transport
        if transport is None or self._chunks or self._eof:
            raise RuntimeError("only a fresh connection's transport can be lent")
        transport.set_protocol(protocol)
        return transport

    def take_back(
        self, pending: bytes, *, eof: bool, write_paused: bool, reading_paused: bool
    ) -> None:
        """The connection is this flow's again, ``pending`` (received, not
        consumed) first in its buffer, in the state the borrower left it."""
        assert self._transport is not None
        self._transport.set_protocol(self)
        self._chunks = [pending] if pending else []
        self._buffered = len(pending)
        self._eof = self._eof or eof
        self._write_paused = write_paused
        self._reading_paused = reading_paused

    # --- looming Flow ---------------------------------------------------

    @property
    def local_address(self) -> tuple[str, int]:
        return self._local

    @property
    def remote_address(self) -> tuple[str, int]:
        return self._remote

    def set_nodelay(self, enabled: bool) -> None:
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if enabled else 0)

    def set_keepalive(
        self,
        enabled: bool,
        *,
        idle: float | None = None,
        interval: float | None = None,
        probes: int | None = None,
    ) -> None:
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return
        options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1 if enabled else 0)]
        # The host takes whole seconds (Linux: TCP_KEEPIDLE and friends).
        for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval)):
            if value is not None and hasattr(socket, name):
                options.append((socket.IPPROTO_TCP, getattr(socket, name), max(1, round(value))))
        if probes is not None and hasattr(socket, "TCP_KEEPCNT"):
            options.append((socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes))
        with contextlib.suppress(OSError):
            for level, option, value in options:
                sock.setsockopt(level, option, value)

    def _raise_error(self) -> None:
        error = self._error
        if error is None:
            return
        if isinstance(error, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            raise ConnectionReset(f"connection reset by peer {self._remote}") from error
        raise ConnectionReset(f"connection to {self._remote} failed: {error}") from error

    async def read(self) -> bytes:
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._reading_paused:
                    self._reading_paused = False
                    if self._transport is not None and not self._lost:
                        self._transport.resume_reading()
                return data
            if self._closed:
                raise Closed("read from a flow this side has closed")
            if self._error is not None:
                self._raise_error()
            if self._eof:
                return b""
            waiter = asyncio.get_running_loop().create_future()
            self._read_waiter = waiter
            try:
                await waiter
            finally:
                if self._read_waiter is waiter:
                    self._read_waiter = None

    def _check_writable(self) -> asyncio.Transport:
        if self._closed or self._shut:
            raise Closed("write to a flow after shutdown() or close()")
        if self._error is not None:
            self._raise_error()
        transport = self._transport
        if transport is None or self._lost or transport.is_closing():
            raise ConnectionReset(f"connection to {self._remote} is gone")
        return transport

    async def write(self, data: bytes) -> None:
        transport = self._check_writable()
        transport.write(data)
        if self._write_paused:
            await self._drain()

    async def writev(self, buffers: Iterable[bytes]) -> None:
        transport = self._check_writable()
        # One write() rather than writelines(): the selector transport's
        # writelines() of CPython 3.12 and 3.13 (3.12.1 and 3.13.0 here) never
        # pauses the protocol (gh-127655, fixed in later patch releases), so a
        # peer that does not read would grow the buffer without bound. 3.11's
        # writelines() joins and writes the same way.
        transport.write(b"".join(buffers))
        if self._write_paused:
            await self._drain()

    async def _drain(self) -> None:
        while self._write_paused and not self._lost:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiter = waiter
            await waiter
        if self._error is not None:
            self._raise_error()

    async def shutdown(self) -> None:
        if self._closed or self._shut:
            return
        self._shut = True
        transport = self._transport
        if transport is not None and not self._lost and not transport.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if transport.get_write_buffer_size() > 0:
                # close() waits for the buffer to drain; a peer that never
                # reads would hold the connection forever.
                asyncio.get_running_loop().call_later(CLOSE_FLUSH_TIMEOUT, self._abort_if_open)
        self._wake_reader()

    def _abort_if_open(self) -> None:
        if not self._lost and self._transport is not None:
            tcp_log.debug("peer %s did not read the last bytes; resetting", self._remote)
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once (the peer sees a reset)."""
        self._closed = True
        if self._transport is not None:
            sock = self._transport.get_extra_info("socket")
            if sock is not None:
                # A zero linger time turns the close into a reset.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._transport.abort()
        self._wake_reader()


class SocketListener:
    """A bound TCP listener or UDP endpoint on the host."""

    def __init__(self, port: int, closer: Any) -> None:
        self._port = port
        self._closer = closer
        self._closed = False

    @property
    def port(self) -> int:
        return self._port

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._closer()


def _family(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 literal, else AF_INET (IPv4 literals; names are
    resolved by the caller)."""
    return socket.AF_INET6 if is_ipv6(host) else socket.AF_INET


def _literal(host: str) -> bool:
    try:
        socket.inet_pton(_family(host), host.partition("%")[0])
    except OSError:
        return False
    return True


def _socket_for(kind: socket.SocketKind, host: str, port: int, *, ipv6_only: bool) -> socket.socket:
    """A non-blocking socket bound to ``host`` (an IP literal) and ``port``.

    An IPv6 socket is dual-stack unless ``ipv6_only``: bound to ``::`` it
    accepts IPv4 clients too, as IPv4-mapped addresses (RFC 4291 2.5.5.2).
    asyncio's own ``create_server`` always sets IPV6_V6ONLY, hence this.
    """
    family = _family(host)
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if ipv6_only else 0)
        # getaddrinfo reads a zone ("fe80::1%eth0") into the scope id.
        address = socket.getaddrinfo(host, port, family, kind, 0, socket.AI_NUMERICHOST)[0][4]
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_error(error: OSError, what: str, host: str, port: int) -> NetworkError:
    where = format_endpoint(host, port)
    if error.errno == errno.EADDRINUSE:
        return AddressInUse(f"{what} port {port} on {host} is already in use; pick another port")
    if isinstance(error, socket.gaierror) and "%" in host:
        zone = host.partition("%")[2]
        return NetworkError(
            f"cannot bind {what} {where}: this host has no interface {zone!r} "
            "(the %zone of a link-local address names one: ip link)"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return NetworkError(
            f"cannot bind {what} {where}: no interface of this host has that address; "
            "listen on one it has (ip address) or on 0.0.0.0 / ::"
        )
    return NetworkError(f"cannot bind {what} {where}: {error}")


def listening_socket(
    host: str, port: int, *, ipv6_only: bool = False, backlog: int = 128
) -> socket.socket:
    """A listening TCP socket on ``host`` (an address, or a name's first
    address) and ``port``; ``::`` is dual-stack unless ``ipv6_only``. For
    programs that serve through asyncio's own servers (``sock=``)."""
    if not _literal(host):
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as error:
            raise HostUnreachable(f"cannot resolve {host} to listen on: {error}") from error
        host = unmapped(str(infos[0][4][0]))
    try:
        sock = _socket_for(socket.SOCK_STREAM, host, port, ipv6_only=ipv6_only)
        sock.listen(backlog)
    except OSError as error:
        raise _bind_error(error, "TCP", host, port) from error
    return sock


async def _listen_hosts(hosts: Sequence[str]) -> list[str]:
    """``hosts`` as IP literals: a name (``localhost``) becomes every address
    it resolves to, in the resolver's order, without repeats."""
    loop = asyncio.get_running_loop()
    literals: list[str] = []
    for host in hosts:
        if _literal(host):
            found = [host]
        else:
            try:
                infos = await loop.getaddrinfo(
                    host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )
            except socket.gaierror as error:
                raise HostUnreachable(f"cannot resolve {host} to listen on: {error}") from error
            found = [unmapped(str(info[4][0])) for info in infos]
        literals.extend(address for address in found if address not in literals)
    return literals


def _adopter(handler: TcpHandler) -> Any:
    """The ``adopt_socket_flow`` a handler's object offers (an HttpServer
    and its ``serve_flow`` do), or None.

    ``adopt(flow, serve)`` is asked of each new connection: True when it
    serves the connection from the transport's callbacks (see
    :meth:`SocketTcpFlow.lend_transport`), calling ``serve()`` if it hands
    the connection back to be served by ``handler`` in a task after all.
    """
    owner = getattr(handler, "__self__", handler)
    adopt = getattr(owner, "adopt_socket_flow", None)
    return adopt if callable(adopt) else None


class SocketTcp:
    """:class:`looming.devices.Tcp` over host sockets.

    ``host`` is one address to listen on, or several (``["127.0.0.1",
    "::1"]``: one listener on both, every socket on the same port). An IPv6
    address is dual-stack unless ``ipv6_only``.
    """

    def __init__(self, host: str | Sequence[str], *, ipv6_only: bool = False) -> None:
        self._hosts = [host] if isinstance(host, str) else list(host)
        self._ipv6_only = ipv6_only
        self._listeners: set[SocketListener] = set()
        self._flows: set[SocketTcpFlow] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, flow: SocketTcpFlow, handler: TcpHandler) -> None:
        try:
            await handler(flow)
        except asyncio.CancelledError:
            raise
        except (ConnectionReset, Closed) as error:
            tcp_log.debug("connection from %s ended: %s", flow.remote_address, error)
        except Exception:
            tcp_log.exception("handler for connection from %s failed", flow.remote_address)
        finally:
            await flow.close()
            self._flows.discard(flow)

    def _bind_all(self, hosts: Sequence[str], port: int, backlog: int) -> list[socket.socket]:
        """One listening socket per host, all on one port (the first's, when 0)."""
        sockets: list[socket.socket] = []
        try:
            for host in hosts:
                try:
                    sock = _socket_for(socket.SOCK_STREAM, host, port, ipv6_only=self._ipv6_only)
                except OSError as error:
                    raise _bind_error(error, "TCP", host, port) from error
                sockets.append(sock)
                sock.listen(backlog)
                port = int(sock.getsockname()[1])
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    async def listen(
        self, port: int, handler: TcpHandler, *, host: str | None = None, backlog: int = 128
    ) -> SocketListener:
        loop = asyncio.get_running_loop()
        tasks = self._tasks
        adopt = _adopter(handler)

        def serve(flow: SocketTcpFlow) -> None:
            task = loop.create_task(self._serve(flow, handler))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def accepted(flow: SocketTcpFlow) -> None:
            flow.set_nodelay(True)
            self._flows.add(flow)
            if adopt is not None and adopt(flow, lambda: serve(flow)):
                flow._on_lost = self._flows.discard
                return
            serve(flow)

        def make_protocol() -> SocketTcpFlow:
            return SocketTcpFlow(accepted)

        hosts = await _listen_hosts([host] if host is not None else self._hosts)
        sockets = self._bind_all(hosts, port, backlog)
        servers = []
        for sock in sockets:
            servers.append(await loop.create_server(make_protocol, sock=sock, backlog=backlog))
        bound_port = int(sockets[0].getsockname()[1])

        async def close_servers() -> None:
            for server in servers:
                server.close()
            self._listeners.discard(listener)

        listener = SocketListener(bound_port, close_servers)
        self._listeners.add(listener)
        tcp_log.debug(
            "listening on %s (%s event loop)",
            ", ".join(format_endpoint(h, bound_port) for h in hosts),
            type(loop).__module__.partition(".")[0],
        )
        return listener

    async def connect(
        self, host: str | IPv4Address | IPv6Address, port: int, *, timeout: float | None = None
    ) -> SocketTcpFlow:
        """Connect to an address or a name; a name's addresses (AAAA and A,
        in the resolver's order) are tried one after another until one
        answers, all within ``timeout``."""
        target = str(host).removeprefix("[").removesuffix("]")
        where = format_endpoint(target, port)
        try:
            async with asyncio.timeout(timeout):
                flow = await self._connect_in_order(target, port)
        except TimeoutError as error:
            raise ConnectionTimeout(f"connecting to {where} timed out") from error
        self._flows.add(flow)
        return flow

    async def _connect_in_order(self, target: str, port: int) -> SocketTcpFlow:
        loop = asyncio.get_running_loop()
        where = format_endpoint(target, port)
        try:
            infos = await loop.getaddrinfo(target, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise HostUnreachable(f"cannot resolve {target}: {error}") from error
        failures: list[OSError] = []
        for family, _, _, _, address in infos:
            try:
                _, flow = await loop.create_connection(
                    SocketTcpFlow, str(address[0]), port, family=family
                )
            except OSError as error:
                tcp_log.debug("connecting to %s at %s failed: %s", where, address[0], error)
                failures.append(error)
                continue
            return flow
        if failures and all(isinstance(e, ConnectionRefusedError) for e in failures):
            raise ConnectionRefused(f"{where} refused the connection") from failures[-1]
        tried = "; ".join(str(error) for error in failures)
        raise NetworkError(f"cannot connect to {where}: {tried}") from (
            failures[-1] if failures else None
        )

    async def disconnect(self) -> None:
        for listener in list(self._listeners):
            await listener.close()
        for flow in list(self._flows):
            flow.abort()
        self._flows.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class _UdpEndpoint(asyncio.DatagramProtocol):
    """Receives datagrams for one bound port and hands them to a handler."""

    def __init__(self, handler: UdpHandler | None, tasks: set[asyncio.Task[None]]) -> None:
        self.handler = handler
        self.tasks = tasks
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("0.0.0.0", 0)
        self.family = socket.AF_INET
        self.dual = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass
        # DatagramTransport on every Python version, so no isinstance check.
        self.transport = cast(asyncio.DatagramTransport, transport)
        name = transport.get_extra_info("sockname")
        self.local = (str(name[0]), int(name[1]))
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.family = sock.family

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        if self.handler is None:
            return
        datagram = Datagram(
            unmapped(str(addr[0])), int(addr[1]), unmapped(self.local[0]), self.local[1], data
        )
        try:
            result = self.handler(datagram)
        except Exception:
            udp_log.exception("UDP handler on port %d failed", self.local[1])
            return
        if result is not None:
            task = asyncio.ensure_future(self._finish(result))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _finish(self, pending: Any) -> None:
        try:
            await pending
        except Exception:
            udp_log.exception("UDP handler on port %d failed", self.local[1])

    def error_received(self, exc: Exception) -> None:
        udp_log.debug("UDP error on port %d: %s", self.local[1], exc)

    def sends_to(self, address: str) -> bool:
        """Whether this socket can send to ``address``: its own family, or
        IPv4 from a dual-stack IPv6 socket bound to ``::``."""
        if self.family == socket.AF_INET:
            return not is_ipv6(address)
        return is_ipv6(address) or self.dual

    def destination(self, address: str, port: int) -> tuple[str, int]:
        """``address`` as this socket sends to it: an IPv4 address from a
        dual-stack socket goes as ``::ffff:a.b.c.d``."""
        if self.family == socket.AF_INET6 and not is_ipv6(address):
            return f"::ffff:{address}", port
        return address, port


class SocketUdp:
    """:class:`looming.devices.Udp` over host datagram sockets.

    Ports bind on every host of ``hosts`` (one port number for all), as TCP
    listeners do; ``host`` is the IPv4 address an ephemeral sender binds,
    ``ipv6`` the IPv6 one (``::`` when None).
    """

    def __init__(
        self,
        host: str,
        *,
        ipv6: str | None = None,
        ipv6_only: bool = False,
        hosts: Sequence[str] | None = None,
    ) -> None:
        self._host = host
        self._ipv6 = ipv6
        self._ipv6_only = ipv6_only
        self._hosts = list(hosts) if hosts is not None else [host]
        self._bound: dict[int, list[_UdpEndpoint]] = {}
        self._senders: dict[socket.AddressFamily, _UdpEndpoint] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def _open(self, handler: UdpHandler | None, host: str, port: int) -> _UdpEndpoint:
        loop = asyncio.get_running_loop()
        host = (await _listen_hosts([host]))[0]
        try:
            sock = _socket_for(socket.SOCK_DGRAM, host, port, ipv6_only=self._ipv6_only)
        except OSError as error:
            raise _bind_error(error, "UDP", host, port) from error
        _, endpoint = await loop.create_datagram_endpoint(
            lambda: _UdpEndpoint(handler, self._tasks), sock=sock
        )
        endpoint.dual = host == "::" and not self._ipv6_only
        return endpoint

    async def _open_all(
        self, handler: UdpHandler | None, hosts: Sequence[str], port: int
    ) -> list[_UdpEndpoint]:
        """One endpoint per host, all on one port (the first's, when 0)."""
        endpoints: list[_UdpEndpoint] = []
        try:
            for host in await _listen_hosts(hosts):
                endpoint = await self._open(handler, host, port)
                endpoints.append(endpoint)
                port = endpoint.local[1]
        except BaseException:
            for endpoint in endpoints:
                if endpoint.transport is not None:
                    endpoint.transport.close()
            raise
        return endpoints

    async def bind(
        self, port: int, handler: UdpHandler, *, host: str | None = None
    ) -> SocketListener:
        endpoints = await self._open_all(handler, [host] if host else self._hosts, port)
        bound_port = endpoints[0].local[1]
        self._bound[bound_port] = endpoints

        async def close_endpoints() -> None:
            for endpoint in endpoints:
                if endpoint.transport is not None:
                    endpoint.transport.close()
            if self._bound.get(bound_port) is endpoints:
                del self._bound[bound_port]
            # The transport closes its socket on the loop's next turn: the
            # port is free once close() returns.
            await asyncio.sleep(0)

        return SocketListener(bound_port, close_endpoints)

    async def _sender(self, family: socket.AddressFamily) -> _UdpEndpoint:
        endpoint = self._senders.get(family)
        if endpoint is None:
            if family == socket.AF_INET6:
                host = self._ipv6 if self._ipv6 is not None else "::"
            else:
                host = self._host
            endpoint = await self._open(None, host, 0)
            self._senders[family] = endpoint
        return endpoint

    async def send(
        self,
        destination: str | IPv4Address | IPv6Address,
        port: int,
        data: bytes,
        *,
        source_port: int | None = None,
    ) -> None:
        address = str(destination).removeprefix("[").removesuffix("]")
        if source_port is None:
            endpoint = await self._sender(_family(address))
        else:
            endpoints = self._bound.get(source_port)
            if endpoints is None:
                # Sending from a port nobody bound: bind it just for sending.
                endpoints = await self._open_all(None, self._hosts, source_port)
                self._bound[source_port] = endpoints
            endpoint = self._sender_among(endpoints, address)
        assert endpoint.transport is not None
        endpoint.transport.sendto(data, endpoint.destination(address, port))

    @staticmethod
    def _sender_among(endpoints: Sequence[_UdpEndpoint], address: str) -> _UdpEndpoint:
        for endpoint in endpoints:
            if endpoint.sends_to(address):
                return endpoint
        bound = ", ".join(e.local[0] for e in endpoints)
        raise NetworkError(
            f"UDP port {endpoints[0].local[1]} is bound on {bound} only and cannot send to "
            f"{address}; bind it on :: for both families"
        )

    async def disconnect(self) -> None:
        bound = [e for endpoints in self._bound.values() for e in endpoints]
        for endpoint in [*bound, *self._senders.values()]:
            if endpoint.transport is not None:
                endpoint.transport.close()
        self._bound.clear()
        self._senders.clear()
        await asyncio.sleep(0)  # let the transports close their sockets
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def listen_hosts(host: str, ipv6: str | None, ipv6_only: bool) -> list[str]:
    """Where the stack's listeners bind: the IPv4 ``host``, and ``ipv6`` too
    when set; a dual-stack ``::`` alone, as it already takes IPv4 clients on
    every address (binding an IPv4 address beside it would clash); with
    ``ipv6_only``, the IPv6 address alone."""
    if ipv6 is None:
        return [host]
    if ipv6_only:
        return [ipv6]
    if ipv6 == "::":
        return ["::"]
    return [ipv6, host]


class SocketStack:
    """:class:`looming.devices.Stack` over the host's own TCP/IP stack.

    ``host`` is the IPv4 address listeners and UDP ports bind to by default
    (``0.0.0.0``: every host address). ``ipv6`` adds an IPv6 one: listeners
    then accept on both (``::1`` beside ``127.0.0.1``); ``::`` is every
    address of both families on one dual-stack socket. ``ipv6_only`` leaves
    IPv4 out, as ``--ipv6-only`` does on ``--net direct``: listeners bind the
    IPv6 address alone (``::1``, or ``::`` when ``host`` is ``0.0.0.0``, if
    none is given) with IPV6_V6ONLY. A host given as an IPv6 address
    (``SocketStack("::")``) works the same.
    """

    def __init__(
        self, host: str = "0.0.0.0", *, ipv6: str | None = None, ipv6_only: bool = False
    ) -> None:
        if ipv6 is None and is_ipv6(host):
            # An IPv6 host alone: that address only (``::``: both families).
            ipv6, host = host, "0.0.0.0" if host == "::" else "127.0.0.1"
            hosts = [ipv6]
            self._ipv4_listened = ipv6 == "::" and not ipv6_only
        else:
            if ipv6_only and ipv6 is None:
                ipv6 = "::" if host == "0.0.0.0" else "::1"
            hosts = listen_hosts(host, ipv6, ipv6_only)
            self._ipv4_listened = not ipv6_only
        self._host = host
        self._ipv6 = ipv6
        self._dual = ipv6 == "::" and not ipv6_only
        self._tcp = SocketTcp(hosts, ipv6_only=ipv6_only)
        self._udp = SocketUdp(host, ipv6=ipv6, ipv6_only=ipv6_only, hosts=hosts)

    @classmethod
    async def connect(
        cls, host: str = "0.0.0.0", *, ipv6: str | None = None, ipv6_only: bool = False
    ) -> SocketStack:
        return cls(host, ipv6=ipv6, ipv6_only=ipv6_only)

    @property
    def tcp(self) -> SocketTcp:
        return self._tcp

    @property
    def udp(self) -> SocketUdp:
        return self._udp

    def addresses(self) -> list[IPv4Interface | IPv6Interface]:
        """The addresses listeners bind to, IPv6 first when there is one
        (``0.0.0.0/0`` and ``::/0`` stand for every address of a family)."""
        found: list[IPv4Interface | IPv6Interface] = []
        if self._ipv6 is not None:
            ipv6 = self._ipv6.partition("%")[0]
            found.append(IPv6Interface("::/0" if ipv6 == "::" else f"{ipv6}/128"))
        if self._ipv4_listened:
            everywhere = self._host == "0.0.0.0" or self._dual
            found.append(IPv4Interface("0.0.0.0/0" if everywhere else f"{self._host}/32"))
        return found

    async def disconnect(self) -> None:
        await self._tcp.disconnect()
        await self._udp.disconnect()
