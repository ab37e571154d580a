"""The server side of the handshake: TLS 1.3 (RFC 8446) and TLS 1.2 (RFC 5246)."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from . import certcompress, ocsp, server_psk
from . import messages as m
from .certs import CertifiedKey
from .constants import (
    HELLO_RETRY_REQUEST_RANDOM,
    TLS12,
    TLS13,
    AlertDescription,
    ContentType,
    ExtensionType,
    HandshakeType,
    PskKeyExchangeMode,
    plain_values,
)
from .errors import TlsProtocolError
from .keyexchange import server_exchange
from .keyschedule import KeySchedule13
from .link import Negotiated, finish_handshake
from .messages import ClientHello, ServerHello
from .server12 import Server12
from .session import TicketState
from .states import Handler, ServerState, dispatch, unexpected
from .suites import SUITES, SuiteInfo
from .wire import Reader, u16, u16_list, vec16

# Plain-int views of the code points (see plain_values).
X = plain_values(ExtensionType)
H = plain_values(HandshakeType)

if TYPE_CHECKING:
    from .link import HandshakeConnection

# Undecryptable early data we skip after rejecting 0-RTT (RFC 8446 section 4.2.10).
_REJECTED_EARLY_DATA_BUDGET = 1 << 17


class ServerHandshake:
    def __init__(self, conn: HandshakeConnection) -> None:
        # Weak: the connection owns this object, and a strong reference back
        # would leave every finished connection for the cycle collector.
        self.conn: HandshakeConnection = weakref.proxy(conn)
        # What this handshake decides, for the connection to read.
        self.negotiated = Negotiated()
        self.config = conn.config
        self.state = ServerState.WAIT_CLIENT_HELLO
        self.hrr_group: int | None = None
        self.first_hello: ClientHello | None = None
        self.schedule: KeySchedule13 | None = None
        self.client_hs_secret = b""
        self.client_app_secret = b""
        self.requested_client_cert = False
        self.client_chain: list[bytes] = []
        self.ticket_state: TicketState | None = None
        self.client_schemes: list[int] = []
        self.client_cert_schemes: list[int] = []
        self.v12: Server12 | None = None
        self.tickets_sent = 0
        self.ticket_age_skew_ms = 0
        # The resumption mode in use once a ticket is accepted (psk_ke or psk_dhe_ke).
        self.psk_mode: int | None = None
        self.opened_ticket: tuple[bytes, TicketState | None] | None = None

    def start(self) -> None:
        return None

    def handle_change_cipher_spec(self) -> None:
        if self.v12 is not None:
            self.v12.handle_change_cipher_spec()
            return
        if self.conn.handshake_complete or (
            self.state == ServerState.WAIT_CLIENT_HELLO and self.first_hello is None
        ):
            raise unexpected("unexpected change_cipher_spec")
        # Middlebox compatibility (RFC 8446 appendix D.4): ignored.

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        if self.v12 is not None:
            self.v12.handle(msg_type, body, raw)
            return
        dispatch(_HANDLERS13, self, self.state, msg_type, body, raw)

    # --- ClientHello --------------------------------------------------------------

    def _client_hello_message(self, body: bytes, raw: bytes) -> None:
        self._client_hello(ClientHello.parse(body, raw))

    def _choose_version(self, hello: ClientHello) -> int:
        ours = self.config.versions
        if X.SUPPORTED_VERSIONS in hello.extensions:
            r = Reader(hello.extensions[X.SUPPORTED_VERSIONS])
            offered = r.u16_list(1, minimum=2)
            r.expect_end("supported_versions")
            for version in (TLS13, TLS12):
                if version in offered and version in ours:
                    return version
        elif hello.legacy_version >= TLS12 and TLS12 in ours:
            return TLS12
        raise TlsProtocolError(
            AlertDescription.PROTOCOL_VERSION,
            "no TLS version in common (1.2 and 1.3 are supported)",
        )

    def _client_hello(self, hello: ClientHello) -> None:
        neg = self.negotiated
        retry = self.first_hello is not None
        neg.client_random = hello.random
        check_hello_edges(hello)
        version = TLS13 if retry else self._choose_version(hello)
        if retry:
            self._check_second_hello(hello)
        elif FALLBACK_SCSV in hello.cipher_suites and version < max(self.config.versions):
            raise TlsProtocolError(
                AlertDescription.INAPPROPRIATE_FALLBACK,
                "client fell back to an older version than both support (RFC 7507)",
            )
        if 0 not in hello.compression:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "client does not offer null compression"
            )
        if X.SERVER_NAME in hello.extensions:
            neg.server_name = m.parse_server_name(hello.extensions[X.SERVER_NAME])
        if X.SIGNATURE_ALGORITHMS in hello.extensions:
            self.client_schemes = Reader(hello.extensions[X.SIGNATURE_ALGORITHMS]).u16_list(
                2, minimum=2
            )
        if X.SIGNATURE_ALGORITHMS_CERT in hello.extensions:
            self.client_cert_schemes = Reader(
                hello.extensions[X.SIGNATURE_ALGORITHMS_CERT]
            ).u16_list(2, minimum=2)
        if version == TLS12:
            neg.version = TLS12
            self.state = ServerState.TLS12
            self.v12 = Server12(self)
            self.v12.client_hello(hello)
            return
        self._client_hello13(hello, retry)

    def _check_second_hello(self, hello: ClientHello) -> None:
        """RFC 8446 section 4.1.2 and 4.2.10: what a ClientHello after HelloRetryRequest
        must not change or add."""
        if self._choose_version(hello) != TLS13:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "second ClientHello changed the version"
            )
        if X.EARLY_DATA in hello.extensions:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER,
                "second ClientHello offers early data (not allowed after HelloRetryRequest)",
            )
        # Early data sent before the retry has been skipped; anything undecryptable
        # from now on is an error, not more early data.
        self.conn.records.skip_early_data = 0

    def choose_alpn(self, hello: ClientHello) -> bytes | None:
        if X.ALPN not in hello.extensions or not self.config.alpn_protocols:
            return None
        offered = m.parse_alpn(hello.extensions[X.ALPN])
        for proto in self.config.alpn_protocols:
            if proto in offered:
                return proto
        raise TlsProtocolError(
            AlertDescription.NO_APPLICATION_PROTOCOL, "no ALPN protocol in common"
        )

    def choose_certificate(
        self, tls13: bool, allowed_auth: str | None = None, client_groups: list[int] | None = None
    ) -> tuple[CertifiedKey, int]:
        """The certificate for the client's server name and signature schemes."""
        offered = self.client_schemes
        name = self.negotiated.server_name
        candidates = self.config.certificates
        if not candidates:
            raise TlsProtocolError(
                AlertDescription.HANDSHAKE_FAILURE, "server has no certificate configured"
            )
        named = [c for c in candidates if name is not None and c.matches_name(name)]
        # RFC 8446 4.2.3: prefer chains signed only with algorithms the client
        # listed (signature_algorithms_cert, else signature_algorithms); if none
        # is, any chain will do and the client decides.
        cert_schemes = self.client_cert_schemes or offered
        named_fit = [c for c in named if c.chain_signed_with(cert_schemes)]
        all_fit = [c for c in candidates if c.chain_signed_with(cert_schemes)]
        for pool in (named_fit, named, all_fit, candidates):
            for certified in pool:
                if allowed_auth is not None and _auth_kind(certified) != allowed_auth:
                    continue
                if client_groups is not None and not _curve_acceptable(certified, client_groups):
                    continue
                scheme = m.choose_scheme(certified, offered, self.config.signature_schemes, tls13)
                if scheme is not None:
                    return certified, scheme
        raise TlsProtocolError(
            AlertDescription.HANDSHAKE_FAILURE,
            "no certificate fits the client's signature algorithms",
        )

    def _client_hello13(self, hello: ClientHello, retry: bool) -> None:
        """Negotiate suite, key share and PSK; then answer, or ask again for a share."""
        neg = self.negotiated
        _check_hello13(hello)
        conn = self.conn
        suite = neg.suite = self._choose_suite13(hello, retry)
        neg.version = TLS13
        exts = hello.extensions
        psk_ke_possible = (
            not retry
            and X.PRE_SHARED_KEY in exts
            and server_psk.offers_mode(self, hello, PskKeyExchangeMode.PSK_KE)
        )
        if (X.SUPPORTED_GROUPS not in exts or X.KEY_SHARE not in exts) and not psk_ke_possible:
            raise TlsProtocolError(
                AlertDescription.MISSING_EXTENSION,
                "TLS 1.3 ClientHello needs supported_groups and key_share unless it resumes by psk_ke",
            )
        client_groups, shares = _parse_key_shares(exts)
        share = next(((g, shares[g]) for g in self.config.groups if g in shares), None)
        if retry and (share is None or share[0] != self.hrr_group):
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER,
                "second ClientHello lacks the requested key share",
            )
        if share is None and not psk_ke_possible:
            self._retry_for_share(hello, client_groups, retry)
            return
        if not retry:
            conn.transcript.set_hash(suite.hash_name)
        alpn = neg.alpn_protocol = self.choose_alpn(hello)
        resumed = server_psk.try_psk(self, hello, alpn, have_share=share is not None) is not None
        if share is None and not resumed:
            # The ticket was refused and psk_ke was all the client could do without a share.
            neg.resumed = False
            neg.alpn_protocol = None
            self._retry_for_share(hello, client_groups, retry)
            return
        self._answer13(hello, retry, share, resumed, alpn)

    def _choose_suite13(self, hello: ClientHello, retry: bool) -> SuiteInfo:
        """A resumable ticket's suite wins (its PSK is bound to that hash); otherwise
        our preference among the client's suites."""
        suite_id = server_psk.ticket_suite(self, hello) if not retry else None
        if suite_id is None:
            ours = (s for s in self.config.cipher_suites if SUITES[s].version == TLS13)
            suite_id = next((s for s in ours if s in hello.cipher_suites), None)
        if suite_id is None:
            raise TlsProtocolError(
                AlertDescription.HANDSHAKE_FAILURE, "no TLS 1.3 cipher suite in common"
            )
        previous = self.negotiated.suite
        if retry and previous is not None and suite_id != previous.suite:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "second ClientHello changed the cipher suites"
            )
        return SUITES[suite_id]

    def _answer13(
        self,
        hello: ClientHello,
        retry: bool,
        share: tuple[int, bytes] | None,
        resumed: bool,
        alpn: bytes | None,
    ) -> None:
        """ServerHello, the handshake keys, then the rest of the server's flight."""
        exts = hello.extensions
        if not resumed and X.SIGNATURE_ALGORITHMS not in exts:
            raise TlsProtocolError(
                AlertDescription.MISSING_EXTENSION, "ClientHello without signature_algorithms"
            )
        # Chosen before ServerHello: when nothing fits, the alert comes at once.
        identity = None if resumed else self.choose_certificate(tls13=True)
        self.conn.transcript.add(hello.raw)
        early_accepted = False
        if X.EARLY_DATA in exts:
            early_accepted = server_psk.accept_early_data(self, retry, 0 if resumed else None, alpn)
            if not early_accepted:
                self.conn.records.skip_early_data = _REJECTED_EARLY_DATA_BUDGET
        shared_secret = self._send_server_hello13(hello, retry, share, resumed)
        server_hs = self._derive_handshake_keys13(shared_secret, resumed, early_accepted)
        self._send_encrypted_extensions(hello, alpn, early_accepted, resumed)
        if identity is not None:  # a full handshake: authenticate with a certificate
            self._send_authentication13(exts, identity)
        self._send_finished13(server_hs)
        if early_accepted:
            self.state = ServerState.WAIT_EOED
        elif self.requested_client_cert:
            self.state = ServerState.WAIT_CERT
        else:
            self.state = ServerState.WAIT_FINISHED

    def _send_server_hello13(
        self, hello: ClientHello, retry: bool, share: tuple[int, bytes] | None, resumed: bool
    ) -> bytes:
        """Send ServerHello (and the compatibility CCS); returns the (EC)DHE secret."""
        conn = self.conn
        suite = self.negotiated.suite
        assert suite is not None
        extensions: dict[int, bytes] = {X.SUPPORTED_VERSIONS: u16(TLS13)}
        if self.psk_mode == PskKeyExchangeMode.PSK_KE:
            shared_secret = bytes(suite.hash_length)  # no (EC)DHE in psk_ke
        else:
            assert share is not None
            group, client_share = share
            server_share, shared_secret = server_exchange(group, client_share, self.config.random)
            extensions[X.KEY_SHARE] = u16(group) + vec16(server_share)
        if resumed:
            extensions[X.PRE_SHARED_KEY] = u16(0)
        server_hello = ServerHello(
            self.config.random.bytes(32), hello.session_id, suite.suite, extensions
        )
        conn.send_handshake(H.SERVER_HELLO, server_hello.emit())
        if hello.session_id and not retry:
            conn.records.write_records(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
        return shared_secret

    def _derive_handshake_keys13(
        self, shared_secret: bytes, resumed: bool, early_accepted: bool
    ) -> bytes:
        """Enter the handshake secret and install its keys; returns the server's secret."""
        conn = self.conn
        assert self.negotiated.suite is not None
        if not resumed or self.schedule is None:
            self.schedule = conn.key_schedule(self.negotiated.suite.hash_name)
        schedule = self.schedule
        schedule.enter_handshake(shared_secret)
        th = conn.transcript.digest()
        self.client_hs_secret = schedule.derive(schedule.handshake_secret, b"c hs traffic", th)
        server_hs = schedule.derive(schedule.handshake_secret, b"s hs traffic", th)
        conn.set_write_secret13(server_hs)
        if not early_accepted:
            conn.set_read_secret13(self.client_hs_secret)
        return server_hs

    def _send_encrypted_extensions(
        self, hello: ClientHello, alpn: bytes | None, early_accepted: bool, resumed: bool
    ) -> None:
        exts = hello.extensions
        ee: dict[int, bytes] = {}
        if alpn is not None:
            ee[X.ALPN] = m.alpn_body([alpn])
        if early_accepted:
            ee[X.EARLY_DATA] = b""
        if self.negotiated.server_name is not None and X.SERVER_NAME in exts and not resumed:
            ee[X.SERVER_NAME] = b""
        if X.RECORD_SIZE_LIMIT in exts:
            own = self.record_size_limit(exts[X.RECORD_SIZE_LIMIT])
            if own is not None:
                ee[X.RECORD_SIZE_LIMIT] = u16(own)
        self.conn.send_handshake(H.ENCRYPTED_EXTENSIONS, m.encrypted_extensions(ee))

    def _send_finished13(self, server_hs: bytes) -> None:
        """The server's Finished; then the application keys for writing."""
        conn = self.conn
        schedule = self.schedule
        assert schedule is not None
        conn.send_handshake(H.FINISHED, schedule.finished_mac(server_hs, conn.transcript.digest()))
        schedule.enter_master()
        th = conn.transcript.digest()
        self.client_app_secret = schedule.derive(schedule.master_secret, b"c ap traffic", th)
        conn.set_write_secret13(schedule.derive(schedule.master_secret, b"s ap traffic", th))
        conn.set_exporter_source13(schedule.master_secret, th)

    def _send_authentication13(
        self, exts: dict[int, bytes], identity: tuple[CertifiedKey, int]
    ) -> None:
        """CertificateRequest (when asking for one), Certificate and CertificateVerify."""
        conn, config = self.conn, self.config
        if config.client_trust is not None or config.require_client_certificate:
            self.requested_client_cert = True
            cr_exts: dict[int, bytes] = {X.SIGNATURE_ALGORITHMS: u16_list(config.signature_schemes)}
            if config.certificate_compression:
                cr_exts[X.COMPRESS_CERTIFICATE] = certcompress.extension_body(
                    config.certificate_compression
                )
            request = m.CertificateRequest13(b"", cr_exts)
            conn.send_handshake(H.CERTIFICATE_REQUEST, request.emit())
        certified, scheme = identity
        compression = certcompress.choose(
            exts.get(X.COMPRESS_CERTIFICATE), config.certificate_compression
        )
        staple = ocsp.leaf_extensions13(exts, certified)
        certcompress.send_certificate13(conn, b"", certified, compression, staple)
        content = m.cv_content(m.CV_SERVER, conn.transcript.digest())
        conn.send_handshake(
            H.CERTIFICATE_VERIFY,
            m.make_certificate_verify(certified, scheme, content, config.random),
        )

    def _retry_for_share(self, hello: ClientHello, client_groups: list[int], retry: bool) -> None:
        wanted = next((g for g in self.config.groups if g in client_groups), None)
        if wanted is None or retry:
            raise TlsProtocolError(
                AlertDescription.HANDSHAKE_FAILURE, "no key exchange group in common"
            )
        self._send_hello_retry_request(hello, wanted)

    def record_size_limit(self, data: bytes) -> int | None:
        """Apply the client's record_size_limit; returns ours to announce, if any."""
        r = Reader(data)
        limit = r.u16()
        r.expect_end("record_size_limit")
        if limit < 64:
            raise TlsProtocolError(AlertDescription.ILLEGAL_PARAMETER, "record_size_limit below 64")
        self.conn.records.send_limit = limit
        own = self.config.record_size_limit
        if own is not None:
            self.conn.records.receive_plaintext_limit = (
                own - 1 if self.negotiated.version == TLS13 else own
            )
        return own

    def _send_hello_retry_request(self, hello: ClientHello, group: int) -> None:
        neg = self.negotiated
        conn = self.conn
        assert neg.suite is not None
        self.first_hello = hello
        self.hrr_group = group
        neg.hello_retried = True
        conn.transcript.set_hash(neg.suite.hash_name)
        conn.transcript.add(hello.raw)
        conn.transcript.replace_with_message_hash()
        exts: dict[int, bytes] = {X.SUPPORTED_VERSIONS: u16(TLS13), X.KEY_SHARE: u16(group)}
        retry_request = ServerHello(
            HELLO_RETRY_REQUEST_RANDOM, hello.session_id, neg.suite.suite, exts
        )
        conn.send_handshake(H.SERVER_HELLO, retry_request.emit())
        if hello.session_id:
            conn.records.write_records(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
        if X.EARLY_DATA in hello.extensions:
            conn.records.skip_early_data = _REJECTED_EARLY_DATA_BUDGET
        self.state = ServerState.WAIT_CLIENT_HELLO

    def _end_of_early_data(self, body: bytes, raw: bytes) -> None:
        if body:
            raise TlsProtocolError(AlertDescription.DECODE_ERROR, "EndOfEarlyData has a body")
        conn = self.conn
        self.negotiated.receiving_early_data = False
        conn.transcript.add(raw)
        conn.set_read_secret13(self.client_hs_secret)
        self.state = (
            ServerState.WAIT_CERT if self.requested_client_cert else ServerState.WAIT_FINISHED
        )

    def _client_certificate13(self, body: bytes, raw: bytes) -> None:
        context, chain = m.parse_certificate13(body)
        if context:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "client Certificate has a request context"
            )
        conn = self.conn
        if not chain:
            if self.config.require_client_certificate:
                raise TlsProtocolError(
                    AlertDescription.CERTIFICATE_REQUIRED, "client sent no certificate"
                )
            conn.transcript.add(raw)
            self.state = ServerState.WAIT_FINISHED
            return
        self.negotiated.peer_certificates = m.check_peer_chain(
            self.config, chain, None, peer_is_server=False
        )
        self.client_chain = chain
        conn.transcript.add(raw)
        self.state = ServerState.WAIT_CV

    def _compressed_client_certificate13(self, body: bytes, raw: bytes) -> None:
        plain = certcompress.decompress(body, self.config.certificate_compression)
        self._client_certificate13(plain, raw)  # the transcript takes it as sent

    def _client_certificate_verify13(self, body: bytes, raw: bytes) -> None:
        conn = self.conn
        content = m.cv_content(m.CV_CLIENT, conn.transcript.digest())
        m.check_certificate_verify(
            body,
            self.negotiated.peer_certificates[0],
            content,
            self.config.signature_schemes,
            tls13=True,
        )
        conn.transcript.add(raw)
        self.state = ServerState.WAIT_FINISHED

    def _client_finished13(self, body: bytes, raw: bytes) -> None:
        conn = self.conn
        schedule = self.schedule
        assert (
            schedule is not None
            and self.negotiated.suite is not None
            and self.negotiated.version is not None
        )
        m.check_finished(
            schedule.finished_mac(self.client_hs_secret, conn.transcript.digest()), body
        )
        conn.transcript.add(raw)
        conn.set_read_secret13(self.client_app_secret)
        resumption_master = schedule.derive(
            schedule.master_secret, b"res master", conn.transcript.digest()
        )
        self.state = ServerState.CONNECTED
        for _ in range(self.config.session_tickets):
            server_psk.send_ticket13(self, resumption_master)
        finish_handshake(conn, self.negotiated)


# The TLS 1.3 handshake's transitions: (state, message type) -> handler.
_S = ServerState
_HANDLERS13: dict[tuple[ServerState, int], Handler[ServerHandshake]] = {
    (_S.WAIT_CLIENT_HELLO, H.CLIENT_HELLO): ServerHandshake._client_hello_message,
    (_S.WAIT_EOED, H.END_OF_EARLY_DATA): ServerHandshake._end_of_early_data,
    (_S.WAIT_CERT, H.CERTIFICATE): ServerHandshake._client_certificate13,
    (_S.WAIT_CERT, H.COMPRESSED_CERTIFICATE): ServerHandshake._compressed_client_certificate13,
    (_S.WAIT_CV, H.CERTIFICATE_VERIFY): ServerHandshake._client_certificate_verify13,
    (_S.WAIT_FINISHED, H.FINISHED): ServerHandshake._client_finished13,
}


def _check_hello13(hello: ClientHello) -> None:
    if hello.compression != b"\x00":
        raise TlsProtocolError(
            AlertDescription.ILLEGAL_PARAMETER, "TLS 1.3 ClientHello offers compression"
        )
    exts = hello.extensions
    if X.PRE_SHARED_KEY in exts and hello.extension_order[-1] != X.PRE_SHARED_KEY:
        raise TlsProtocolError(
            AlertDescription.ILLEGAL_PARAMETER, "pre_shared_key is not the last extension"
        )


def _parse_key_shares(exts: dict[int, bytes]) -> tuple[list[int], dict[int, bytes]]:
    """The client's supported_groups and its key shares by group."""
    client_groups = (
        Reader(exts[X.SUPPORTED_GROUPS]).u16_list(2, minimum=2)
        if X.SUPPORTED_GROUPS in exts
        else []
    )
    shares: dict[int, bytes] = {}
    ks = Reader(exts.get(X.KEY_SHARE, b"\x00\x00"))
    share_list = ks.sub(2)
    ks.expect_end("key_share")
    while not share_list.at_end():
        group = share_list.u16()
        share = share_list.vector(2, minimum=1)
        if group in shares:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "two key shares for one group"
            )
        shares[group] = share
    if not set(shares) <= set(client_groups):
        raise TlsProtocolError(
            AlertDescription.ILLEGAL_PARAMETER, "key share for a group not in supported_groups"
        )
    return client_groups, shares


