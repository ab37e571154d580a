"""What :meth:`TlsConnection.receive` reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509


class Event:
    """Base class of engine events."""


@dataclass
class HandshakeComplete(Event):
    version: int
    cipher_suite: int
    alpn_protocol: bytes | None
    server_name: str | None
    resumed: bool
    early_data_accepted: bool
    peer_certificates: list[x509.Certificate] = field(default_factory=list)


@dataclass
class ApplicationData(Event):
    data: bytes


@dataclass
class EarlyData(Event):
    """0-RTT data the server accepted (it may be a replay across servers; see RFC 8446 8)."""

    data: bytes


@dataclass
class NewSession(Event):
    """The server sent a ticket; pass ``session`` to a later connection to resume."""

    session: object


@dataclass
class KeyUpdated(Event):
    """The peer moved to new traffic keys; ``peer_requested`` means we answered."""

    peer_requested: bool


@dataclass
class ConnectionClosed(Event):
    """The peer sent close_notify: no more data will arrive."""
