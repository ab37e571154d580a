"""The TLS 1.2 half of the client: ECDHE with AEAD suites, extended master secret, tickets."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Protocol

from . import messages as m
from . import tls12
from .constants import (
    TLS12,
    AlertDescription,
    ContentType,
)
from .constants import (
    ExtensionType as X,
)
from .constants import (
    HandshakeType as H,
)
from .errors import TlsProtocolError
from .keyexchange import KeyShare
from .record import Protection
from .session import Session
from .states import Client12State, Handler, dispatch, unexpected
from .wire import u16, vec8, vec16

if TYPE_CHECKING:
    from .config import TlsConfig
    from .link import HandshakeConnection, Negotiated


class ClientHandshake13(Protocol):
    """What the TLS 1.2 client takes over from the handshake that began as 1.3-capable
    (``client.ClientHandshake``): its hello, its session, how it ends."""

    config: TlsConfig
    conn: HandshakeConnection
    negotiated: Negotiated
    random: bytes  # ClientHello.random
    session_id: bytes
    offered_session: Session | None
    server_chain: list[bytes]

    def usable_session(self) -> Session | None: ...

    def record_size_limit(self, data: bytes) -> None: ...

    def remember(self, session: Session) -> None: ...

    def complete(self) -> None: ...


_OFFERED12 = {
    X.SERVER_NAME,
    X.EC_POINT_FORMATS,
    X.EXTENDED_MASTER_SECRET,
    X.RENEGOTIATION_INFO,
    X.SESSION_TICKET,
    X.ALPN,
    X.RECORD_SIZE_LIMIT,
}


class Client12:
    def __init__(self, hs: ClientHandshake13) -> None:
        self.hs: ClientHandshake13 = weakref.proxy(
            hs
        )  # hs owns this object (see ClientHandshake.conn)
        self.conn = hs.conn
        self.negotiated = hs.negotiated  # the 1.3 machine's record, filled in here too
        self.config = hs.config
        self.state = Client12State.WAIT_CERTIFICATE
        self.server_random = b""
        self.expect_ticket = False
        self.abbreviated = False
        self.ems = True  # RFC 7627 negotiated (set from the ServerHello)
        self.server_group = 0
        self.server_public = b""
        self.requested_schemes: list[int] | None = None
        self.server_write: Protection | None = None
        self.ticket: bytes | None = None
        self.ticket_lifetime = 0
        self._client_write: Protection | None = None

    def server_hello(
        self, server_random: bytes, session_id: bytes, exts: dict[int, bytes], raw: bytes
    ) -> None:
        neg = self.negotiated
        conn = self.conn
        suite = neg.suite
        assert suite is not None
        self.server_random = server_random
        if not set(exts) <= _OFFERED12:
            raise TlsProtocolError(
                AlertDescription.UNSUPPORTED_EXTENSION,
                "ServerHello carries an extension we did not offer",
            )
        if X.RENEGOTIATION_INFO in exts and exts[X.RENEGOTIATION_INFO] != b"\x00":
            raise TlsProtocolError(
                AlertDescription.HANDSHAKE_FAILURE, "renegotiation_info is not empty"
            )
        self.ems = neg.extended_master_secret = X.EXTENDED_MASTER_SECRET in exts
        tls12.check_extended_master_secret(self.config, self.ems, "server")
        if X.ALPN in exts:
            chosen = m.parse_alpn(exts[X.ALPN])
            if len(chosen) != 1 or chosen[0] not in self.config.alpn_protocols:
                raise TlsProtocolError(
                    AlertDescription.ILLEGAL_PARAMETER,
                    "server chose an ALPN protocol we did not offer",
                )
            neg.alpn_protocol = chosen[0]
        if X.RECORD_SIZE_LIMIT in exts:
            self.hs.record_size_limit(exts[X.RECORD_SIZE_LIMIT])
        self.expect_ticket = X.SESSION_TICKET in exts
        conn.transcript.set_hash(suite.hash_name)
        conn.transcript.add(raw)
        session = self.hs.usable_session()
        if session is not None and session.version == TLS12 and session_id == self.hs.session_id:
            if session.cipher_suite != suite.suite:
                raise TlsProtocolError(
                    AlertDescription.ILLEGAL_PARAMETER, "resumed session with a different suite"
                )
            self.abbreviated = True
            neg.resumed = True
            neg.alpn_protocol = neg.alpn_protocol or session.alpn_protocol
            client_write, self.server_write = tls12.install_keys(
                conn, self.negotiated, session.secret, self.hs.random, server_random
            )
            self._client_write = client_write
            self.state = Client12State.WAIT_TICKET_OR_CCS
            return
        self.state = Client12State.WAIT_CERTIFICATE

    def handle_change_cipher_spec(self) -> None:
        if self.state not in (Client12State.WAIT_TICKET_OR_CCS, Client12State.WAIT_CCS):
            raise unexpected("change_cipher_spec out of order")
        if self.expect_ticket and self.ticket is None:
            raise unexpected("change_cipher_spec before the promised NewSessionTicket")
        self.conn.records.read = self.server_write
        self.state = Client12State.WAIT_FINISHED

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        dispatch(_HANDLERS12, self, self.state, msg_type, body, raw)

    def _certificate(self, body: bytes, raw: bytes) -> None:
        chain = m.parse_certificate12(body)
        if not chain:
            raise TlsProtocolError(AlertDescription.DECODE_ERROR, "server sent no certificate")
        self.negotiated.peer_certificates = m.check_peer_chain(
            self.config, chain, self.negotiated.server_name, peer_is_server=True
        )
        self.hs.server_chain = chain
        self.conn.transcript.add(raw)
        self.state = Client12State.WAIT_SKE

    def _hello_request(self, body: bytes, raw: bytes) -> None:
        # A renegotiation request is declined with a warning (RFC 5746 section 4.2).
        self.conn.send_alert(1, AlertDescription.NO_RENEGOTIATION)

    def _certificate_request(self, body: bytes, raw: bytes) -> None:
        self.requested_schemes = tls12.CertificateRequest12.parse(body).schemes
        self.conn.transcript.add(raw)
        self.state = Client12State.WAIT_DONE

    def _server_hello_done(self, body: bytes, raw: bytes) -> None:
        if body:
            raise TlsProtocolError(AlertDescription.DECODE_ERROR, "ServerHelloDone has a body")
        self.conn.transcript.add(raw)
        self._client_flight()

    def _new_session_ticket(self, body: bytes, raw: bytes) -> None:
        if not self.expect_ticket or self.ticket is not None:
            raise unexpected("NewSessionTicket the server did not promise")
        message = tls12.NewSessionTicket12.parse(body)
        self.ticket_lifetime, self.ticket = message.lifetime_hint_s, message.ticket
        self.conn.transcript.add(raw)

    def _server_key_exchange(self, body: bytes, raw: bytes) -> None:
        exchange = tls12.ServerKeyExchange12.parse(body)
        group, public = exchange.group, exchange.public
        if group not in self.config.groups or group not in tls12.GROUPS12:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER,
                f"server chose group {group:#06x}, which we did not offer",
            )
        leaf = self.negotiated.peer_certificates[0]
        params = tls12.ServerKeyExchange12.params(group, public)
        signed = self.hs.random + self.server_random + params
        scheme_body = u16(exchange.scheme) + vec16(exchange.signature)
        m.check_certificate_verify(
            scheme_body, leaf, signed, self.config.signature_schemes, tls13=False
        )
        self.server_group = group
        self.server_public = public
        self.conn.transcript.add(raw)
        self.state = Client12State.WAIT_CR_OR_DONE

    def _client_flight(self) -> None:
        conn = self.conn
        suite = self.negotiated.suite
        assert suite is not None
        certified = None
        scheme = None
        if self.requested_schemes is not None:
            for candidate in self.config.certificates:
                scheme = m.choose_scheme(
                    candidate,
                    self.requested_schemes,
                    self.config.signature_schemes,
                    tls13=False,
                )
                if scheme is not None:
                    certified = candidate
                    break
            conn.send_handshake(
                H.CERTIFICATE, m.certificate12(certified.chain_der if certified else [])
            )
        share = KeyShare(self.server_group, self.config.random)
        premaster = share.shared_secret(self.server_public)
        conn.send_handshake(H.CLIENT_KEY_EXCHANGE, vec8(share.public))
        master = tls12.master_secret(
            suite,
            premaster,
            self.ems,
            conn.transcript.digest(),
            self.hs.random,
            self.server_random,
        )
        client_write, self.server_write = tls12.install_keys(
            conn, self.negotiated, master, self.hs.random, self.server_random
        )
        if certified is not None and scheme is not None:
            content = bytes(conn.transcript.raw)
            verify = m.make_certificate_verify(certified, scheme, content, self.config.random)
            conn.send_handshake(H.CERTIFICATE_VERIFY, verify)
        self._send_ccs_finished(client_write)
        self.state = Client12State.WAIT_CCS

    def _send_ccs_finished(self, client_write: Protection) -> None:
        conn = self.conn
        conn.records.write_records(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
        conn.records.write = client_write
        if self.config.key_update_after_records is not None:
            client_write.limit = self.config.key_update_after_records
        conn.send_handshake(
            H.FINISHED, tls12.finished_data(conn, self.negotiated, b"client finished")
        )

    def _finished(self, body: bytes, raw: bytes) -> None:
        neg = self.negotiated
        conn = self.conn
        m.check_finished(tls12.finished_data(conn, self.negotiated, b"server finished"), body)
        conn.transcript.add(raw)
        if self.abbreviated:
            assert self._client_write is not None
            self._send_ccs_finished(self._client_write)
        self.state = Client12State.CONNECTED
        if self.ticket and self.ems:  # no resumption without EMS (RFC 7627 section 5.3)
            assert neg.suite is not None
            session = Session(
                version=TLS12,
                cipher_suite=neg.suite.suite,
                server_name=neg.server_name,
                alpn_protocol=neg.alpn_protocol,
                ticket=self.ticket,
                secret=neg.master_secret12,
                ticket_age_add=0,
                lifetime_s=self.ticket_lifetime or 7200,
                received_at_ms=self.config.clock.now_ns() // 1_000_000,
                peer_chain_der=list(self.hs.server_chain)
                or (self.hs.offered_session.peer_chain_der if self.hs.offered_session else []),
            )
            self.hs.remember(session)
        self.hs.complete()


# The TLS 1.2 handshake's transitions: (state, message type) -> handler.
_S = Client12State
_HANDLERS12: dict[tuple[Client12State, int], Handler[Client12]] = {
    (_S.WAIT_CERTIFICATE, H.CERTIFICATE): Client12._certificate,
    (_S.WAIT_SKE, H.SERVER_KEY_EXCHANGE): Client12._server_key_exchange,
    (_S.WAIT_CR_OR_DONE, H.CERTIFICATE_REQUEST): Client12._certificate_request,
    (_S.WAIT_CR_OR_DONE, H.SERVER_HELLO_DONE): Client12._server_hello_done,
    (_S.WAIT_DONE, H.SERVER_HELLO_DONE): Client12._server_hello_done,
    (_S.WAIT_TICKET_OR_CCS, H.NEW_SESSION_TICKET): Client12._new_session_ticket,
    (_S.WAIT_CCS, H.NEW_SESSION_TICKET): Client12._new_session_ticket,
    (_S.WAIT_FINISHED, H.FINISHED): Client12._finished,
    (_S.CONNECTED, H.HELLO_REQUEST): Client12._hello_request,
}
