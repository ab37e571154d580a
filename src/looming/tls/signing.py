"""Signature schemes: which fit a key, and signing and verifying with them.

An RSA key whose certificate names id-RSASSA-PSS as its algorithm (an
"RSA-PSS key", RFC 4055) may only make PSS signatures: the rsa_pss_pss_*
schemes (RFC 8446 section 4.2.3). The same key in an rsaEncryption
certificate signs with rsa_pss_rsae_* (and PKCS#1 v1.5 in TLS 1.2).

Every signature is a function of the key, the data and the Random device:
ECDSA is deterministic (RFC 6979) and Ed25519/Ed448 are by design. An RSA-PSS
salt is random; OpenSSL draws it from its own generator, except under a
simulated Random device (:func:`simulated`), where the salt comes from the
device and the signature is computed here, so that a seed replays exactly.
"""

from __future__ import annotations

import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from looming.devices.random import Random

from .constants import SignatureScheme as S

PrivateKey = CertificateIssuerPrivateKeyTypes
PublicKey = CertificatePublicKeyTypes

_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    S.RSA_PKCS1_SHA256: hashes.SHA256,
    S.RSA_PKCS1_SHA384: hashes.SHA384,
    S.RSA_PKCS1_SHA512: hashes.SHA512,
    S.ECDSA_SECP256R1_SHA256: hashes.SHA256,
    S.ECDSA_SECP384R1_SHA384: hashes.SHA384,
    S.ECDSA_SECP521R1_SHA512: hashes.SHA512,
    S.RSA_PSS_RSAE_SHA256: hashes.SHA256,
    S.RSA_PSS_RSAE_SHA384: hashes.SHA384,
    S.RSA_PSS_RSAE_SHA512: hashes.SHA512,
    S.RSA_PSS_PSS_SHA256: hashes.SHA256,
    S.RSA_PSS_PSS_SHA384: hashes.SHA384,
    S.RSA_PSS_PSS_SHA512: hashes.SHA512,
}
_PKCS1: tuple[int, ...] = (S.RSA_PKCS1_SHA256, S.RSA_PKCS1_SHA384, S.RSA_PKCS1_SHA512)
_PSS_RSAE: tuple[int, ...] = (S.RSA_PSS_RSAE_SHA256, S.RSA_PSS_RSAE_SHA384, S.RSA_PSS_RSAE_SHA512)
_PSS_PSS: tuple[int, ...] = (S.RSA_PSS_PSS_SHA256, S.RSA_PSS_PSS_SHA384, S.RSA_PSS_PSS_SHA512)
_ECDSA_CURVE: dict[int, str] = {
    S.ECDSA_SECP256R1_SHA256: "secp256r1",
    S.ECDSA_SECP384R1_SHA384: "secp384r1",
    S.ECDSA_SECP521R1_SHA512: "secp521r1",
}

# What we offer in signature_algorithms, most preferred first.
DEFAULT_SCHEMES = (
    S.ECDSA_SECP256R1_SHA256,
    S.ECDSA_SECP384R1_SHA384,
    S.ED25519,
    S.ED448,
    S.RSA_PSS_RSAE_SHA256,
    S.RSA_PSS_RSAE_SHA384,
    S.RSA_PSS_RSAE_SHA512,
    S.RSA_PSS_PSS_SHA256,
    S.RSA_PSS_PSS_SHA384,
    S.RSA_PSS_PSS_SHA512,
    S.RSA_PKCS1_SHA256,
    S.RSA_PKCS1_SHA384,
    S.RSA_PKCS1_SHA512,
    S.ECDSA_SECP521R1_SHA512,
)


def schemes_for_key(key: PrivateKey | PublicKey, tls13: bool, pss_only: bool = False) -> list[int]:
    """The schemes ``key`` can sign with, in preference order, for a handshake signature.

    ``pss_only``: the key's certificate is an id-RSASSA-PSS one (see the module docstring).
    """
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if pss_only:
            return list(_PSS_PSS)
        return list(_PSS_RSAE) + ([] if tls13 else list(_PKCS1))
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if tls13:
            return [int(s) for s, curve in _ECDSA_CURVE.items() if curve == key.curve.name]
        return [int(s) for s in _ECDSA_CURVE]
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return [int(S.ED25519)]
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return [int(S.ED448)]
    return []


