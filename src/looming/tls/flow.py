"""TLS as a :class:`looming.devices.Flow` over any other Flow, and asyncio-streams helpers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable

from cryptography import x509

from looming.devices.flow import Flow
from looming.errors import Closed, ConnectionReset, ConnectionTimeout
from looming.sim.buggify import buggify

from .config import TlsConfig
from .constants import TLS13
from .engine import TlsConnection
from .errors import TlsClosed, TlsError, TlsTruncated
from .events import (
    ApplicationData,
    ConnectionClosed,
    EarlyData,
    Event,
    HandshakeComplete,
    KeyUpdated,
    NewSession,
)
from .session import Session


class TlsFlow:
    """A TLS connection over ``flow``; itself a Flow carrying the plaintext.

    ``read`` returns ``b""`` after the peer's close_notify and raises
    :class:`TlsTruncated` if the transport ends without one. On a server,
    0-RTT data is kept apart in ``early_data`` (it may be a replay from
    another server instance), never mixed into ``read``. ``sessions`` collects
    the tickets a client receives, for resumption.
    """

    def __init__(self, flow: Flow, connection: TlsConnection) -> None:
        self.flow = flow
        self.connection = connection
        self._plaintext: list[bytes] = []
        self.early_data: list[bytes] = []
        self.sessions: list[Session] = []
        self.handshake_event: HandshakeComplete | None = None
        self._eof = False
        self._closed = False
        self.key_updates_received = 0

    # --- properties of the negotiated connection ----------------------------------

    @property
    def alpn_protocol(self) -> bytes | None:
        return self.connection.alpn_protocol

    @property
    def local_address(self) -> tuple[str, int] | None:
        return self.flow.local_address

    @property
    def remote_address(self) -> tuple[str, int] | None:
        return self.flow.remote_address

    @property
    def version(self) -> int | None:
        return self.connection.version

    @property
    def cipher_suite(self) -> int | None:
        suite = self.connection.suite
        return None if suite is None else int(suite.suite)

    @property
    def peer_certificates(self) -> list[x509.Certificate]:
        return self.connection.peer_certificates

    @property
    def resumed(self) -> bool:
        return self.connection.resumed

    def export_keying_material(
        self, label: bytes | str, context: bytes | None, length: int
    ) -> bytes:
        return self.connection.export_keying_material(label, context, length)

    # --- driving the engine -----------------------------------------------------------

    async def _flush(self) -> None:
        out = self.connection.bytes_to_send()
        if len(out) > 1 and buggify("tls.split_flush"):  # two transport writes
            await self.flow.write(out[: len(out) // 2])
            out = out[len(out) // 2 :]
        if out:
            await self.flow.write(out)

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except Exception:  # the transport may be gone already; the alert is best effort
            pass

    def _absorb(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ApplicationData):
                self._plaintext.append(event.data)
            elif isinstance(event, EarlyData):
                self.early_data.append(event.data)
            elif isinstance(event, HandshakeComplete):
                self.handshake_event = event
            elif isinstance(event, NewSession):
                assert isinstance(event.session, Session)
                self.sessions.append(event.session)
            elif isinstance(event, KeyUpdated):
                self.key_updates_received += 1
            elif isinstance(event, ConnectionClosed):
                self._eof = True

    async def _pump(self) -> None:
        """Read once from the transport and feed the engine."""
        try:
            data = await self.flow.read()
        except ConnectionReset as exc:
            raise TlsTruncated("the transport was reset before close_notify") from exc
        if not data:
            raise TlsTruncated(
                "the transport ended without close_notify (possible truncation attack)"
            )
        try:
            events = self.connection.receive(data)
        except TlsError:
            await self._flush_quietly()
            raise
        self._absorb(events)
        await self._flush()

    async def handshake(self) -> None:
        await self._flush()
        while not self.connection.handshake_complete:
            await self._pump()
        await self._flush()

    async def read(self) -> bytes:
        while not self._plaintext:
            if self._eof:
                return b""
            await self._pump()
        return self._plaintext.pop(0)

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise Closed("TLS flow is shut down for writing")
        try:
            if self._may_update_keys() and buggify("tls.key_update"):
                self.connection.key_update(True)
            if len(data) > 1 and buggify("tls.split_record"):  # two records
                self.connection.send_application_data(data[: len(data) // 2])
                data = data[len(data) // 2 :]
            self.connection.send_application_data(data)
        except TlsClosed as exc:
            raise Closed(str(exc)) from exc
        await self._flush()

    async def writev(self, buffers: Iterable[bytes]) -> None:
        await self.write(b"".join(buffers))

    def _may_update_keys(self) -> bool:
        return self.connection.handshake_complete and self.version == TLS13

    async def key_update(self, request_peer_update: bool = True) -> None:
        self.connection.key_update(request_peer_update)
        await self._flush()

    async def shutdown(self) -> None:
        """Send close_notify; reading continues until the peer's close_notify."""
        if self._closed:
            return
        self._closed = True
        self.connection.close()
        await self._flush_quietly()

    async def close(self) -> None:
        if not self._closed:
            await self.shutdown()
        await self.flow.close()


