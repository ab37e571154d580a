"""looming TLS behind the shapes Python's ecosystem already speaks: ``ssl.SSLContext``
and ``ssl.SSLObject``.

:class:`TlsContext` stands where an ``ssl.SSLContext`` is expected and makes
:class:`TlsObject` instances through ``wrap_bio``, the memory-BIO interface on
which asyncio's own TLS transport (``asyncio.sslproto``), anyio's ``TLSStream``
and so httpx/httpcore are built. So, unchanged::

    devices = host_devices()  # from looming.unix: the host's clock and randomness
    config = TlsConfig(
        trust=TrustStore.from_pem_file("ca.pem"), random=devices.random, clock=devices.clock
    )
    context = TlsContext(config)
    reader, writer = await asyncio.open_connection(host, 443, ssl=context)
    async with httpx.AsyncClient(verify=context) as client: ...
    async with websockets.connect("wss://...", ssl=context) as ws: ...

``loop.create_connection(factory, host, port, ssl=context)`` and
``asyncio.start_server(..., ssl=context)`` give the asyncio transport/protocol
pair: asyncio's ``SSLProtocol`` drives a :class:`TlsObject` between the socket
transport and the application's protocol. (``loop.start_tls`` insists on a
real ``ssl.SSLContext`` and is not supported.)

Errors are raised as the ``ssl`` module's: ``ssl.SSLWantReadError`` when more
input is needed, ``ssl.SSLCertVerificationError`` for a refused certificate,
``ssl.SSLEOFError`` for a transport that ended without close_notify, and
``ssl.SSLError`` (its ``reason`` the alert) for every other failure, after the
alert has been queued on the outgoing BIO. Verification follows the
:class:`TlsConfig`, not ``verify_mode``/``check_hostname`` (setting those to
CERT_NONE/False turns verification off, as with ``ssl``).
"""

from __future__ import annotations

import copy
import ssl
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .config import TlsConfig
from .constants import TLS12, TLS13, CipherSuite
from .engine import TlsConnection
from .errors import CertificateError, TlsAlertReceived, TlsError, TlsProtocolError
from .events import ApplicationData, ConnectionClosed, Event, NewSession
from .session import Session

_VERSION_NAMES = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}
# OpenSSL's names for the suites, as ssl.SSLObject.cipher() reports them.
_OPENSSL_SUITE_NAMES = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256",
    0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256",
    0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384",
    0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305",
    0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305",
}


class TlsContext:
    """An ``ssl.SSLContext`` stand-in over a :class:`TlsConfig` (see the module docstring).

    One context serves many connections; a client context keeps a session
    cache, so later connections to a server resume.
    """

    sni_callback = None
    post_handshake_auth = False

    def __init__(self, config: TlsConfig, *, server_side: bool = False) -> None:
        self.config = config
        self.server_side = server_side
        self.options = int(ssl.OP_NO_COMPRESSION)
        self.minimum_version = ssl.TLSVersion.TLSv1_2
        self.maximum_version = ssl.TLSVersion.TLSv1_3
        if not server_side and config.session_cache is None:
            from .session import ClientSessionCache

            config.session_cache = ClientSessionCache()

    @property
    def protocol(self) -> ssl._SSLMethod:
        return ssl.PROTOCOL_TLS_SERVER if self.server_side else ssl.PROTOCOL_TLS_CLIENT

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return ssl.CERT_REQUIRED if self.config.verify_peer else ssl.CERT_NONE

    @verify_mode.setter
    def verify_mode(self, mode: ssl.VerifyMode) -> None:
        self.config.verify_peer = mode != ssl.CERT_NONE

    @property
    def check_hostname(self) -> bool:
        return self.config.verify_peer and not self.server_side

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        # Hostname checking is part of verification here; only turning both off is possible.
        if not value and not self.config.verify_peer:
            return
        if value and not self.server_side:
            self.config.verify_peer = True

    def set_alpn_protocols(self, protocols: Iterable[str]) -> None:
        self.config.alpn_protocols = [p.encode() for p in protocols]

    def __copy__(self) -> TlsContext:
        duplicate = TlsContext.__new__(TlsContext)
        duplicate.__dict__.update(self.__dict__)
        duplicate.config = copy.copy(self.config)
        return duplicate

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: Any = None,
    ) -> TlsObject:
        if isinstance(server_hostname, bytes):  # anyio passes the IDNA-encoded name
            server_hostname = server_hostname.decode("ascii")
        if server_side != self.server_side:
            role = "server" if self.server_side else "client"
            raise ValueError(f"this TlsContext was made for the {role} side")
        return TlsObject(self, incoming, outgoing, server_side, server_hostname, session)


