"""What each cipher suite means: its AEAD, key sizes, hash and (1.2) authentication."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from looming.bounded import Memo

from .constants import CipherSuite

AeadFactory = Callable[[bytes], AESGCM | ChaCha20Poly1305]


@dataclass(frozen=True)
class SuiteInfo:
    suite: CipherSuite
    version: int  # 0x0304 for TLS 1.3 suites, 0x0303 for 1.2 suites
    hash_name: str
    key_length: int
    aead: AeadFactory
    is_chacha: bool
    # TLS 1.2: which certificate key type authenticates the ECDHE exchange.
    auth: str = ""
    # Records one key may protect before it must be replaced (RFC 8446 5.5;
    # RFC 9147 appendix: 2^24.5 full-size records for AES-GCM).
    record_limit: int = 1 << 62

    @property
    def hash_length(self) -> int:
        return digest_size(self.hash_name)


_AES_GCM_LIMIT = 23_726_566  # floor(2^24.5)

SUITES: dict[int, SuiteInfo] = {
    s.suite: s
    for s in (
        SuiteInfo(
            CipherSuite.TLS_AES_128_GCM_SHA256,
            0x0304,
            "sha256",
            16,
            AESGCM,
            False,
            "",
            _AES_GCM_LIMIT,
        ),
        SuiteInfo(
            CipherSuite.TLS_AES_256_GCM_SHA384,
            0x0304,
            "sha384",
            32,
            AESGCM,
            False,
            "",
            _AES_GCM_LIMIT,
        ),
        SuiteInfo(
            CipherSuite.TLS_CHACHA20_POLY1305_SHA256, 0x0304, "sha256", 32, ChaCha20Poly1305, True
        ),
        SuiteInfo(
            CipherSuite.ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            0x0303,
            "sha256",
            16,
            AESGCM,
            False,
            "ecdsa",
            _AES_GCM_LIMIT,
        ),
        SuiteInfo(
            CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            0x0303,
            "sha384",
            32,
            AESGCM,
            False,
            "ecdsa",
            _AES_GCM_LIMIT,
        ),
        SuiteInfo(
            CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            0x0303,
            "sha256",
            16,
            AESGCM,
            False,
            "rsa",
            _AES_GCM_LIMIT,
        ),
        SuiteInfo(
            CipherSuite.ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            0x0303,
            "sha384",
            32,
            AESGCM,
            False,
            "rsa",
            _AES_GCM_LIMIT,
        ),
        SuiteInfo(
            CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            0x0303,
            "sha256",
            32,
            ChaCha20Poly1305,
            True,
            "rsa",
        ),
        SuiteInfo(
            CipherSuite.ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            0x0303,
            "sha256",
            32,
            ChaCha20Poly1305,
            True,
            "ecdsa",
        ),
    )
}

TLS13_SUITES = (
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
)
TLS12_SUITES = (
    CipherSuite.ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite.ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite.ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
)


# --- HKDF (RFC 5869) and the TLS 1.3 key schedule (RFC 8446 section 7) -------
# HMAC runs inside OpenSSL (hmac.digest); Python only concatenates bytes.


# OpenSSL's one-shot HMAC, without hmac.digest's Python-level dispatch: a
# handshake makes about fifty of these calls per side.
_hmac_digest: Callable[[bytes, bytes, str], bytes]
try:
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # a Python built without OpenSSL's hashlib
    _hmac_digest = hmac.digest
hmac_digest = _hmac_digest

# Digest sizes and hashes of the empty string, looked up rather than computed:
# a TLS 1.3 handshake asks for them dozens of times.
DIGEST_SIZE = {"sha256": 32, "sha384": 48}
_EMPTY_HASH = {name: hashlib.new(name).digest() for name in DIGEST_SIZE}


def digest_size(hash_name: str) -> int:
    size = DIGEST_SIZE.get(hash_name)
    return size if size is not None else hashlib.new(hash_name).digest_size


def hkdf_extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    if not salt:
        salt = bytes(digest_size(hash_name))
    return _hmac_digest(salt, ikm, hash_name)


def hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    if length <= DIGEST_SIZE.get(hash_name, 0):
        # Every TLS 1.3 label asks for at most one block: one HMAC call.
        return _hmac_digest(prk, info + b"\x01", hash_name)[:length]
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = _hmac_digest(prk, block + info + bytes((counter,)), hash_name)
        out += block
        counter += 1
    return out[:length]


# HkdfLabel (RFC 8446 section 7.1) up to the context: the output length, the
# length-prefixed "tls13 " + label. A handshake asks for the same few dozen
# labels every time, so each prefix is built once.
# Labels are a small closed set, but exporters bring their own: bounded.
_LABEL_PREFIX: Memo[tuple[bytes, int], bytes] = Memo(1024)
_label_prefix_get = _LABEL_PREFIX.get
_ONE_BYTE = [bytes((n,)) for n in range(256)]


def _label_prefix(label: bytes, length: int) -> bytes:
    prefix = length.to_bytes(2, "big") + bytes((6 + len(label),)) + b"tls13 " + label
    return _LABEL_PREFIX.put((label, length), prefix)


def hkdf_expand_label(
    hash_name: str, secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    prefix = _label_prefix_get((label, length)) or _label_prefix(label, length)
    if length <= DIGEST_SIZE.get(hash_name, 0) and len(context) < 256:
        # One block (T(1) = HMAC(secret, info | 0x01)): every label a handshake uses.
        info = prefix + _ONE_BYTE[len(context)] + context + b"\x01"
        digest = _hmac_digest(secret, info, hash_name)
        return digest if len(digest) == length else digest[:length]
    return hkdf_expand(hash_name, secret, prefix + bytes((len(context),)) + context, length)


def derive_secret(hash_name: str, secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
    return hkdf_expand_label(hash_name, secret, label, transcript_hash, digest_size(hash_name))


def empty_hash(hash_name: str) -> bytes:
    cached = _EMPTY_HASH.get(hash_name)
    return cached if cached is not None else hashlib.new(hash_name).digest()


# --- The TLS 1.2 PRF (RFC 5246 section 5) --------------------------------------


def prf12(hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    full_seed = label + seed
    out = b""
    a = full_seed
    while len(out) < length:
        a = hmac.digest(secret, a, hash_name)
        out += hmac.digest(secret, a + full_seed, hash_name)
    return out[:length]
