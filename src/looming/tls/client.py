"""The client side of the handshake: TLS 1.3 (RFC 8446) and TLS 1.2 (RFC 5246)."""

from __future__ import annotations

import ipaddress
import weakref
from typing import TYPE_CHECKING, NamedTuple

from looming.bounded import Memo

from . import certcompress, client_psk
from . import messages as m
from .client12 import Client12
from .constants import (
    DOWNGRADE_TLS11,
    DOWNGRADE_TLS12,
    HELLO_RETRY_REQUEST_RANDOM,
    TLS12,
    TLS13,
    AlertDescription,
    ExtensionType,
    HandshakeType,
    PskKeyExchangeMode,
    plain_values,
)
from .errors import TlsProtocolError
from .events import NewSession
from .keyexchange import KeyShare
from .keyschedule import KeySchedule13
from .link import Negotiated, finish_handshake
from .session import Session
from .states import ClientState, Handler, dispatch, unexpected
from .suites import SUITES
from .wire import Reader, extension, parse_extensions, u16, u16_list, vec8, vec16

# Plain-int views of the code points (see plain_values).
X = plain_values(ExtensionType)
H = plain_values(HandshakeType)

if TYPE_CHECKING:
    from .config import TlsConfig
    from .link import HandshakeConnection


class ClientHandshake:
    def __init__(
        self,
        conn: HandshakeConnection,
        server_name: str | None,
        session: Session | None,
        early_data: bytes,
    ) -> None:
        # Weak: the connection owns this object, and a strong reference back
        # would leave every finished connection for the cycle collector.
        self.conn: HandshakeConnection = weakref.proxy(conn)
        # What this handshake decides, for the connection to read.
        self.negotiated = Negotiated(server_name=server_name)
        self.config = conn.config
        cache = self.config.session_cache
        if session is None and cache is not None:
            session = cache.take(server_name, self.config.clock.now_ns() // 1_000_000)
        self.offered_session = session
        # Sent as 0-RTT data only when the configuration opts in; otherwise (and
        # whenever the server declines it) it is sent after the handshake.
        self.early_data = early_data
        self.state = ClientState.START
        self.shares: dict[int, KeyShare] = {}
        self.random = b""
        self.session_id = b""
        self.hrr_done = False
        self.cookie = b""
        self.offered_psk = False
        self.sent_early_data = False
        self.early_data_sent = b""
        self.schedule: KeySchedule13 | None = None
        self.client_hs_secret = b""
        self.server_hs_secret = b""
        self.certificate_request_context: bytes | None = None
        self.requested_schemes: list[int] = []
        # RFC 8879: the algorithm the server's CertificateRequest lets us compress with.
        self.certificate_compression: int | None = None
        self.server_random = b""
        self.server_chain: list[bytes] = []
        self.resumption_master = b""
        self.v12: Client12 | None = None

    # --- ClientHello --------------------------------------------------------------

    def start(self) -> None:
        rand = self.config.random
        self.random = rand.bytes(32)
        self.negotiated.client_random = self.random
        compatible = self.config.middlebox_compatibility or TLS12 in self.config.versions
        self.session_id = rand.bytes(32) if compatible else b""
        session = self.usable_session()
        # Resuming by psk_ke alone needs no key share; the server asks for one
        # (HelloRetryRequest) if it refuses the ticket.
        psk_ke_only = list(self.config.psk_key_exchange_modes) == [PskKeyExchangeMode.PSK_KE]
        if TLS13 in self.config.versions and not (
            psk_ke_only and session is not None and session.version == TLS13
        ):
            for group in self.config.key_share_groups:
                if group in self.config.groups:
                    self.shares[group] = KeyShare(group, rand)
        self.conn.records.plaintext_version = b"\x03\x01"
        self._send_client_hello()
        self.conn.records.plaintext_version = b"\x03\x03"
        self.state = ClientState.WAIT_SERVER_HELLO

    def usable_session(self) -> Session | None:
        session = self.offered_session
        if session is None or session.version not in self.config.versions:
            return None
        if session.cipher_suite not in self.config.cipher_suites:
            return None
        if session.expired(self.config.clock.now_ns() // 1_000_000):
            return None
        return session

    def _send_client_hello(self) -> None:
        config = self.config
        offer12 = TLS12 in config.versions
        offer13 = TLS13 in config.versions
        static = _static_hello_parts(config)
        # RFC 5746 signalling is the empty renegotiation_info extension among the
        # static ones; sending the SCSV as well is not recommended (section 3.4).
        exts = []
        name = self.negotiated.server_name
        if name is not None:
            sni = _SNI_EXTENSIONS.get(name)
            if sni is None:
                sni = b"" if _is_ip(name) else extension(X.SERVER_NAME, m.server_name_body(name))
                _SNI_EXTENSIONS.put(name, sni)
            if sni:
                exts.append(sni)
        exts.append(static.before_ticket)
        if offer12:
            session = self.usable_session()
            ticket12 = session.ticket if session is not None and session.version == TLS12 else b""
            exts.append(extension(X.SESSION_TICKET, ticket12))
        if offer13:
            shares = b"".join(u16(g) + vec16(s.public) for g, s in self.shares.items())
            exts.append(extension(X.KEY_SHARE, vec16(shares)))
        exts.append(static.after_key_share)
        if self.cookie:
            exts.append(extension(X.COOKIE, vec16(self.cookie)))
        session = self.usable_session() if offer13 else None
        psk13 = session if session is not None and session.version == TLS13 else None
        if (
            psk13 is not None
            and self.early_data
            and self.config.enable_early_data
            and psk13.max_early_data > 0
            and not self.hrr_done
        ):
            exts.append(extension(X.EARLY_DATA, b""))
            self.sent_early_data = True
        else:
            self.sent_early_data = False
        head = u16(TLS12) + self.random + vec8(self.session_id) + static.suites + b"\x01\x00"
        if psk13 is None:
            self.offered_psk = False
            self.conn.send_handshake(H.CLIENT_HELLO, head + vec16(b"".join(exts)))
        else:
            client_psk.send_with_psk(self, head, exts, psk13)
        if self.sent_early_data and psk13 is not None:
            client_psk.send_early_data(self, psk13)

    # --- dispatch -----------------------------------------------------------------

    def handle_change_cipher_spec(self) -> None:
        if self.v12 is not None:
            self.v12.handle_change_cipher_spec()
            return
        if self.negotiated.version == TLS13 or self.state == ClientState.WAIT_SERVER_HELLO:
            if self.conn.handshake_complete:
                raise unexpected("change_cipher_spec after the handshake")
            return  # middlebox compatibility (RFC 8446 appendix D.4): ignored
        raise unexpected("unexpected change_cipher_spec")

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        if self.v12 is not None:
            self.v12.handle(msg_type, body, raw)
            return
        dispatch(_HANDLERS13, self, self.state, msg_type, body, raw)

    # --- ServerHello / HelloRetryRequest ------------------------------------------

    def _server_hello(self, body: bytes, raw: bytes) -> None:
        """ServerHello or HelloRetryRequest: the version and suite, then on by version."""
        neg = self.negotiated
        hello = m.ServerHello.parse(body)
        version = self._negotiated_version(hello)
        suite = SUITES[hello.cipher_suite]
        if self.hrr_done and neg.suite is not None and suite.suite != neg.suite.suite:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER,
                "ServerHello suite differs from the HelloRetryRequest's",
            )
        if suite.version != version:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "suite does not match the version"
            )
        neg.version = version
        neg.suite = suite
        if version == TLS12:
            self._continue_in_tls12(hello, raw)
        elif hello.session_id != self.session_id:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "server did not echo our session id"
            )
        elif hello.random == HELLO_RETRY_REQUEST_RANDOM:
            self._hello_retry_request(hello.extensions, raw)
        else:
            self._server_hello13(hello, raw)

    def _negotiated_version(self, hello: m.ServerHello) -> int:
        """The version the server chose, checked against what we offered."""
        if hello.compression != 0:
            raise TlsProtocolError(AlertDescription.ILLEGAL_PARAMETER, "server chose compression")
        if hello.cipher_suite not in self.config.cipher_suites:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER,
                f"server chose suite {hello.cipher_suite:#06x}, which we did not offer",
            )
        version = hello.legacy_version
        if X.SUPPORTED_VERSIONS in hello.extensions:
            sv = Reader(hello.extensions[X.SUPPORTED_VERSIONS])
            version = sv.u16()
            sv.expect_end("supported_versions")
            if version != TLS13 or TLS13 not in self.config.versions:
                raise TlsProtocolError(
                    AlertDescription.ILLEGAL_PARAMETER, f"server selected version {version:#06x}"
                )
        elif version != TLS12 or TLS12 not in self.config.versions:
            raise TlsProtocolError(
                AlertDescription.PROTOCOL_VERSION, f"server selected version {version:#06x}"
            )
        return version

    def _continue_in_tls12(self, hello: m.ServerHello, raw: bytes) -> None:
        """Hand the handshake over to the TLS 1.2 machine (after the downgrade check)."""
        if TLS13 in self.config.versions and hello.random[24:] in (
            DOWNGRADE_TLS12,
            DOWNGRADE_TLS11,
        ):
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "downgrade to TLS 1.2 detected"
            )
        self.state = ClientState.TLS12
        self.v12 = Client12(self)
        self.v12.server_hello(hello.random, hello.session_id, hello.extensions, raw)

    def _server_hello13(self, hello: m.ServerHello, raw: bytes) -> None:
        """A TLS 1.3 ServerHello: the key exchange and PSK it accepts, then handshake keys."""
        self.server_random = hello.random
        exts = hello.extensions
        if not set(exts) <= {X.KEY_SHARE, X.PRE_SHARED_KEY, X.SUPPORTED_VERSIONS}:
            raise TlsProtocolError(
                AlertDescription.UNSUPPORTED_EXTENSION,
                "ServerHello carries an extension we cannot accept",
            )
        shared_secret: bytes | None = None
        if X.KEY_SHARE in exts:
            shared_secret = self._shared_secret(exts[X.KEY_SHARE])
        elif (
            X.PRE_SHARED_KEY not in exts
            or PskKeyExchangeMode.PSK_KE not in self.config.psk_key_exchange_modes
        ):
            raise TlsProtocolError(
                AlertDescription.MISSING_EXTENSION,
                "ServerHello has no key_share and we did not offer psk_ke",
            )
        psk = None
        if X.PRE_SHARED_KEY in exts:
            psk = self._accepted_psk(exts[X.PRE_SHARED_KEY], X.KEY_SHARE in exts)
        self._derive_handshake_keys(raw, psk, shared_secret)
        self.state = ClientState.WAIT_EE

    def _shared_secret(self, key_share: bytes) -> bytes:
        ks = Reader(key_share)
        group = ks.u16()
        share = ks.vector(2, minimum=1)
        ks.expect_end("key_share")
        if group not in self.shares:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER,
                f"server key share for group {group:#06x} we did not send",
            )
        return self.shares[group].shared_secret(share)

    def _accepted_psk(self, pre_shared_key: bytes, with_dhe: bool) -> bytes:
        """The resumption secret of the ticket the server accepted."""
        neg = self.negotiated
        pr = Reader(pre_shared_key)
        selected = pr.u16()
        pr.expect_end("pre_shared_key")
        session = self.offered_session
        if not self.offered_psk or selected != 0 or session is None:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "server selected a PSK we did not offer"
            )
        suite = neg.suite
        assert suite is not None
        if SUITES[session.cipher_suite].hash_name != suite.hash_name:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "resumed suite has a different hash"
            )
        neg.resumed = True
        neg.resumption_mode = (
            PskKeyExchangeMode.PSK_DHE_KE if with_dhe else PskKeyExchangeMode.PSK_KE
        )
        return session.secret

    def _derive_handshake_keys(
        self, raw: bytes, psk: bytes | None, shared_secret: bytes | None
    ) -> None:
        conn = self.conn
        suite = self.negotiated.suite
        assert suite is not None
        conn.transcript.set_hash(suite.hash_name)
        conn.transcript.add(raw)
        if psk is None or self.schedule is None or self.schedule.hash_name != suite.hash_name:
            self.schedule = conn.key_schedule(suite.hash_name, psk)
        schedule = self.schedule
        # psk_ke: no (EC)DHE, so the handshake secret is extracted from zeros.
        schedule.enter_handshake(
            shared_secret if shared_secret is not None else bytes(suite.hash_length)
        )
        th = conn.transcript.digest()
        self.client_hs_secret = schedule.derive(schedule.handshake_secret, b"c hs traffic", th)
        self.server_hs_secret = schedule.derive(schedule.handshake_secret, b"s hs traffic", th)
        conn.set_read_secret13(self.server_hs_secret)
        if not self.sent_early_data:
            conn.set_write_secret13(self.client_hs_secret)

    def _hello_retry_request(self, exts: dict[int, bytes], raw: bytes) -> None:
        if self.hrr_done:
            raise unexpected("a second HelloRetryRequest")
        self.hrr_done = True
        self.negotiated.hello_retried = True
        allowed = {X.KEY_SHARE, X.COOKIE, X.SUPPORTED_VERSIONS}
        if not set(exts) <= allowed:
            raise TlsProtocolError(
                AlertDescription.UNSUPPORTED_EXTENSION,
                "HelloRetryRequest carries an extension we cannot accept",
            )
        changed = False
        if X.KEY_SHARE in exts:
            kr = Reader(exts[X.KEY_SHARE])
            group = kr.u16()
            kr.expect_end("key_share")
            if group not in self.config.groups or group in self.shares:
                raise TlsProtocolError(
                    AlertDescription.ILLEGAL_PARAMETER,
                    f"HelloRetryRequest asks for group {group:#06x}",
                )
            self.shares = {group: KeyShare(group, self.config.random)}
            changed = True
        if X.COOKIE in exts:
            cr = Reader(exts[X.COOKIE])
            self.cookie = cr.vector(2, minimum=1)
            cr.expect_end("cookie")
            changed = True
        if not changed:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER,
                "HelloRetryRequest would not change the ClientHello",
            )
        suite = self.negotiated.suite
        assert suite is not None
        conn = self.conn
        if self.sent_early_data:
            conn.records.write = None  # early data is abandoned after HRR
        conn.transcript.set_hash(suite.hash_name)
        conn.transcript.replace_with_message_hash()
        conn.transcript.add(raw)
        session = self.offered_session
        if session is not None and SUITES[session.cipher_suite].hash_name != suite.hash_name:
            self.offered_session = None
        self._send_client_hello()
        self.state = ClientState.WAIT_SERVER_HELLO

    # --- TLS 1.3 server flight ------------------------------------------------------

    def _encrypted_extensions(self, body: bytes, raw: bytes) -> None:
        neg = self.negotiated
        r = Reader(body)
        exts = parse_extensions(r)
        r.expect_end("EncryptedExtensions")
        conn = self.conn
        for ext_type, data in exts:
            if ext_type == X.ALPN:
                chosen = m.parse_alpn(data)
                if len(chosen) != 1 or chosen[0] not in self.config.alpn_protocols:
                    raise TlsProtocolError(
                        AlertDescription.ILLEGAL_PARAMETER,
                        "server chose an ALPN protocol we did not offer",
                    )
                neg.alpn_protocol = chosen[0]
            elif ext_type == X.EARLY_DATA:
                if not self.sent_early_data or data:
                    raise TlsProtocolError(
                        AlertDescription.ILLEGAL_PARAMETER,
                        "server accepted early data we did not send",
                    )
                neg.early_data_accepted = True
            elif ext_type == X.RECORD_SIZE_LIMIT:
                self.record_size_limit(data)
            elif ext_type in (X.SERVER_NAME, X.SUPPORTED_GROUPS):
                pass
            else:
                raise TlsProtocolError(
                    AlertDescription.UNSUPPORTED_EXTENSION,
                    f"EncryptedExtensions carries extension {ext_type}",
                )
        conn.transcript.add(raw)
        self.state = ClientState.WAIT_FINISHED if neg.resumed else ClientState.WAIT_CERT_CR

    def record_size_limit(self, data: bytes) -> None:
        rr = Reader(data)
        limit = rr.u16()
        rr.expect_end("record_size_limit")
        if limit < 64:
            raise TlsProtocolError(AlertDescription.ILLEGAL_PARAMETER, "record_size_limit below 64")
        self.conn.records.send_limit = limit
        if self.config.record_size_limit is not None:
            own = self.config.record_size_limit
            self.conn.records.receive_plaintext_limit = (
                own - 1 if self.negotiated.version == TLS13 else own
            )

    def _certificate_request13(self, body: bytes, raw: bytes) -> None:
        request = m.CertificateRequest13.parse(body)
        exts = request.extensions
        if X.SIGNATURE_ALGORITHMS not in exts:
            raise TlsProtocolError(
                AlertDescription.MISSING_EXTENSION,
                "CertificateRequest without signature_algorithms",
            )
        self.requested_schemes = Reader(exts[X.SIGNATURE_ALGORITHMS]).u16_list(2, minimum=2)
        self.certificate_compression = certcompress.choose(
            exts.get(X.COMPRESS_CERTIFICATE), self.config.certificate_compression
        )
        self.certificate_request_context = request.context
        self.conn.transcript.add(raw)
        self.state = ClientState.WAIT_CERT

    def _certificate13(self, body: bytes, raw: bytes) -> None:
        context, chain = m.parse_certificate13(body)
        if context:
            raise TlsProtocolError(
                AlertDescription.ILLEGAL_PARAMETER, "server Certificate has a request context"
            )
        if not chain:
            raise TlsProtocolError(AlertDescription.DECODE_ERROR, "server sent no certificate")
        self.negotiated.peer_certificates = m.check_peer_chain(
            self.config, chain, self.negotiated.server_name, peer_is_server=True
        )
        self.server_chain = chain
        self.conn.transcript.add(raw)
        self.state = ClientState.WAIT_CV

    def _compressed_certificate13(self, body: bytes, raw: bytes) -> None:
        plain = certcompress.decompress(body, self.config.certificate_compression)
        self._certificate13(plain, raw)  # the transcript takes the message as sent

    def _certificate_verify13(self, body: bytes, raw: bytes) -> None:
        conn = self.conn
        content = m.cv_content(m.CV_SERVER, conn.transcript.digest())
        m.check_certificate_verify(
            body,
            self.negotiated.peer_certificates[0],
            content,
            self.config.signature_schemes,
            tls13=True,
        )
        conn.transcript.add(raw)
        self.state = ClientState.WAIT_FINISHED

    def _finished13(self, body: bytes, raw: bytes) -> None:
        conn = self.conn
        schedule = self.schedule
        assert schedule is not None and self.negotiated.suite is not None
        m.check_finished(
            schedule.finished_mac(self.server_hs_secret, conn.transcript.digest()), body
        )
        conn.transcript.add(raw)
        schedule.enter_master()
        th = conn.transcript.digest()
        client_app = schedule.derive(schedule.master_secret, b"c ap traffic", th)
        server_app = schedule.derive(schedule.master_secret, b"s ap traffic", th)
        conn.set_exporter_source13(schedule.master_secret, th)
        conn.set_read_secret13(server_app)
        if self.negotiated.early_data_accepted:
            conn.send_handshake(H.END_OF_EARLY_DATA, b"")
        if self.sent_early_data:
            conn.set_write_secret13(self.client_hs_secret)
        if self.certificate_request_context is not None:
            self._send_client_certificate13(self.certificate_request_context)
        conn.send_handshake(
            H.FINISHED, schedule.finished_mac(self.client_hs_secret, conn.transcript.digest())
        )
        conn.set_write_secret13(client_app)
        self.resumption_master = schedule.derive(
            schedule.master_secret, b"res master", conn.transcript.digest()
        )
        self.state = ClientState.CONNECTED
        self.complete()

    def _new_session_ticket13(self, body: bytes, raw: bytes) -> None:
        client_psk.new_session_ticket13(self, body)

    def _send_client_certificate13(self, context: bytes) -> None:
        conn = self.conn
        certified = None
        scheme = None
        for candidate in self.config.certificates:
            scheme = m.choose_scheme(
                candidate, self.requested_schemes, self.config.signature_schemes, tls13=True
            )
            if scheme is not None:
                certified = candidate
                break
        if certified is None or scheme is None:
            certcompress.send_certificate13(conn, context, None, None)
            return
        certcompress.send_certificate13(conn, context, certified, self.certificate_compression)
        content = m.cv_content(m.CV_CLIENT, conn.transcript.digest())
        conn.send_handshake(
            H.CERTIFICATE_VERIFY,
            m.make_certificate_verify(certified, scheme, content, self.config.random),
        )

    def complete(self) -> None:
        neg = self.negotiated
        conn = self.conn
        assert neg.suite is not None and neg.version is not None
        if neg.resumed and self.offered_session is not None and not neg.peer_certificates:
            offered = self.offered_session
            if offered.peer_certificates:
                neg.peer_certificates = list(offered.peer_certificates)
            else:
                from .certs import parse_chain

                neg.peer_certificates = parse_chain(offered.peer_chain_der)
        # Early data the server did not take (rejected, or beyond its limit) goes
        # out as ordinary application data, first in line.
        delivered = self.early_data_sent if neg.early_data_accepted else b""
        if self.early_data[len(delivered) :]:
            conn.queue_application_data_first(self.early_data[len(delivered) :])
        finish_handshake(conn, self.negotiated)

    def remember(self, session: Session) -> None:
        self.negotiated.session = session
        if self.config.session_cache is not None:
            self.config.session_cache.put(session)
        self.conn.events.append(NewSession(session))