class TlsObject:
    """An ``ssl.SSLObject`` stand-in: TLS between two ``ssl.MemoryBIO`` buffers."""

    def __init__(
        self,
        context: TlsContext,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool,
        server_hostname: str | None,
        session: Session | None = None,
    ) -> None:
        self.context = context
        self.server_side = server_side
        self.server_hostname = server_hostname
        self._incoming = incoming
        self._outgoing = outgoing
        self.connection = TlsConnection(
            context.config,
            server_side=server_side,
            server_name=server_hostname,
            session=session if isinstance(session, Session) else None,
        )
        self._plaintext = bytearray()
        self._peer_closed = False
        self._sessions: list[Session] = []
        self._flush()

    # --- the engine between the two BIOs -------------------------------------------

    def _flush(self) -> None:
        out = self.connection.bytes_to_send()
        if out:
            self._outgoing.write(out)

    def _absorb(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ApplicationData):
                self._plaintext += event.data
            elif isinstance(event, ConnectionClosed):
                self._peer_closed = True
            elif isinstance(event, NewSession) and isinstance(event.session, Session):
                self._sessions.append(event.session)

    def _pump(self) -> None:
        """Feed what the incoming BIO holds to the engine; ssl-style errors on failure."""
        data = self._incoming.read()
        try:
            if data:
                self._absorb(self.connection.receive(data))
        except TlsError as exc:
            self._flush()
            raise _as_ssl_error(exc) from exc
        self._flush()
        if not data and self._incoming.eof and not self._peer_closed and not self.connection.closed:
            raise ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol")

    # --- ssl.SSLObject ------------------------------------------------------------------

    def do_handshake(self) -> None:
        self._pump()
        if not self.connection.handshake_complete:
            raise ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "The operation did not complete")

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # ssl's names
        if not self._plaintext and not self._peer_closed:
            self._pump()
        if not self._plaintext:
            if self._peer_closed:
                return 0 if buffer is not None else b""
            raise ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "The operation did not complete")
        size = min(len, self._plaintext.__len__())
        if buffer is not None:
            size = min(size, memoryview(buffer).nbytes)
            memoryview(buffer).cast("B")[:size] = self._plaintext[:size]
            del self._plaintext[:size]
            return size
        chunk = bytes(self._plaintext[:size])
        del self._plaintext[:size]
        return chunk

    def write(self, data: Any) -> int:
        payload = bytes(data)
        try:
            self.connection.send_application_data(payload)
        except TlsError as exc:
            self._flush()
            raise _as_ssl_error(exc) from exc
        self._flush()
        return payload.__len__()

    def unwrap(self) -> None:
        """Send close_notify; done once the peer's arrives (until then SSLWantReadError)."""
        self.connection.close()
        self._flush()
        if not self._peer_closed:
            self._pump()
        if not self._peer_closed:
            raise ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "The operation did not complete")

    def pending(self) -> int:
        return self._plaintext.__len__()

    def getpeercert(self, binary_form: bool = False) -> Any:
        if not self.connection.handshake_complete:
            raise ValueError("handshake not done yet")
        chain = self.connection.peer_certificates
        if not chain:
            return None
        if binary_form:
            return chain[0].public_bytes(Encoding.DER)
        return certificate_dict(chain[0]) if self.context.config.verify_peer else {}

    def selected_alpn_protocol(self) -> str | None:
        alpn = self.connection.alpn_protocol
        return alpn.decode("ascii", "replace") if alpn is not None else None

    def selected_npn_protocol(self) -> None:
        return None

    def version(self) -> str | None:
        if not self.connection.handshake_complete:
            return None
        return _VERSION_NAMES.get(self.connection.version or 0)

    def cipher(self) -> tuple[str, str, int] | None:
        suite = self.connection.suite
        if suite is None or not self.connection.handshake_complete:
            return None
        name = _OPENSSL_SUITE_NAMES.get(int(suite.suite)) or CipherSuite(suite.suite).name
        return name, self.version() or "", suite.key_length * 8

    def shared_ciphers(self) -> list[tuple[str, str, int]] | None:
        current = self.cipher()
        return [current] if current is not None else None

    def compression(self) -> None:
        return None

    def get_channel_binding(self, cb_type: str = "tls-unique") -> None:
        return None

    def get_verified_chain(self) -> list[x509.Certificate]:
        return list(self.connection.peer_certificates)

    @property
    def session(self) -> Session | None:
        """The newest session the server sent (client side), for ``session=`` later."""
        return self._sessions[-1] if self._sessions else None

    @property
    def session_reused(self) -> bool:
        return self.connection.resumed


def _as_ssl_error(exc: TlsError) -> ssl.SSLError:
    if isinstance(exc, CertificateError):
        error: ssl.SSLError = ssl.SSLCertVerificationError(
            1, f"certificate verify failed: {exc.reason}"
        )
        error.verify_message = exc.reason  # type: ignore[attr-defined]
        error.verify_code = 1  # type: ignore[attr-defined]
        return error
    if isinstance(exc, TlsProtocolError):
        error = ssl.SSLError(1, str(exc))
        error.reason = exc.description.name
        return error
    if isinstance(exc, TlsAlertReceived):
        error = ssl.SSLError(1, str(exc))
        error.reason = f"ALERT_{exc.description}"
        return error
    return ssl.SSLError(1, str(exc))


_NAME_KEYS = {
    "CN": "commonName",
    "O": "organizationName",
    "OU": "organizationalUnitName",
    "C": "countryName",
    "L": "localityName",
    "ST": "stateOrProvinceName",
}


def _name_tuple(name: x509.Name) -> tuple[tuple[tuple[str, str], ...], ...]:
    out = []
    for rdn in name.rdns:
        pairs = []
        for attribute in rdn:
            short = attribute.rfc4514_attribute_name
            pairs.append((_NAME_KEYS.get(short, short), str(attribute.value)))
        out.append(tuple(pairs))
    return tuple(out)


def certificate_dict(cert: x509.Certificate) -> dict[str, Any]:
    """The certificate as ``ssl.SSLSocket.getpeercert()`` describes it."""
    described: dict[str, Any] = {
        "subject": _name_tuple(cert.subject),
        "issuer": _name_tuple(cert.issuer),
        "version": cert.version.value + 1,
        "serialNumber": f"{cert.serial_number:X}",
        "notBefore": cert.not_valid_before_utc.strftime("%b %d %H:%M:%S %Y GMT"),
        "notAfter": cert.not_valid_after_utc.strftime("%b %d %H:%M:%S %Y GMT"),
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return described
    names: list[tuple[str, str]] = [("DNS", n) for n in san.get_values_for_type(x509.DNSName)]
    names += [("IP Address", str(a)) for a in san.get_values_for_type(x509.IPAddress)]
    described["subjectAltName"] = tuple(names)
    return described
