"""Certificates: the keys we present, the anchors we trust, and chain validation.

Path building and policy checks (hostname or IP, key usage, extended key
usage, validity, basic constraints) are done by ``cryptography.x509.verification``;
this module maps each failure to the alert RFC 8446 section 6.2 names and a
message that says what was wrong.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.general_name import DNSName, IPAddress
from cryptography.x509.oid import SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from looming.errors import UsageError

from .constants import AlertDescription
from .errors import CertificateError
from .signing import PrivateKey


@dataclass
class CertifiedKey:
    """A certificate chain (leaf first) and the leaf's private key."""

    chain: list[x509.Certificate]
    key: PrivateKey
    chain_der: list[bytes] = field(init=False)

    def __post_init__(self) -> None:
        if not self.chain:
            raise UsageError("a certificate chain needs at least the leaf certificate")
        self.chain_der = [c.public_bytes(Encoding.DER) for c in self.chain]

    @classmethod
    def from_pem_files(
        cls, cert_path: str | Path, key_path: str | Path, password: bytes | None = None
    ) -> CertifiedKey:
        try:
            chain = x509.load_pem_x509_certificates(Path(cert_path).read_bytes())
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"cannot load certificate {cert_path} / key {key_path}: {exc}"
            ) from exc
        return cls(chain, key)  # type: ignore[arg-type]  # any signing key type; rejected at use if unsupported

    def chain_signed_with(self, schemes: Sequence[int]) -> bool:
        """Whether every signature in the chain (self-signed roots aside) uses one of ``schemes``."""
        allowed = set(schemes)
        for cert in self.chain:
            if cert.issuer == cert.subject:
                continue
            if not allowed & certificate_signature_schemes(cert):
                return False
        return True

    def matches_name(self, server_name: str) -> bool:
        """Whether the leaf's subjectAltName covers ``server_name`` (exact or one-label wildcard)."""
        try:
            san = (
                self.chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            )
        except x509.ExtensionNotFound:
            return False
        wanted = server_name.lower().rstrip(".")
        for name in san.get_values_for_type(x509.DNSName):
            pattern = name.lower().rstrip(".")
            if pattern == wanted:
                return True
            if (
                pattern.startswith("*.")
                and "." in wanted
                and wanted.split(".", 1)[1] == pattern[2:]
            ):
                return True
        return False


class TrustStore:
    """Trust anchors for chain validation."""

    def __init__(self, anchors: Iterable[x509.Certificate]) -> None:
        self.anchors = list(anchors)
        if not self.anchors:
            raise UsageError("a trust store needs at least one CA certificate")
        self.store = Store(self.anchors)

    @classmethod
    def from_pem_file(cls, path: str | Path) -> TrustStore:
        try:
            return cls(x509.load_pem_x509_certificates(Path(path).read_bytes()))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load CA certificates from {path}: {exc}") from exc

    @classmethod
    def system(cls) -> TrustStore:
        """The host's CA bundle (the file OpenSSL is configured to use).

        Certificates in the bundle that do not parse (some old roots break
        RFC 5280) are skipped rather than failing the whole store.
        """
        paths = ssl.get_default_verify_paths()
        candidates = [paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"]
        for candidate in candidates:
            if candidate and Path(candidate).is_file():
                return cls(_load_each(Path(candidate).read_bytes()))
        raise UsageError("no system CA bundle found; pass a CA file instead")


_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


def _load_each(bundle: bytes) -> list[x509.Certificate]:
    out = []
    for block in bundle.split(_PEM_BEGIN)[1:]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            try:
                out.append(x509.load_pem_x509_certificate(_PEM_BEGIN + block))
            except ValueError:
                continue
    return out


_SIGNATURE_OIDS: dict[x509.ObjectIdentifier, frozenset[int]] = {
    SignatureAlgorithmOID.RSA_WITH_SHA256: frozenset({0x0401}),
    SignatureAlgorithmOID.RSA_WITH_SHA384: frozenset({0x0501}),
    SignatureAlgorithmOID.RSA_WITH_SHA512: frozenset({0x0601}),
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: frozenset({0x0403}),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: frozenset({0x0503}),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: frozenset({0x0603}),
    SignatureAlgorithmOID.ED25519: frozenset({0x0807}),
}
_PSS_BY_HASH = {
    "sha256": frozenset({0x0804, 0x0809}),
    "sha384": frozenset({0x0805, 0x080A}),
    "sha512": frozenset({0x0806, 0x080B}),
}


def certificate_signature_schemes(cert: x509.Certificate) -> frozenset[int]:
    """The TLS signature schemes that name the algorithm ``cert`` is signed with."""
    oid = cert.signature_algorithm_oid
    if oid == SignatureAlgorithmOID.RSASSA_PSS:
        digest = cert.signature_hash_algorithm
        return _PSS_BY_HASH.get(digest.name if digest is not None else "", frozenset())
    return _SIGNATURE_OIDS.get(oid, frozenset())


def spki_sha256(cert: x509.Certificate) -> bytes:
    """The pin of a certificate: SHA-256 of its SubjectPublicKeyInfo (RFC 7469 style)."""
    return hashlib.sha256(
        cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).digest()


def parse_chain(chain_der: Sequence[bytes]) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as exc:
        raise CertificateError(
            AlertDescription.BAD_CERTIFICATE, f"certificate does not parse: {exc}"
        ) from exc


def _alert_for(message: str) -> AlertDescription:
    lowered = message.lower()
    if "expired" in lowered or "not yet valid" in lowered or "validation time" in lowered:
        return AlertDescription.CERTIFICATE_EXPIRED
    if "candidates exhausted" in lowered or "no valid chain" in lowered or "issuer" in lowered:
        return AlertDescription.UNKNOWN_CA
    if "unsupported" in lowered:
        return AlertDescription.UNSUPPORTED_CERTIFICATE
    return AlertDescription.BAD_CERTIFICATE


def validate_chain(
    chain: Sequence[x509.Certificate],
    trust: TrustStore,
    now: datetime.datetime,
    server_name: str | None,
    as_server_cert: bool,
) -> None:
    """Build a path from ``chain[0]`` to an anchor and check policy; raise CertificateError."""
    builder = PolicyBuilder().store(trust.store).time(now)
    leaf, intermediates = chain[0], list(chain[1:])
    try:
        if as_server_cert:
            subject: DNSName | IPAddress
            if server_name is None:
                raise CertificateError(
                    AlertDescription.BAD_CERTIFICATE,
                    "no server name to check the certificate against",
                )
            try:
                subject = IPAddress(ipaddress.ip_address(server_name))
            except ValueError:
                subject = DNSName(server_name)
            builder.build_server_verifier(subject).verify(leaf, intermediates)
        else:
            builder.build_client_verifier().verify(leaf, intermediates)
    except VerificationError as exc:
        message = str(exc).split(" (encountered processing", 1)[0]
        if as_server_cert and server_name is not None and "subjectaltname" in message.lower():
            raise CertificateError(
                AlertDescription.BAD_CERTIFICATE,
                f"certificate is not valid for {server_name!r}: {message}",
            ) from exc
        raise CertificateError(_alert_for(message), message) from exc
    except ValueError as exc:
        raise CertificateError(AlertDescription.BAD_CERTIFICATE, str(exc)) from exc


def check_pins(chain: Sequence[x509.Certificate], pins: Iterable[bytes]) -> None:
    wanted = set(pins)
    if not any(spki_sha256(cert) in wanted for cert in chain):
        raise CertificateError(
            AlertDescription.BAD_CERTIFICATE,
            "no certificate in the chain matches a pinned public key",
        )