class _StaticHelloParts(NamedTuple):
    """The parts of a ClientHello that depend only on the configuration."""

    suites: bytes  # the cipher_suites vector
    before_ticket: bytes  # supported_versions .. renegotiation_info
    after_key_share: bytes  # psk_key_exchange_modes, ALPN, record_size_limit


# Keyed by the configuration values they are built from, so a changed setting
# is never served stale; a process has few distinct configurations.
_STATIC_HELLO_PARTS: Memo[tuple[object, ...], _StaticHelloParts] = Memo(64)
# server_name extensions by name (b"" for an IP address, which SNI must not carry).
_SNI_EXTENSIONS: Memo[str, bytes] = Memo(256)


def _static_hello_parts(config: TlsConfig) -> _StaticHelloParts:
    key = (
        tuple(config.versions),
        tuple(config.cipher_suites),
        tuple(config.groups),
        tuple(config.signature_schemes),
        None
        if config.certificate_signature_schemes is None
        else tuple(config.certificate_signature_schemes),
        tuple(config.psk_key_exchange_modes),
        tuple(config.alpn_protocols),
        config.record_size_limit,
        tuple(config.certificate_compression),
    )
    parts = _STATIC_HELLO_PARTS.get(key)
    if parts is not None:
        return parts
    offer12 = TLS12 in config.versions
    offer13 = TLS13 in config.versions
    offered_versions = ((TLS13,) if offer13 else ()) + ((TLS12,) if offer12 else ())
    suites = [s for s in config.cipher_suites if SUITES[s].version in offered_versions]
    before = []
    if offer13:
        versions = [TLS13] + ([TLS12] if offer12 else [])
        before.append(extension(X.SUPPORTED_VERSIONS, vec8(b"".join(u16(v) for v in versions))))
    before.append(extension(X.SUPPORTED_GROUPS, u16_list(config.groups)))
    before.append(extension(X.SIGNATURE_ALGORITHMS, u16_list(config.signature_schemes)))
    if config.certificate_signature_schemes is not None:
        before.append(
            extension(X.SIGNATURE_ALGORITHMS_CERT, u16_list(config.certificate_signature_schemes))
        )
    if offer12:
        before.append(extension(X.EC_POINT_FORMATS, vec8(b"\x00")))
        before.append(extension(X.EXTENDED_MASTER_SECRET, b""))
        before.append(extension(X.RENEGOTIATION_INFO, vec8(b"")))
    after = []
    if offer13:
        modes = bytes(config.psk_key_exchange_modes)
        after.append(extension(X.PSK_KEY_EXCHANGE_MODES, vec8(modes)))
    if config.alpn_protocols:
        after.append(extension(X.ALPN, m.alpn_body(config.alpn_protocols)))
    if config.record_size_limit is not None:
        after.append(extension(X.RECORD_SIZE_LIMIT, u16(config.record_size_limit)))
    if offer13:
        after.append(certcompress.offer_extension(config.certificate_compression))
    parts = _StaticHelloParts(u16_list(suites), b"".join(before), b"".join(after))
    return _STATIC_HELLO_PARTS.put(key, parts)


