"""TlsConnection: one sans-I/O TLS 1.3 / 1.2 endpoint, client or server.

Bytes go in through :meth:`TlsConnection.receive`, which returns events;
bytes to put on the wire come out of :meth:`TlsConnection.bytes_to_send`.
The engine does no I/O and reads time and randomness only from the devices
in its :class:`~looming.tls.config.TlsConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, Protocol

from cryptography import x509

from looming.errors import Malformed, NotReplayable

from .client import ClientHandshake
from .config import TlsConfig
from .constants import (
    TLS13,
    AlertDescription,
    AlertLevel,
    ContentType,
    HandshakeType,
    KeyUpdateRequest,
    plain_values,
)
from .errors import TlsAlertReceived, TlsClosed, TlsError, TlsProtocolError
from .events import ApplicationData, ConnectionClosed, EarlyData, Event, KeyUpdated
from .keylog import LABELS_13, key_log_line
from .keyschedule import KeySchedule13, Transcript, exporter13, next_traffic_secret
from .link import Negotiated
from .record import Protection, RecordLayer
from .server import ServerHandshake
from .session import Session
from .suites import SuiteInfo, derive_secret, prf12
from .wire import handshake, u8

# A plain-int view of the record types (see plain_values): read on every record.
_CT = plain_values(ContentType)
_MAX_HANDSHAKE_MESSAGE = 1 << 18


class Handshake(Protocol):
    """A role's handshake state machine, driven by the engine."""

    negotiated: Negotiated

    def start(self) -> None: ...

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None: ...

    def handle_change_cipher_spec(self) -> None: ...


