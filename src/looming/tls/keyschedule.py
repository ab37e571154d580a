"""The TLS 1.3 key schedule (RFC 8446 section 7) and the handshake transcript."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from looming.bounded import Memo

from .suites import (
    DIGEST_SIZE,
    derive_secret,
    digest_size,
    empty_hash,
    hkdf_expand_label,
    hkdf_extract,
    hmac_digest,
)

_HASH_CONSTRUCTORS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384}


def _new_hash(hash_name: str) -> hashlib._Hash:
    """hashlib.new without its by-name dispatch for the two TLS 1.3 hashes."""
    constructor = _HASH_CONSTRUCTORS.get(hash_name)
    return constructor() if constructor is not None else hashlib.new(hash_name)


class Transcript:
    """The running hash of handshake messages; buffers until the hash is known."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._hash: hashlib._Hash | None = None
        # Every message as sent, for TLS 1.2 CertificateVerify (which signs them all).
        self.raw = bytearray()

    def set_hash(self, hash_name: str) -> None:
        """Start hashing with ``hash_name`` (once; later calls keep the running hash)."""
        if self._hash is not None:
            return
        self._hash = _new_hash(hash_name)
        for message in self._pending:
            self._hash.update(message)
        self._pending.clear()

    def add(self, message: bytes) -> None:
        self.raw += message
        if self._hash is None:
            self._pending.append(message)
        else:
            self._hash.update(message)

    def digest(self) -> bytes:
        assert self._hash is not None, "transcript hash used before the suite was chosen"
        return self._hash.copy().digest()

    def digest_with(self, hash_name: str, extra: bytes) -> bytes:
        """The hash of the transcript followed by ``extra`` (for PSK binders)."""
        if self._hash is None:
            h = _new_hash(hash_name)
            for message in self._pending:
                h.update(message)
        else:
            h = self._hash.copy()
        h.update(extra)
        return h.digest()

    def replace_with_message_hash(self) -> None:
        """After a HelloRetryRequest: ClientHello1 becomes message_hash(Hash(ClientHello1))."""
        assert self._hash is not None
        digest = self._hash.digest()
        self._hash = hashlib.new(self._hash.name)
        self._hash.update(bytes((254, 0, 0, len(digest))) + digest)


# HkdfLabel (RFC 8446 section 7.1) for Derive-Secret, per hash and label, up
# to the context: (length, "tls13 " + label). A derivation is then one
# concatenation and one HMAC call (HKDF-Expand to at most one hash block).
# The labels are a small closed set; the memo stays bounded anyway.
_DERIVE_PREFIX: Memo[tuple[str, bytes], bytes] = Memo(256)
_derive_prefix_get = _DERIVE_PREFIX.get


def _derive_prefix(hash_name: str, label: bytes) -> bytes:
    length = DIGEST_SIZE[hash_name]
    prefix = length.to_bytes(2, "big") + bytes((6 + len(label),)) + b"tls13 " + label
    return _DERIVE_PREFIX.put((hash_name, label), prefix)


class KeySchedule13:
    """Early, handshake and master secrets for one connection."""

    def __init__(self, hash_name: str, psk: bytes | None = None) -> None:
        self.hash_name = hash_name
        self.hash_length = digest_size(hash_name)
        self.psk = psk
        self.early_secret = hkdf_extract(hash_name, b"", psk or bytes(self.hash_length))
        self.handshake_secret = b""
        self.master_secret = b""
        # The TLS 1.3 hashes (SHA-256, SHA-384) take the one-call path in derive.
        self._fast = hash_name in DIGEST_SIZE
        self._empty_hash = empty_hash(hash_name)
        # Given (label, secret) for every secret derived (the key log), when set.
        self.observer: Callable[[bytes, bytes], None] | None = None

    def derive(self, secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
        if self._fast and len(transcript_hash) < 256:
            hash_name = self.hash_name
            prefix = _derive_prefix_get((hash_name, label)) or _derive_prefix(hash_name, label)
            info = prefix + bytes((len(transcript_hash),)) + transcript_hash + b"\x01"
            derived = hmac_digest(secret, info, hash_name)
        else:
            derived = derive_secret(self.hash_name, secret, label, transcript_hash)
        if self.observer is not None:
            self.observer(label, derived)
        return derived

    def binder_key(self, external: bool = False) -> bytes:
        label = b"ext binder" if external else b"res binder"
        return self.derive(self.early_secret, label, self._empty_hash)

    def enter_handshake(self, shared_secret: bytes) -> None:
        derived = self.derive(self.early_secret, b"derived", self._empty_hash)
        self.handshake_secret = hkdf_extract(self.hash_name, derived, shared_secret)

    def enter_master(self) -> None:
        derived = self.derive(self.handshake_secret, b"derived", self._empty_hash)
        self.master_secret = hkdf_extract(self.hash_name, derived, bytes(self.hash_length))

    def finished_mac(self, base_key: bytes, transcript_hash: bytes) -> bytes:
        finished_key = hkdf_expand_label(
            self.hash_name, base_key, b"finished", b"", self.hash_length
        )
        return hmac_digest(finished_key, transcript_hash, self.hash_name)


# HkdfLabel for the record keys (empty context, RFC 8446 section 7.3), whole:
# key and IV are then one HMAC call each.
_KEY_INFO = {n: n.to_bytes(2, "big") + b"\x09tls13 key\x00\x01" for n in (16, 32)}
_IV_INFO = (12).to_bytes(2, "big") + b"\x08tls13 iv\x00\x01"


def traffic_keys(hash_name: str, secret: bytes, key_length: int) -> tuple[bytes, bytes]:
    key_info = _KEY_INFO.get(key_length)
    if key_info is not None and hash_name in DIGEST_SIZE:
        return (
            hmac_digest(secret, key_info, hash_name)[:key_length],
            hmac_digest(secret, _IV_INFO, hash_name)[:12],
        )
    return (
        hkdf_expand_label(hash_name, secret, b"key", b"", key_length),
        hkdf_expand_label(hash_name, secret, b"iv", b"", 12),
    )


def next_traffic_secret(hash_name: str, secret: bytes) -> bytes:
    return hkdf_expand_label(hash_name, secret, b"traffic upd", b"", digest_size(hash_name))


def exporter13(
    hash_name: str, exporter_master: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    derived = derive_secret(hash_name, exporter_master, label, empty_hash(hash_name))
    return hkdf_expand_label(
        hash_name, derived, b"exporter", hashlib.new(hash_name, context).digest(), length
    )


def resumption_psk(hash_name: str, resumption_master: bytes, nonce: bytes) -> bytes:
    return hkdf_expand_label(
        hash_name, resumption_master, b"resumption", nonce, digest_size(hash_name)
    )
