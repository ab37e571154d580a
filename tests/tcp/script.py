"""A small packetdrill-like harness for the sans-I/O TCP core.

Tests play the remote peer: they build segments with :func:`seg`, feed them
with :meth:`Script.recv` and compare what the connection sends, rendered as
short strings like ``"A 1001:1001(0) ack 5001"`` (flags, seq:end(length),
ack), with :meth:`Script.expect`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from looming.net.tcp.config import MS, TcpConfig, TcpStats
from looming.net.tcp.connection import Event, State, TcpConnection
from looming.net.tcp.seq import MASK
from looming.net.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader

LOCAL_PORT = 4000
REMOTE_PORT = 80
ISS = 1000  # ours
IRS = 5000  # the peer's

PLAIN = TcpConfig(
    timestamps=False,
    window_scaling=False,
    sack=False,
    nodelay=False,
    coalesce_acks=False,
    congestion_control="newreno",
)


def seg(
    flags: str,
    seq: int,
    ack: int = 0,
    *,
    window: int = 65535,
    **options: object,
) -> TcpHeader:
    """A segment from the peer; ``flags`` letters from "SFRPA"."""
    bits = 0
    for letter, bit in zip("SFRPA", (SYN, FIN, RST, PSH, ACK), strict=True):
        if letter in flags:
            bits |= bit
    return TcpHeader(
        REMOTE_PORT,
        LOCAL_PORT,
        seq & MASK,
        ack & MASK,
        bits,
        window,
        **options,  # type: ignore[arg-type]  # the option fields of TcpHeader
    )


def render(header: TcpHeader, payload: bytes) -> str:
    flags = "".join(
        letter
        for letter, bit in zip("SFRPA", (SYN, FIN, RST, PSH, ACK), strict=True)
        if header.flags & bit
    )
    text = f"{flags} {header.seq}:{(header.seq + len(payload)) & MASK}({len(payload)})"
    if header.flags & ACK:
        text += f" ack {header.ack}"
    return text


@dataclass
class Script:
    conn: TcpConnection
    now: int = 0
    sent: list[tuple[TcpHeader, bytes]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def recv(self, header: TcpHeader, payload: bytes = b"") -> None:
        self.conn.input(header, payload, self.now)
        self._collect()

    def _collect(self) -> None:
        self.sent.extend(self.conn.take_outbox())
        self.events.extend(self.conn.take_events())

    def advance(self, ms: float) -> None:
        """Let ``ms`` milliseconds pass, firing every timer due on the way."""
        target = self.now + int(ms * MS)
        while True:
            deadline = self.conn.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.conn.on_timer(self.now)
            self._collect()
        self.now = target

    def call(self, name: str, *args: object) -> object:
        result = getattr(self.conn, name)(*args, self.now)
        self._collect()
        return result

    def take(self) -> list[tuple[TcpHeader, bytes]]:
        sent = self.sent
        self.sent = []
        return sent

    def expect(self, *lines: str) -> list[tuple[TcpHeader, bytes]]:
        sent = self.take()
        assert [render(h, p) for h, p in sent] == list(lines)
        return sent

    def take_events(self) -> list[Event]:
        events = self.events
        self.events = []
        return events

    @property
    def state(self) -> State:
        return self.conn.state


def active(config: TcpConfig = PLAIN, *, path_mss: int = 1000, now: int = 0) -> Script:
    conn = TcpConnection.connect(
        config,
        TcpStats(),
        local_port=LOCAL_PORT,
        remote_port=REMOTE_PORT,
        iss=ISS,
        path_mss=path_mss,
        timestamp_offset=0,
        now=now,
    )
    script = Script(conn, now)
    script._collect()
    return script


def passive(syn: TcpHeader, config: TcpConfig = PLAIN, *, path_mss: int = 1000) -> Script:
    conn = TcpConnection.accept_syn(
        config, TcpStats(), syn, iss=ISS, path_mss=path_mss, timestamp_offset=0, now=0
    )
    script = Script(conn)
    script._collect()
    return script


def established(
    config: TcpConfig = PLAIN, *, window: int = 65535, mss: int = 1000, **options: object
) -> Script:
    """A connection we opened, with the handshake done and its segments taken."""
    script = active(config)
    script.take()
    script.recv(seg("SA", IRS, ISS + 1, window=window, mss=mss, **options))
    script.take()
    script.take_events()
    assert script.state is State.ESTABLISHED
    return script