class TlsConnection:
    """One TLS connection. See the module docstring."""

    def __init__(
        self,
        config: TlsConfig,
        *,
        server_side: bool,
        server_name: str | None = None,
        session: Session | None = None,
        early_data: bytes = b"",
    ) -> None:
        self.config = config
        self.server_side = server_side
        self.records = RecordLayer()
        self.records.padding_block = config.padding_block
        self.transcript = Transcript()
        self.events: list[Event] = []
        self.handshake_complete = False
        self._bulk13 = False  # TLS 1.3 with the handshake complete: see complete_handshake
        # TLS 1.3 application traffic secrets and exporter secret; 1.2 master secret.
        self.read_secret = b""
        self.write_secret = b""
        # TLS 1.3 exporter_master_secret, derived only when something asks for
        # it: (master secret, transcript hash through server Finished) until then.
        self._exporter_secret = b""
        self._exporter_source: tuple[bytes, bytes] | None = None
        self._early_bytes = 0
        self._hs_buffer = bytearray()
        self._ccs_received = False
        self._closed_by_peer = False
        self._sent_close = False
        self._failed: TlsError | None = None
        self._pending_app_data: list[bytes] = []
        self._handshake: Handshake
        if server_side:
            self._handshake = ServerHandshake(self)
        else:
            self._handshake = ClientHandshake(self, server_name, session, early_data)
        # What the handshake decided: it fills this record, the properties below read it.
        self.negotiated = self._handshake.negotiated
        self._run(self._handshake.start)

    # --- what the handshake negotiated (read-only: the handshake decides) ---------

    @property
    def server_name(self) -> str | None:
        """The server's name: the one asked for (client), or the client's SNI (server)."""
        return self.negotiated.server_name

    @property
    def version(self) -> int | None:
        return self.negotiated.version

    @property
    def suite(self) -> SuiteInfo | None:
        return self.negotiated.suite

    @property
    def alpn_protocol(self) -> bytes | None:
        return self.negotiated.alpn_protocol

    @property
    def peer_certificates(self) -> list[x509.Certificate]:
        return self.negotiated.peer_certificates

    @property
    def resumed(self) -> bool:
        return self.negotiated.resumed

    @property
    def resumption_mode(self) -> int | None:
        """TLS 1.3: how a resumed handshake keyed itself (PskKeyExchangeMode), else None."""
        return self.negotiated.resumption_mode

    @property
    def hello_retried(self) -> bool:
        return self.negotiated.hello_retried

    @property
    def early_data_accepted(self) -> bool:
        return self.negotiated.early_data_accepted

    @property
    def receiving_early_data(self) -> bool:
        return self.negotiated.receiving_early_data

    @property
    def extended_master_secret(self) -> bool:
        """TLS 1.2: whether RFC 7627's extended master secret is in use."""
        return self.negotiated.extended_master_secret

    @property
    def session(self) -> Session | None:
        """The client's session to resume with later, once the server gave one."""
        return self.negotiated.session

    @property
    def master_secret12(self) -> bytes:
        return self.negotiated.master_secret12

    @property
    def exporter_randoms(self) -> bytes:
        return self.negotiated.exporter_randoms

    @property
    def client_random(self) -> bytes:
        """The ClientHello's random: names this connection's lines in the key log."""
        return self.negotiated.client_random

    # --- the public face ------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; returns what happened. Raises TlsError on failure."""
        if self._failed is not None:
            raise self._failed
        if self._closed_by_peer:
            return []
        records = self.records
        if self._bulk13 and not self._hs_buffer:
            # Bulk data: a run of application data records opened in one pass.
            try:
                payloads, more = records.open_application_data13(data)
            except Exception as exc:
                self._fail(exc)
            events = self.events
            events += map(ApplicationData, payloads)
            if not more:
                self.events = []
                return events
        else:
            records.feed(data)
        self._run(self._process_records)
        events, self.events = self.events, []
        return events

    def send_application_data(self, data: bytes) -> None:
        """Queue ``data`` for sending (buffered until the handshake completes)."""
        if self._failed is not None:
            raise self._failed
        if self._sent_close:
            raise TlsClosed("cannot send after close()")
        if type(data) is not bytes:
            data = bytes(data)
        if self._bulk13 and data:
            sealed = self.records.write_application_data13(data)
            if sealed == len(data):
                return
            data = data[sealed:]
        if not self.handshake_complete:
            self._pending_app_data.append(data)
            return
        self._run(lambda: self._write_app_data(data))

    def bytes_to_send(self) -> bytes:
        return self.records.take_outgoing()

    def close(self) -> None:
        """Send close_notify. Receiving may continue until the peer's close_notify."""
        if self._sent_close or self._failed is not None:
            return
        self._sent_close = True
        self.send_alert(AlertLevel.WARNING, AlertDescription.CLOSE_NOTIFY)

    def key_update(self, request_peer_update: bool = True) -> None:
        """Move our sending direction to new keys (TLS 1.3 only)."""
        if self.version != TLS13 or not self.handshake_complete:
            raise TlsClosed("KeyUpdate needs an established TLS 1.3 connection")
        self._run(lambda: self._send_key_update(request_peer_update))

    def export_keying_material(
        self, label: bytes | str, context: bytes | None, length: int
    ) -> bytes:
        """RFC 8446 section 7.5 / RFC 5705 exporter."""
        if not self.handshake_complete or self.suite is None:
            raise TlsClosed("keying material can only be exported after the handshake")
        label_bytes = label.encode() if isinstance(label, str) else label
        if self.version == TLS13:
            return exporter13(
                self.suite.hash_name, self.exporter_secret, label_bytes, context or b"", length
            )
        seed = self.exporter_randoms
        if context is not None:
            seed += len(context).to_bytes(2, "big") + context
        return prf12(self.suite.hash_name, self.master_secret12, label_bytes, seed, length)

    @property
    def exporter_secret(self) -> bytes:
        """TLS 1.3 exporter_master_secret (RFC 8446 section 7.1), b"" before it exists."""
        source = self._exporter_source
        if source is not None and self.suite is not None:
            master_secret, transcript_hash = source
            self._exporter_secret = derive_secret(
                self.suite.hash_name, master_secret, b"exp master", transcript_hash
            )
            self._log_secret13(b"exp master", self._exporter_secret)
            self._exporter_source = None
        return self._exporter_secret

    def set_exporter_source13(self, master_secret: bytes, transcript_hash: bytes) -> None:
        """Remember what exporter_master_secret is derived from, for later."""
        self._exporter_source = (master_secret, transcript_hash)
        self._exporter_secret = b""

    @property
    def peer_closed(self) -> bool:
        return self._closed_by_peer

    @property
    def closed(self) -> bool:
        return self._failed is not None or (self._sent_close and self._closed_by_peer)

    # --- used by the handshake modules ----------------------------------------

    def key_schedule(self, hash_name: str, psk: bytes | None = None) -> KeySchedule13:
        """A TLS 1.3 key schedule for this connection, its secrets key-logged when asked."""
        schedule = KeySchedule13(hash_name, psk)
        if self.config.key_log is not None:
            schedule.observer = self._log_secret13
        return schedule

    def _log_secret13(self, label: bytes, secret: bytes) -> None:
        name = LABELS_13.get(label)
        if name is not None and self.config.key_log is not None:
            self.config.key_log(key_log_line(name, self.client_random, secret))

    def log_master_secret12(self, client_random: bytes, master_secret: bytes) -> None:
        if self.config.key_log is not None:
            self.config.key_log(key_log_line("CLIENT_RANDOM", client_random, master_secret))

    def send_handshake(
        self,
        msg_type: int,
        body: bytes,
        *,
        add_to_transcript: bool = True,
        rewrite: bool = True,
    ) -> bytes:
        # rewrite=False: the caller already ran the rewriter (a ClientHello with a
        # PSK binder, which must be computed over the rewritten hello).
        if rewrite and self.config.handshake_rewriter is not None:
            body = self.config.handshake_rewriter(msg_type, body)
        message = handshake(msg_type, body)
        if add_to_transcript:
            self.transcript.add(message)
        self.records.write_records(_CT.HANDSHAKE, message)
        return message

    def send_alert(self, level: int, description: int) -> None:
        try:
            self.records.write_records(_CT.ALERT, bytes((level, description)))
        except TlsProtocolError:
            pass

    def set_read_secret13(self, secret: bytes) -> None:
        assert self.suite is not None
        if self._hs_buffer:
            raise TlsProtocolError(
                AlertDescription.UNEXPECTED_MESSAGE, "handshake message spans a key change"
            )
        if self.records.read is None:
            # The peer may not have its keys yet: it can still send a plaintext
            # alert (say, refusing our ServerHello) until its first protected record.
            self.records.plain_alerts_allowed = True
        self.records.read = Protection.from_traffic_secret13(self.suite, secret)
        self.read_secret = secret

    def set_write_secret13(self, secret: bytes) -> None:
        assert self.suite is not None
        self.records.write = Protection.from_traffic_secret13(self.suite, secret)
        self.write_secret = secret
        if self.config.key_update_after_records is not None:
            self.records.write.limit = self.config.key_update_after_records

    def queue_application_data_first(self, data: bytes) -> None:
        self._pending_app_data.insert(0, data)

    def complete_handshake(self) -> None:
        self.handshake_complete = True
        # From here on TLS 1.3 application data takes the bulk record paths.
        self._bulk13 = self.version == TLS13 and not self.receiving_early_data
        pending, self._pending_app_data = self._pending_app_data, []
        for data in pending:
            self._write_app_data(data)

    # --- internals ---------------------------------------------------------------

    def _run(self, step: Callable[[], None]) -> None:
        """Run a step; turn any failure into a fatal alert and a TlsError."""
        try:
            step()
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> NoReturn:
        """The connection fails with ``exc`` (raised in a step): alert, then raise."""
        if isinstance(exc, TlsProtocolError):
            self._abort(exc, exc.description)
        if isinstance(exc, Malformed):
            self._abort(
                TlsProtocolError(AlertDescription.DECODE_ERROR, f"malformed message: {exc}"),
                AlertDescription.DECODE_ERROR,
            )
        if isinstance(exc, TlsAlertReceived):
            self._failed = exc
            raise exc
        if isinstance(exc, TlsError):
            raise exc
        if isinstance(exc, NotReplayable):  # a simulation's run fails with the reason
            self._failed = TlsProtocolError(AlertDescription.INTERNAL_ERROR, str(exc))
            self.send_alert(AlertLevel.FATAL, AlertDescription.INTERNAL_ERROR)
            raise exc
        # A bug must still end in an alert, not a crash.
        error = TlsProtocolError(AlertDescription.INTERNAL_ERROR, f"internal error: {exc!r}")
        self._abort(error, AlertDescription.INTERNAL_ERROR, cause=exc)

    def _abort(
        self,
        error: TlsProtocolError,
        description: AlertDescription,
        cause: BaseException | None = None,
    ) -> NoReturn:
        self._failed = error
        self.send_alert(AlertLevel.FATAL, description)
        raise error from (cause or error.__cause__)

    def _process_records(self) -> None:
        records = self.records
        while not self._closed_by_peer and self._failed is None:
            if self._bulk13 and not self._hs_buffer:
                # After a record of another kind, application data in bulk again.
                payloads, _ = records.open_application_data13()
                self.events += map(ApplicationData, payloads)
            record = records.next_record()
            if record is None:
                return
            content_type, payload = record
            if content_type == _CT.APPLICATION_DATA and not self._hs_buffer:
                self._on_application_data(payload)  # most records: checked first
                continue
            if self._hs_buffer and content_type != _CT.HANDSHAKE:
                raise TlsProtocolError(
                    AlertDescription.UNEXPECTED_MESSAGE,
                    "record interleaved within a handshake message",
                )
            if content_type == _CT.HANDSHAKE:
                if not payload:
                    raise TlsProtocolError(
                        AlertDescription.UNEXPECTED_MESSAGE, "empty handshake record"
                    )
                self._hs_buffer += payload
                self._process_handshake_messages()
            elif content_type == _CT.APPLICATION_DATA:
                self._on_application_data(payload)
            elif content_type == _CT.ALERT:
                self._on_alert(payload)
            else:
                self._on_change_cipher_spec(payload)

    def _on_change_cipher_spec(self, payload: bytes) -> None:
        # One per connection in either version: TLS 1.2 has no renegotiation here,
        # and TLS 1.3's compatibility CCS is sent once (RFC 8446 appendix D.4).
        if payload != b"\x01":
            raise TlsProtocolError(
                AlertDescription.UNEXPECTED_MESSAGE, "malformed change_cipher_spec"
            )
        if self._ccs_received:
            raise TlsProtocolError(
                AlertDescription.UNEXPECTED_MESSAGE, "a second change_cipher_spec"
            )
        self._ccs_received = True
        self._handshake.handle_change_cipher_spec()

    def _process_handshake_messages(self) -> None:
        while len(self._hs_buffer) >= 4:
            length = int.from_bytes(self._hs_buffer[1:4], "big")
            if length > _MAX_HANDSHAKE_MESSAGE:
                raise TlsProtocolError(
                    AlertDescription.DECODE_ERROR,
                    f"handshake message of {length} bytes is too long",
                )
            if len(self._hs_buffer) < 4 + length:
                return
            raw = bytes(self._hs_buffer[: 4 + length])
            del self._hs_buffer[: 4 + length]
            msg_type = raw[0]
            if self.handshake_complete and self.version == TLS13:
                self._post_handshake13(msg_type, raw[4:], raw)
            else:
                self._handshake.handle(msg_type, raw[4:], raw)
            if self._failed is not None:
                return

    def _post_handshake13(self, msg_type: int, body: bytes, raw: bytes) -> None:
        if msg_type == HandshakeType.KEY_UPDATE:
            if len(body) != 1 or body[0] not in (0, 1):
                raise TlsProtocolError(
                    AlertDescription.DECODE_ERROR
                    if len(body) != 1
                    else AlertDescription.ILLEGAL_PARAMETER,
                    "malformed KeyUpdate",
                )
            assert self.suite is not None
            if self._hs_buffer:
                raise TlsProtocolError(
                    AlertDescription.UNEXPECTED_MESSAGE, "handshake message spans a key change"
                )
            self.set_read_secret13(next_traffic_secret(self.suite.hash_name, self.read_secret))
            requested = body[0] == KeyUpdateRequest.UPDATE_REQUESTED
            if requested and not self._sent_close:
                self._send_key_update(False)
            self.events.append(KeyUpdated(peer_requested=requested))
            return
        self._handshake.handle(msg_type, body, raw)

    def _send_key_update(self, request_peer_update: bool) -> None:
        assert self.suite is not None
        flag = (
            KeyUpdateRequest.UPDATE_REQUESTED
            if request_peer_update
            else KeyUpdateRequest.UPDATE_NOT_REQUESTED
        )
        self.send_handshake(HandshakeType.KEY_UPDATE, u8(flag), add_to_transcript=False)
        self.set_write_secret13(next_traffic_secret(self.suite.hash_name, self.write_secret))

    def _write_app_data(self, data: bytes) -> None:
        write = self.records.write
        assert write is not None
        step = 1 << 14
        for start in range(0, max(len(data), 1), step):
            write = self.records.write
            assert write is not None
            if write.seq >= write.limit:
                if self.version == TLS13:
                    # Replace the key before the AEAD's safety limit (RFC 8446 5.5).
                    self._send_key_update(False)
                else:
                    raise TlsProtocolError(
                        AlertDescription.INTERNAL_ERROR,
                        "TLS 1.2 key usage limit reached; reconnect",
                    )
            self.records.write_records(_CT.APPLICATION_DATA, data[start : start + step])

    def _on_application_data(self, payload: bytes) -> None:
        if self.receiving_early_data:
            self._early_bytes += len(payload)
            if self._early_bytes > self.config.max_early_data:
                raise TlsProtocolError(
                    AlertDescription.UNEXPECTED_MESSAGE,
                    "more 0-RTT data than max_early_data allows",
                )
            self.events.append(EarlyData(payload))
            return
        if not self.handshake_complete:
            raise TlsProtocolError(
                AlertDescription.UNEXPECTED_MESSAGE,
                "application data before the handshake completed",
            )
        if payload:
            self.events.append(ApplicationData(payload))

    def _on_alert(self, payload: bytes) -> None:
        if not payload:
            # RFC 8446 section 5.4 (and 5.1 for plaintext records).
            raise TlsProtocolError(AlertDescription.UNEXPECTED_MESSAGE, "empty alert record")
        if len(payload) != 2:
            raise TlsProtocolError(AlertDescription.DECODE_ERROR, "alert is not two bytes")
        level, description = payload
        if description == AlertDescription.CLOSE_NOTIFY:
            self._closed_by_peer = True
            self.events.append(ConnectionClosed())
            return
        if description == AlertDescription.USER_CANCELED:
            return
        if level == AlertLevel.WARNING and self.version != TLS13:
            return  # TLS 1.2 warnings (e.g. no_renegotiation) are not fatal
        error = TlsAlertReceived(description)
        self._failed = error
        raise error
