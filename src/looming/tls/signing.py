"""Signature schemes: which fit a key, and signing and verifying with them.

An RSA key whose certificate names id-RSASSA-PSS as its algorithm (an
"RSA-PSS key", RFC 4055) may only make PSS signatures: the rsa_pss_pss_*
schemes (RFC 8446 section 4.2.3). The same key in an rsaEncryption
certificate signs with rsa_pss_rsae_* (and PKCS#1 v1.5 in TLS 1.2).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

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


def sign(key: PrivateKey, scheme: int, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(data)
    hash_type = _HASHES[scheme]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hash_type()))
    if isinstance(key, rsa.RSAPrivateKey):
        if scheme in _PKCS1:
            return key.sign(data, padding.PKCS1v15(), hash_type())
        pss = padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=hash_type().digest_size)
        return key.sign(data, pss, hash_type())
    raise ValueError(f"cannot sign with a {type(key).__name__}")


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