# The TLS 1.3 handshake's transitions: (state, message type) -> handler.
_HANDLERS13: dict[tuple[ClientState, int], Handler[ClientHandshake]] = {
    (ClientState.WAIT_SERVER_HELLO, H.SERVER_HELLO): ClientHandshake._server_hello,
    (ClientState.WAIT_EE, H.ENCRYPTED_EXTENSIONS): ClientHandshake._encrypted_extensions,
    (ClientState.WAIT_CERT_CR, H.CERTIFICATE_REQUEST): ClientHandshake._certificate_request13,
    (ClientState.WAIT_CERT_CR, H.CERTIFICATE): ClientHandshake._certificate13,
    (ClientState.WAIT_CERT, H.CERTIFICATE): ClientHandshake._certificate13,
    (ClientState.WAIT_CERT_CR, H.COMPRESSED_CERTIFICATE): ClientHandshake._compressed_certificate13,
    (ClientState.WAIT_CERT, H.COMPRESSED_CERTIFICATE): ClientHandshake._compressed_certificate13,
    (ClientState.WAIT_CV, H.CERTIFICATE_VERIFY): ClientHandshake._certificate_verify13,
    (ClientState.WAIT_FINISHED, H.FINISHED): ClientHandshake._finished13,
    (ClientState.CONNECTED, H.NEW_SESSION_TICKET): ClientHandshake._new_session_ticket13,
}


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
