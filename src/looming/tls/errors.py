"""TLS errors. Nothing else escapes the engine.

:class:`TlsProtocolError` means *this* side detected a problem and queued the
fatal alert named by ``description`` (flush it with ``bytes_to_send()``);
:class:`TlsAlertReceived` means the peer sent a fatal alert.
"""

from __future__ import annotations

from looming.errors import NetworkError

from .constants import AlertDescription


class TlsError(NetworkError):
    """Base class of every TLS failure."""


class TlsProtocolError(TlsError):
    """The peer broke the protocol (or a check failed); we send ``description``."""

    def __init__(self, description: AlertDescription, message: str) -> None:
        self.description = description
        self.message = message
        super().__init__(f"{message} (alert {description.name.lower()})")


class CertificateError(TlsProtocolError):
    """The peer's certificate chain failed validation; ``reason`` says why."""

    def __init__(self, description: AlertDescription, reason: str) -> None:
        self.reason = reason
        super().__init__(description, f"certificate rejected: {reason}")


class TlsAlertReceived(TlsError):
    """The peer aborted the connection with a fatal alert."""

    def __init__(self, description: int) -> None:
        self.description = description
        try:
            name = AlertDescription(description).name.lower()
        except ValueError:
            name = f"unknown alert {description}"
        super().__init__(f"peer sent fatal alert: {name}")


class TlsClosed(TlsError):
    """The connection is closed; no more data can be sent or received."""


class TlsTruncated(TlsError):
    """The transport ended without the peer's close_notify (possible truncation)."""
