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
import logging
import socket
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, cast

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


class SocketTcpFlow(asyncio.Protocol):
    """One TCP connection; both the asyncio protocol and the looming TcpFlow."""

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

    # --- asyncio.Protocol callbacks -------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            local = sock.getsockname()
            remote = sock.getpeername()
            self._local = (str(local[0]), int(local[1]))
            self._remote = (str(remote[0]), int(remote[1]))
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


class SocketTcp:
    """:class:`looming.devices.Tcp` over host sockets."""

    def __init__(self, host: str) -> None:
        self._host = host
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

    async def listen(
        self, port: int, handler: TcpHandler, *, host: str | None = None, backlog: int = 128
    ) -> SocketListener:
        loop = asyncio.get_running_loop()
        tasks = self._tasks

        def accepted(flow: SocketTcpFlow) -> None:
            flow.set_nodelay(True)
            self._flows.add(flow)
            task = loop.create_task(self._serve(flow, handler))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def make_protocol() -> SocketTcpFlow:
            return SocketTcpFlow(accepted)

        bind_host = host if host is not None else self._host
        try:
            server = await loop.create_server(
                make_protocol,
                bind_host,
                port,
                family=socket.AF_INET,
                backlog=backlog,
                reuse_address=True,
            )
        except OSError as error:
            if error.errno == 98:  # EADDRINUSE
                raise AddressInUse(
                    f"TCP port {port} on {bind_host} is already in use; pick another port"
                ) from error
            raise NetworkError(f"cannot listen on {bind_host}:{port}: {error}") from error
        bound_port = int(server.sockets[0].getsockname()[1])

        async def close_server() -> None:
            server.close()
            self._listeners.discard(listener)

        listener = SocketListener(bound_port, close_server)
        self._listeners.add(listener)
        tcp_log.debug("listening on %s:%d", bind_host, bound_port)
        return listener

    async def connect(
        self, host: str | IPv4Address, port: int, *, timeout: float | None = None
    ) -> SocketTcpFlow:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, flow = await loop.create_connection(
                    SocketTcpFlow, str(host), port, family=socket.AF_INET
                )
        except TimeoutError as error:
            raise ConnectionTimeout(f"connecting to {host}:{port} timed out") from error
        except ConnectionRefusedError as error:
            raise ConnectionRefused(f"{host}:{port} refused the connection") from error
        except socket.gaierror as error:
            raise HostUnreachable(f"cannot resolve {host}: {error}") from error
        except OSError as error:
            raise NetworkError(f"cannot connect to {host}:{port}: {error}") from error
        self._flows.add(flow)
        return flow

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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass
        # DatagramTransport on every Python version, so no isinstance check.
        self.transport = cast(asyncio.DatagramTransport, transport)
        name = transport.get_extra_info("sockname")
        self.local = (str(name[0]), int(name[1]))

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.handler is None:
            return
        datagram = Datagram(str(addr[0]), int(addr[1]), self.local[0], self.local[1], data)
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


class SocketUdp:
    """:class:`looming.devices.Udp` over host datagram sockets."""

    def __init__(self, host: str) -> None:
        self._host = host
        self._bound: dict[int, _UdpEndpoint] = {}
        self._sender: _UdpEndpoint | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _open(self, handler: UdpHandler | None, host: str, port: int) -> _UdpEndpoint:
        loop = asyncio.get_running_loop()
        try:
            _, endpoint = await loop.create_datagram_endpoint(
                lambda: _UdpEndpoint(handler, self._tasks),
                local_addr=(host, port),
                family=socket.AF_INET,
            )
        except OSError as error:
            if error.errno == 98:
                raise AddressInUse(f"UDP port {port} on {host} is already in use") from error
            raise NetworkError(f"cannot bind UDP {host}:{port}: {error}") from error
        return endpoint

    async def bind(
        self, port: int, handler: UdpHandler, *, host: str | None = None
    ) -> SocketListener:
        endpoint = await self._open(handler, host if host is not None else self._host, port)
        bound_port = endpoint.local[1]
        self._bound[bound_port] = endpoint

        async def close_endpoint() -> None:
            if endpoint.transport is not None:
                endpoint.transport.close()
            if self._bound.get(bound_port) is endpoint:
                del self._bound[bound_port]

        return SocketListener(bound_port, close_endpoint)

    async def send(
        self,
        destination: str | IPv4Address,
        port: int,
        data: bytes,
        *,
        source_port: int | None = None,
    ) -> None:
        if source_port is not None:
            endpoint = self._bound.get(source_port)
            if endpoint is None:
                # Sending from a port nobody bound: bind it just for sending.
                endpoint = await self._open(None, self._host, source_port)
                self._bound[source_port] = endpoint
        else:
            if self._sender is None:
                self._sender = await self._open(None, self._host, 0)
            endpoint = self._sender
        assert endpoint.transport is not None
        endpoint.transport.sendto(data, (str(destination), port))

    async def disconnect(self) -> None:
        for endpoint in list(self._bound.values()):
            if endpoint.transport is not None:
                endpoint.transport.close()
        self._bound.clear()
        if self._sender is not None and self._sender.transport is not None:
            self._sender.transport.close()
        self._sender = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class SocketStack:
    """:class:`looming.devices.Stack` over the host's own TCP/IP stack.

    ``host`` is the address listeners and UDP ports bind to by default;
    ``0.0.0.0`` means every host address.
    """

    def __init__(self, host: str = "0.0.0.0") -> None:
        self._host = host
        self._tcp = SocketTcp(host)
        self._udp = SocketUdp(host)

    @classmethod
    async def connect(cls, host: str = "0.0.0.0") -> SocketStack:
        return cls(host)

    @property
    def tcp(self) -> SocketTcp:
        return self._tcp

    @property
    def udp(self) -> SocketUdp:
        return self._udp

    def addresses(self) -> list[IPv4Interface]:
        if self._host == "0.0.0.0":
            return [IPv4Interface("0.0.0.0/0")]
        return [IPv4Interface(f"{self._host}/32")]

    async def disconnect(self) -> None:
        await self._tcp.disconnect()
        await self._udp.disconnect()
