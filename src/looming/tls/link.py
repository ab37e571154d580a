"""What a handshake may read and change of its connection.

The handshake machines (``client``, ``server`` and their TLS 1.2 and PSK parts)
are driven by the engine and act on it only through this interface, so they
depend on it, not on ``engine``, and the engine imports them without a circle.
``engine.TlsConnection`` is the one implementation (mypy checks it where the
engine builds its handshake).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509

from .config import TlsConfig
from .events import Event, HandshakeComplete
from .keyschedule import KeySchedule13, Transcript
from .record import RecordLayer
from .session import Session
from .suites import SuiteInfo


@dataclass(slots=True, eq=False)
class Negotiated:
    """What a handshake has decided so far: its answer to the engine.

    The handshake owns and fills this record; the engine only reads it (its
    ``version``, ``suite``, ``alpn_protocol``... properties delegate here).
    """

    # The server's name: the one asked for (client) or the one received (server).
    server_name: str | None = None
    version: int | None = None
    suite: SuiteInfo | None = None
    alpn_protocol: bytes | None = None
    peer_certificates: list[x509.Certificate] = field(default_factory=list)
    resumed: bool = False
    # TLS 1.3: how a resumed handshake keyed itself (PskKeyExchangeMode), else None.
    resumption_mode: int | None = None
    hello_retried: bool = False
    early_data_accepted: bool = False
    # A server between accepting 0-RTT and the client's EndOfEarlyData.
    receiving_early_data: bool = False
    # TLS 1.2: RFC 7627 extended master secret in use.
    extended_master_secret: bool = False
    # The client's session for resuming later (from a ticket or the 1.2 handshake).
    session: Session | None = None
    # Secrets and randoms for exporters and the key log.
    master_secret12: bytes = b""
    exporter_randoms: bytes = b""
    client_random: bytes = b""


class HandshakeConnection(Protocol):
    """The connection as its handshake sees it: configuration, transcript, records.

    A handshake reads and calls these; what it decides goes in its own
    :class:`Negotiated`, never on the connection.
    """

    config: TlsConfig
    records: RecordLayer
    transcript: Transcript
    events: list[Event]

    @property
    def handshake_complete(self) -> bool: ...

    def send_handshake(
        self, msg_type: int, body: bytes, *, add_to_transcript: bool = True, rewrite: bool = True
    ) -> bytes: ...

    def send_alert(self, level: int, description: int) -> None: ...

    def key_schedule(self, hash_name: str, psk: bytes | None = None) -> KeySchedule13: ...

    def set_read_secret13(self, secret: bytes) -> None: ...

    def set_write_secret13(self, secret: bytes) -> None: ...

    def set_exporter_source13(self, master_secret: bytes, transcript_hash: bytes) -> None: ...

    def log_master_secret12(self, client_random: bytes, master_secret: bytes) -> None: ...

    def queue_application_data_first(self, data: bytes) -> None: ...

    def complete_handshake(self) -> None: ...


def finish_handshake(conn: HandshakeConnection, neg: Negotiated) -> None:
    """Mark the handshake complete and report what it negotiated, in one event."""
    assert neg.version is not None and neg.suite is not None
    conn.complete_handshake()
    conn.events.append(
        HandshakeComplete(
            version=neg.version,
            cipher_suite=neg.suite.suite,
            alpn_protocol=neg.alpn_protocol,
            server_name=neg.server_name,
            resumed=neg.resumed,
            early_data_accepted=neg.early_data_accepted,
            peer_certificates=list(neg.peer_certificates),
        )
    )