async def tls_client(
    flow: Flow,
    config: TlsConfig,
    server_name: str | None = None,
    *,
    session: Session | None = None,
    early_data: bytes = b"",
    handshake_timeout: float | None = None,
) -> TlsFlow:
    """Run a client handshake over ``flow``; the returned TlsFlow carries plaintext.

    ``handshake_timeout`` (seconds, on the event loop's clock) bounds a peer
    that stalls mid-handshake; it raises :class:`looming.errors.ConnectionTimeout`.
    """
    connection = TlsConnection(
        config, server_side=False, server_name=server_name, session=session, early_data=early_data
    )
    tls = TlsFlow(flow, connection)
    await _handshake(tls, handshake_timeout)
    return tls


async def tls_server(
    flow: Flow, config: TlsConfig, handshake_timeout: float | None = None
) -> TlsFlow:
    """Run a server handshake over ``flow`` (``handshake_timeout`` as for :func:`tls_client`)."""
    tls = TlsFlow(flow, TlsConnection(config, server_side=True))
    await _handshake(tls, handshake_timeout)
    return tls


async def _handshake(tls: TlsFlow, timeout: float | None) -> None:
    if timeout is None:
        await tls.handshake()
        return
    try:
        await asyncio.wait_for(tls.handshake(), timeout)
    except TimeoutError as exc:
        raise ConnectionTimeout(f"TLS handshake did not finish within {timeout} s") from exc


class StreamFlow:
    """An asyncio (StreamReader, StreamWriter) pair as a Flow."""

    local_address: tuple[str, int] | None = None
    remote_address: tuple[str, int] | None = None

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunk: int = 1 << 16
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._chunk = chunk
        self._shut = False

    async def read(self) -> bytes:
        try:
            return await self._reader.read(self._chunk)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ConnectionReset(str(exc)) from exc

    async def write(self, data: bytes) -> None:
        if self._shut:
            raise Closed("flow is shut down for writing")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ConnectionReset(str(exc)) from exc

    async def writev(self, buffers: Iterable[bytes]) -> None:
        await self.write(b"".join(buffers))

    async def shutdown(self) -> None:
        if not self._shut:
            self._shut = True
            if self._writer.can_write_eof():
                self._writer.write_eof()

    async def close(self) -> None:
        self._shut = True
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionResetError, BrokenPipeError):
            pass


async def open_connection(
    host: str,
    port: int,
    config: TlsConfig,
    server_name: str | None = None,
    *,
    session: Session | None = None,
    early_data: bytes = b"",
    handshake_timeout: float | None = 30.0,
) -> TlsFlow:
    """Connect over TCP with asyncio streams and run a client handshake."""
    reader, writer = await asyncio.open_connection(host, port)
    flow = StreamFlow(reader, writer)
    try:
        return await tls_client(
            flow,
            config,
            server_name if server_name is not None else host,
            session=session,
            early_data=early_data,
            handshake_timeout=handshake_timeout,
        )
    except BaseException:
        await flow.close()
        raise


async def start_server(
    handler: Callable[[TlsFlow], Awaitable[None]],
    host: str,
    port: int,
    config: TlsConfig,
    handshake_timeout: float | None = 30.0,
    *,
    sock: socket.socket | None = None,
) -> asyncio.Server:
    """Listen with asyncio streams; ``handler`` gets each connection after its handshake.

    A client that stalls mid-handshake is dropped after ``handshake_timeout`` seconds.
    ``sock``, a bound socket, is listened on instead of ``host`` and ``port``
    (a dual-stack one, say: asyncio binds ``::`` for IPv6 only).
    """

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flow = StreamFlow(reader, writer)
        try:
            tls = await tls_server(flow, config, handshake_timeout)
            await handler(tls)
        except (TlsError, ConnectionReset, ConnectionTimeout, Closed):
            pass  # a failed or aborted connection ends here; the alert was sent
        finally:
            await flow.close()

    if sock is not None:
        return await asyncio.start_server(on_connection, sock=sock)
    return await asyncio.start_server(on_connection, host, port)
