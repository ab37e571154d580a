"""The record layer: framing, AEAD protection for TLS 1.3 and 1.2, limits.

A :class:`RecordLayer` turns received bytes into (content type, plaintext)
pairs and plaintext into records to send. It knows nothing about handshakes;
the engine installs and replaces the :class:`Protection` in each direction.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .constants import (
    MAX_CIPHERTEXT_12,
    MAX_CIPHERTEXT_13,
    MAX_PLAINTEXT,
    AlertDescription,
    ContentType,
    plain_values,
)
from .errors import TlsProtocolError
from .keyschedule import traffic_keys
from .suites import SuiteInfo

Aead = AESGCM | ChaCha20Poly1305

# A plain-int view of the record types (see plain_values): read on every record.
_CT = plain_values(ContentType)
_HEADER = 5
_TAG = 16
_SEQ_LAST = (1 << 64) - 1
# Per record, on the hot path: the inner content type byte and the 1.3 header's start.
_TYPE_BYTE = [bytes((value,)) for value in range(256)]
_PREFIX13 = bytes((_CT.APPLICATION_DATA, 3, 3))


class Protection:
    """AEAD keys and the sequence number for one direction of one epoch."""

    def __init__(self, suite: SuiteInfo, key: bytes, iv: bytes, tls13: bool) -> None:
        self.suite = suite
        self.tls13 = tls13
        # TLS 1.2 AES-GCM: a 4-byte implicit salt and an 8-byte explicit nonce
        # on the wire (RFC 5288); ChaCha20 and all of 1.3 XOR the sequence
        # number into a 12-byte IV (RFC 7905, RFC 8446 section 5.3).
        self._explicit_nonce = not tls13 and not suite.is_chacha
        self.seq = 0
        self.limit = suite.record_limit
        self._traffic_secret = b""
        self._aead: Aead | None = None
        self._salt = b""
        self._iv = 0
        self._set_keys(key, iv)

    @classmethod
    def from_traffic_secret13(cls, suite: SuiteInfo, secret: bytes) -> Protection:
        """TLS 1.3 protection under ``secret``, its key and IV derived on first use.

        A direction that never carries a record under this epoch (a client that
        only reads after the handshake, say) costs no key derivation at all.
        """
        protection = cls(suite, b"", b"", tls13=True)
        protection._traffic_secret = secret
        return protection

    def _set_keys(self, key: bytes, iv: bytes) -> None:
        self._aead = self.suite.aead(key) if key else None
        self._salt = iv
        self._iv = int.from_bytes(iv, "big") if len(iv) == 12 else 0

    def _keyed(self) -> Aead:
        """The AEAD, deriving it (and the IV) from the traffic secret the first time."""
        if self._aead is None:
            suite = self.suite
            key, iv = traffic_keys(suite.hash_name, self._traffic_secret, suite.key_length)
            self._set_keys(key, iv)
            self._traffic_secret = b""
            assert self._aead is not None
        return self._aead

    def _nonce(self) -> bytes:
        if self._explicit_nonce:
            return self._salt + self.seq.to_bytes(8, "big")
        return (self._iv ^ self.seq).to_bytes(12, "big")

    def _next_seq(self) -> int:
        seq = self.seq
        if seq >= (1 << 64) - 1:
            raise TlsProtocolError(AlertDescription.INTERNAL_ERROR, "sequence number would wrap")
        self.seq = seq + 1
        return seq

    def seal(self, content_type: int, data: bytes, padding: int = 0) -> bytes | bytearray:
        if self.tls13:
            return self._seal13(content_type, data, padding)
        aead = self._aead or self._keyed()
        nonce = self._nonce()
        seq = self._next_seq()
        aad = seq.to_bytes(8, "big") + bytes((content_type, 3, 3)) + len(data).to_bytes(2, "big")
        explicit = nonce[4:] if self._explicit_nonce else b""
        length = len(explicit) + len(data) + _TAG
        record = bytearray(_HEADER + length)
        record[:_HEADER] = bytes((content_type, 3, 3)) + length.to_bytes(2, "big")
        record[_HEADER : _HEADER + len(explicit)] = explicit
        with memoryview(record) as view:
            aead.encrypt_into(nonce, data, aad, view[_HEADER + len(explicit) :])
        return record

    def _seal13(self, content_type: int, data: bytes, padding: int) -> bytes:
        # TLS 1.3 is every record after the handshake: kept to the fewest steps.
        aead = self._aead or self._keyed()
        seq = self.seq
        if seq >= _SEQ_LAST:
            raise TlsProtocolError(AlertDescription.INTERNAL_ERROR, "sequence number would wrap")
        self.seq = seq + 1
        inner = data + _TYPE_BYTE[content_type]
        if padding:
            inner += bytes(padding)
        header = _PREFIX13 + (len(inner) + _TAG).to_bytes(2, "big")
        # One immutable record: take_outgoing hands a lone record on without a
        # join, and encrypt's output needs no zero-filled buffer first.
        return header + aead.encrypt((self._iv ^ seq).to_bytes(12, "big"), inner, header)

    def _open13(self, header: bytes, body: bytes | memoryview) -> tuple[int, bytes]:
        aead = self._aead or self._keyed()
        seq = self.seq
        try:
            inner = aead.decrypt((self._iv ^ seq).to_bytes(12, "big"), body, header)
        except InvalidTag:
            raise TlsProtocolError(
                AlertDescription.BAD_RECORD_MAC, "record failed authentication"
            ) from None
        if seq >= _SEQ_LAST:
            raise TlsProtocolError(AlertDescription.INTERNAL_ERROR, "sequence number would wrap")
        self.seq = seq + 1
        # Strip the zero padding; the last non-zero byte is the real type.
        if len(inner) > MAX_PLAINTEXT + 1:
            raise TlsProtocolError(AlertDescription.RECORD_OVERFLOW, "inner plaintext too long")
        if inner and inner[-1]:
            return inner[-1], inner[:-1]  # the common case: no padding
        stripped = inner.rstrip(b"\x00")
        if not stripped:
            raise TlsProtocolError(
                AlertDescription.UNEXPECTED_MESSAGE, "record has no content type"
            )
        return stripped[-1], stripped[:-1]

    def open(self, header: bytes, body: bytes | memoryview) -> tuple[int, bytes]:
        """Decrypt one record; ``bad_record_mac`` if it does not authenticate."""
        if self.tls13:
            return self._open13(header, body)
        aead = self._aead or self._keyed()
        content_type = header[0]
        if self._explicit_nonce:
            if len(body) < 8 + _TAG:
                raise TlsProtocolError(AlertDescription.BAD_RECORD_MAC, "record too short")
            nonce = self._salt + bytes(body[:8])
            body = body[8:]
        else:
            nonce = self._nonce()
        if len(body) < _TAG:
            raise TlsProtocolError(AlertDescription.BAD_RECORD_MAC, "record too short")
        aad = self.seq.to_bytes(8, "big") + header[:3] + (len(body) - _TAG).to_bytes(2, "big")
        try:
            data = aead.decrypt(nonce, body, aad)
        except InvalidTag:
            raise TlsProtocolError(
                AlertDescription.BAD_RECORD_MAC, "record failed authentication"
            ) from None
        self._next_seq()
        return content_type, data


class RecordLayer:
    """Framing and protection of records in both directions."""

    def __init__(self) -> None:
        # Received bytes not yet taken as records: the caller's own bytes object
        # while it is the only input, so a whole record is read without a copy.
        self._incoming: bytes | bytearray = b""
        self._pos = 0  # start of the first unread record in _incoming
        self.read: Protection | None = None
        self._write: Protection | None = None
        self._outgoing: list[bytes | bytearray] = []
        # Protected handshake messages wait here so that consecutive ones under
        # one key share records (the server's whole flight in one record, as
        # RFC 8448 shows it), instead of costing a record and an AEAD call each.
        self._pending_handshake = bytearray()
        # The peer's record_size_limit (RFC 8449), None when not negotiated,
        # and the largest plaintext we accept.
        self.send_limit: int | None = None
        self.receive_plaintext_limit = MAX_PLAINTEXT
        # Bytes of undecryptable early data still to skip after rejecting 0-RTT.
        self.skip_early_data = 0
        # The version field we put on plaintext records (0x0301 for a first ClientHello).
        self.plaintext_version = b"\x03\x03"
        self.padding_block = 0
        # TLS 1.3: a plaintext alert is still taken after the first read key is set,
        # until the first protected record arrives (the peer may lack the keys).
        self.plain_alerts_allowed = False

    def feed(self, data: bytes | bytearray) -> None:
        incoming = self._incoming
        if self._pos == len(incoming) and type(data) is bytes:
            self._incoming, self._pos = data, 0  # nothing buffered: keep the bytes
        elif isinstance(incoming, bytearray):
            incoming += data
        else:
            self._incoming = bytearray(memoryview(incoming)[self._pos :])
            self._incoming += data
            self._pos = 0

    @property
    def buffered(self) -> int:
        return len(self._incoming) - self._pos

    def _compact(self) -> None:
        if self._pos:
            if self._pos == len(self._incoming):
                self._incoming = b""  # all taken: the common case, no copy
            elif isinstance(self._incoming, bytearray):
                del self._incoming[: self._pos]
            else:
                self._incoming = bytearray(memoryview(self._incoming)[self._pos :])
            self._pos = 0

    def next_record(self) -> tuple[int, bytes] | None:
        """The next complete record's (content type, plaintext), or None for more input."""
        while True:
            buf = self._incoming
            pos = self._pos
            if len(buf) - pos < _HEADER:
                self._compact()
                return None
            header = bytes(buf[pos : pos + _HEADER])
            content_type = header[0]
            length = header[3] << 8 | header[4]
            if content_type not in (20, 21, 22, 23):
                raise TlsProtocolError(
                    AlertDescription.UNEXPECTED_MESSAGE, f"unknown record type {content_type}"
                )
            if header[1] != 3:
                raise TlsProtocolError(AlertDescription.DECODE_ERROR, "record version is not 3.x")
            protection = self.read
            limit = (
                MAX_PLAINTEXT
                if protection is None
                else (MAX_CIPHERTEXT_13 if protection.tls13 else MAX_CIPHERTEXT_12)
            )
            if length > limit:
                raise TlsProtocolError(
                    AlertDescription.RECORD_OVERFLOW, f"record of {length} bytes exceeds {limit}"
                )
            end = pos + _HEADER + length
            if len(buf) < end:
                self._compact()
                return None
            self._pos = end
            if protection is None or (
                protection.tls13
                and (
                    content_type == _CT.CHANGE_CIPHER_SPEC
                    or (content_type == _CT.ALERT and self.plain_alerts_allowed)
                )
            ):
                if length == 0 and content_type != _CT.APPLICATION_DATA:
                    raise TlsProtocolError(
                        AlertDescription.UNEXPECTED_MESSAGE, "empty plaintext record"
                    )
                if self.skip_early_data and content_type == _CT.APPLICATION_DATA:
                    self._skip(length)
                    continue
                return content_type, bytes(buf[pos + _HEADER : end])
            opened = self._open_protected(protection, header, buf, pos + _HEADER, end)
            if opened is None:
                self._skip(length)
                continue
            return opened

    def _open_protected(
        self, protection: Protection, header: bytes, buf: bytes | bytearray, start: int, end: int
    ) -> tuple[int, bytes] | None:
        """The protected record in ``buf[start:end]`` opened; None for early data to skip."""
        tls13 = protection.tls13
        if tls13 and header[0] != _CT.APPLICATION_DATA:
            raise TlsProtocolError(
                AlertDescription.UNEXPECTED_MESSAGE, "unprotected record after keys were set"
            )
        open_record = protection._open13 if tls13 else protection.open
        # Decrypt from a view of the buffer (no copy); the view is released
        # before the buffer can be resized (the parent view is a temporary).
        body = memoryview(buf)[start:end]
        try:
            if self.skip_early_data:
                try:
                    inner_type, plaintext = open_record(header, body)
                except TlsProtocolError:
                    return None
                self.skip_early_data = 0
            else:
                inner_type, plaintext = open_record(header, body)
        finally:
            body.release()
        self.plain_alerts_allowed = False
        if len(plaintext) > self.receive_plaintext_limit:
            raise TlsProtocolError(
                AlertDescription.RECORD_OVERFLOW, "plaintext exceeds the record size limit"
            )
        if inner_type not in (21, 22, 23):
            raise TlsProtocolError(
                AlertDescription.UNEXPECTED_MESSAGE, f"unexpected inner type {inner_type}"
            )
        return inner_type, plaintext

    def _skip(self, length: int) -> None:
        if length > self.skip_early_data:
            raise TlsProtocolError(
                AlertDescription.BAD_RECORD_MAC, "undecryptable data beyond max_early_data_size"
            )
        self.skip_early_data -= length

    @property
    def write(self) -> Protection | None:
        return self._write

    @write.setter
    def write(self, protection: Protection | None) -> None:
        # Messages queued under the old key are sealed with it before the change.
        self._flush_handshake()
        self._write = protection

    def _flush_handshake(self) -> None:
        if self._pending_handshake:
            data = bytes(self._pending_handshake)
            self._pending_handshake.clear()
            self._write_fragments(_CT.HANDSHAKE, data)

    def write_application_data13(self, data: bytes) -> bool:
        """Seal one TLS 1.3 application data record at once when nothing else
        applies (no handshake bytes queued, no record size limit, no padding, a
        record's worth of data); False when the general path must be taken."""
        protection = self._write
        if (
            protection is None
            or not protection.tls13
            or self._pending_handshake
            or self.send_limit is not None
            or self.padding_block
            or len(data) > MAX_PLAINTEXT
            or protection.seq >= protection.limit
        ):
            return False
        self._outgoing.append(protection._seal13(_CT.APPLICATION_DATA, data, 0))
        return True

    def write_records(self, content_type: int, data: bytes) -> None:
        """Fragment ``data`` into records of ``content_type`` and queue them."""
        if content_type == _CT.HANDSHAKE and self._write is not None:
            self._pending_handshake += data
            return
        self._flush_handshake()
        self._write_fragments(content_type, data)

    def _write_fragments(self, content_type: int, data: bytes) -> None:
        protection = self._write
        tls13 = protection is not None and protection.tls13
        limit = self.send_limit
        # In 1.3 the peer's limit counts the inner content-type byte too.
        step = MAX_PLAINTEXT if limit is None else min(MAX_PLAINTEXT, limit - 1 if tls13 else limit)
        if protection is None:
            for start in range(0, max(len(data), 1), step):
                chunk = data[start : start + step]
                self._outgoing.append(
                    bytes((content_type,))
                    + self.plaintext_version
                    + len(chunk).to_bytes(2, "big")
                    + chunk
                )
            return
        inner_max = min(limit if limit is not None else MAX_PLAINTEXT + 1, MAX_PLAINTEXT + 1)
        for start in range(0, max(len(data), 1), step):
            chunk = data[start : start + step]
            pad = 0
            if self.padding_block and tls13:
                pad = min(inner_max - len(chunk) - 1, (-(len(chunk) + 1)) % self.padding_block)
            self._outgoing.append(protection.seal(content_type, chunk, pad))

    def take_outgoing(self) -> bytes:
        if self._pending_handshake:
            self._flush_handshake()
        outgoing = self._outgoing
        if len(outgoing) == 1 and isinstance(lone := outgoing[0], bytes):
            outgoing.clear()
            return lone  # a lone sealed record (bulk sending): no copy
        out = b"".join(outgoing)
        outgoing.clear()
        return out