# RFC 7507: a client retrying with a lower version than it would like says so.
FALLBACK_SCSV = 0x5600


def check_hello_edges(hello: ClientHello) -> None:
    """Refuse what no version we speak allows in a ClientHello."""
    if hello.legacy_version <= 0x0300:
        # RFC 8446 appendix D.5: SSL 3.0 and older are refused outright.
        raise TlsProtocolError(
            AlertDescription.PROTOCOL_VERSION,
            f"ClientHello legacy_version {hello.legacy_version:#06x} is SSL 3.0 or older",
        )


def _curve_acceptable(certified: CertifiedKey, client_groups: list[int]) -> bool:
    """TLS 1.2 (RFC 8422 section 5.1): an ECDSA key's curve must be one the client listed."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = certified.key
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return True
    curve_group = {"secp256r1": 0x0017, "secp384r1": 0x0018, "secp521r1": 0x0019}.get(
        key.curve.name
    )
    return curve_group in client_groups


def _auth_kind(certified: CertifiedKey) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(certified.key, rsa.RSAPrivateKey):
        return "rsa"
    # RFC 8422 section 2: EdDSA certificates authenticate the ECDHE_ECDSA suites.
    edwards = ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    if isinstance(certified.key, ec.EllipticCurvePrivateKey | edwards):
        return "ecdsa"
    return "other"
