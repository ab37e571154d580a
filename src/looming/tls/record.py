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
_FULL_INNER = MAX_PLAINTEXT + 1


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

    def _seal13(self, content_type: int, data: bytes | memoryview, padding: int) -> bytes:
        aead = self._aead or self._keyed()
        seq = self.seq
        if seq >= _SEQ_LAST:
            raise TlsProtocolError(AlertDescription.INTERNAL_ERROR, "sequence number would wrap")
        self.seq = seq + 1
        # The inner plaintext: the content, its type byte, any zero padding.
        inner = b"".join((data, _TYPE_BYTE[content_type], bytes(padding)))
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
        return _split_inner13(inner)

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


def _split_inner13(inner: bytes) -> tuple[int, bytes]:
    """A TLS 1.3 inner plaintext's (content type, content), zero padding stripped."""
    if len(inner) > MAX_PLAINTEXT + 1:
        raise TlsProtocolError(AlertDescription.RECORD_OVERFLOW, "inner plaintext too long")
    if inner and inner[-1]:
        return inner[-1], inner[:-1]  # the common case: no padding
    # The last non-zero byte is the real type.
    stripped = inner.rstrip(b"\x00")
    if not stripped:
        raise TlsProtocolError(AlertDescription.UNEXPECTED_MESSAGE, "record has no content type")
    return stripped[-1], stripped[:-1]


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
        self._receive_limit = MAX_PLAINTEXT
        self._inner_max13 = MAX_PLAINTEXT + 1
        # Bytes of undecryptable early data still to skip after rejecting 0-RTT.
        self.skip_early_data = 0
        # The version field we put on plaintext records (0x0301 for a first ClientHello).
        self.plaintext_version = b"\x03\x03"
        self.padding_block = 0
        # TLS 1.3: a plaintext alert is still taken after the first read key is set,
        # until the first protected record arrives (the peer may lack the keys).
        self.plain_alerts_allowed = False
        # A record open_application_data13 opened but left for next_record to return.
        self._opened: tuple[int, bytes] | None = None
        # Reused buffers for full-size TLS 1.3 records (see _seal_buffer, _open_buffers).
        self._seal_scratch = bytearray()
        self._open_scratch = bytearray()
        self._open_content = memoryview(b"")

    @property
    def receive_plaintext_limit(self) -> int:
        """The largest plaintext accepted in a record (ours, RFC 8449)."""
        return self._receive_limit

    @receive_plaintext_limit.setter
    def receive_plaintext_limit(self, limit: int) -> None:
        self._receive_limit = limit
        # The longest TLS 1.3 inner plaintext (content and type byte) the bulk
        # path takes as it is.
        self._inner_max13 = min(limit, MAX_PLAINTEXT) + 1

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
        if (opened := self._opened) is not None:
            self._opened = None
            return opened
        while True:
            buf = self._incoming
            pos = self._pos
            if len(buf) - pos < _HEADER:
                if pos:
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
        return self._checked(inner_type, plaintext)

    def _checked(self, inner_type: int, plaintext: bytes) -> tuple[int, bytes]:
        """An opened record's (type, plaintext) once its size and type are allowed."""
        if len(plaintext) > self._receive_limit:
            raise TlsProtocolError(
                AlertDescription.RECORD_OVERFLOW, "plaintext exceeds the record size limit"
            )
        if inner_type not in (21, 22, 23):
            raise TlsProtocolError(
                AlertDescription.UNEXPECTED_MESSAGE, f"unexpected inner type {inner_type}"
            )
        return inner_type, plaintext

    def open_application_data13(  # noqa: PLR0915  (one pass: no call per record, see README)
        self, data: bytes | bytearray = b""
    ) -> tuple[list[bytes], bool]:
        """Feed ``data``, then open the TLS 1.3 application data records in
        the received bytes in one pass (once the handshake is complete): their
        contents (none for empty records), and whether :meth:`next_record` has
        more to do. The pass stops at an incomplete record, before one that
        needs next_record's checks, and after one that opens to another type,
        with padding or too long: next_record returns it (or fails on it) next.
        """
        buf = self._incoming
        pos = self._pos
        if data:
            if pos == len(buf) and type(data) is bytes:
                self._incoming = buf = data  # nothing buffered: keep the bytes
                self._pos = pos = 0
            else:
                self.feed(data)
                buf, pos = self._incoming, self._pos
        payloads: list[bytes] = []
        size = len(buf)
        # A record already opened goes first; nothing to open derives no keys.
        if self._opened is not None or size - pos < _HEADER:
            return payloads, self._opened is not None
        protection = self.read
        assert protection is not None
        aead = protection._aead or protection._keyed()
        iv = protection._iv
        seq = protection.seq
        inner_max = self._inner_max13
        # A full-size record (unless our size limit is smaller) opens into a reused buffer.
        full = _FULL_INNER + _TAG if inner_max == _FULL_INNER else -1
        view = body = memoryview(buf)  # bodies are slices of it: no copy
        more = True
        while size - pos >= _HEADER:
            length = buf[pos + 3] << 8 | buf[pos + 4]
            if buf[pos] != 23 or buf[pos + 1] != 3 or length > MAX_CIPHERTEXT_13:
                break  # next_record's checks apply
            end = pos + _HEADER + length
            if end > size:
                more = False  # the rest of this record is still to come
                break
            if seq >= _SEQ_LAST:
                break
            nonce = (iv ^ seq).to_bytes(12, "big")
            body, header = view[pos + _HEADER : end], buf[pos : pos + _HEADER]
            try:
                if length == full:
                    scratch = self._open_scratch or self._open_buffers()
                    aead.decrypt_into(nonce, body, header, scratch)
                    inner = None
                else:
                    inner = aead.decrypt(nonce, body, header)
            except InvalidTag:
                raise TlsProtocolError(
                    AlertDescription.BAD_RECORD_MAC, "record failed authentication"
                ) from None
            seq += 1
            pos = end
            if inner is None:
                if scratch[-1] == 23:
                    payloads.append(bytes(self._open_content))
                    continue
                inner = bytes(scratch)
            elif len(inner) <= inner_max and inner[-1:] == b"\x17":
                if len(inner) > 1:
                    payloads.append(inner[:-1])
                continue
            self._opened = self._checked(*_split_inner13(inner))
            break
        else:
            more = False
        protection.seq = seq
        del view, body  # before the buffer may be resized
        if pos == size:
            self._incoming = b""  # all taken: the common case
            self._pos = 0
        else:
            self._pos = pos
            self._compact()
        return payloads, more

    def _open_buffers(self) -> bytearray:
        """The reused buffer full-size records open into, made on first use."""
        self._open_scratch = bytearray(_FULL_INNER)
        self._open_content = memoryview(self._open_scratch)[:-1]
        return self._open_scratch

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

    def write_application_data13(self, data: bytes) -> int:
        """Seal TLS 1.3 application data records of ``data`` at once, when
        nothing else applies (no handshake bytes queued, no record size limit,
        no padding): returns how many bytes of ``data`` were sealed, the rest
        (all of it, or what follows a record at the key's usage limit) is for
        the general path. Only once the handshake is complete."""
        if self._pending_handshake or self.send_limit is not None or self.padding_block:
            return 0
        protection = self._write
        assert protection is not None
        seq = protection.seq
        if len(data) > MAX_PLAINTEXT or seq >= protection.limit or seq >= _SEQ_LAST:
            return self._write_application_data13_records(protection, data)
        aead = protection._aead or protection._keyed()
        inner = data + b"\x17"  # the content and its type byte: one copy
        header = _PREFIX13 + (len(inner) + _TAG).to_bytes(2, "big")
        protection.seq = seq + 1
        nonce = (protection._iv ^ seq).to_bytes(12, "big")
        # One immutable record: take_outgoing hands a lone record on without a
        # join. A full one is sealed into a reused buffer first (no output
        # buffer to allocate and zero).
        if len(inner) == _FULL_INNER:
            scratch = self._seal_scratch or self._seal_buffer()
            aead.encrypt_into(nonce, inner, header, scratch)
            self._outgoing.append(header + scratch)
        else:
            self._outgoing.append(header + aead.encrypt(nonce, inner, header))
        return len(data)

    def _seal_buffer(self) -> bytearray:
        """The reused buffer full-size records are sealed into, made on first use."""
        self._seal_scratch = bytearray(_FULL_INNER + _TAG)
        return self._seal_scratch

    def _write_application_data13_records(self, protection: Protection, data: bytes) -> int:
        """write_application_data13 for more than a record's worth of data, or
        at the key's usage limit (nothing sealed: the general path updates it)."""
        size = len(data)
        start = 0
        while start < size:
            seq = protection.seq
            if seq >= protection.limit or seq >= _SEQ_LAST:
                break
            sealed = self.write_application_data13(data[start : start + MAX_PLAINTEXT])
            if not sealed:
                break
            start += sealed
        return start

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
        if len(outgoing) == 1 and type(lone := outgoing[0]) is bytes:
            outgoing.clear()
            return lone  # a lone sealed record (bulk sending): no copy
        out = b"".join(outgoing)
        outgoing.clear()
        return out
