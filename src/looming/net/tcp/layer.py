"""The asyncio shell around :class:`~looming.net.tcp.endpoint.TcpEndpoint`.

It receives segments from an :class:`~looming.devices.net.Ipv4` layer,
transmits what the core produces in order through one draining task, keeps
one event-loop timer per connection at the deadline the core reports, and
turns core events into wake-ups of :class:`TcpStream` readers and writers.
"Now" always comes from the Time device, so a virtual clock can drive it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING, Any, TypeVar

from looming.devices.net import IpProtocol, Ipv4, ReceivedPacket
from looming.devices.random import Random
from looming.devices.stack import TcpHandler
from looming.devices.time import Time
from looming.errors import (
    Closed,
    ConnectionRefused,
    ConnectionReset,
    ConnectionTimeout,
    HostUnreachable,
    NetworkError,
    NoRoute,
)
from looming.net.ethernet import EthernetLayer, connection_flow
from looming.net.ipv4 import Ipv4Layer
from looming.net.tcp.config import TcpConfig, TcpStats
from looming.net.tcp.connection import Event, State, TcpConnection
from looming.net.tcp.endpoint import Arrival, TcpEndpoint
from looming.net.tcp.isn import FourTuple
from looming.net.tcp.plpmtud import MtuSearch, SharedPath
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK

if TYPE_CHECKING:
    from looming.net.icmp import IcmpError
    from looming.net.ipv6 import Ipv6Layer

log = logging.getLogger(__name__)

# The events every segment's delivery tests for, read once: an Enum
# member's lookup through its class costs several times a global's.
_ACK_DUE = Event.ACK_DUE
_READABLE = Event.READABLE
_PEER_CLOSED = Event.PEER_CLOSED
_WRITABLE = Event.WRITABLE
_NOT_PSH = 0xFF & ~wire.PSH  # the flags byte but PSH
_TCP = IpProtocol.TCP

_T = TypeVar("_T")

_Segment = tuple[IPv4Address | IPv6Address, bytes, int | None, int, IPv4Address | IPv6Address]


class _Started:
    """Awaiting this continues a coroutine (an awaitable's steps) that was
    already stepped once (and yielded ``yielded``, what it waits for), as
    if a task had run it from the start: how a write that could not finish
    at once goes on in a task, after the writes that did went out without
    one."""

    def __init__(self, coroutine: Generator[Any, Any, Any], yielded: Any) -> None:
        self._coroutine = coroutine
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, yielded = self._coroutine, self._yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as error:  # (a cancellation thrown in by the task)
                try:
                    yielded = coroutine.throw(error)
                except StopIteration:
                    return
                continue
            try:
                yielded = coroutine.send(sent)
            except StopIteration:
                return


class _Wakeup:
    """The tasks waiting for a stream to become readable (or writable):
    :meth:`wait` gives a future that the next :meth:`set` completes. What
    ``asyncio.Event``'s clear-then-wait gives, lighter (no coroutine of
    its own, no loop check): a reader or writer waits once a pass."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters:
            # (Those of waits cancelled since the last set.)
            waiters[:] = [each for each in waiters if not each.done()]
        waiters.append(waiter)
        return waiter


_ERRORS: dict[Event, type[Exception]] = {
    Event.RESET: ConnectionReset,
    Event.REFUSED: ConnectionRefused,
    Event.TIMED_OUT: ConnectionTimeout,
}


