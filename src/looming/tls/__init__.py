"""looming.tls: a sans-I/O TLS 1.3 and 1.2 engine, and TLS over any looming Flow.

The engine (:class:`TlsConnection`) is one object per connection, client or
server: ``receive(bytes) -> list[Event]``, ``send_application_data(bytes)``,
``bytes_to_send() -> bytes``, ``close()``. It does no I/O; time and
randomness come from the Clock and Random devices in :class:`TlsConfig`.

Wrapping a flow::

    config = TlsConfig(trust=TrustStore.from_pem_file("ca.pem"), alpn_protocols=[b"http/1.1"])
    flow = await tls_client(tcp_flow, config, server_name="example.org")
    await flow.write(b"GET / HTTP/1.1\\r\\n...")

    server_config = TlsConfig(certificates=[CertifiedKey.from_pem_files("cert.pem", "key.pem")])
    flow = await tls_server(tcp_flow, server_config)

:class:`TlsFlow` implements :class:`looming.devices.Flow`, so anything that
speaks Flow (HTTP, the store's sync) runs over TLS unchanged. The ``tls``
device of the configuration DSL is built from :class:`TlsConfig` and the two
factories above.
"""

from __future__ import annotations

from .certs import CertifiedKey, TrustStore, spki_sha256
from .config import TlsConfig
from .constants import TLS12, TLS13, AlertDescription, CipherSuite, NamedGroup, SignatureScheme
from .engine import TlsConnection
from .errors import (
    CertificateError,
    TlsAlertReceived,
    TlsClosed,
    TlsError,
    TlsProtocolError,
    TlsTruncated,
)
from .events import (
    ApplicationData,
    ConnectionClosed,
    EarlyData,
    Event,
    HandshakeComplete,
    KeyUpdated,
    NewSession,
)
from .session import ClientSessionCache, Session

__all__ = [
    "TLS12",
    "TLS13",
    "AlertDescription",
    "ApplicationData",
    "CertificateError",
    "CertifiedKey",
    "CipherSuite",
    "ClientSessionCache",
    "ConnectionClosed",
    "EarlyData",
    "Event",
    "HandshakeComplete",
    "KeyUpdated",
    "NamedGroup",
    "NewSession",
    "Session",
    "SignatureScheme",
    "TlsAlertReceived",
    "TlsClosed",
    "TlsConfig",
    "TlsConnection",
    "TlsError",
    "TlsProtocolError",
    "TlsTruncated",
    "TrustStore",
    "spki_sha256",
]
