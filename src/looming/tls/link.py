"""What a handshake may read and change of its connection.

The handshake machines (``client``, ``server`` and their TLS 1.2 and PSK parts)
are driven by the engine and act on it only through this interface, so they
depend on it, not on ``engine``, and the engine imports them without a circle.
``engine.TlsConnection`` is the one implementation (mypy checks it where the
engine builds its handshake).
"""

from __future__ import annotations

from typing import Protocol

from cryptography import x509

from .config import TlsConfig
from .events import Event, HandshakeComplete
from .keyschedule import KeySchedule13, Transcript
from .record import RecordLayer
from .session import Session
from .suites import SuiteInfo


class HandshakeConnection(Protocol):
    """The connection as its handshake sees it: negotiated values, transcript, records."""

    config: TlsConfig
    server_name: str | None
    records: RecordLayer
    transcript: Transcript
    events: list[Event]
    # What the handshake negotiates.
    version: int | None
    suite: SuiteInfo | None
    alpn_protocol: bytes | None
    peer_certificates: list[x509.Certificate]
    resumed: bool
    resumption_mode: int | None
    hello_retried: bool
    early_data_accepted: bool
    receiving_early_data: bool
    handshake_complete: bool
    session: Session | None
    # Secrets and randoms for exporters and the key log.
    master_secret12: bytes
    exporter_randoms: bytes
    client_random: bytes

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


def finish_handshake(conn: HandshakeConnection) -> None:
    """Mark the handshake complete and report what it negotiated, in one event."""
    assert conn.version is not None and conn.suite is not None
    conn.complete_handshake()
    conn.events.append(
        HandshakeComplete(
            version=conn.version,
            cipher_suite=conn.suite.suite,
            alpn_protocol=conn.alpn_protocol,
            server_name=conn.server_name,
            resumed=conn.resumed,
            early_data_accepted=conn.early_data_accepted,
            peer_certificates=list(conn.peer_certificates),
        )
    )
