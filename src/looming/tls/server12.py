"""The TLS 1.2 half of the server: ECDHE with AEAD suites, extended master secret, tickets."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, NamedTuple, Protocol

from . import messages as m
from . import ocsp, tls12
from .certs import CertifiedKey, parse_chain
from .constants import (
    DOWNGRADE_TLS12,
    EMPTY_RENEGOTIATION_INFO_SCSV,
    TLS12,
    TLS13,
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
from .link import finish_handshake
from .messages import ClientHello, ServerHello
from .record import Protection
from .session import TicketState
from .signing import sign
from .states import Handler, Server12State, dispatch, unexpected
from .suites import SUITES
from .wire import Reader, u16, vec8

if TYPE_CHECKING:
    from .config import TlsConfig
    from .link import HandshakeConnection, Negotiated


class ServerHandshake13(Protocol):
    """What the TLS 1.2 server takes from the handshake that read the ClientHello
    (``server.ServerHandshake``): its choices of protocol, certificate and limits."""

    config: TlsConfig
    conn: HandshakeConnection
    negotiated: Negotiated
    client_schemes: list[int]

    def choose_alpn(self, hello: ClientHello) -> bytes | None: ...

    def record_size_limit(self, data: bytes) -> int | None: ...

    def choose_certificate(
        self, tls13: bool, allowed_auth: str | None = None, client_groups: list[int] | None = None
    ) -> tuple[CertifiedKey, int]: ...


class _Groups(NamedTuple):
    client_groups: list[int]  # the client's supported_groups
    chosen: int  # the ECDHE group for ServerKeyExchange


class Server12:
    def __init__(self, hs: ServerHandshake13) -> None:
        self.hs: ServerHandshake13 = weakref.proxy(
            hs
        )  # hs owns this object (see ServerHandshake.conn)
        self.conn = hs.conn
        self.negotiated = hs.negotiated  # the 1.3 machine's record, filled in here too
        self.config = hs.config
        self.state = Server12State.WAIT_CKE
        self.client_random = b""
        self.server_random = b""
        self.share: KeyShare | None = None
        self.requested_client_cert = False
        self.client_chain: list[bytes] = []
        self.issue_ticket = False
        self.client_write: Protection | None = None
        self.server_write: Protection | None = None
        self.abbreviated = False
        self.ems = True  # RFC 7627 negotiated (set from the ClientHello)

    def client_hello(self, hello: ClientHello) -> None:
        """Negotiate from the ClientHello, then resume by ticket or run a full handshake."""
        neg = self.negotiated
        conn = self.conn
        self.client_random = hello.random
        secure_reneg, group = self._check_client_hello(hello)
        alpn = neg.alpn_protocol = self.hs.choose_alpn(hello)
        exts = hello.extensions
        state = self._open_ticket(hello)
        # Tickets only for EMS sessions: they carry no EMS flag (RFC 7627 section 5.3).
        self.issue_ticket = (
            self.ems and X.SESSION_TICKET in exts and self.config.session_tickets > 0
        )
        if state is not None:
            suite_id, certified, scheme = state.cipher_suite, None, 0
        else:
            suite_id, certified, scheme = self._choose_suite(hello, group.client_groups)
        neg.suite = SUITES[suite_id]
        conn.transcript.set_hash(neg.suite.hash_name)
        conn.transcript.add(hello.raw)
        self.server_random = self.config.random.bytes(24) + (
            DOWNGRADE_TLS12 if TLS13 in self.config.versions else self.config.random.bytes(8)
        )
        server_hello = ServerHello(
            self.server_random,
            hello.session_id if state is not None else b"",
            suite_id,
            self._server_hello_extensions(exts, secure_reneg, alpn, certified),
        )
        conn.send_handshake(H.SERVER_HELLO, server_hello.emit())
        if state is not None:
            self._resume(state)
            return
        assert certified is not None
        self._send_full_flight(exts, certified, scheme, group.chosen)

    def _check_client_hello(self, hello: ClientHello) -> tuple[bool, _Groups]:
        """Whether the client signals secure renegotiation, and the ECDHE group."""
        exts = hello.extensions
        secure_reneg = EMPTY_RENEGOTIATION_INFO_SCSV in hello.cipher_suites
        if X.RENEGOTIATION_INFO in exts:
            if exts[X.RENEGOTIATION_INFO] != b"\x00":
                raise TlsProtocolError(
                    AlertDescription.HANDSHAKE_FAILURE, "renegotiation_info is not empty"
                )
            secure_reneg = True
        self.ems = self.negotiated.extended_master_secret = X.EXTENDED_MASTER_SECRET in exts
        tls12.check_extended_master_secret(self.config, self.ems, "client")
        if X.EC_POINT_FORMATS in exts and 0 not in Reader(exts[X.EC_POINT_FORMATS]).vector(
            1, minimum=1
        ):
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "client does not accept uncompressed points"
            )
        client_groups = (
            Reader(exts[X.SUPPORTED_GROUPS]).u16_list(2, minimum=2)
            if X.SUPPORTED_GROUPS in exts
            else [23]
        )
        ours = (g for g in self.config.groups if g in tls12.GROUPS12)
        group = next((g for g in ours if g in client_groups), None)
        if group is None:
            raise TlsProtocolError(AlertDescription.HANDSHAKE_FAILURE, "no ECDHE group in common")
        if not self.hs.client_schemes:
            # RFC 5246 7.4.1.4.1: without the extension, assume SHA-1 based; we do not sign with SHA-1.
            raise TlsProtocolError(
                AlertDescription.HANDSHAKE_FAILURE, "ClientHello without signature_algorithms"
            )
        return secure_reneg, _Groups(client_groups, group)

    def _open_ticket(self, hello: ClientHello) -> TicketState | None:
        """The session of a ticket we can resume (RFC 5077), if the client sent one."""
        exts = hello.extensions
        config = self.config
        ticket = exts.get(X.SESSION_TICKET)
        if not (self.ems and ticket and config.ticket_keys):
            return None
        state = config.ticket_keys.open(ticket)
        now_ms = config.clock.now_ns() // 1_000_000
        if state is None or (
            state.version != TLS12
            or state.cipher_suite not in hello.cipher_suites
            or state.cipher_suite not in config.cipher_suites
            or now_ms - state.issued_ms > state.lifetime_s * 1000
        ):
            return None
        return state

    def _server_hello_extensions(
        self,
        exts: dict[int, bytes],
        secure_reneg: bool,
        alpn: bytes | None,
        certified: CertifiedKey | None,
    ) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        if secure_reneg:
            out[X.RENEGOTIATION_INFO] = vec8(b"")
        if self.ems:
            out[X.EXTENDED_MASTER_SECRET] = b""
        if X.EC_POINT_FORMATS in exts:
            out[X.EC_POINT_FORMATS] = vec8(b"\x00")
        if alpn is not None:
            out[X.ALPN] = m.alpn_body([alpn])
        if self.issue_ticket:
            out[X.SESSION_TICKET] = b""
        if ocsp.server_hello_extension12(exts, certified):
            out[X.STATUS_REQUEST] = b""  # a CertificateStatus follows
        if X.RECORD_SIZE_LIMIT in exts:
            own = self.hs.record_size_limit(exts[X.RECORD_SIZE_LIMIT])
            if own is not None:
                out[X.RECORD_SIZE_LIMIT] = u16(own)
        return out

    def _resume(self, state: TicketState) -> None:
        """The abbreviated handshake: keys from the ticket's master secret, our Finished first."""
        conn = self.conn
        self.abbreviated = True
        self.negotiated.resumed = True
        if state.client_chain_der:
            self.negotiated.peer_certificates = parse_chain(state.client_chain_der)
            self.client_chain = state.client_chain_der
        self.client_write, self.server_write = tls12.install_keys(
            conn, self.negotiated, state.secret, self.client_random, self.server_random
        )
        self._send_ticket_ccs_finished()
        self.state = Server12State.WAIT_CCS

    def _send_full_flight(
        self, exts: dict[int, bytes], certified: CertifiedKey, scheme: int, group: int
    ) -> None:
        """Certificate, CertificateStatus, ServerKeyExchange, CertificateRequest, ServerHelloDone."""
        conn = self.conn
        config = self.config
        conn.send_handshake(H.CERTIFICATE, m.certificate12(certified.chain_der))
        ocsp.send_status12(conn, exts, certified)
        self.share = KeyShare(group, config.random)
        params = tls12.ServerKeyExchange12.params(group, self.share.public)
        signed = self.client_random + self.server_random + params
        signature = sign(certified.key, scheme, signed, config.random)
        exchange = tls12.ServerKeyExchange12(group, self.share.public, scheme, signature)
        conn.send_handshake(H.SERVER_KEY_EXCHANGE, exchange.emit())
        if config.client_trust is not None or config.require_client_certificate:
            self.requested_client_cert = True
            request = tls12.CertificateRequest12(list(config.signature_schemes))
            conn.send_handshake(H.CERTIFICATE_REQUEST, request.emit())
        conn.send_handshake(H.SERVER_HELLO_DONE, b"")
        self.state = (
            Server12State.WAIT_CERTIFICATE if self.requested_client_cert else Server12State.WAIT_CKE
        )

    def _choose_suite(
        self, hello: ClientHello, client_groups: list[int]
    ) -> tuple[int, CertifiedKey, int]:
        for suite_id in self.config.cipher_suites:
            info = SUITES[suite_id]
            if info.version != TLS12 or suite_id not in hello.cipher_suites:
                continue
            try:
                certified, scheme = self.hs.choose_certificate(
                    tls13=False, allowed_auth=info.auth, client_groups=client_groups
                )
            except TlsProtocolError:
                continue
            return suite_id, certified, scheme
        raise TlsProtocolError(
            AlertDescription.HANDSHAKE_FAILURE,
            "no TLS 1.2 ECDHE AEAD suite fits the client's offer and our certificates",
        )

    def handle_change_cipher_spec(self) -> None:
        if self.state != Server12State.WAIT_CCS:
            raise unexpected("change_cipher_spec out of order")
        self.conn.records.read = self.client_write
        self.state = Server12State.WAIT_FINISHED

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        dispatch(_HANDLERS12, self, self.state, msg_type, body, raw)

    def _after_handshake(self, body: bytes, raw: bytes) -> None:
        raise TlsProtocolError(AlertDescription.NO_RENEGOTIATION, "renegotiation is not supported")

    def _certificate(self, body: bytes, raw: bytes) -> None:
        chain = m.parse_certificate12(body)
        if not chain and self.config.require_client_certificate:
            raise TlsProtocolError(AlertDescription.HANDSHAKE_FAILURE, "client sent no certificate")
        if chain:
            self.negotiated.peer_certificates = m.check_peer_chain(
                self.config, chain, None, peer_is_server=False
            )
            self.client_chain = chain
        self.conn.transcript.add(raw)
        self.state = Server12State.WAIT_CKE

    def _certificate_verify(self, body: bytes, raw: bytes) -> None:
        conn = self.conn
        m.check_certificate_verify(
            body,
            self.negotiated.peer_certificates[0],
            bytes(conn.transcript.raw),
            self.config.signature_schemes,
            tls13=False,
        )
        conn.transcript.add(raw)
        self.state = Server12State.WAIT_CCS

    def _client_key_exchange(self, body: bytes, raw: bytes) -> None:
        conn = self.conn
        assert self.share is not None and self.negotiated.suite is not None
        r = Reader(body)
        public = r.vector(1, minimum=1)
        r.expect_end("ClientKeyExchange")
        premaster = self.share.shared_secret(public)
        conn.transcript.add(raw)
        master = tls12.master_secret(
            self.negotiated.suite,
            premaster,
            self.ems,
            conn.transcript.digest(),
            self.client_random,
            self.server_random,
        )
        self.client_write, self.server_write = tls12.install_keys(
            conn, self.negotiated, master, self.client_random, self.server_random
        )
        self.state = Server12State.WAIT_CV if self.client_chain else Server12State.WAIT_CCS

    def _send_ticket_ccs_finished(self) -> None:
        neg = self.negotiated
        conn = self.conn
        config = self.config
        assert (
            neg.suite is not None
            and config.ticket_keys is not None
            and self.server_write is not None
        )
        if self.issue_ticket:
            state = TicketState(
                version=TLS12,
                cipher_suite=neg.suite.suite,
                secret=neg.master_secret12,
                ticket_age_add=0,
                issued_ms=config.clock.now_ns() // 1_000_000,
                lifetime_s=config.ticket_lifetime_s,
                max_early_data=0,
                alpn_protocol=neg.alpn_protocol or b"",
                server_name=neg.server_name or "",
                ticket_id=config.random.bytes(16),
                client_chain_der=list(self.client_chain),
            )
            ticket = tls12.NewSessionTicket12(
                config.ticket_lifetime_s, config.ticket_keys.seal(state)
            )
            conn.send_handshake(H.NEW_SESSION_TICKET, ticket.emit())
        conn.records.write_records(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
        conn.records.write = self.server_write
        if config.key_update_after_records is not None:
            self.server_write.limit = config.key_update_after_records
        conn.send_handshake(
            H.FINISHED, tls12.finished_data(conn, self.negotiated, b"server finished")
        )

    def _finished(self, body: bytes, raw: bytes) -> None:
        conn = self.conn
        m.check_finished(tls12.finished_data(conn, self.negotiated, b"client finished"), body)
        conn.transcript.add(raw)
        if not self.abbreviated:
            self._send_ticket_ccs_finished()
        self.state = Server12State.CONNECTED
        finish_handshake(conn, self.negotiated)


# The TLS 1.2 handshake's transitions: (state, message type) -> handler.
_S = Server12State
_HANDLERS12: dict[tuple[Server12State, int], Handler[Server12]] = {
    (_S.WAIT_CERTIFICATE, H.CERTIFICATE): Server12._certificate,
    (_S.WAIT_CKE, H.CLIENT_KEY_EXCHANGE): Server12._client_key_exchange,
    (_S.WAIT_CV, H.CERTIFICATE_VERIFY): Server12._certificate_verify,
    (_S.WAIT_FINISHED, H.FINISHED): Server12._finished,
    # Once connected, any handshake message would start a renegotiation.
    **{(_S.CONNECTED, msg_type): Server12._after_handshake for msg_type in H},
}

__all__ = ["Server12"]