def simulated(random: Random | None) -> bool:
    """Whether ``random`` is a simulation's device, from which every choice must come.

    A device says so with a ``simulated`` attribute that is True (the sim
    target's ``SimRandom``); a seeded test stream is not simulated. Any device
    is, inside a simulation run on this thread (a host device passed in, such
    as ``UnixRandom``, there answers from the run through the intercepted
    ``os.urandom``); the simulator is looked up, never imported, from here.
    """
    if getattr(random, "simulated", False) is True:
        return True
    intercept = sys.modules.get("looming.sim.intercept")
    return intercept is not None and bool(intercept.active())


def sign(key: PrivateKey, scheme: int, data: bytes, random: Random | None = None) -> bytes:
    """``data`` signed with ``scheme``; under a simulated ``random``, RSA-PSS salts come from it."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(data)
    hash_type = _HASHES[scheme]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hash_type(), deterministic_signing=True))
    if isinstance(key, rsa.RSAPrivateKey):
        if scheme in _PKCS1:
            return key.sign(data, padding.PKCS1v15(), hash_type())
        if random is not None and simulated(random):
            return _pss_sign_with_salt(
                key, hash_type(), data, random.bytes(hash_type().digest_size)
            )
        pss = padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=hash_type().digest_size)
        return key.sign(data, pss, hash_type())
    raise ValueError(f"cannot sign with a {type(key).__name__}")


def _digest(algorithm: hashes.HashAlgorithm, *parts: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    for part in parts:
        h.update(part)
    return h.finalize()


def _mgf1(algorithm: hashes.HashAlgorithm, seed: bytes, length: int) -> bytes:
    out = b"".join(
        _digest(algorithm, seed, counter.to_bytes(4, "big"))
        for counter in range(-(-length // algorithm.digest_size))
    )
    return out[:length]


def _pss_sign_with_salt(
    key: rsa.RSAPrivateKey, algorithm: hashes.HashAlgorithm, data: bytes, salt: bytes
) -> bytes:
    """RSASSA-PSS (RFC 8017 sections 8.1.1 and 9.1.1) with the given salt.

    For simulation only: the modular exponentiation is Python's, not
    constant-time. The result is checked with OpenSSL before it is used.
    """
    numbers = key.private_numbers()
    public = numbers.public_numbers
    em_bits = public.n.bit_length() - 1
    em_len = -(-em_bits // 8)
    h_len = algorithm.digest_size
    if em_len < h_len + len(salt) + 2:
        raise ValueError(f"a {key.key_size}-bit RSA key is too small for PSS with {algorithm.name}")
    h = _digest(algorithm, b"\0" * 8, _digest(algorithm, data), salt)
    db = b"\0" * (em_len - len(salt) - h_len - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1(algorithm, h, len(db)), strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    m = int.from_bytes(bytes(masked) + h + b"\xbc", "big")
    # Chinese remainder theorem (RFC 8017 section 5.1.2, second form).
    m1 = pow(m, numbers.dmp1, numbers.p)
    m2 = pow(m, numbers.dmq1, numbers.q)
    s = m2 + (numbers.iqmp * (m1 - m2) % numbers.p) * numbers.q
    signature = s.to_bytes((public.n.bit_length() + 7) // 8, "big")
    pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=len(salt))
    key.public_key().verify(signature, data, pss, algorithm)
    return signature


def verify(
    key: PublicKey,
    scheme: int,
    data: bytes,
    signature: bytes,
    tls13: bool,
    pss_only: bool = False,
) -> bool:
    """Whether ``signature`` is valid; False also when the scheme does not fit the key."""
    if scheme not in schemes_for_key(key, tls13, pss_only):
        return False
    try:
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
            return True
        hash_type = _HASHES[scheme]
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hash_type()))
            return True
        if isinstance(key, rsa.RSAPublicKey):
            if scheme in _PKCS1:
                key.verify(signature, data, padding.PKCS1v15(), hash_type())
            else:
                pss = padding.PSS(
                    mgf=padding.MGF1(hash_type()), salt_length=hash_type().digest_size
                )
                key.verify(signature, data, pss, hash_type())
            return True
    except (InvalidSignature, ValueError):
        return False
    return False