class TcpStream:
    """An open TCP connection: :class:`looming.devices.TcpFlow`."""

    def __init__(self, layer: TcpLayer, key: FourTuple, conn: TcpConnection) -> None:
        self._layer = layer
        self._key = key
        self._conn = conn
        self._readable = _Wakeup()
        self._writable = _Wakeup()
        self._connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._error: Exception | None = None
        self._closed = False
        self._write_shut = False
        # The last soft ICMP error (RFC 1122 4.2.3.9), told if the connection
        # later times out.
        self.soft_error: str | None = None

    @property
    def local_address(self) -> tuple[str, int]:
        return str(self._key[0]), self._key[1]

    @property
    def remote_address(self) -> tuple[str, int]:
        return str(self._key[2]), self._key[3]

    @property
    def state(self) -> State:
        """The connection's RFC 9293 state (for diagnostics)."""
        return self._conn.state

    @property
    def connection(self) -> TcpConnection:
        return self._conn

    def set_nodelay(self, enabled: bool) -> None:
        conn = self._conn
        conn.nodelay = enabled
        if enabled:
            self._layer.drive(self._key, conn, conn.push)

    def set_keepalive(
        self,
        enabled: bool,
        *,
        idle: float | None = None,
        interval: float | None = None,
        probes: int | None = None,
    ) -> None:
        """Probe the peer after ``idle`` seconds without a segment, then every
        ``interval`` seconds, ending the connection after ``probes``
        unanswered probes (the layer's settings, 7200 s / 75 s / 9, when
        not given)."""
        conn = self._conn
        changes: dict[str, int] = {}
        if idle is not None:
            changes["keepalive_idle_ns"] = _positive_ns(idle, "idle")
        if interval is not None:
            changes["keepalive_interval_ns"] = _positive_ns(interval, "interval")
        if probes is not None:
            if probes < 1:
                raise ValueError(f"keepalive probes must be at least 1, not {probes}")
            changes["keepalive_probes"] = probes
        if changes:
            conn.config = replace(conn.config, **changes)  # type: ignore[arg-type]
        conn.keepalive = enabled
        self._layer.drive(self._key, conn, lambda now: None)

    # -- called by the layer ---------------------------------------------------

    def opened(self) -> None:
        """The connection is established (a listener accepted it)."""
        if not self._connected.done():
            self._connected.set_result(None)

    async def wait_opened(self, timeout: float | None) -> None:
        """Wait until the connection is established, raising what ended it
        instead (``TimeoutError`` after ``timeout`` seconds)."""
        try:
            if timeout is None:
                await asyncio.shield(self._connected)
            else:
                await asyncio.wait_for(asyncio.shield(self._connected), timeout)
        except (TimeoutError, asyncio.CancelledError):
            self._connected.cancel()  # nobody will look at how it ends
            raise

    def on_events(self, events: list[Event]) -> None:
        """Wake readers, writers and the opener for the core's events."""
        for event in events:
            if event is _READABLE or event is _PEER_CLOSED:
                self._readable.set()
            elif event is _ACK_DUE:
                continue  # (the layer's)
            elif event is _WRITABLE:
                # As Linux wakes a writer (sk_stream_write_space): once the
                # space free is half what is queued, not for each ACK that
                # frees a little (a wake-up and a write of a few segments
                # each, some 1,100 per 10 MB echo through the loss relay).
                queued = len(self._conn.send_buffer)
                if 2 * self._conn.send_buffer.space >= queued:
                    self._writable.set()
            elif event is Event.CONNECTED:
                if not self._connected.done():
                    self._connected.set_result(None)
            elif event in _ERRORS:
                remote = f"{self._key[2]}:{self._key[3]}"
                error_type = _ERRORS[event]
                message = {
                    Event.RESET: f"connection to {remote} was reset by the peer",
                    Event.REFUSED: f"{remote} refused the connection (nothing listens there?)",
                    Event.TIMED_OUT: f"connection to {remote} timed out: the peer stopped answering",
                }[event]
                if event is Event.TIMED_OUT and self.soft_error is not None:
                    message += f"; last error: {self.soft_error}"
                self._error = error_type(message)
                if not self._connected.done():
                    self._connected.set_exception(error_type(message))
            elif event is Event.CLOSED:
                if not self._connected.done():
                    self._connected.set_exception(Closed("the connection closed while opening"))
                self._readable.set()
                self._writable.set()
        if self._error is not None:
            self._readable.set()
            self._writable.set()

    def fail(self, error: Exception) -> None:
        """End with ``error`` (a hard ICMP error while opening)."""
        self._error = error
        if not self._connected.done():
            self._connected.set_exception(error)
            self._connected.exception()  # retrieved: connect() may be gone
        self._readable.set()
        self._writable.set()

    async def read(self) -> bytes:
        while True:
            conn = self._conn
            if conn.readable_bytes:
                return self._layer.receive(self._key, conn)
            if self._error is not None:
                raise self._error
            if self._closed:
                raise Closed("this TCP flow was closed: open a new connection to read again")
            if conn.fin_received or conn.state is State.CLOSED:
                return b""
            await self._readable.wait()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        offset = 0
        while True:
            if self._error is not None:
                raise self._error
            if self._write_shut or self._closed:
                raise Closed("this TCP flow was shut down for writing")
            conn = self._conn
            if conn.state is State.CLOSED:
                raise Closed("the TCP connection is closed")
            if offset >= len(view):
                return
            chunk = view[offset:]
            offset += self._layer.drive(self._key, conn, partial(conn.send, chunk))
            if offset < len(view):
                await self._writable.wait()

    async def writev(self, buffers: Iterable[bytes]) -> None:
        await self.write(b"".join(buffers))

    async def shutdown(self) -> None:
        if self._write_shut or self._closed:
            return
        self._write_shut = True
        conn = self._conn
        self._layer.drive(self._key, conn, conn.shutdown)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if conn.state is not State.CLOSED:
            self._layer.drive(self._key, conn, conn.close)
        self._readable.set()
        self._writable.set()

    async def wait_closed(self) -> None:
        """Wait until the connection has left every state (after TIME-WAIT too)."""
        while self._conn.state is not State.CLOSED:
            await self._readable.wait()


