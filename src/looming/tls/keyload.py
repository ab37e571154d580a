"""Loading certificates and keys, and refusing at start-up what no handshake could use.

OpenSSL refuses to start a server whose key does not match its certificate;
looming does the same, and also refuses an expired or not yet valid leaf, a
key no signature scheme fits, an RSA key under 2048 bits, and a chain whose
certificates are not in issuing order. Each refusal is a
:class:`looming.errors.UsageError` naming the file and what to do.

Keys may be PEM (PKCS#8, ``BEGIN PRIVATE KEY`` / ``BEGIN ENCRYPTED PRIVATE
KEY``, or the traditional ``BEGIN RSA/EC PRIVATE KEY``, encrypted or not) or
DER PKCS#8. The passphrase of an encrypted key comes from a file (its first
line) or from the environment variable :data:`KEY_PASSWORD_ENV`.
"""

from __future__ import annotations

import datetime
import itertools
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from looming.errors import UsageError

from .certs import CertifiedKey
from .signing import PrivateKey, schemes_for_key

KEY_PASSWORD_ENV = "LOOMING_TLS_KEY_PASSWORD"
MIN_RSA_BITS = 2048


def read_key_password(
    password_file: str | Path | None, environ: Mapping[str, str] | None = None
) -> bytes | None:
    """The passphrase from ``password_file`` (first line) or ``$LOOMING_TLS_KEY_PASSWORD``."""
    if password_file is not None:
        try:
            text = Path(password_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the key password file {password_file}: {exc}") from exc
        return text.splitlines()[0] if text.strip() else b""
    value = (os.environ if environ is None else environ).get(KEY_PASSWORD_ENV)
    return value.encode() if value is not None else None


def load_private_key(data: bytes, password: bytes | None, where: str) -> PrivateKey:
    """Parse a PEM or DER private key, decrypting it with ``password`` when it is encrypted."""
    loader = (
        serialization.load_pem_private_key
        if b"-----BEGIN" in data
        else serialization.load_der_private_key
    )
    try:
        return loader(data, password)  # type: ignore[return-value]  # checked by check_identity
    except TypeError as exc:
        if password is None:
            raise UsageError(
                f"the private key {where} is encrypted; give its passphrase with "
                f"--key-password-file FILE or the {KEY_PASSWORD_ENV} environment variable"
            ) from exc
        raise UsageError(
            f"the private key {where} is not encrypted, but a passphrase was given; drop it"
        ) from exc
    except ValueError as exc:
        if password is not None and b"ENCRYPTED" in data:
            raise UsageError(f"cannot decrypt the private key {where}: wrong passphrase?") from exc
        raise UsageError(f"cannot read the private key {where}: {exc}") from exc
    except Exception as exc:  # unsupported algorithms surface as various errors
        raise UsageError(f"cannot read the private key {where}: {exc}") from exc


def load_chain(data: bytes, where: str) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise UsageError(f"cannot read the certificate {where}: {exc}") from exc


def _spki(key: object) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined,no-any-return]


def check_identity(
    chain: list[x509.Certificate], key: PrivateKey, now: datetime.datetime, where: str
) -> CertifiedKey:
    """A CertifiedKey, after refusing what every handshake would fail on."""
    leaf = chain[0]
    if not schemes_for_key(key, tls13=False) and not schemes_for_key(key, tls13=True):
        raise UsageError(
            f"{where}: a {type(key).__name__.removeprefix('_')} cannot sign TLS handshakes; "
            "use an RSA, ECDSA (P-256, P-384, P-521), Ed25519 or Ed448 key"
        )
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise UsageError(
            f"{where}: a {key.key_size}-bit RSA key is too weak (peers refuse it); "
            f"use {MIN_RSA_BITS} bits or more"
        )
    try:
        leaf_spki = _spki(leaf.public_key())
    except Exception as exc:  # a public key algorithm cryptography does not know
        raise UsageError(f"{where}: the certificate's public key is unusable: {exc}") from exc
    if leaf_spki != _spki(key.public_key()) and not _same_rsa_key(leaf, key):
        raise UsageError(
            f"{where}: the private key does not match the certificate "
            f"(subject {leaf.subject.rfc4514_string()!r}); give the key the certificate was "
            "issued for, and the leaf certificate first in the file"
        )
    _check_validity(leaf, now, where)
    for child, parent in itertools.pairwise(chain):
        if child.issuer != parent.subject:
            raise UsageError(
                f"{where}: certificate {parent.subject.rfc4514_string()!r} does not issue "
                f"{child.subject.rfc4514_string()!r}; list the chain leaf first, each "
                "certificate followed by its issuer"
            )
    return CertifiedKey(chain, key)


def _same_rsa_key(leaf: x509.Certificate, key: PrivateKey) -> bool:
    # An RSA-PSS certificate's SubjectPublicKeyInfo carries the id-RSASSA-PSS OID,
    # while the key loads as a plain RSA key: compare the numbers instead.
    public = leaf.public_key()
    return (
        isinstance(public, rsa.RSAPublicKey)
        and isinstance(key, rsa.RSAPrivateKey)
        and public.public_numbers() == key.public_key().public_numbers()
    )


def _check_validity(leaf: x509.Certificate, now: datetime.datetime, where: str) -> None:
    aware = now.replace(tzinfo=datetime.UTC) if now.tzinfo is None else now
    if aware > leaf.not_valid_after_utc:
        raise UsageError(
            f"{where}: the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
            "renew it"
        )
    if aware < leaf.not_valid_before_utc:
        raise UsageError(
            f"{where}: the certificate is not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check the clock or the certificate"
        )


def load_identity(
    cert_data: bytes,
    key_data: bytes,
    *,
    password: bytes | None,
    now: datetime.datetime,
    cert_name: str,
    key_name: str,
) -> CertifiedKey:
    """Certificate chain and key from bytes, checked (see the module docstring)."""
    chain = load_chain(cert_data, cert_name)
    if not chain:
        raise UsageError(f"no certificate in {cert_name}; give a PEM file with the leaf first")
    key = load_private_key(key_data, password, key_name)
    return check_identity(chain, key, now, f"{cert_name} / {key_name}")


def load_identity_files(
    cert_path: str | Path,
    key_path: str | Path,
    *,
    password: bytes | None,
    now: datetime.datetime,
) -> CertifiedKey:
    try:
        cert_data = Path(cert_path).read_bytes()
        key_data = Path(key_path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    return load_identity(
        cert_data,
        key_data,
        password=password,
        now=now,
        cert_name=str(cert_path),
        key_name=str(key_path),
    )
