"""looming.tls: a sans-I/O TLS 1.3 and 1.2 engine, and TLS over any looming Flow.

The engine (:class:`TlsConnection`) is one object per connection, client or
server: ``receive(bytes) -> list[Event]``, ``send_application_data(bytes)``,
``bytes_to_send() -> bytes``, ``close()``. It does no I/O; time and
randomness come from the Clock and Random devices in :class:`TlsConfig`.

Wrapping a flow (any :class:`looming.devices.Flow`: host sockets, looming's
own TCP stack, vchan)::

    host = host_devices()  # from looming.unix; a unikernel passes its own devices
    config = TlsConfig(
        trust=TrustStore.from_pem_file("ca.pem"),
        alpn_protocols=[b"http/1.1"],
        random=host.random,
        clock=host.clock,
    )
    flow = await tls_client(tcp_flow, config, server_name="example.org")
    await flow.write(b"GET / HTTP/1.1\\r\\n...")

    server_config = TlsConfig(
        certificates=[CertifiedKey.from_pem_files("cert.pem", "key.pem")],
        random=host.random,
        clock=host.clock,
    )
    flow = await tls_server(tcp_flow, server_config)

:class:`TlsFlow` implements :class:`looming.devices.Flow`, so anything that
speaks Flow (HTTP, the store's sync) runs over TLS unchanged. The ``tls``
device of the configuration DSL is meant to be built from :class:`TlsConfig`
and the two factories above: ``tls_client(flow, config, server_name=...)`` and
``tls_server(flow, config)``, each returning a ready :class:`TlsFlow`.

With asyncio streams directly: ``await open_connection(host, port, config)``
and ``await start_server(handler, host, port, config)``. For code written
against Python's ``ssl`` (asyncio's ``ssl=``, httpx's ``verify=``,
``websockets``), :class:`TlsContext` stands in for an ``ssl.SSLContext`` and
makes ``ssl.SSLObject``-shaped objects (see :mod:`looming.tls.compat`).

Versions TLS 1.3 (RFC 8446) and 1.2 (RFC 5246 with RFC 7627 extended master
secret, ECDHE and AEAD suites only, RFC 5746 signalling, no renegotiation).
Groups X25519, secp256r1, secp384r1, X25519MLKEM768; suites AES-128-GCM,
AES-256-GCM, ChaCha20-Poly1305; signatures RSA-PSS, RSA-PKCS1 (1.2 and
certificates), RSA-PSS keys (rsa_pss_pss_*), ECDSA P-256/P-384, Ed25519, Ed448. Resumption by tickets (1.3
psk_dhe_ke, or psk_ke when ``TlsConfig.psk_key_exchange_modes`` lists it;
1.2 RFC 5077), 0-RTT only when both ``TlsConfig.enable_early_data``
(client) and ``TlsConfig.max_early_data`` (server) opt in, with single-use
tickets against replay. Errors: :class:`TlsProtocolError` (we sent the named
alert), :class:`TlsAlertReceived`, :class:`CertificateError`,
:class:`TlsTruncated` (the transport ended without close_notify).

Not supported: renegotiation, TLS 1.2 resumption by session ID (tickets
only), external (non-ticket) PSKs, post-handshake client authentication,
DTLS. Certificate compression (RFC 8879) is used whenever the peer offers
it (:mod:`looming.tls.certcompress`); servers staple OCSP responses given
from a file (:mod:`looming.tls.ocsp`).

``looming tls serve|connect`` (also ``python -m looming.tls``; see
:mod:`looming.tls.cli`) runs a server or client from the shell, in the
spirit of ``openssl s_server`` / ``s_client``.

The engine replays RFC 8448's "Simple 1-RTT Handshake" byte for byte as
client and as server (tests/tls/test_rfc8448_replay.py), with its randomness
injected through a scripted Random device and ``TlsConfig.handshake_rewriter``
(tests only) for what the trace fixes differently.
"""

from __future__ import annotations

from .certs import CertifiedKey, TrustStore, spki_sha256
from .compat import TlsContext, TlsObject
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
from .flow import StreamFlow, TlsFlow, open_connection, start_server, tls_client, tls_server
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
    "StreamFlow",
    "TlsAlertReceived",
    "TlsClosed",
    "TlsConfig",
    "TlsConnection",
    "TlsContext",
    "TlsError",
    "TlsFlow",
    "TlsObject",
    "TlsProtocolError",
    "TlsTruncated",
    "TrustStore",
    "open_connection",
    "spki_sha256",
    "start_server",
    "tls_client",
    "tls_server",
]