def _positive_ns(seconds: float, what: str) -> int:
    if not 0 < seconds <= 32767:  # (Linux's MAX_TCP_KEEPIDLE; also no inf or nan)
        raise ValueError(
            f"keepalive {what} must be a positive number of seconds up to 32767, not {seconds}"
        )
    return int(seconds * 1e9)


# Consecutive retransmission timeouts of full-sized segments after which the
# path is suspected to drop them silently (see TcpLayer._suspect_black_hole).
BLACK_HOLE_TIMEOUTS = 3
_BLACK_HOLE_FLOOR_MSS = 512


class TcpListener:
    """A listening port: :class:`looming.devices.Listener`."""

    def __init__(self, layer: TcpLayer, port: int, handler: TcpHandler) -> None:
        self._layer = layer
        self._port = port
        self.handler = handler
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    @property
    def port(self) -> int:
        return self._port

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._layer.unlisten(self._port)


class TcpLayer:
    """looming's TCP (:class:`looming.devices.Tcp`) over an IPv4 layer."""

    def __init__(
        self,
        ipv4: Ipv4,
        time: Time,
        random: Random,
        *,
        config: TcpConfig | None = None,
        max_connections: int | None = None,
        memory_limit: int | None = None,
        ipv6: Ipv6Layer | None = None,
    ) -> None:
        """``max_connections`` bounds the connections past the handshake,
        TIME-WAIT included (half-open ones are bounded by each listener's
        backlog, then SYN cookies; SYNs and handshake ACKs beyond the limit
        are dropped and counted); ``memory_limit`` the bytes all send and
        receive queues together may hold, by true size. With ``ipv6``, TCP
        runs over IPv6 too, with the same core."""
        self._ipv4 = ipv4
        self._ipv6 = ipv6
        self._time = time
        self.config = config or TcpConfig()
        self.stats = TcpStats()
        self._endpoint = TcpEndpoint(
            self.config,
            self.stats,
            secret=random.bytes(32),
            mtu_for=self._mtu_for,
            segment_limit_for=self._segment_limit_for,
            max_connections=max_connections,
            memory_limit=memory_limit,
            defer_output=True,
        )
        # Keyed by the connection object: hashing it is cheap, unlike a
        # tuple of IPv4Address objects, and this runs for every segment.
        self._streams: dict[TcpConnection, TcpStream] = {}
        self._listeners: dict[int, TcpListener] = {}
        self._timers: dict[TcpConnection, tuple[int, asyncio.TimerHandle]] = {}
        # Segments go out as soon as the core makes them, in order; only
        # those behind one whose write has to wait go through a task.
        self._tx: deque[_Segment] = deque()
        self._tx_task: asyncio.Task[None] | None = None
        self._ipv4_write_now = ipv4.write_now if isinstance(ipv4, Ipv4Layer) else None
        self._transmitting = False
        self._acks_due: dict[TcpConnection, FourTuple] = {}
        # Segments and events move on as each segment arrives; timers are
        # re-armed once the burst is in, once per connection touched.
        self._burst_pending = False
        # The burst's segments, taken together once it is in (endpoint.input_burst).
        self._arrivals: list[Arrival] = []
        self._ending_burst = False
        self._touched: dict[TcpConnection, FourTuple] = {}
        self.transmit_errors = 0
        self.handler_errors = 0
        self.handler_ends = 0
        """Handlers ended by a reset or a closed flow (logged at debug level)."""
        # Looks a name up for connect (set by the stack that has DNS): the
        # addresses to try, in order.
        self.resolver: Callable[[str], Awaitable[Sequence[IPv4Address | IPv6Address]]] | None = None
        self.icmp_counters: Counter[str] = Counter()
        if isinstance(ipv4, Ipv4Layer):
            ipv4.register(IpProtocol.TCP, self.input, plain=self._input_plain)
        else:
            ipv4.register(IpProtocol.TCP, self.input)
        if ipv6 is not None:
            ipv6.register(IpProtocol.TCP, self.input)
            ipv6.watch_path_mtu(self._lower_mss)
        # The link, when it says which frames came in one wake-up: a burst
        # then ends in that same turn of the loop (_end_of_batch).
        self._link: EthernetLayer | None = None
        if isinstance(ipv4, Ipv4Layer):
            link = ipv4.ethernet
            if link.after_batch(self._end_of_batch):
                self._link = link
            # The link's frame policy lets each connection's segments pass for
            # as long as it is in the table, whatever floods or churns the link.
            policy = link.policy
            self._endpoint.on_adopt = lambda key: policy.pin(connection_flow(*key))
            self._endpoint.on_release = lambda key: policy.release(connection_flow(*key))

    def _mtu_for(self, remote: IPv4Address | IPv6Address) -> int:
        if isinstance(remote, IPv4Address):
            return self._ipv4.mtu(remote)
        return self._ipv6_layer(remote).mtu(remote)

    def _segment_limit_for(self, remote: IPv4Address | IPv6Address) -> int:
        if isinstance(remote, IPv4Address):
            return self._ipv4.segment_limit(remote)
        return 0  # no segmentation offload over IPv6: one segment a packet

    def _ipv6_layer(self, remote: IPv6Address) -> Ipv6Layer:
        if self._ipv6 is None:
            raise NoRoute(f"cannot reach {remote}: this stack has no IPv6 layer")
        return self._ipv6

    # ------------------------------------------------------------------ Tcp device

    async def listen(
        self, port: int, handler: TcpHandler, *, host: str | None = None, backlog: int = 128
    ) -> TcpListener:
        address = ip_address(host) if host not in (None, "", "0.0.0.0", "::") else None
        bound = self._endpoint.listen(port, address, backlog)
        listener = TcpListener(self, bound, handler)
        self._listeners[bound] = listener
        return listener

    async def connect(
        self, host: str | IPv4Address | IPv6Address, port: int, *, timeout: float | None = None
    ) -> TcpStream:
        """Open a connection to an address, or to a name: its addresses
        from :attr:`resolver`, tried in order (each with ``timeout``) until
        one answers; the last one's error if none does."""
        if not isinstance(host, str):
            return await self._connect_address(host, port, timeout)
        try:
            remote = ip_address(host)
        except ValueError:
            return await self._connect_name(host, port, timeout)
        return await self._connect_address(remote, port, timeout)

    async def _connect_name(self, name: str, port: int, timeout: float | None) -> TcpStream:
        if self.resolver is None:
            from looming.net.dns import NameNotFound

            raise NameNotFound(f"cannot connect to {name!r}: give an IP address (no DNS here)")
        tried: list[str] = []
        last: NetworkError | None = None
        for address in await self.resolver(name):
            try:
                return await self._connect_address(address, port, timeout)
            except (ConnectionRefused, ConnectionTimeout, HostUnreachable, NoRoute) as error:
                tried.append(f"{address}: {error}")
                last = error
        if last is None:
            raise NoRoute(f"{name!r} has no address to connect to")
        raise type(last)(f"{name} port {port}: " + "; ".join(tried)) from last

    async def _connect_address(
        self, remote: IPv4Address | IPv6Address, port: int, timeout: float | None
    ) -> TcpStream:
        local: IPv4Address | IPv6Address
        if isinstance(remote, IPv4Address):
            local = self._ipv4.source_for(remote)
        else:
            local = self._ipv6_layer(remote).source_for(remote)
        now = self._time.now_ns()
        key, conn = self._endpoint.connect(local, remote, port, now)
        stream = TcpStream(self, key, conn)
        self._streams[conn] = stream
        self._pump()
        try:
            await stream.wait_opened(timeout)
        except TimeoutError:
            self.drive(key, conn, conn.abort)
            raise ConnectionTimeout(
                f"no answer from {remote}:{port} within {timeout} s: is the host up?"
            ) from None
        except asyncio.CancelledError:
            self.drive(key, conn, conn.abort)
            raise
        return stream

    # ------------------------------------------------------------------ driving

    def input(
        self, packet: ReceivedPacket[IPv4Address] | ReceivedPacket[IPv6Address], payload: bytes
    ) -> None:
        """Receive one segment from IPv4. Never raises. A segment with no
        flag but ACK (and PSH), with data or without, is handled with the
        rest of its burst (every frame the interface had ready) once that is
        in, or before anything else touches the connections; any other at
        once (after the burst's earlier segments). The
        burst ends when the link says the wake-up's frames are all in, or
        else on the next turn of the loop."""
        self._input_plain(
            packet.source,
            packet.destination,
            packet.traffic_class,
            packet.checksum_verified,
            payload,
        )

    def _input_plain(
        self,
        source: IPv4Address | IPv6Address,
        destination: IPv4Address | IPv6Address,
        traffic_class: int,
        checksum_verified: bool,
        payload: bytes,
    ) -> None:
        """:meth:`input` with the only fields of the packet it reads (what
        IPv4 hands over for its common datagram, building no packet object)."""
        if not self._burst_pending:
            self._burst_pending = True
            link = self._link
            if link is None or not link.in_batch:
                asyncio.get_running_loop().call_soon(self._end_burst)
        ce = traffic_class & 0b11 == 0b11  # RFC 3168 CE
        if len(payload) >= 20 and payload[13] & _NOT_PSH == ACK:
            self._arrivals.append((source, destination, payload, checksum_verified, ce))
        else:
            if self._arrivals:
                self._take_arrivals()
            try:
                self._endpoint.input(
                    source,
                    destination,
                    payload,
                    self._time.now_ns(),
                    checksum_verified=checksum_verified,
                    ce=ce,
                )
                self._deliver()
            except Exception:
                # A bug must not take the stack down with it: count, log, drop.
                self.stats.malformed_dropped += 1
                log.exception("TCP input failed; segment dropped")

    def _take_arrivals(self) -> None:
        """Hand the burst's segments to the core (which merges in-order
        runs, as GRO does) and move on what they produced."""
        arrivals = self._arrivals
        if not arrivals:
            return
        self._arrivals = []
        try:
            self._endpoint.input_burst(arrivals, self._time.now_ns())
        except Exception:
            # A bug must not take the stack down with it: count, log, drop
            # (the rest of the burst too: TCP resends it).
            self.stats.malformed_dropped += 1
            log.exception("TCP input failed; segments dropped")
        self._deliver()

    def _end_of_batch(self) -> None:
        if self._burst_pending:
            self._end_burst()

    def _end_burst(self) -> None:
        """Every segment that arrived with the last ones is in: take them,
        send the ACKs they earned and re-arm the timers of the connections
        they touched, once each."""
        self._burst_pending = False
        self._ending_burst = True
        try:
            self._take_arrivals()
            if self._acks_due:
                self._flush_acks()  # now, not on the next turn of the loop
            self._rearm()
        except Exception:
            log.exception("TCP burst handling failed")
        finally:
            self._ending_burst = False

    def on_icmp_error(self, error: IcmpError) -> None:
        """An ICMP error about a segment we sent (RFC 1122 4.2.3.9, RFC 5927).

        Only errors quoting a connection's ports and an unacknowledged
        sequence number count. "Fragmentation needed" lowers the path MTU
        and the MSS of every connection to that destination; a hard error
        ends a connection still opening; anything else is remembered as a
        soft error and told if the connection times out."""
        counters = self.icmp_counters
        remote = error.original.destination
        target = self._endpoint.icmp_target(error.original.source, remote, error.original_payload)
        if isinstance(target, str):
            counters[target] += 1
            return
        key, conn = target
        counters["icmp_accepted"] += 1
        if error.fragmentation_needed:
            if conn.mtu_search is not None and error.next_hop_mtu:
                # A probe met a smaller hop (RFC 8899 4.6.2): search below it.
                conn.mtu_search.cap(max(error.next_hop_mtu, 552) - 40)
            if isinstance(remote, IPv6Address):
                # A checked Packet Too Big: IPv6 tells us back (watch_path_mtu).
                self._ipv6_layer(remote).lower_path_mtu(remote, error.next_hop_mtu)
            elif self._ipv4.lower_path_mtu(remote, error.next_hop_mtu, error.original_length):
                self._lower_mss(remote)
            return
        stream = self._streams.get(conn)
        if error.hard and conn.state in (State.SYN_SENT, State.SYN_RECEIVED):
            counters["icmp_hard_aborts"] += 1
            if stream is not None:
                error_type = ConnectionRefused if error.code in (2, 3) else HostUnreachable
                stream.fail(error_type(f"{key[2]}:{key[3]}: {error.describe()}"))
            self.drive(key, conn, conn.abort)
            return
        counters["icmp_soft_errors"] += 1
        if stream is not None:
            stream.soft_error = error.describe()

    def _lower_mss(self, remote: IPv4Address | IPv6Address) -> None:
        """The path MTU to ``remote`` fell: every connection there sends
        smaller segments from now on."""
        mss = self._endpoint.path_mss(remote)
        for (_, _, other, _), each in self._endpoint.connections.items():
            if other == remote and each.mtu_search is not None:
                each.mtu_search.cap(mss)
            if other == remote and each.path_mss > mss:
                if each.mtu_search is None:
                    # Probed back up after the raise interval (RFC 1191's aging).
                    ceiling = min(each.path_mss, each.peer_mss)
                    each.mtu_search = self._mtu_search(remote, mss, ceiling)
                each.path_mss = mss
                self.icmp_counters["icmp_mss_lowered"] += 1

    def drive(self, key: FourTuple, conn: TcpConnection, action: Callable[[int], _T]) -> _T:
        """Call ``action`` (an operation of ``conn``) with the current time,
        then move the segments and events it produced on: what
        :class:`TcpStream` does for every read, write and close."""
        if self._arrivals:
            self._take_arrivals()
        result = action(self._time.now_ns())
        self._endpoint.collect(key, conn)
        self._pump()
        return result

    def receive(self, key: FourTuple, conn: TcpConnection) -> bytes:
        """``drive(key, conn, conn.receive)``: what a read does, shorter in
        the common case, a read that sends nothing (no window update) while
        no burst is under way. Such a read changes none of the connection's
        deadlines, and every connection touched before it was re-armed (the
        endpoint holds nothing between the layer's calls), so collect and
        pump would find nothing to move on."""
        if self._arrivals or self._touched:
            return self.drive(key, conn, conn.receive)
        data = conn.receive(self._time.now_ns())
        if conn.outbox or conn.events or conn.state is State.CLOSED or self._endpoint.accepted:
            self._endpoint.collect(key, conn)
            self._pump()
        return data

    def _pump(self) -> None:
        self._deliver()
        self._rearm()

    def _deliver(self) -> None:
        """Move on the segments and events the core produced: segments to
        the draining task, events to the streams, new connections to their
        listeners; note whose timers need re-arming."""
        endpoint = self._endpoint
        outbox = endpoint.take_marked_outbox()
        if outbox:
            self._tx.extend(outbox)
            if self._tx_task is None and not self._transmitting:
                self._transmit()
        touched = self._touched
        for key, conn, events in endpoint.take_touched():
            touched[conn] = key
            if events:
                if _ACK_DUE in events:
                    # (A burst under way flushes them when it ends.)
                    if not self._acks_due and not self._ending_burst and not self._burst_pending:
                        asyncio.get_running_loop().call_soon(self._flush_acks)
                    self._acks_due[conn] = key
                stream = self._streams.get(conn)
                if stream is not None:
                    stream.on_events(events)
        if endpoint.accepted:
            for port, key, conn in endpoint.take_accepted():
                self._accept(port, key, conn)

    def _rearm(self) -> None:
        """Each touched connection's timer at its next deadline (or gone
        with the connection), however many segments it handled."""
        touched = self._touched
        self._touched = {}
        for conn, key in touched.items():
            if conn.state is State.CLOSED:
                self._cancel_timer(conn)
                self._streams.pop(conn, None)
            else:
                self._schedule(key, conn, conn.next_deadline())

    def _flush_acks(self) -> None:
        """The burst of arrivals is handled: send the ACKs it earned."""
        if self._arrivals:
            self._take_arrivals()
        due = self._acks_due
        self._acks_due = {}
        now = self._time.now_ns()
        try:
            for conn, key in due.items():
                conn.flush_ack(now)
                self._endpoint.collect(key, conn)
            self._pump()
        except Exception:
            log.exception("TCP ACK flush failed")

    def _accept(self, port: int, key: FourTuple, conn: TcpConnection) -> None:
        listener = self._listeners.get(port)
        if listener is None or listener.closed:
            self.drive(key, conn, conn.abort)
            return
        stream = TcpStream(self, key, conn)
        stream.opened()
        self._streams[conn] = stream
        task = asyncio.get_running_loop().create_task(self._serve(listener, stream))
        listener.tasks.add(task)
        task.add_done_callback(listener.tasks.discard)
        self._schedule(key, conn, conn.next_deadline())

    async def _serve(self, listener: TcpListener, stream: TcpStream) -> None:
        try:
            await listener.handler(stream)
        except (ConnectionReset, Closed) as error:
            # The peer reset or the flow closed under the handler: the
            # connection's ordinary end, not the handler's failure (an
            # attacker could otherwise log a traceback per connection).
            self.handler_ends += 1
            log.debug("TCP connection on port %d ended: %s", listener.port, error)
        except Exception:
            self.handler_errors += 1
            log.exception("TCP connection handler for port %d failed", listener.port)
        finally:
            await stream.close()

    def _transmit(self) -> None:
        """Send the queued segments now, in order, without a task: a write
        that completes without waiting (the interface took the frame) costs
        no turn of the loop. The first one that has to wait goes on in a
        task (:meth:`_drain`), and every segment queued after it with it."""
        self._transmitting = True
        tx = self._tx
        write_now = self._ipv4_write_now
        try:
            while tx:
                destination, segment, segment_size, tos, source = tx.popleft()
                try:
                    if write_now is not None and type(destination) is IPv4Address:
                        # Sent at once where the layers below can (as _write_segment).
                        pending = write_now(
                            destination,
                            _TCP,
                            segment,
                            dont_fragment=True,
                            segment_size=segment_size,
                            tos=tos,
                        )
                        if pending is None:
                            continue
                    else:
                        pending = self._write_segment(
                            destination, segment, segment_size, tos, source
                        )
                    write = pending.__await__()
                    waiting = write.send(None)
                except StopIteration:
                    continue
                except Exception as error:
                    self._transmit_failed(error)
                    continue
                started = _Started(write, waiting)
                self._tx_task = asyncio.get_running_loop().create_task(self._drain(started))
                return
        finally:
            self._transmitting = False

    def _transmit_failed(self, error: Exception) -> None:
        # No route or no ARP answer: TCP retransmits, like a lost segment.
        self.transmit_errors += 1
        log.debug("TCP segment not sent: %s", error)

    async def _drain(self, started: _Started) -> None:
        """Finish the write that had to wait, then send what queued behind it."""
        try:
            try:
                await started
            except Exception as error:
                self._transmit_failed(error)
            while self._tx:
                try:
                    await self._write_segment(*self._tx.popleft())
                except Exception as error:
                    self._transmit_failed(error)
        finally:
            self._tx_task = None

    async def _write_segment(
        self,
        destination: IPv4Address | IPv6Address,
        segment: bytes,
        segment_size: int | None,
        tos: int,
        source: IPv4Address | IPv6Address,
    ) -> None:
        if isinstance(destination, IPv6Address):
            assert isinstance(source, IPv6Address)
            await self._write_ipv6(destination, source, segment, segment_size, tos)
            return
        # DF on every segment: routers report a smaller path MTU (RFC 1191)
        # instead of fragmenting. A packet of several segments goes with
        # segment_size: the interface cuts it up, or IPv4 cuts it into
        # segments of that size.
        await self._ipv4.write(
            destination,
            IpProtocol.TCP,
            segment,
            tos=tos,
            dont_fragment=True,
            segment_size=segment_size,
        )

    async def _write_ipv6(
        self,
        destination: IPv6Address,
        source: IPv6Address,
        segment: bytes,
        segment_size: int | None,
        tos: int,
    ) -> None:
        # From the connection's own address: the checksum covers it, and the
        # layer's choice can change under a connection (a tentative address
        # becoming usable, a destination reached from link-local).
        await self._ipv6_layer(destination).write(
            destination,
            IpProtocol.TCP,
            segment,
            source=source,
            traffic_class=tos,
            segment_size=segment_size,  # (no offload over IPv6: IPv6 cuts it)
        )

    def _schedule(self, key: FourTuple, conn: TcpConnection, deadline: int | None) -> None:
        # A timer that fires too early is harmless (the core re-checks and
        # the timer is set again), so an earlier pending one is kept rather
        # than re-armed on every segment; only a sooner deadline re-arms.
        if deadline is None:
            return
        current = self._timers.get(conn)
        if current is not None:
            if current[0] <= deadline:
                return
            current[1].cancel()
        delay = max(deadline - self._time.now_ns(), 0) / 1e9
        handle = asyncio.get_running_loop().call_later(delay, self._on_timer, key, conn)
        self._timers[conn] = (deadline, handle)

    def _cancel_timer(self, conn: TcpConnection) -> None:
        current = self._timers.pop(conn, None)
        if current is not None:
            current[1].cancel()

    def _on_timer(self, key: FourTuple, conn: TcpConnection) -> None:
        self._timers.pop(conn, None)
        try:
            if self._arrivals:
                self._take_arrivals()
            retries = conn.retries
            conn.on_timer(self._time.now_ns())
            if conn.retries == BLACK_HOLE_TIMEOUTS and retries < conn.retries:
                self._suspect_black_hole(key, conn)
            self._endpoint.collect(key, conn)
            self._pump()
            if conn.state is not State.CLOSED and conn not in self._timers:
                self._schedule(key, conn, conn.next_deadline())
        except Exception:
            log.exception("TCP timer failed")

    def _suspect_black_hole(self, key: FourTuple, conn: TcpConnection) -> None:
        """Full-sized segments timed out again and again: perhaps the path's
        MTU is smaller and the ICMP errors that would say so are filtered
        (RFC 2923's black hole). Try smaller segments, as RFC 4821 and RFC
        8899 search does from below: half the MSS, at most 1024 and at
        least 512 bytes, for this connection only (segments sent larger
        before are resent at the new size). Probes search back up after
        ``pmtu_raise_interval_ns`` (see plpmtud.py)."""
        if conn.state not in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1):
            return
        if conn.path_mss <= _BLACK_HOLE_FLOOR_MSS or conn.bytes_in_flight < conn.send_mss:
            return
        remote = key[2]
        ceiling = min(self._endpoint.path_mss(remote), conn.peer_mss)
        # This connection's alone, as Linux's tcp_mtu_probing: a silent peer
        # is no evidence about the path that other connections share (only
        # an ICMP report lowers the path MTU).
        mss = max(min(conn.path_mss // 2, 1024), _BLACK_HOLE_FLOOR_MSS)
        conn.path_mss = mss
        conn.mtu_search = self._mtu_search(remote, mss, ceiling)
        self.icmp_counters["black_hole_mss_lowered"] += 1

    def _mtu_search(self, remote: IPv4Address | IPv6Address, mss: int, ceiling: int) -> MtuSearch:
        """A search from ``mss`` up to ``ceiling``, its first probe after the
        raise interval; what it confirms is the path's (``SharedPath``)."""
        interval = self.config.pmtu_raise_interval_ns
        now = self._time.now_ns()
        search = MtuSearch(mss, ceiling, interval, now + interval, self.stats)
        search.on_confirmed = SharedPath(remote, self._ipv4, self._remotes)
        return search

    def _remotes(self) -> Iterator[tuple[IPv4Address | IPv6Address, TcpConnection]]:
        return ((key[2], each) for key, each in self._endpoint.connections.items())

    def unlisten(self, port: int) -> None:
        """Stop listening on ``port`` (what :meth:`TcpListener.close` calls);
        its half-open connections are reset."""
        self._listeners.pop(port, None)
        self._endpoint.unlisten(port, self._time.now_ns())
        self._pump()

    # ------------------------------------------------------------------ whole layer

    @property
    def counters(self) -> dict[str, int]:
        """Every counter, for the stack's per-layer report."""
        counters = self.stats.as_dict()
        counters["transmit_errors"] = self.transmit_errors
        counters["handler_errors"] = self.handler_errors
        counters["handler_ended_by_peer"] = self.handler_ends
        endpoint = self._endpoint
        counters["connection_limit_dropped"] = endpoint.connection_limit_dropped
        counters["memory_limit_dropped"] = endpoint.pool.refused
        counters["receive_memory"] = endpoint.pool.held
        counters["send_memory"] = endpoint.pool.send_held
        counters["receive_memory_dropped"] = endpoint.pool.connection_refused
        counters.update(self.icmp_counters)
        return counters

    @property
    def connection_count(self) -> int:
        """Connections in any state, TIME-WAIT included."""
        return len(self._endpoint.connections)

    @property
    def timer_count(self) -> int:
        return len(self._timers)

    async def close(self) -> None:
        """Reset every connection, stop every listener and wait for handlers."""
        tasks = [task for listener in self._listeners.values() for task in listener.tasks]
        self._listeners.clear()
        self._arrivals.clear()
        self._endpoint.abort_all(self._time.now_ns())
        self._pump()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        tx_task = self._tx_task
        if tx_task is not None:
            # The resets above get a moment to leave; a device that takes no
            # more frames must not hold up the shutdown.
            await asyncio.wait({tx_task}, timeout=0.25)
            tx_task.cancel()
            await asyncio.gather(tx_task, return_exceptions=True)
